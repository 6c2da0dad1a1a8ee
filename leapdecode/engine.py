"""The decode loop for one sequence: propose -> verify in one forward -> accept -> roll back -> commit."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from leapdecode.draft_length import DraftLength
from leapdecode.drafters.base import Drafter
from leapdecode.models.base import Segment
from leapdecode.sampling import PositionRng, target_probs
from leapdecode.types import Draft, GenerationStats, SamplingParams, SeqView, Verdict
from leapdecode.verify import verify_greedy, verify_sampling


class Engine:
    """Owns one sequence's tokens, KV cache, RNG and draft length. The drafter is opaque to it."""

    def __init__(self, model: Any, drafter: Drafter, prompt_ids: list[int], params: SamplingParams,
                 draft_length: DraftLength, capacity: int, *, rng: PositionRng | None = None) -> None:
        self.model, self.drafter, self.params, self.draft_length = model, drafter, params, draft_length
        self.tokens = list(prompt_ids)
        self.cache = model.new_cache(capacity)
        self.view = SeqView(tokens=self.tokens, prompt_len=len(prompt_ids), cache=self.cache)
        self.rng = rng if rng is not None else PositionRng.for_seed(params.seed)
        self.stats = GenerationStats()
        self._prefill()

    def _prefill(self) -> None:
        """Cache every prompt token but the last, which the first step feeds with its draft."""
        n = len(self.tokens) - 1
        if n > 0:
            self.model.forward(torch.tensor([self.tokens[:n]]), 0, self.cache, logits=False)
        self.cache.rollback(n)

    def step(self, budget: int) -> list[int]:
        """One target forward; returns the tokens it yields (at least one). budget caps the draft length."""
        draft = self.propose(budget)
        start = time.perf_counter()
        logits = self.model.forward(self.fed(draft)[None], self.cache.length, self.cache)[0]
        return self.settle(draft, logits, time.perf_counter() - start)

    def propose(self, budget: int) -> Draft:
        """The drafter's guess, at most min(draft length, budget) tokens and never past the cache."""
        room = self.cache.max_len - self.cache.length - 1
        k = min(self.draft_length.k, budget, room)
        if k <= 0:
            return Draft.empty()
        start = time.perf_counter()
        draft = self.drafter.propose(self.view, k)
        self.stats.draft_seconds += time.perf_counter() - start
        return draft

    def fed(self, draft: Draft) -> Tensor:
        """What the target reads this step: the pending last token, then the draft. [k+1] int64"""
        return torch.cat([torch.tensor(self.tokens[-1:]), draft.tokens])

    def segment(self, draft: Draft) -> Segment:
        """This sequence's share of a batched forward (see Scheduler)."""
        return Segment(self.fed(draft), self.cache.length, self.cache)

    def settle(self, draft: Draft, logits: Tensor, forward_seconds: float = 0.0) -> list[int]:
        """Verify the draft against the target's logits [k+1, V], keep what passed; the tokens yielded.
        forward_seconds: what the forward that produced the logits took (a batch's whole forward)."""
        start = time.perf_counter()  # no sync needed: verification reads the logits, which waits for them
        verdict = self._verify(draft, logits)
        self.stats.verify_seconds += forward_seconds + time.perf_counter() - start
        self._accept(draft, verdict)
        return verdict.tokens

    def _verify(self, draft: Draft, logits: Tensor) -> Verdict:
        if self.params.greedy:
            return verify_greedy(draft, logits)
        gens = [self.rng.at(len(self.tokens) + i) for i in range(len(draft) + 1)]  # the positions verified
        return verify_sampling(draft, target_probs(logits, self.params), gens)

    def _accept(self, draft: Draft, verdict: Verdict) -> None:
        # KV is valid for the fed last token and the accepted drafts; the rest is rolled back.
        self.cache.rollback(self.cache.length + 1 + verdict.accepted)
        self.tokens.extend(verdict.tokens)
        start = time.perf_counter()
        self.drafter.commit(self.view, verdict.accepted)
        self.stats.draft_seconds += time.perf_counter() - start
        self.draft_length.update(len(draft), verdict.accepted)
        self.stats.count(len(draft), verdict.accepted, draft.arm)
