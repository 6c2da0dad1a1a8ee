"""How often a drafter's token at each draft position is accepted: the numbers auto chooses by."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field

# Match lengths that start a new key: a drafter copying after a 20-token match is right far more often
# than after a 2-token one, and auto would waste rows (or miss tokens) treating the two alike.
MATCH_BOUNDS = (1, 2, 3, 4, 6, 8, 12, 20, 32)
POSITIONS = 16  # draft positions counted apart; later ones are never observed (DraftLength's k_max is 12)


def match_key(match_len: int) -> int:
    """0 for no (or an unknown) match, then one key per range of MATCH_BOUNDS."""
    return bisect_right(MATCH_BOUNDS, match_len)


@dataclass(slots=True)
class PositionAcceptance:
    """Per (key, position i): decayed counts of draft token i accepted, given the tokens before it were.

    The decay is per observation of a cell, so each estimate follows the text as it changes (prose, then a
    code block that repeats the prompt) instead of averaging over everything since the start."""

    positions: int  # draft positions tracked; later ones are never observed
    decay: float  # weight left to the old counts at each new observation
    cells: dict[tuple[int, int], tuple[float, float]] = field(default_factory=dict)  # -> (accepted, seen)

    def observe(self, key: int, matched: int, rejected: bool, start: int = 0) -> None:
        """A proposal whose tokens start..matched-1 were found right (the ones before were counted already);
        `rejected`: token `matched` was seen to be wrong (False: the proposal ran out, or the text has not
        got that far yet)."""
        for i in range(start, min(matched, self.positions)):
            self._add(key, i, 1.0)
        if rejected and matched < self.positions:
            self._add(key, matched, 0.0)

    def counts(self, key: int, i: int) -> tuple[float, float]:
        """(accepted, seen) at position i under key; (0, 0) when never observed."""
        return self.cells.get((key, i), (0.0, 0.0))

    def _add(self, key: int, i: int, accepted: float) -> None:
        a, s = self.cells.get((key, i), (0.0, 0.0))
        self.cells[(key, i)] = (a * self.decay + accepted, s * self.decay + 1.0)
