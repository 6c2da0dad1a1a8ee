"""What auto learns that outlives one request: costs of this machine and model, and each arm's long-run record."""

from __future__ import annotations

from dataclasses import dataclass, field

from leapdecode.drafters.auto.position_acceptance import POSITIONS, PositionAcceptance
from leapdecode.policy.step_cost import StepCost

MEMORY_DECAY = 0.995  # a few hundred observations per cell: recent requests, not the server's whole life
OVERHEAD_SMOOTHING = 0.1  # weight of each new step's overhead in its running mean
# A verified row costs at least this share of a plain step: a noisy fit can say rows are free, and then
# every draft with any chance at all would look worth verifying; no hardware makes them quite free. And at
# most half of it: a one-request step is bound by reading the weights, not by its rows.
ROW_SHARE = (0.03, 0.5)


@dataclass(slots=True)
class AutoMemory:
    """Kept by the LLM (a drafter resource) and shared by its requests. A forward's cost per row is a
    property of the machine and model, not of a request, so it is learned once; each arm's acceptance here
    is only a prior, which a request's own observations soon outweigh."""

    # The target forward by rows: the LLM's SpeculationPolicy.forward, fed by whoever runs the forward (the
    # engine, or the scheduler for a batch); auto only reads it.
    step: StepCost = field(default_factory=lambda: StepCost(robust=True, refit_every=8))
    overhead: float = 0.0  # seconds per step outside the forward and any costly arm's propose
    propose: dict[str, StepCost] = field(default_factory=dict)  # costly arm -> seconds by tokens proposed
    acceptance: dict[str, PositionAcceptance] = field(default_factory=dict)  # arm -> long-run record

    def propose_cost(self, arm: str) -> StepCost:
        # Free until measured: a costly arm looks worth a try, and its first run says what it costs.
        return self.propose.setdefault(arm, StepCost(base=0.0, per_row=0.0, robust=True))

    def arm_acceptance(self, arm: str) -> PositionAcceptance:
        return self.acceptance.setdefault(arm, PositionAcceptance(POSITIONS, MEMORY_DECAY))

    def step_costs(self) -> tuple[float, float]:
        """(seconds of a plain step, overhead included; seconds each verified draft token adds). The line is
        read at one row, where it is measured best (most steps verify few rows), and its slope kept within
        ROW_SHARE of that: a line fitted to two or three noisy row counts can tilt anywhere."""
        plain = self.step.seconds(1)
        per_row = min(max(self.step.per_row, ROW_SHARE[0] * plain), ROW_SHARE[1] * plain)
        return plain + self.overhead, per_row

    def rows_measured(self) -> int:
        """Forwards over more than one row among those the step cost is fitted to: its slope's evidence."""
        return sum(1 for rows, _ in self.step.samples if rows > 1)

    def observe_overhead(self, seconds: float) -> None:
        # Capped at one plain step: a stream's reader pausing is not a cost of drafting, and must not make
        # every row look free by comparison.
        seconds = min(max(seconds, 0.0), self.step.seconds(1))
        self.overhead += OVERHEAD_SMOOTHING * (seconds - self.overhead)
