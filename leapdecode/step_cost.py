"""What one batched target forward costs, learned from the forwards the server actually runs."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class StepCost:
    """seconds(rows) ~ base + per_row * rows, a least-squares line over the most recent forwards.

    On a CPU a few extra rows are nearly free while the step is bound by reading the weights, and cost
    real arithmetic once it is not; the line is refitted as the batch moves, so it describes the rows
    the server is using now (a fixed table would be wrong on the next machine)."""

    base: float = 0.010  # seconds; a prior until measured
    per_row: float = 0.001
    window: int = 64
    samples: deque[tuple[int, float]] = field(default_factory=deque)

    def observe(self, rows: int, seconds: float) -> None:
        self.samples.append((rows, seconds))
        if len(self.samples) > self.window:
            self.samples.popleft()
        self._fit()

    def seconds(self, rows: int) -> float:
        return self.base + self.per_row * rows

    def _fit(self) -> None:
        n = len(self.samples)
        mean_r = sum(r for r, _ in self.samples) / n
        mean_t = sum(t for _, t in self.samples) / n
        var = sum((r - mean_r) ** 2 for r, _ in self.samples)
        if var < 1e-9:  # every sample at one size: keep the slope, move the line through them
            self.base = max(mean_t - self.per_row * mean_r, 1e-6)
            return
        slope = sum((r - mean_r) * (t - mean_t) for r, t in self.samples) / var
        self.per_row = max(slope, 1e-6)  # noise can tilt a line downwards; rows are never free of cost
        self.base = max(mean_t - self.per_row * mean_r, 1e-6)
