"""Lookahead decoding's 2D window of Jacobi trajectories, iterated by the target beside verification."""

from __future__ import annotations

import torch

from leapdecode.types import ExtraRows

Cell = tuple[int, int]  # (level, column)


class LookaheadWindow:
    """`width` columns by `levels` (n - 1) levels of guesses (Fu et al. 2024, "Break the Sequential
    Dependency of LLM Inference Using Lookahead Decoding").

    Cell (l, c) guesses the token at position p + c + l, p being the pending token's; cell (0, 0) is the
    pending token itself, fed as row 0 anyway. A cell sees level 0 up to its own column and its own column
    on the levels up to its own: the pending token, (0, 1) .. (0, c), (1, c) .. (l, c), one token per
    position, so its prediction for position p + c + l + 1 is a Jacobi step along that chain. Each column
    (0, c) .. (n-2, c) plus the top cell's prediction is an n-gram of one trajectory: the harvest for the
    pool. The window then moves one position on, however many tokens were accepted (as the paper's code
    does): level 0 drops out, the top level's predictions become the new top level.

    Filling up (the first n - 2 steps) a level is added each step instead, from the top level's
    predictions, and every level drops its first column; level 0 starts n - 2 columns wider, so the
    window ends `width` wide.
    """

    def __init__(self, width: int, levels: int, guesses: list[int]) -> None:
        """guesses: width + levels - 2 starting tokens for level 0's columns 1.. (from the prompt)."""
        if len(guesses) != width + levels - 2:
            raise ValueError(f"a {width}x{levels} window starts from {width + levels - 2} guesses, got {len(guesses)}")
        self.width, self.levels = width, levels
        self.grid: list[list[int]] = [[-1, *guesses]]  # [level][column]; (0, 0) is the pending token

    @property
    def full(self) -> bool:
        return len(self.grid) == self.levels

    @staticmethod
    def max_rows(width: int, levels: int) -> int:
        """The most extra rows the window ever feeds, filling up included."""
        return max(_rows(width + levels - 1 - s, s + 1) for s in range(levels))

    def cells(self) -> list[Cell]:
        """Every cell but the pending token, in the order they are fed: level by level, column by column."""
        w = len(self.grid[0])
        return [(0, c) for c in range(1, w)] + [(lv, c) for lv in range(1, len(self.grid)) for c in range(w)]

    def rows(self) -> ExtraRows:
        """The window as extra rows of a verify forward."""
        cells = self.cells()
        sees = torch.zeros(len(cells), len(cells), dtype=torch.bool)
        for i, (lv, c) in enumerate(cells):
            for j, (lv2, c2) in enumerate(cells):
                sees[i, j] = (lv2 == 0 and c2 <= c) or (c2 == c and 1 <= lv2 <= lv)
        return ExtraRows(tokens=torch.tensor([self.grid[lv][c] for lv, c in cells], dtype=torch.long),  # [E]
                         offsets=torch.tensor([c + lv for lv, c in cells], dtype=torch.long),  # [E]
                         sees=sees)  # [E, E]

    def advance(self, pending: int, predicted: list[int]) -> list[tuple[int, ...]]:
        """predicted: the target's argmax after the pending token, then after each cell in feed order.
        Moves the window one position on; returns the n-grams harvested (none while filling up)."""
        w = len(self.grid[0])
        top = len(self.grid) - 1
        after = {cell: predicted[1 + i] for i, cell in enumerate(self.cells())} | {(0, 0): predicted[0]}
        outputs = [after[(top, c)] for c in range(w)]  # the next iterate of the level above the top
        if not self.full:
            self.grid = [level[1:] for level in self.grid] + [outputs[1:]]
            return []
        self.grid[0][0] = pending
        grams = [tuple(level[c] for level in self.grid) + (outputs[c],) for c in range(w)]
        self.grid = self.grid[1:] + [outputs]
        return grams


def _rows(width: int, levels: int) -> int:
    return width - 1 + (levels - 1) * width
