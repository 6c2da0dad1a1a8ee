"""Semi-autoregressive block decoding of a dLLM: blocks left to right, each filled by an Unmasker's
proposals, verified so that every lossless method ends where stepwise decoding would, token for token.

A proposal [f1, f2, ..., fk] is verified in one forward of the states s1 = s + f1, s2 = s1 + f2, ...: f1 is
the reference rule's own choice (from the logits in hand), and f(i+1) holds when the rule, run on s_i, picks
it. The step keeps s_a for the longest agreeing prefix and already holds s_a's logits for the next step, so a
miss costs no extra forward. A lossy method (fixed.py, threshold.py, early_commit.py, learned_filter.py, with
end_of_text.py) commits its fills as proposed, one forward per step.

The answer ends at its first end token once every position before it is filled: the text can no longer
change, so every method stops at the same state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from leapdecode.dllm.adaptive_block import BlockSizer
from leapdecode.dllm.canvas import Canvas
from leapdecode.dllm.unmasking import Fill, Unmasker, reference_fill
from leapdecode.types import GenerationStats


@dataclass
class BlockResult:
    tokens: list[int]
    ended: bool  # the answer's end token is in this block, everything before it filled


@dataclass
class Decoding:
    canvas: Canvas
    unmasker: Unmasker
    mask_id: int
    eos_ids: frozenset[int]
    stats: GenerationStats = field(default_factory=GenerationStats)
    on_block: Callable[[list[int]], bool] | None = None  # each finished block's tokens; False stops decoding

    sizer: BlockSizer | None = None  # adaptive block sizes (adaptive_block.py); None: the canvas's fixed one

    def run(self, max_new: int) -> list[int]:
        answer: list[int] = []
        committed: list[int] | None = None
        while len(answer) < max_new:
            logits = self._open(committed, max_new - len(answer))
            block = self.block(logits)
            answer += block.tokens
            if block.ended or self.on_block is not None and not self.on_block(block.tokens):
                break
            committed = block.tokens
        return answer

    def _open(self, committed: list[int] | None, room: int) -> Tensor:
        """The next block's first predictions; with a sizer, over a window that it then cuts to the block."""
        if self.sizer is None:
            return self._forward(lambda: self.canvas.open(committed))
        self.canvas.block = min(self.sizer.window, room)
        logits = self._forward(lambda: self.canvas.open(committed))
        self.canvas.block = self.sizer.size(logits, self.mask_id, room)
        return logits[: self.canvas.block]

    def block(self, logits: Tensor) -> BlockResult:
        state = torch.full((logits.shape[0],), self.mask_id)
        step = self._verify if self.unmasker.lossless else self._commit
        while True:
            fills = self.unmasker.propose(logits, state, self.mask_id, self.canvas.max_states)
            state, next_logits = step(state, fills)
            if next_logits is None:
                return self._result(state)
            logits = next_logits

    def _commit(self, state: Tensor, fills: list[Fill]) -> tuple[Tensor, Tensor | None]:
        """A lossy step: every fill as proposed; the new state's logits, or None when it is finished."""
        state = _successive(state, fills)[-1]  # nothing is verified: no draft to count
        if self._finished(state):
            return state, None
        return state, self._forward(lambda: self.canvas.logits(state[None]))[0]

    def _verify(self, state: Tensor, fills: list[Fill]) -> tuple[Tensor, Tensor | None]:
        """A lossless step: one forward of the successive states, the agreeing prefix kept (with its logits)."""
        states = _successive(state, fills)
        done = next((i for i, s in enumerate(states) if self._finished(s)), None)
        need = states[:done] if done is not None else states  # a finished state needs no logits of its own
        if not need:
            return states[0], None
        rows = self._forward(lambda: self.canvas.logits(torch.stack(need)))
        kept = self._agreeing(need, rows, fills)
        self.unmasker.verified(len(fills), kept)
        self.stats.count(len(fills) - 1, kept - 1, "", forwards=0)  # the forward is counted by _forward
        if done is not None and kept == done + 1:
            return states[done], None
        return need[kept - 1], rows[kept - 1]

    def _agreeing(self, states: list[Tensor], rows: Tensor, fills: list[Fill]) -> int:
        """How many fills hold: the first always; fill i+1 when the rule picks it on state i."""
        kept = 1
        while kept < len(fills) and kept <= len(states) and \
                reference_fill(rows[kept - 1], states[kept - 1], self.mask_id) == fills[kept]:
            kept += 1
        return kept

    def _finished(self, state: Tensor) -> bool:
        """No mask left, or an end token with every position before it filled."""
        masked = state == self.mask_id
        if not bool(masked.any()):
            return True
        first_mask = int(masked.nonzero()[0])
        return any(int(t) in self.eos_ids for t in state[:first_mask].tolist())

    def _result(self, state: Tensor) -> BlockResult:
        tokens = state.tolist()
        end = next((i for i, t in enumerate(tokens) if t in self.eos_ids and self.mask_id not in tokens[:i]), None)
        return BlockResult(tokens if end is None else tokens[:end], end is not None)

    def _forward(self, fn: Callable[[], Tensor]) -> Tensor:
        t0 = time.perf_counter()
        out = fn()
        self.stats.verify_seconds += time.perf_counter() - t0
        self.stats.target_forwards += 1
        return out


def _successive(state: Tensor, fills: list[Fill]) -> list[Tensor]:
    out, s = [], state
    for pos, tok in fills:
        s = s.clone()
        s[pos] = tok
        out.append(s)
    return out
