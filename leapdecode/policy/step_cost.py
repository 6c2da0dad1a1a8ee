"""What one batched target forward costs, learned from the forwards the server actually runs."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from statistics import median


@dataclass(slots=True)
class StepCost:
    """seconds(rows) ~ base + per_row * rows, a least-squares line over the most recent forwards.

    On a CPU a few extra rows are nearly free while the step is bound by reading the weights, and cost
    real arithmetic once it is not; the line is refitted as the batch moves, so it describes the rows
    the server is using now (a fixed table would be wrong on the next machine)."""

    base: float = 0.010  # seconds; a prior until measured
    per_row: float = 0.001
    window: int = 64
    # Fit the median time of each row count instead of every sample: one stalled forward (the OS, a
    # collection) then moves nothing, where it would tilt a plain least-squares line for the whole window.
    robust: bool = False
    refit_every: int = 1  # observations between refits (a caller timing every step of one request batches them)
    samples: deque[tuple[int, float]] = field(default_factory=deque)
    last: float = 0.0  # seconds of the latest observation
    _since_fit: int = field(default=0, init=False, repr=False)

    def observe(self, rows: int, seconds: float) -> None:
        self.last = seconds
        self.samples.append((rows, seconds))
        if len(self.samples) > self.window:
            self.samples.popleft()
        self._since_fit += 1
        if self._since_fit >= self.refit_every or len(self.samples) < self.refit_every:
            self._since_fit = 0
            self._fit()

    def seconds(self, rows: int) -> float:
        return self.base + self.per_row * rows

    def _points(self) -> list[tuple[int, float, int]]:
        """(rows, seconds, weight): every sample, or each row count's median weighted by its samples."""
        if not self.robust:
            return [(r, t, 1) for r, t in self.samples]
        by_rows: dict[int, list[float]] = {}
        for r, t in self.samples:
            by_rows.setdefault(r, []).append(t)
        return [(r, median(ts), len(ts)) for r, ts in by_rows.items()]

    def _fit(self) -> None:
        points = self._points()
        n = sum(w for _, _, w in points)
        mean_r = sum(r * w for r, _, w in points) / n
        mean_t = sum(t * w for _, t, w in points) / n
        var = sum(w * (r - mean_r) ** 2 for r, _, w in points)
        if var < 1e-9:  # every sample at one size: keep the slope, move the line through them
            self.base = max(mean_t - self.per_row * mean_r, 1e-6)
            return
        slope = sum(w * (r - mean_r) * (t - mean_t) for r, t, w in points) / var
        self.per_row = max(slope, 1e-6)  # noise can tilt a line downwards; rows are never free of cost
        self.base = max(mean_t - self.per_row * mean_r, 1e-6)
