"""Whether speculating pays at a batch size, from whole steps timed both ways.

The draft planner trims drafts by what their rows cost the forward. What it cannot see is the rest of a
speculative step: every request's drafter proposing, the masks, verification, the drafters' bookkeeping.
With many requests on few cores that can outweigh what the drafts win. So per batch size the gate times
whole steps (propose to settle) with speculation on and with it off, keeps the way that yields more tokens
per second, and looks at the other way for a few steps now and then, since load and text change what pays.
Each new batch size tries plain steps first, then speculative ones, and stops a speculative trial that is
hopeless after two steps; sizes already judged tell the ones beyond them (speculation that lost at a
smaller batch is not tried at a larger one). A look is cut short the same way, and each look that finds
the verdict standing puts the next one twice as far off. Either way the output is the same: off only means the step
verifies no draft.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from statistics import median

TRY_STEPS = 8  # steps each way before either is trusted, and the length of each later look at the other way
EARLY_STEPS = 2  # speculative steps of a trial after which a hopeless one stops
HOPELESS = 0.7  # ... hopeless: at under this fraction of the plain steps' rate
LOOK_EVERY = 128  # steps between looks at the way that is losing, at first
MAX_EVERY = 1024  # ... and at most, after looks that found it still losing
WINDOW = 64  # the latest steps of a way that its rate is read from
STALL = 3.0  # a step this many times slower than the way's median step is a stall (a first call, a page fault,
# the machine busy elsewhere), not what the way costs: it is left out of the rate


@dataclass(slots=True)
class _Rate:
    """Tokens per second of one way over its latest steps, stalls left out."""

    steps: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=WINDOW))  # (tokens, seconds)
    seen: int = 0

    def observe(self, tokens: int, seconds: float) -> None:
        self.steps.append((tokens, seconds))
        self.seen += 1

    @property
    def value(self) -> float:
        if not self.steps:
            return 0.0
        cap = STALL * median(s for _, s in self.steps)
        kept = [(n, s) for n, s in self.steps if s <= cap]
        seconds = sum(s for _, s in kept)
        return sum(n for n, _ in kept) / seconds if seconds > 0 else 0.0


@dataclass(slots=True)
class _Look:
    """A few steps the losing way, to see whether it still loses."""

    verdict: bool  # the way that was winning when the look began (speculation on or off)
    left: int = TRY_STEPS
    rate: _Rate = field(default_factory=_Rate)  # the look's own steps

    @property
    def way(self) -> bool:
        """The way looked at: the one that was losing."""
        return not self.verdict


@dataclass(slots=True)
class _Bucket:
    on: _Rate = field(default_factory=_Rate)
    off: _Rate = field(default_factory=_Rate)
    steps: int = 0  # decided steps since the last look
    every: int = LOOK_EVERY  # decided steps between looks: doubles each time a look confirms the verdict
    look: _Look | None = None


def _far_behind(rate: _Rate, other: _Rate) -> bool:
    """A few steps of one way already far slower than the other: the rule that cuts a trial or a look short.
    A costly drafter (a model drafting for each of many requests) can take several plain steps' time per
    step, so running the full trial or look would cost more than the answer is worth."""
    return rate.seen >= EARLY_STEPS and rate.value < HOPELESS * other.value


def _hopeless(b: _Bucket) -> bool:
    """A trial of speculation cut short, once plain steps have set the bar."""
    return b.off.seen >= TRY_STEPS and _far_behind(b.on, b.off)


def _judged(b: _Bucket) -> bool:
    """Both ways tried at this batch size (speculation perhaps cut short): its rates can be compared."""
    return b.off.seen >= TRY_STEPS and (b.on.seen >= TRY_STEPS or _hopeless(b))


def _end_look(b: _Bucket, winner: bool) -> None:
    """A look that confirmed the verdict puts the next one twice as far off (up to MAX_EVERY); one that
    overturned it, back to LOOK_EVERY."""
    b.every = min(2 * b.every, MAX_EVERY) if winner == b.look.verdict else LOOK_EVERY
    b.look, b.steps = None, 0


class SpeculationGate:
    """speculate(batch) before a step, observe(...) after it; only steps where some request drafts count."""

    def __init__(self) -> None:
        self._buckets: dict[int, _Bucket] = {}

    def speculate(self, batch: int) -> bool:
        b = self._buckets.setdefault(batch, _Bucket())
        told = self._told(batch)
        if b.off.seen < TRY_STEPS and told is not True:  # the cheap way first: it sets the bar
            return False
        if b.on.seen < TRY_STEPS and told is not False and not _hopeless(b):
            return True
        winner = b.on.value >= b.off.value if _judged(b) or told is None else told
        if b.look is None:
            b.steps += 1
            if b.steps >= b.every:
                b.look = _Look(verdict=winner)
        if b.look is not None:
            if b.look.left and not _far_behind(b.look.rate, b.on if b.look.verdict else b.off):
                b.look.left -= 1
                return b.look.way
            _end_look(b, winner)
        return winner

    def _told(self, batch: int) -> bool | None:
        """What the batch sizes already judged say of this one: speculation that lost at a smaller batch
        loses at this one too, and speculation that won at a larger batch wins here too (rows and drafts
        only grow dearer with the batch). None: they say nothing, so try both ways."""
        judged = {n: b.on.value >= b.off.value for n, b in self._buckets.items() if _judged(b) and n != batch}
        if any(not on for n, on in judged.items() if n < batch):
            return False
        if any(on for n, on in judged.items() if n > batch):
            return True
        return None

    def observe(self, batch: int, speculated: bool, tokens: int, seconds: float) -> None:
        """A step of `batch` requests, with speculation on or off, yielded `tokens` in `seconds`."""
        b = self._buckets.setdefault(batch, _Bucket())
        (b.on if speculated else b.off).observe(tokens, seconds)
        if b.look is not None and b.look.way == speculated:
            b.look.rate.observe(tokens, seconds)

    def rates(self, batch: int) -> tuple[float, float]:
        """(on, off) tokens per second measured at this batch size so far; 0 for a way not yet tried."""
        b = self._buckets.get(batch, _Bucket())
        return b.on.value, b.off.value
