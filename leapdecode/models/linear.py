"""Linear layers behind one interface, each using the CPU kernel that is fastest for the rows it gets."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from leapdecode.models.blocks import Blocks, as_float, quantize_int4, quantize_int8
from leapdecode.models.precision import PRECISIONS, activation_dtype

PACK_ROWS = 16  # verify forwards feed 1 + draft tokens; longer inputs (prefill) use the plain kernel


def _mkl_packing() -> bool:
    return torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_reorder_linear_weight")


def _onednn_bf16() -> bool:
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


class Linear:
    """y = x W^T + b, for weight [out, in].

    bfloat16, where the CPU has native bf16 (AVX512-BF16 or AMX), runs oneDNN with the weight prepacked:
    it streams the weights at near memory bandwidth, costs about the same for 1 or 16 rows (so verifying
    a draft is nearly free) and gives each row the same bits whatever the row count.

    One row (plain decoding) runs x @ W^T with W^T stored [in, out] contiguous: measured ~15% faster than
    F.linear on these CPUs. A few rows (verifying a draft) in float32 use MKL's prepacked sgemm, ~1.7x faster
    than F.linear at 4-8 rows: without packing MKL re-packs the weights on every call of that shape.
    """

    def __init__(self, weight: Tensor, bias: Tensor | None = None) -> None:
        self.weight_t = weight.t().contiguous()  # [in, out]
        self.bias = bias
        self.packed = self.bf16_packed = None
        if weight.dtype == torch.float32 and _mkl_packing():
            self.packed = torch.ops.mkl._mkl_reorder_linear_weight(weight.contiguous(), PACK_ROWS)
        if weight.dtype == torch.bfloat16 and _onednn_bf16():
            self.bf16_packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), PACK_ROWS)

    @property
    def out_features(self) -> int:
        return self.weight_t.shape[1]

    @property
    def weight_bytes(self) -> int:
        """What one call reads: the weight at its dtype, whichever copy (plain or prepacked) the call uses."""
        return self.weight_t.nbytes

    def __call__(self, x: Tensor) -> Tensor:  # [..., in] -> [..., out]
        if self.bf16_packed is not None:  # one kernel for every row count: bit-identical rows, flat cost
            return self._onednn_bf16(x)
        rows = x.numel() // x.shape[-1]
        if rows == 1:
            y = x @ self.weight_t
            return y + self.bias if self.bias is not None else y
        if self.packed is not None and rows <= PACK_ROWS:
            return torch.ops.mkl._mkl_linear(x, self.packed, self.weight_t.t(), self.bias, rows)
        return F.linear(x, self.weight_t.t(), self.bias)

    def _onednn_bf16(self, x: Tensor) -> Tensor:  # [..., in] bf16 -> [..., out] bf16
        """One row runs as two (itself twice): on CPUs with AVX512-BF16 but no AMX (AMD Zen 4), oneDNN takes
        another kernel for a single row, whose sums round differently from the one every 2..n-row call
        shares (measured: 2 to 40 rows agree bit for bit, 1 row does not). Reading the weights dominates,
        so the second row costs little."""
        if x.numel() != x.shape[-1]:
            return torch.ops.mkldnn._linear_pointwise(x, self.bf16_packed, self.bias, "none", [], "")
        pair = x.reshape(1, -1).repeat(2, 1)
        y = torch.ops.mkldnn._linear_pointwise(pair, self.bf16_packed, self.bias, "none", [], "")
        return y[:1].view(*x.shape[:-1], -1)


def make_linear(w: Tensor | Blocks, precision: str, bias: Tensor | None = None):
    """The layer for one weight at one precision.

    int4 / int8 quantize float weights (int4 in groups of 32, int8 per row) and keep 4-bit blocks as they
    are; gguf keeps each weight's stored format as closely as the kernels allow: 4-bit blocks run as int4,
    anything else (8-bit blocks, float) as bfloat16.
    """
    from leapdecode.models.qlinear import Int8Linear, int4_linear

    four_bit = isinstance(w, Blocks) and w.bits == 4 and w.group % 32 == 0
    if precision == "gguf":
        precision = "int4" if four_bit else "bfloat16"
    if precision in ("float32", "bfloat16"):
        dtype = activation_dtype(precision)
        return Linear(as_float(w).to(dtype), None if bias is None else bias.to(dtype))
    if precision == "int4":
        return int4_linear(w if four_bit else quantize_int4(as_float(w)), bias)  # type: ignore[arg-type]
    if precision == "int8":
        return Int8Linear(quantize_int8(as_float(w)), bias)
    raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
