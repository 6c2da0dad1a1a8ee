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

Caches (`cache=`, Fast-dLLM's names):
- "none": every forward computes the whole text. The reference for what a cache saves.
- "prefix": the prompt and finished blocks are computed once per block and reused by its steps. Exact on a
  block-causal model (nothing they attend to changes: BlockCanvas's default; only rounding differs, as the
  text is computed block by block rather than in one forward); approximate on a bidirectional one, whose
  prefix would see the block change (FullCanvas computes it when the block opens).
- "dual": "prefix", and the masked suffix after the block too (approximate; a block-causal model attends to
  no suffix, so there it is "prefix").
Methods that verify (ssd) reproduce stepwise decoding with the same cache: the cached keys and values stay
fixed while a block is decoded, whatever the method.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from leapdecode.dllm.config import DLLM_CACHES as CACHES
from leapdecode.dllm.config import DiffusionConfig
from leapdecode.models.base import Segment
from leapdecode.models.llama import PACKED_MAX_ROWS, LlamaModel


class Canvas(Protocol):
    max_states: int  # candidate states one forward verifies, at most
    block: int  # positions of the block being decoded (adaptive blocks set it as each block opens)

    def open(self, committed: list[int] | None) -> Tensor: ...

    def logits(self, states: Tensor) -> Tensor: ...


class BlockCanvas:
    exact_caches = CACHES  # what the block sees never changes once committed

    def __init__(self, net: LlamaModel, cfg: DiffusionConfig, prompt: list[int], block: int, max_new: int,
                 cache: str = "prefix") -> None:
        self.net, self.cfg, self.block = net, cfg, block
        self.recompute, self.text = cache == "none", list(prompt)
        # Rows of one forward stay on one attention path (see llama.PACKED_MAX_ROWS), whatever their count.
        self.max_states = max(1, PACKED_MAX_ROWS // block) if block <= PACKED_MAX_ROWS else 8
        self.cache = net.new_cache(len(prompt) + max_new + max(2 * block, self.max_states * block))
        self.carry = self._prefill()  # the committed text's prediction of the next token (shifted models)

    def open(self, committed: list[int] | None) -> Tensor:
        """Commit the finished block (if any) and return the predictions [B, V] for a block of masks."""
        B, L = self.block, self.cache.length
        masks = torch.full((B,), self.cfg.mask_token_id)
        if self.recompute and committed:
            self.text += committed
            self.carry, L = self._prefill(), len(self.text)
        if not committed or self.recompute:
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
        if self.recompute:
            self.carry = self._prefill()
        L = self.cache.length
        out = self._run(states.reshape(-1), L, self._block_mask(L, R), R)
        return self._shift(out.view(R, B, -1))

    def _prefill(self) -> Tensor:
        """The committed text, computed causally into the cache (at the start; before every forward without
        a cache): its last position's output."""
        out = self.net.forward(torch.tensor([self.text]), 0, self.cache)[0]
        self.cache.length = len(self.text)
        return out[-1]

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
    cache) of its own, so its attention path depends on its own length only, as one state alone would.

    With a cache, the block's opening forward computes the whole sequence once and its keys and values are
    laid out for the block's steps: [prefix | suffix (dual) | rows the step computes]. A step computes the
    block (and, with "prefix", the suffix), from the row before the block on a shifted model."""

    max_states = 4
    exact_caches = ("none",)

    def __init__(self, net: LlamaModel, cfg: DiffusionConfig, prompt: list[int], block: int, max_new: int,
                 cache: str = "none") -> None:
        self.net, self.cfg, self.block, self.mode = net, cfg, block, cache
        self.prompt, self.answer = prompt, [cfg.mask_token_id] * max_new
        self.start = 0  # the current block's offset in the answer
        S = len(prompt) + max_new
        self.caches = [net.new_cache(S) for _ in range(self.max_states)]

    def open(self, committed: list[int] | None) -> Tensor:
        if committed:
            self.answer[self.start : self.start + len(committed)] = committed
            self.start += len(committed)
        masks = torch.full((1, self.block), self.cfg.mask_token_id)
        if self.mode == "none":
            return self.logits(masks)[0]
        out = self._whole(masks)[0]
        self._lay_out_caches()
        return out

    def logits(self, states: Tensor) -> Tensor:
        if self.mode == "none":
            return self._whole(states)
        lo, at, B = self._first_row(), self._at(), self.block
        suffix = len(self.answer) - self.start - B if self.mode == "dual" else 0
        segments = []
        for state, cache in zip(states.tolist(), self.caches):
            seq = self._sequence(state)[lo : at + B if self.mode == "dual" else None]
            start = lo + suffix  # the step's rows go after the cached prefix (and suffix)
            allowed = torch.ones(len(seq), start + len(seq), dtype=torch.bool)
            positions = torch.arange(lo, lo + len(seq)) if suffix else None
            segments.append(Segment(torch.tensor(seq), start, cache, allowed, positions))
        out = self.net.forward_packed(segments)
        assert out is not None
        return out.view(states.shape[0], -1, out.shape[-1])[:, :B]

    def _whole(self, states: Tensor) -> Tensor:
        """Every state's whole sequence computed afresh: [R, B, V]."""
        segments = []
        S = len(self.prompt) + len(self.answer)
        allowed = torch.ones(S, S, dtype=torch.bool)
        for state, cache in zip(states.tolist(), self.caches):
            segments.append(Segment(torch.tensor(self._sequence(state)), 0, cache, allowed))
        out = self.net.forward_packed(segments)
        assert out is not None
        lo = self._first_row()
        return out.view(states.shape[0], S, -1)[:, lo : lo + self.block]

    def _lay_out_caches(self) -> None:
        """After the opening forward (in caches[0], natural order): every state's cache gets the prefix, and
        with "dual" the suffix moved to follow it."""
        lo, end = self._first_row(), self._at() + self.block
        src = self.caches[0]
        for name in ("k", "v"):  # [layers, 1, heads, slots, head_dim]
            whole = getattr(src, name)
            prefix = whole[:, :, :, :lo].clone()
            suffix = whole[:, :, :, end : len(self.prompt) + len(self.answer)].clone()
            for cache in self.caches:
                mine = getattr(cache, name)
                if cache is not src:
                    mine[:, :, :, :lo] = prefix
                if self.mode == "dual":
                    mine[:, :, :, lo : lo + suffix.shape[3]] = suffix

    def _sequence(self, state: list[int]) -> list[int]:
        seq = self.prompt + self.answer
        at = self._at()
        seq[at : at + self.block] = state
        return seq

    def _at(self) -> int:
        return len(self.prompt) + self.start

    def _first_row(self) -> int:
        """The output row that predicts the block's first token."""
        return self._at() - (1 if self.cfg.shifted else 0)
