"""The KV cache: preallocated per request, indexed by slot, rolled back by moving a length."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class KVCache:
    """Keys and values of every layer. Slots past `length` hold stale data that is never read."""

    def __init__(self, layers: int, kv_heads: int, max_len: int, head_dim: int, dtype: torch.dtype) -> None:
        shape = (layers, 1, kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype)  # [L, B, Hkv, S, D]
        self.v = torch.zeros(shape, dtype=dtype)  # [L, B, Hkv, S, D]
        self.layer_k, self.layer_v = list(self.k.unbind(0)), list(self.v.unbind(0))  # views, no per-step indexing
        self.length = 0  # slots [0, length) hold committed tokens
        self.max_len = max_len

    def write(self, layer: int, start: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store k, v [B, Hkv, T, D] at slots start..start+T; return the layer's keys/values up to there."""
        end = start + k.shape[2]
        keys, values = self.layer_k[layer], self.layer_v[layer]
        keys[:, :, start:end] = k
        values[:, :, start:end] = v
        return keys[:, :, :end], values[:, :, :end]

    def rollback(self, length: int) -> None:
        """Forget every slot from `length` on: rejected drafts cost a number, not a copy."""
        self.length = length

    def keep_path(self, start: int, path: Sequence[int]) -> None:
        """After a token tree's verify from slot `start`: keep the pending token's slot `start` and the
        accepted path's nodes, which sit at slots start + 1 + node, and roll back the rest.

        The path's KV moves to slots start + 1 .. start + len(path), every layer in one indexed copy. Its
        keys were rotated for the positions they now occupy (a node's rope position is start + its depth),
        so the compacted cache is the one a chain along the path would have left. A path already in place
        (a chain's, or the first branch's) moves nothing."""
        n = len(path)
        if any(node != i for i, node in enumerate(path)):
            src = torch.tensor(path) + start + 1  # [n]
            dst = torch.arange(start + 1, start + 1 + n)  # [n]
            for kv in (self.k, self.v):  # [L, B, Hkv, S, D]: index_select copies first, so overlaps are safe
                kv.index_copy_(3, dst, kv.index_select(3, src))
        self.rollback(start + 1 + n)
