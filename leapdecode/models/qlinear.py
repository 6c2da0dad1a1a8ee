"""Linear layers over integer weights, run by PyTorch's CPU kernels for packed int4 and int8 weights.

Both take bfloat16 activations (their float32 paths are many times slower on CPU) and never expand the
weights to float: a 4-bit layer reads an eighth of the bytes a float32 one does.
"""

from __future__ import annotations

import torch
from torch import Tensor

from leapdecode.models.blocks import Blocks


class Int4Linear:
    """w = (q - 8) * scale + zero per group of columns; q packed two to a byte by PyTorch's own layout."""

    def __init__(self, w: Blocks, bias: Tensor | None = None) -> None:
        assert w.bits == 4, "Int4Linear takes 4-bit blocks"
        self.group = w.group
        self.out_features = w.shape[0]
        self.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(w.q.to(torch.int32).contiguous(), 1)
        offset = w.offset if w.offset is not None else torch.zeros_like(w.scale)
        zero = offset + 8 * w.scale  # the kernel centres q on 8
        self.scales_zeros = torch.stack([w.scale.t(), zero.t()], dim=-1).to(torch.bfloat16).contiguous()
        self.bias = None if bias is None else bias.to(torch.bfloat16)

    def __call__(self, x: Tensor) -> Tensor:  # [..., in] bf16 -> [..., out] bf16
        lead = x.shape[:-1]
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x.reshape(-1, x.shape[-1]), self.packed, self.group,
                                                        self.scales_zeros)
        y = y.view(*lead, self.out_features)
        return y + self.bias if self.bias is not None else y


class Int8Linear:
    """Symmetric int8 with one scale per output row."""

    def __init__(self, w: Blocks, bias: Tensor | None = None) -> None:
        assert w.bits == 8 and w.group == w.shape[1], "Int8Linear takes int8 with one scale per row"
        self.out_features = w.shape[0]
        self.q = w.q.contiguous()
        self.scale = w.scale.reshape(-1).to(torch.bfloat16)
        self.bias = None if bias is None else bias.to(torch.bfloat16)

    def __call__(self, x: Tensor) -> Tensor:  # [..., in] bf16 -> [..., out] bf16
        lead = x.shape[:-1]
        y = torch._weight_int8pack_mm(x.reshape(-1, x.shape[-1]), self.q, self.scale).view(*lead, self.out_features)
        return y + self.bias if self.bias is not None else y
