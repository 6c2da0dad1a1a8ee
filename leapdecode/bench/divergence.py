"""Where a method's output first leaves the reference's, and whether the model was on a knife's edge there.

Greedy speculative decoding is exact in exact arithmetic, but a batched verify forward sums in a different
order than one-token decoding, so two candidates whose logits differ by less than the rounding noise may swap.
A gap within that noise at the first differing token says "numerical near-tie"; a larger one says "bug".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from leapdecode.bench.record import RunRecord

NEAR_TIE = 1e-2  # logits: fp32 reorderings move them by ~1e-4; a real bug by whole units
TIE_ULPS = 4  # in a low-precision dtype, logits this many rounding steps apart are still a tie

LogitsFn = Callable[[list[int]], Tensor]  # context ids -> logits of the next token, [V]


@dataclass(frozen=True, slots=True)
class Divergence:
    method: str
    prompt_id: str
    index: int  # first generated position where the two outputs differ
    reference_token: int | None  # None: the reference had already stopped here
    method_token: int | None  # None: the method had already stopped here
    top2_gap: float  # top-1 minus top-2 logit of the reference model at `index`
    chosen_gap: float | None  # logit of the reference's token minus the method's token, when both exist
    tolerance: float  # gaps up to this are rounding noise in the model's dtype

    @property
    def near_tie(self) -> bool:
        gap = self.chosen_gap if self.chosen_gap is not None else self.top2_gap
        return abs(gap) <= self.tolerance

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"near_tie": self.near_tie}


def first_difference(a: list[int], b: list[int]) -> int | None:
    """Index of the first position where the lists differ (a shorter list differs where it ends); None if equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def top2_gap(logits: Tensor) -> float:
    """Top-1 minus top-2 of a [V] logit vector."""
    top = torch.topk(logits.float(), 2).values  # [2]
    return float(top[0] - top[1])


def tie_tolerance(logits: Tensor) -> float:
    """Rounding noise of a [V] logit vector: TIE_ULPS units in the last place at its top value, in its own
    dtype (bf16 logits near 20 are 0.125 apart), and never below NEAR_TIE."""
    top = abs(float(logits.max()))
    ulp = torch.finfo(logits.dtype).eps * 2.0 ** math.floor(math.log2(top)) if top > 0 else 0.0
    return max(NEAR_TIE, TIE_ULPS * ulp)


def find_divergence(
    reference: RunRecord, other: RunRecord, prompt_ids: list[int], logits_fn: LogitsFn
) -> Divergence | None:
    """Compare `other` against `reference` on one prompt; on a difference, score the logits at that spot."""
    ref, its = reference.token_ids, other.token_ids
    i = first_difference(ref, its)
    if i is None:
        return None
    logits = logits_fn(prompt_ids + ref[:i])  # [V], in the model's dtype
    ref_tok = ref[i] if i < len(ref) else None
    its_tok = its[i] if i < len(its) else None
    both = ref_tok is not None and its_tok is not None
    chosen = float(logits[ref_tok].float() - logits[its_tok].float()) if both else None
    return Divergence(
        other.method, other.prompt_id, i, ref_tok, its_tok, top2_gap(logits), chosen, tie_tolerance(logits)
    )
