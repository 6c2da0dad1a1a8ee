"""How many drafted tokens each request of a batch gets verified: speculation that backs off under load.

A drafted token is worth the chance it is accepted; it costs the extra row it adds to the batched
forward. With one request, rows are nearly free and long drafts pay; with many, the forward stops being
bound by reading weights, each row costs arithmetic, and drafts that are likely wrong make the whole
batch slower. The planner hands out draft tokens one at a time, best first, while they raise the
batch's expected tokens per second (the marginal rule of FASER / BASS-style batch speculation).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

from leapdecode.step_cost import StepCost


@dataclass(slots=True)
class Acceptance:
    """Per-request estimate of alpha, the chance a drafted token is accepted given its predecessors were.

    Each verify accepts a run of drafts and stops at the first rejection, so alpha's estimate is
    accepted / (accepted + rejections), started from a weak prior of one each."""

    accepted: float = 1.0
    rejected: float = 1.0

    def update(self, drafted: int, accepted: int) -> None:
        if drafted:
            self.accepted += accepted
            self.rejected += accepted < drafted

    @property
    def alpha(self) -> float:
        return self.accepted / (self.accepted + self.rejected)


def plan_drafts(proposed: list[int], alphas: list[float], cost: StepCost,
                chances: Sequence[Sequence[float] | None] | None = None) -> list[int]:
    """proposed[i] tokens drafted for request i -> how many of them to verify, maximising expected
    tokens per second of the whole batch. Draft j of request i (0-based) is worth alpha_i ** (j + 1), or
    chances[i][j] where the drafter gave its own estimate (auto does: the planner then trims by the same
    numbers auto chose the draft by, so the two never pull against each other)."""
    gains = [_gains(n, alphas[i], chances[i] if chances else None) for i, n in enumerate(proposed)]
    keep = [0] * len(proposed)
    rows = len(proposed)  # every request feeds its pending token
    expected = float(len(proposed))  # and yields at least that one
    heap = [(-g[0], i) for i, g in enumerate(gains) if g]
    heapq.heapify(heap)
    while heap:
        neg_gain, i = heapq.heappop(heap)
        gain = -neg_gain
        # take it iff (expected + gain) / t(rows + 1) > expected / t(rows)
        if (expected + gain) * cost.seconds(rows) <= expected * cost.seconds(rows + 1):
            break  # the best remaining draft token does not pay, so no other does
        keep[i] += 1
        rows += 1
        expected += gain
        if keep[i] < proposed[i]:
            heapq.heappush(heap, (-gains[i][keep[i]], i))
    return keep


def _gains(proposed: int, alpha: float, chances: Sequence[float] | None) -> list[float]:
    """The expected worth of each of a request's draft tokens, non-increasing (taking them best first is
    then taking them in order)."""
    if chances is not None and len(chances) >= proposed:
        return [float(c) for c in chances[:proposed]]
    return [alpha ** (j + 1) for j in range(proposed)]
