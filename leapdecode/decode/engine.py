"""The decode loop for one sequence: propose -> verify in one forward -> accept -> roll back -> commit."""

from __future__ import annotations

import time

import torch
from torch import Tensor

from leapdecode.decode.layout import segment_layout
from leapdecode.decode.logprobs import TokenLogprob, emitted_rows, token_logprobs
from leapdecode.decode.sampling import PositionRng, target_probs
from leapdecode.decode.tree import MAX_NODES, TREES_REFUSED, TokenTree
from leapdecode.decode.verify import accept_greedy, verify_sampling
from leapdecode.drafters.base import Drafter
from leapdecode.errors import InvalidRequest
from leapdecode.grammar.constraint import Constraint
from leapdecode.models.base import CausalLM, Segment
from leapdecode.policy.speculation import RequestPolicy
from leapdecode.types import Draft, GenerationStats, SamplingParams, SeqView, Verdict


class Engine:
    """Owns one sequence's tokens, KV cache, RNG and speculation policy. The drafter is opaque to it.
    constraint: structured output's grammar, which masks every verified row and trims every draft."""

    def __init__(self, model: CausalLM, drafter: Drafter, prompt_ids: list[int], params: SamplingParams,
                 policy: RequestPolicy, capacity: int, *, rng: PositionRng | None = None,
                 constraint: Constraint | None = None, logprobs: int | None = None) -> None:
        self.model, self.drafter, self.params, self.policy = model, drafter, params, policy
        self.constraint = constraint
        self.top_logprobs = logprobs  # None: none; n: each emitted token's log-probability and n alternatives
        self.logprobs: list[TokenLogprob] = []
        self.tokens = list(prompt_ids)
        self.cache = model.new_cache(capacity)
        self.view = SeqView(tokens=self.tokens, prompt_len=len(prompt_ids), cache=self.cache)
        self.rng = rng if rng is not None else PositionRng.for_seed(params.seed)
        self.stats = GenerationStats()
        self._prefill()

    @property
    def wants_features(self) -> bool:
        """Whether the drafter reads the target's features: its forwards must return them."""
        return self.drafter.reads_features

    def _prefill(self) -> None:
        """Cache every prompt token but the last, which the first step feeds with its draft."""
        n = len(self.tokens) - 1
        if n > 0:
            segment = Segment(torch.tensor(self.tokens[:n]), 0, self.cache)
            if self.drafter.reads_features:
                self.drafter.see_features(self.view, 0, self.model.forward_features([segment], logits=False)[1])
            else:
                self.model.forward_packed([segment], logits=False)
        self.cache.rollback(n)

    def step(self, budget: int) -> list[int]:
        """One target forward; returns the tokens it yields (at least one). budget caps the draft length."""
        draft = self.propose(budget)
        start = time.perf_counter()
        logits, features = forward_batch(self.model, [self.segment(draft)], self.wants_features)
        seconds = time.perf_counter() - start
        self.policy.forward_took(draft.rows, seconds)
        return self.settle(draft, logits, seconds, features)

    def propose(self, budget: int) -> Draft:
        """The drafter's guess, at most min(draft length, budget) tokens (a tree: nodes) and never past the
        cache. A tree is cut to MAX_NODES, its best nodes; extra rows that would not fit in the cache (near
        the end of a request) are left out."""
        k = self.draft_k(budget)
        if k <= 0:
            return Draft.empty()
        start = time.perf_counter()
        draft = self.drafter.propose(self.view, k)
        return self.took(draft, time.perf_counter() - start)

    def draft_k(self, budget: int) -> int:
        """How many tokens the drafter may propose this step: the draft length, the budget, the cache's room."""
        return min(self.policy.draft_k(budget), self._room())

    def took(self, draft: Draft, seconds: float) -> Draft:
        """A draft made for this sequence in `seconds` (propose's own, or its share of a batch's drafting),
        shaped to what the cache and the model can take."""
        self.stats.draft_seconds += seconds
        if draft.is_tree:
            if not self.model.token_trees:  # a drafter that trees without the tree option, on a model that cannot
                raise InvalidRequest(TREES_REFUSED)
            draft = draft.prefix(MAX_NODES)
        if self.constraint is not None:
            draft = self.constraint.allowed(draft)
        return draft if draft.rows <= self._room() + 1 else draft.without_extra()

    def _room(self) -> int:
        """Draft tokens the cache can still take beside the pending token."""
        return self.cache.max_len - self.cache.length - 1

    def fed(self, draft: Draft) -> Tensor:
        """What the target reads this step: the pending last token, the draft, its extra rows. [rows] int64"""
        extra = [draft.extra.tokens] if draft.extra is not None else []
        return torch.cat([torch.tensor(self.tokens[-1:]), draft.tokens, *extra])

    def segment(self, draft: Draft) -> Segment:
        """This sequence's share of a batched forward (see Scheduler). A tree's rows see only their
        ancestors and extra rows what they mark, each at its own position (layout.py); a plain chain keeps
        the causal default."""
        start = self.cache.length
        return Segment(self.fed(draft), start, self.cache, *segment_layout(draft, start))

    def settle(self, draft: Draft, logits: Tensor, forward_seconds: float = 0.0,
               features: Tensor | None = None) -> list[int]:
        """Verify the draft against the target's logits [rows, V], keep what passed; the tokens yielded.
        forward_seconds: what the forward that produced the logits took (a batch's whole forward).
        features [rows, dim]: the target's features at the same rows, for a drafter that reads them.

        A drafter that observes is shown the target's argmax at every fed row first (predicted[0]: after
        the pending token, predicted[i+1]: after draft token i)."""
        start = time.perf_counter()  # no sync needed: verification reads the logits, which waits for them
        raw = logits
        if self.constraint is not None and not self.params.greedy:  # greedy masks only the rows it must
            logits = self.constraint.mask(draft, logits)
        predicted = self._predicted(draft, logits)
        verdict = self._verify(draft, logits, predicted)
        if self.top_logprobs is not None:
            self.logprobs += token_logprobs(raw, emitted_rows(draft, verdict), verdict.tokens, self.top_logprobs)
        if self.drafter.observes:  # before commit, so the drafter's commit can use what it saw
            self.drafter.observe(self.view, draft, predicted)
        if self.drafter.reads_features and features is not None:  # the committed rows, in order
            rows = features[[0, *(1 + node for node in verdict.path)]] if draft.is_tree else features
            self.drafter.see_features(self.view, len(self.tokens) - 1, rows)
        self.stats.verify_seconds += forward_seconds + time.perf_counter() - start
        self._accept(draft, verdict)
        return verdict.tokens

    def _predicted(self, draft: Draft, logits: Tensor) -> list[int] | None:
        """The target's argmax at every fed row: greedy verification reads it, and so does an observing
        drafter. One host sync, taken only when someone reads it. Under a constraint, the masked argmax."""
        if self.constraint is not None and self.params.greedy:
            return self.constraint.argmax(draft, logits)
        if self.params.greedy or self.drafter.observes:
            return logits.argmax(dim=-1).tolist()
        return None

    def _verify(self, draft: Draft, logits: Tensor, predicted: list[int] | None) -> Verdict:
        if self.params.greedy:
            return accept_greedy(draft, predicted)
        gens = [self.rng.at(len(self.tokens) + d) for d in range(_depth(draft) + 1)]  # the positions verified
        return verify_sampling(draft, target_probs(logits[: len(draft) + 1], self.params), gens)

    def _accept(self, draft: Draft, verdict: Verdict) -> None:
        # KV is valid for the fed last token and the accepted drafts; the rest is rolled back.
        if draft.is_tree:  # the accepted nodes need not be the first ones: move them there
            self.cache.keep_path(self.cache.length, verdict.path)
        else:
            self.cache.rollback(self.cache.length + 1 + verdict.accepted)
        self.tokens.extend(verdict.tokens)
        if self.constraint is not None:
            self.constraint.advance(verdict.tokens)
            self.stats.grammar_seconds = self.constraint.seconds
            self.stats.grammar_forced = self.constraint.forced_accepted
        start = time.perf_counter()
        self.drafter.commit(self.view, verdict.accepted)
        self.stats.draft_seconds += time.perf_counter() - start
        depth = _depth(draft)
        self.policy.verified(depth, verdict.accepted)  # a tree was fully right at its full depth
        self.stats.count(len(draft), verdict.accepted, draft.arm, depth)


def forward_batch(model: CausalLM, segments: list[Segment], features: bool) -> tuple[Tensor, Tensor | None]:
    """Logits [sum T, V] of one packed forward, and the features [sum T, dim] where a drafter reads them."""
    if features:
        return model.forward_features(segments)  # type: ignore[no-any-return]
    return model.forward_packed(segments), None


def _depth(draft: Draft) -> int:
    """The most tokens a draft can get accepted: a chain's length, a tree's longest path."""
    return TokenTree.of(draft.parents).max_depth if draft.is_tree else len(draft)
