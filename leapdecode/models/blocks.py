"""Quantized weights as integers in column groups: w = q * scale + offset, per row and group.

This is the one form every source of quantized weights is brought to (a GGUF file's Q4_0/Q4_1/Q4_K/Q8_0
blocks, or float weights we quantize ourselves), and the form the integer linear layers are built from.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True, slots=True)
class Blocks:
    q: Tensor  # [N, K] uint8 in 0..15 (bits=4) or int8 (bits=8)
    scale: Tensor  # [N, K/group] float32
    offset: Tensor | None  # [N, K/group] float32; None when symmetric (w = q * scale)
    bits: int
    group: int

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.q.shape)  # type: ignore[return-value]

    def dequantize(self) -> Tensor:  # -> [N, K] float32
        n, k = self.q.shape
        w = self.q.float().view(n, k // self.group, self.group) * self.scale[..., None]
        if self.offset is not None:
            w = w + self.offset[..., None]
        return w.view(n, k)

    def rows(self, index: Tensor) -> Blocks:
        """The same weight with its output rows reordered (GGUF stores llama's q/k rows permuted)."""
        off = None if self.offset is None else self.offset[index]
        return Blocks(self.q[index], self.scale[index], off, self.bits, self.group)

    @staticmethod
    def cat(parts: list[Blocks]) -> Blocks:
        """Stack weights along the output rows (fused q/k/v, gate/up); they must share bits and group."""
        first = parts[0]
        if any(p.bits != first.bits or p.group != first.group or (p.offset is None) != (first.offset is None)
               for p in parts):
            raise ValueError("cannot fuse weights quantized in different formats")
        off = None if first.offset is None else torch.cat([p.offset for p in parts])  # type: ignore[misc]
        return Blocks(torch.cat([p.q for p in parts]), torch.cat([p.scale for p in parts]), off,
                      first.bits, first.group)


def quantize_int4(w: Tensor, group: int = 32, chunk_rows: int = 8192) -> Blocks:
    """Asymmetric 4-bit per group of `group` columns, min/max rounding (what Q4_1 does). Rows go in
    chunks, so quantizing a 150k-row head holds no float temporaries of its full size."""
    if w.shape[0] > chunk_rows:
        return Blocks.cat([quantize_int4(w[r : r + chunk_rows], group) for r in range(0, w.shape[0], chunk_rows)])
    n, k = w.shape
    g = w.float().view(n, k // group, group)
    lo, hi = g.amin(-1), g.amax(-1)
    scale = ((hi - lo) / 15).clamp(min=1e-12)
    q = ((g - lo[..., None]) / scale[..., None]).round().clamp(0, 15).to(torch.uint8)
    return Blocks(q.view(n, k), scale, lo, bits=4, group=group)


def quantize_int8(w: Tensor) -> Blocks:
    """Symmetric 8-bit with one scale per output row (the layout PyTorch's int8 CPU kernel takes)."""
    w = w.float()
    scale = (w.abs().amax(-1, keepdim=True) / 127).clamp(min=1e-12)  # [N, 1]
    q = (w / scale).round().clamp(-127, 127).to(torch.int8)
    return Blocks(q, scale, None, bits=8, group=w.shape[1])


def as_float(w: Tensor | Blocks) -> Tensor:
    return w.dequantize() if isinstance(w, Blocks) else w.float()


def cat_rows(parts: list[Tensor | Blocks]) -> Tensor | Blocks:
    """Fuse along output rows; mixed formats fall back to float (the kernel then quantizes them anew)."""
    if all(isinstance(p, Blocks) for p in parts):
        try:
            return Blocks.cat(parts)  # type: ignore[arg-type]
        except ValueError:
            pass
    return torch.cat([as_float(p) for p in parts])
