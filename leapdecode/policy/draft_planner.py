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
from dataclasses import dataclass, field

from leapdecode.drafters.auto.position_acceptance import POSITIONS, PositionAcceptance
from leapdecode.policy.step_cost import StepCost

PRIOR = 2.0  # verifies' worth of alpha that each position's own pass rate starts from


@dataclass(slots=True)
class Acceptance:
    """Per-request estimate of alpha, the chance a drafted token is accepted given its predecessors were,
    overall and per draft position.

    Each verify accepts a run of drafts and stops at the first rejection, so alpha's estimate is
    accepted / (accepted + rejections), started from a weak prior of one each. A close drafter's
    rejections come in bursts at hard tokens: past them its later positions pass more often than the first,
    so the worth of draft j is read from each position's own pass rate where it has been seen
    (`chances`), alpha standing in where it has not."""

    accepted: float = 1.0
    rejected: float = 1.0
    by_position: PositionAcceptance = field(default_factory=lambda: PositionAcceptance(POSITIONS, decay=1.0))

    def update(self, drafted: int, accepted: int) -> None:
        if drafted:
            self.accepted += accepted
            self.rejected += accepted < drafted
            self.by_position.observe(0, accepted, rejected=accepted < drafted)

    @property
    def alpha(self) -> float:
        return self.accepted / (self.accepted + self.rejected)

    def chances(self, n: int) -> list[float]:
        """The chance each of n draft positions is accepted (all before it accepted too), non-increasing."""
        out, chance, alpha = [], 1.0, self.alpha
        for j in range(n):
            passed, seen = self.by_position.counts(0, j)
            chance *= (passed + PRIOR * alpha) / (seen + PRIOR)
            out.append(chance)
        return out


def plan_drafts(proposed: list[int], alphas: list[float], cost: StepCost,
                chances: Sequence[Sequence[float] | None] | None = None, draft_cost: StepCost | None = None) -> list[int]:
    """proposed[i] tokens drafted for request i -> how many of them to verify, maximising expected
    tokens per second of the whole batch. Draft j of request i (0-based) is worth alpha_i ** (j + 1), or
    chances[i][j] where the drafter gave its own estimate (auto does: the planner then trims by the same
    numbers auto chose the draft by, so the two never pull against each other).

    draft_cost: what one more drafted token costs (its per_row), where the drafts are yet to be made: asked
    before drafting, the planner then also weighs making each token, not only verifying it."""
    gains = [_gains(n, alphas[i], chances[i] if chances else None) for i, n in enumerate(proposed)]
    per_draft = draft_cost.per_row if draft_cost is not None else 0.0
    keep = [0] * len(proposed)
    rows = len(proposed)  # every request feeds its pending token
    expected = float(len(proposed))  # and yields at least that one
    heap = [(-g[0], i) for i, g in enumerate(gains) if g]
    heapq.heapify(heap)
    while heap:
        neg_gain, i = heapq.heappop(heap)
        gain = -neg_gain
        # take it iff (expected + gain) / t(rows + 1) > expected / t(rows), t counting the drafting too
        now = cost.seconds(rows) + per_draft * (rows - len(proposed))
        if (expected + gain) * now <= expected * (now + cost.per_row + per_draft):
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
