"""Linear layers over integer weights: 4-bit through our own kernel (kernels/int4_matmul.cpp) where it builds,
else PyTorch's packed int4 CPU kernel; 8-bit through PyTorch's int8 kernel.

Both take bfloat16 activations and never expand the weights to float: a 4-bit layer reads an eighth of the
bytes a float32 one does.
"""

from __future__ import annotations

import torch
from torch import Tensor

from leapdecode.kernels import int4_kernels
from leapdecode.models.blocks import Blocks
from leapdecode.models.int4_tiles import GROUP, pack_tiles


def int4_linear(w: Blocks, bias: Tensor | None = None) -> TiledInt4Linear | TorchInt4Linear:
    """Our tiled kernel where it builds and the groups are 32 columns: it multiplies 4-bit weights with
    8-bit activations, so 8 rows cost little more than 1 (PyTorch's kernel expands the weights to bfloat16
    for every row: an extra verify row costs a fifth of a step)."""
    kernels = int4_kernels()
    if kernels is not None and w.group == GROUP:
        return TiledInt4Linear(w, kernels, bias)
    return TorchInt4Linear(w, bias)


class TiledInt4Linear:
    """w = q * scale + offset per group of 32 columns, in int4_matmul.cpp's 16-row tiles."""

    def __init__(self, w: Blocks, kernels, bias: Tensor | None = None) -> None:
        assert w.bits == 4, "Int4Linear takes 4-bit blocks"
        self.out_features = w.shape[0]
        self.tiles = pack_tiles(w)  # [N/16, K/32, 320] uint8
        self.bias = None if bias is None else bias.float()
        self._matmul = kernels.int4_matmul

    @property
    def weight_bytes(self) -> int:
        return self.tiles.nbytes

    def __call__(self, x: Tensor) -> Tensor:  # [..., in] bf16 -> [..., out] bf16
        lead = x.shape[:-1]
        y = self._matmul(x.reshape(-1, x.shape[-1]), self.tiles, self.out_features, self.bias)
        return y.view(*lead, self.out_features)


class TorchInt4Linear:
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

    @property
    def weight_bytes(self) -> int:
        return self.packed.nbytes + self.scales_zeros.nbytes

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

    @property
    def weight_bytes(self) -> int:
        return self.q.nbytes + self.scale.nbytes

    def __call__(self, x: Tensor) -> Tensor:  # [..., in] bf16 -> [..., out] bf16
        lead = x.shape[:-1]
        y = torch._weight_int8pack_mm(x.reshape(-1, x.shape[-1]), self.q, self.scale).view(*lead, self.out_features)
        return y + self.bias if self.bias is not None else y
