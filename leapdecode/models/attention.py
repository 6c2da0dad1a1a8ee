"""Attention whose result for a query row does not depend on how many rows are computed with it.

Verifying k drafted tokens runs k+1 query rows in one forward; plain decoding runs one. For speculative
output to equal plain output token for token, row j's numbers must come out bit for bit the same either way.
CPU SDPA does not promise that in reduced precision: its reduction order follows the key length (which
differs between the two) and its blocking over rows. Here every row attends over a key length fixed by its
own cache slot, rounded up to a bucket, with masked slots weighted exactly zero, so the reduction it runs is
the same whether it is computed alone or among the rows of a draft.
"""

from __future__ import annotations

import torch
from torch import Tensor

ATTENTION_BUCKET = 64  # key lengths are multiples of this; caches are allocated to a multiple of it too
# Query rows per kv head are padded to a multiple of this: MKL's float32 matmuls pick their kernel by row count
# (on AMD Zen 4, 3 rows and 21 rows sum in different orders), so a row's bits would follow its neighbours'.
QUERY_BLOCK = 64


RowGroup = tuple[int, int, Tensor]  # rows [j, stop); additive mask [heads_per_kv * rows, L], -inf where hidden


def row_groups(start: int, T: int, mask: Tensor | None, heads_per_kv: int) -> list[RowGroup]:
    """Split the T query rows at cache slots start.. into runs sharing one key length (the row's own slot
    rounded up to the bucket): almost always a single run. Built once per forward, used by every layer."""
    ends = [-(-(start + j + 1) // ATTENTION_BUCKET) * ATTENTION_BUCKET for j in range(T)]
    groups, j = [], 0
    while j < T:
        stop = j + 1
        while stop < T and ends[stop] == ends[j]:
            stop += 1
        hidden = ~_allowed(start, j, stop, ends[j], mask)
        bias = torch.zeros(hidden.shape).masked_fill_(hidden, float("-inf")).repeat(heads_per_kv, 1)
        groups.append((j, stop, bias))
        j = stop
    return groups


def attend_grouped(q: Tensor, keys: Tensor, values: Tensor, groups: list[RowGroup]) -> Tensor:
    """q float32 in grouped layout [Hkv, g * T, D]: row gi * T + t is head kv * g + gi of token t, as the
    fused rope_store kernel writes it and as q [1, H, T, D].reshape(Hkv, g * T, D) is. keys/values
    [1, Hkv, S, D] float32, the layer's whole cache. -> [T, H * D] float32"""
    hkv, rows, D = q.shape
    T = sum(stop - j for j, stop, _ in groups)
    g = rows // T
    out = []
    for j, stop, bias in groups:
        qg = q if len(groups) == 1 else q.view(hkv, g, T, D)[:, :, j:stop].reshape(hkv, g * (stop - j), D)
        length, m = bias.shape[-1], qg.shape[1]
        padded = -(-m // QUERY_BLOCK) * QUERY_BLOCK
        if padded != m:  # every matmul sees the same row count; see QUERY_BLOCK
            qg = torch.nn.functional.pad(qg, (0, 0, 0, padded - m))
            bias = torch.nn.functional.pad(bias, (0, 0, 0, padded - m))
        scores = torch.baddbmm(bias, qg, keys[0, :, :length].transpose(1, 2), alpha=D**-0.5)
        o = scores.softmax(dim=-1) @ values[0, :, :length]
        out.append(o[:, :m].reshape(hkv, g, stop - j, D))
    o = out[0] if len(out) == 1 else torch.cat(out, dim=2)  # [Hkv, g, T, D]
    return o.permute(2, 0, 1, 3).reshape(T, hkv * g * D)


def _allowed(start: int, j: int, stop: int, length: int, mask: Tensor | None) -> Tensor:  # -> [rows, length]
    if mask is None:
        return torch.arange(length)[None, :] <= torch.arange(start + j, start + stop)[:, None]
    allowed = torch.zeros(stop - j, length, dtype=torch.bool)
    width = min(mask.shape[1], length)
    allowed[:, :width] = mask[j:stop, :width]
    return allowed
