"""The speculation policy: how much to draft, and whether to, from what was measured.

One `SpeculationPolicy` per loaded model holds what belongs to the machine and model: the cost of a target
forward by the rows in it (one fit, fed by whoever runs the forward: the engine in `generate`, the scheduler
in the server, and read by auto and the batch planner alike), the cost of drafting, and the gate that says
per batch size whether speculating pays at all. One `RequestPolicy` per request holds what belongs to its
text: the adaptive draft length and the acceptance per draft position, both updated by one call with the
draft's depth, so a fully accepted token tree counts as the success it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from leapdecode.policy.draft_length import DraftLength
from leapdecode.policy.draft_planner import Acceptance, plan_drafts
from leapdecode.policy.speculation_gate import SpeculationGate
from leapdecode.policy.step_cost import StepCost


class SpeculationPolicy:
    """Shared by every request of one model: `generate`'s and the server's."""

    def __init__(self, forward: StepCost | None = None) -> None:
        # Each row count's median, refitted every few forwards: one stalled forward moves nothing.
        self.forward = forward if forward is not None else StepCost(robust=True, refit_every=8)  # by its rows
        self.drafting = StepCost(base=0.0, per_row=0.0, robust=True)  # a batch step's drafting, by tokens drafted
        self.gate = SpeculationGate()

    def request(self, length: DraftLength) -> RequestPolicy:
        return RequestPolicy(length, shared=self)

    def plan(self, requests: Sequence[RequestPolicy], proposed: list[int],
             chances: Sequence[Sequence[float] | None] | None = None, before_drafting: bool = False) -> list[int]:
        """How many of each request's proposed draft tokens a batch should verify (draft_planner.py).
        before_drafting: the tokens are yet to be made, so making them is priced too."""
        chances = chances if chances is not None else [r.acceptance.chances(n) for r, n in zip(requests, proposed)]
        return plan_drafts(proposed, [r.acceptance.alpha for r in requests], self.forward, chances,
                           self.drafting if before_drafting else None)


@dataclass(slots=True)
class RequestPolicy:
    """One request's draft length and acceptance estimates."""

    length: DraftLength = field(default_factory=DraftLength)
    acceptance: Acceptance = field(default_factory=Acceptance)
    shared: SpeculationPolicy = field(default_factory=SpeculationPolicy)

    def draft_k(self, budget: int) -> int:
        return min(self.length.k, budget)

    def verified(self, depth: int, accepted: int) -> None:
        """A verify step's outcome: a draft `depth` tokens deep (a tree: its longest path), of which
        `accepted` were kept."""
        self.length.update(depth, accepted)
        self.acceptance.update(depth, accepted)

    def forward_took(self, rows: int, seconds: float) -> None:
        self.shared.forward.observe(rows, seconds)
