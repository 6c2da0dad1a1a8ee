"""What auto learns that outlives one request: costs of this machine and model, and each arm's long-run record."""

from __future__ import annotations

from dataclasses import dataclass, field

from leapdecode.drafters.position_acceptance import PositionAcceptance
from leapdecode.step_cost import StepCost

POSITIONS = 16  # draft positions tracked (the engine's draft length cap is 12 by default)
MEMORY_DECAY = 0.995  # a few hundred observations per cell: recent requests, not the server's whole life
OVERHEAD_SMOOTHING = 0.1  # weight of each new step's overhead in its running mean


@dataclass(slots=True)
class AutoMemory:
    """Kept by the LLM (a drafter resource) and shared by its requests. A forward's cost per row is a
    property of the machine and model, not of a request, so it is learned once; each arm's acceptance here
    is only a prior, which a request's own observations soon outweigh."""

    step: StepCost = field(default_factory=StepCost)  # target forward + verification, by rows verified
    overhead: float = 0.0  # seconds per step outside the forward and any costly arm's propose
    propose: dict[str, StepCost] = field(default_factory=dict)  # costly arm -> seconds by tokens proposed
    acceptance: dict[str, PositionAcceptance] = field(default_factory=dict)  # arm -> long-run record

    def propose_cost(self, arm: str) -> StepCost:
        # Free until measured: a costly arm looks worth a try, and its first run says what it costs.
        return self.propose.setdefault(arm, StepCost(base=0.0, per_row=0.0))

    def arm_acceptance(self, arm: str) -> PositionAcceptance:
        return self.acceptance.setdefault(arm, PositionAcceptance(POSITIONS, MEMORY_DECAY))

    def observe_step(self, rows: int, seconds: float) -> None:
        # One stalled forward (the OS, a collection) must not tilt the line for the next 64 steps: a sample
        # counts for at most three times what the line expects (a real change still gets there in a few).
        self.step.observe(rows, min(seconds, 3.0 * self.step.seconds(rows)))

    def observe_overhead(self, seconds: float) -> None:
        # Capped at one plain step: a stream's reader pausing is not a cost of drafting, and must not make
        # every row look free by comparison.
        seconds = min(max(seconds, 0.0), self.step.seconds(1))
        self.overhead += OVERHEAD_SMOOTHING * (seconds - self.overhead)
