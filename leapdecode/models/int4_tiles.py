"""4-bit weights repacked once at load into the tiles kernels/int4_matmul.cpp streams through.

Tiles of 16 output rows; per tile and 32-column group 320 bytes: 256 bytes of nibbles laid out so one 64-byte
load holds four consecutive columns of each of the 16 rows twice over (low nibbles: columns 4v..4v+3, high
nibbles: columns 16+4v..16+4v+3), then the 16 rows' scales and offsets as float16. A GGUF's Q4_0/Q4_1
scales are float16 already; Q4_K's (a float16 times a 6-bit integer) and our own quantizer's are rounded to
float16 here, once, so every row count computes with the same weights.
"""

from __future__ import annotations

import torch
from torch import Tensor

from leapdecode.models.blocks import Blocks

TILE = 16  # output rows per tile
GROUP = 32  # columns per quantization group
GROUP_BYTES = 320


def pack_tiles(w: Blocks) -> Tensor:
    """[N, K] 4-bit blocks in groups of 32 -> [ceil(N/16), K/32, 320] uint8; padded rows are all zero."""
    if w.bits != 4 or w.group != GROUP:
        raise ValueError(f"int4 tiles take 4-bit weights in groups of {GROUP}, not {w.bits}-bit in {w.group}")
    n, k = w.shape
    tiles, groups = -(-n // TILE), k // GROUP
    pad = tiles * TILE - n
    q = torch.nn.functional.pad(w.q.to(torch.uint8), (0, 0, 0, pad))  # [Np, K]
    q = q.view(tiles, TILE, groups, 2, 4, 4)  # [T, n, G, half, v, j]
    nibbles = (q[:, :, :, 0] | (q[:, :, :, 1] << 4)).permute(0, 2, 3, 1, 4)  # [T, G, v, n, j]
    offset = w.offset if w.offset is not None else torch.zeros_like(w.scale)
    scales = [_tile_halves(t, tiles, pad) for t in (w.scale, offset)]  # [T, G, 32] bytes each
    return torch.cat([nibbles.reshape(tiles, groups, 256), *scales], dim=-1).contiguous()


def _tile_halves(t: Tensor, tiles: int, pad: int) -> Tensor:  # [N, G] float -> [T, G, 32] uint8 (16 x f16)
    t = torch.nn.functional.pad(t.float(), (0, 0, 0, pad)).to(torch.float16)  # [Np, G]
    return t.view(tiles, TILE, -1).transpose(1, 2).contiguous().view(torch.uint8)
