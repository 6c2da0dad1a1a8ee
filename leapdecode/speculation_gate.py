"""Whether speculating pays at a batch size, from whole steps timed both ways.

The draft planner trims drafts by what their rows cost the forward. What it cannot see is the rest of a
speculative step: every request's drafter proposing, the masks, verification, the drafters' bookkeeping.
With many requests on few cores that can outweigh what the drafts win. So per batch size the gate times
whole steps (propose to settle) with speculation on and with it off, keeps the way that yields more tokens
per second, and looks at the other way for a few steps now and then, since load and text change what pays.
Either way the output is the same: off only means the step verifies no draft.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TRY_STEPS = 8  # steps each way before either is trusted, and the length of each later look at the other way
LOOK_EVERY = 128  # steps between looks at the way that is losing
DECAY = 0.98  # a step's weight in its way's rate fades over about fifty steps of that way


@dataclass(slots=True)
class _Rate:
    """Tokens per second of one way, recent steps weighing most."""

    tokens: float = 0.0
    seconds: float = 0.0
    steps: int = 0

    def observe(self, tokens: int, seconds: float) -> None:
        self.tokens = DECAY * self.tokens + tokens
        self.seconds = DECAY * self.seconds + seconds
        self.steps += 1

    @property
    def value(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass(slots=True)
class _Bucket:
    on: _Rate = field(default_factory=_Rate)
    off: _Rate = field(default_factory=_Rate)
    steps: int = 0  # decided steps
    looking: int = 0  # steps left of a look at the losing way


class SpeculationGate:
    """speculate(batch) before a step, observe(...) after it."""

    def __init__(self) -> None:
        self._buckets: dict[int, _Bucket] = {}

    def speculate(self, batch: int) -> bool:
        b = self._buckets.setdefault(batch, _Bucket())
        if b.on.steps < TRY_STEPS:
            return True
        if b.off.steps < TRY_STEPS:
            return False
        winner = b.on.value >= b.off.value
        b.steps += 1
        if b.steps % LOOK_EVERY == 0:
            b.looking = TRY_STEPS
        if b.looking:
            b.looking -= 1
            return not winner
        return winner

    def observe(self, batch: int, speculated: bool, tokens: int, seconds: float) -> None:
        """A step of `batch` requests, with speculation on or off, yielded `tokens` in `seconds`."""
        b = self._buckets.setdefault(batch, _Bucket())
        (b.on if speculated else b.off).observe(tokens, seconds)

    def rates(self, batch: int) -> tuple[float, float]:
        """(on, off) tokens per second measured at this batch size so far; 0 for a way not yet tried."""
        b = self._buckets.get(batch, _Bucket())
        return b.on.value, b.off.value
