"""The decode loop for one sequence: propose -> verify in one forward -> accept -> roll back -> commit."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from leapdecode.draft_length import DraftLength
from leapdecode.drafters.base import Drafter
from leapdecode.models.base import Segment
from leapdecode.sampling import PositionRng, target_probs
from leapdecode.errors import InvalidRequest
from leapdecode.tree import MAX_NODES, TREES_REFUSED, TokenTree
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
        if draft.is_tree:  # a mask and positions of its own
            logits = self.model.forward_packed([self.segment(draft)])
        else:
            logits = self.model.forward(self.fed(draft)[None], self.cache.length, self.cache)[0]
        return self.settle(draft, logits)

    def propose(self, budget: int) -> Draft:
        """The drafter's guess, at most min(draft length, budget) tokens (a tree: nodes) and never past the
        cache. A tree is cut to MAX_NODES, its best nodes."""
        room = self.cache.max_len - self.cache.length - 1
        k = min(self.draft_length.k, budget, room)
        draft = self.drafter.propose(self.view, k) if k > 0 else Draft.empty()
        if not draft.is_tree:
            return draft
        if not self.model.token_trees:  # a drafter that trees without the tree option, on a model that cannot
            raise InvalidRequest(TREES_REFUSED)
        return draft.prefix(MAX_NODES)

    def fed(self, draft: Draft) -> Tensor:
        """What the target reads this step: the pending last token, then the draft. [k+1] int64"""
        return torch.cat([torch.tensor(self.tokens[-1:]), draft.tokens])

    def segment(self, draft: Draft) -> Segment:
        """This sequence's share of a batched forward (see Scheduler). A tree's rows see only their
        ancestors and sit at their depth's position (tree.py); a chain keeps the plain causal default."""
        start = self.cache.length
        if not draft.is_tree:
            return Segment(self.fed(draft), start, self.cache)
        tree = TokenTree.of(draft.parents)
        return Segment(self.fed(draft), start, self.cache, tree.mask(start), tree.positions(start))

    def settle(self, draft: Draft, logits: Tensor) -> list[int]:
        """Verify the draft against the target's logits [k+1, V], keep what passed; the tokens yielded."""
        verdict = self._verify(draft, logits)
        self._accept(draft, verdict)
        return verdict.tokens

    def _verify(self, draft: Draft, logits: Tensor) -> Verdict:
        if self.params.greedy:
            return verify_greedy(draft, logits)
        gens = [self.rng.at(len(self.tokens) + d) for d in range(_depth(draft) + 1)]  # the positions verified
        return verify_sampling(draft, target_probs(logits, self.params), gens)

    def _accept(self, draft: Draft, verdict: Verdict) -> None:
        # KV is valid for the fed last token and the accepted drafts; the rest is rolled back.
        if draft.is_tree:  # the accepted nodes need not be the first ones: move them there
            self.cache.keep_path(self.cache.length, verdict.path)
        else:
            self.cache.rollback(self.cache.length + 1 + verdict.accepted)
        self.tokens.extend(verdict.tokens)
        self.drafter.commit(self.view, verdict.accepted)
        self.draft_length.update(_depth(draft), verdict.accepted)  # a tree was fully right at its full depth
        self.stats.target_forwards += 1
        self.stats.drafted += len(draft)
        self.stats.accepted += verdict.accepted


def _depth(draft: Draft) -> int:
    """The most tokens a draft can get accepted: a chain's length, a tree's longest path."""
    return TokenTree.of(draft.parents).max_depth if draft.is_tree else len(draft)
