"""Where a dLLM's answer is painted: the forwards that give the current block's predictions.

Both canvases answer the same two questions for the block being decoded: open(previous block) -> the
predictions for a block of masks, and logits(states) -> the predictions for several candidate fillings of
the block at once (a lossless parallel method verifies its guesses with them). Row j of the result is the
distribution of block position j's token: the output one position earlier on a shifted model (Dream, ours),
at j itself otherwise (LLaDA).

- BlockCanvas (block-causal models): committed text sits in the KV cache, computed causally, exactly as
  it will always be; a forward runs only the block (the newly committed block rides along when a block opens).
- FullCanvas (bidirectional models: LLaDA, Dream): every forward runs prompt + answer, the positions not yet
  decoded as masks.
Both pack several states into one forward whose rows see only their own state; leapdecode's reduced
precision kernels give each row the numbers it would get alone, which is what makes verification exact.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from leapdecode.dllm.config import DiffusionConfig
from leapdecode.models.base import Segment
from leapdecode.models.llama import PACKED_MAX_ROWS, LlamaModel


class Canvas(Protocol):
    max_states: int  # candidate states one forward verifies, at most

    def open(self, committed: list[int] | None) -> Tensor: ...

    def logits(self, states: Tensor) -> Tensor: ...


class BlockCanvas:
    def __init__(self, net: LlamaModel, cfg: DiffusionConfig, prompt: list[int], block: int, max_new: int) -> None:
        self.net, self.cfg, self.block = net, cfg, block
        # Rows of one forward stay on one attention path (see llama.PACKED_MAX_ROWS), whatever their count.
        self.max_states = max(1, PACKED_MAX_ROWS // block) if block <= PACKED_MAX_ROWS else 8
        self.cache = net.new_cache(len(prompt) + max_new + max(2 * block, self.max_states * block))
        out = net.forward(torch.tensor([prompt]), 0, self.cache)[0]
        self.cache.length = len(prompt)
        self.carry = out[-1]  # the committed text's prediction of the next token (shifted models)
        self.last_committed: Tensor | None = None

    def open(self, committed: list[int] | None) -> Tensor:
        """Commit the finished block (if any) and return the predictions [B, V] for a block of masks."""
        B, L = self.block, self.cache.length
        masks = torch.full((B,), self.cfg.mask_token_id)
        if not committed:
            return self._shift(self._run(masks, L, self._block_mask(L, 1))[None])[0]
        n = len(committed)
        tokens = torch.cat([torch.tensor(committed), masks])
        allowed = torch.zeros(n + B, L + n + B, dtype=torch.bool)
        allowed[:n, : L + n] = torch.ones(n, L + n, dtype=torch.bool).tril(L)  # committed: causal
        allowed[n:, :] = True  # the block: the cache, the committed block and itself
        out = self._run(tokens, L, allowed)
        self.cache.length = L + n
        self.carry = out[n - 1]
        return self._shift(out[n:][None])[0]

    def logits(self, states: Tensor) -> Tensor:
        """states [R, B] -> predictions [R, B, V], each state seeing the committed text and itself."""
        R, B = states.shape
        L = self.cache.length
        out = self._run(states.reshape(-1), L, self._block_mask(L, R), R)
        return self._shift(out.view(R, B, -1))

    def _block_mask(self, L: int, R: int) -> Tensor:
        B = self.block
        allowed = torch.zeros(R * B, L + R * B, dtype=torch.bool)
        allowed[:, :L] = True
        for r in range(R):
            allowed[r * B : (r + 1) * B, L + r * B : L + (r + 1) * B] = True
        return allowed

    def _run(self, tokens: Tensor, L: int, allowed: Tensor, repeat: int = 1) -> Tensor:
        T = tokens.shape[0] // repeat
        pos = torch.arange(L, L + T).repeat(repeat) if repeat > 1 else None  # None: L, L+1, ...
        out = self.net.forward_packed([Segment(tokens, L, self.cache, allowed, pos)])
        assert out is not None
        return out

    def _shift(self, out: Tensor) -> Tensor:
        if not self.cfg.shifted:
            return out
        carry = self.carry.expand(out.shape[0], 1, -1)
        return torch.cat([carry, out[:, :-1]], dim=1)


class FullCanvas:
    """Bidirectional models: a state is the whole answer, each row a whole sequence in a segment (and scratch
    cache) of its own, so its attention path depends on its own length only, as one state alone would."""

    max_states = 4

    def __init__(self, net: LlamaModel, cfg: DiffusionConfig, prompt: list[int], block: int, max_new: int) -> None:
        self.net, self.cfg, self.block = net, cfg, block
        self.prompt, self.answer = prompt, [cfg.mask_token_id] * max_new
        self.start = 0  # the current block's offset in the answer
        S = len(prompt) + max_new
        self.caches = [net.new_cache(S) for _ in range(self.max_states)]
        self.allowed = torch.ones(S, S, dtype=torch.bool)

    def open(self, committed: list[int] | None) -> Tensor:
        if committed:
            self.answer[self.start : self.start + len(committed)] = committed
            self.start += len(committed)
        return self.logits(torch.full((1, self.block), self.cfg.mask_token_id))[0]

    def logits(self, states: Tensor) -> Tensor:
        R, B = states.shape
        at = len(self.prompt) + self.start
        segments = []
        for state, cache in zip(states.tolist(), self.caches):
            seq = self.prompt + self.answer
            seq[at : at + B] = state
            segments.append(Segment(torch.tensor(seq), 0, cache, self.allowed))
        out = self.net.forward_packed(segments)
        assert out is not None
        S = len(self.prompt) + len(self.answer)
        first = at - (1 if self.cfg.shifted else 0)
        return out.view(R, S, -1)[:, first : first + B]
