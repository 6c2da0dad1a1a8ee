"""One generation in progress: its engine, what it has produced, and when it is done. `generate` and
`stream` drive one by itself; the scheduler drives many in one batch."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from torch import Tensor

from leapdecode.decode.engine import Engine
from leapdecode.decode.logprobs import TokenLogprob
from leapdecode.decode.sampling import PositionRng
from leapdecode.decode.stopping import Finisher
from leapdecode.drafters import make_drafter
from leapdecode.drafters.grammar import GrammarDrafter
from leapdecode.grammar.constraint import Constraint
from leapdecode.policy.draft_length import DraftLength
from leapdecode.types import Draft, GenerationResult

if TYPE_CHECKING:
    from leapdecode.api import LLM, GenerateOptions


@dataclass(frozen=True, slots=True)
class Progress:
    """What one step did for a request."""

    text: str  # new text, safe to stream
    tokens: int  # tokens taken
    drafted: int  # draft tokens verified
    accepted: int  # of which accepted


class Run:
    """One generation in progress; iterating it yields streamed text pieces."""

    def __init__(self, llm: LLM, prompt_ids: list[int], opts: GenerateOptions) -> None:
        self.llm, self.opts, self.prompt_ids = llm, opts, prompt_ids
        self.finisher = Finisher(llm.tokenizer, llm.eos_ids, list(opts.stop), opts.max_new_tokens)
        self.engine: Engine | None = None
        # the grammar is compiled here, so a bad one is the caller's error before the request is queued
        self.constraint = Constraint(llm.grammar_vocab, opts.constraint) if opts.constraint is not None else None
        self.seconds = 0.0
        self._t0 = 0.0

    @property
    def method(self) -> str:
        return self.opts.method

    def __iter__(self) -> Iterator[str]:
        """Text pieces as tokens are accepted (decoding the text costs time only when someone streams)."""
        for _ in self.steps():
            if piece := self.finisher.delta():
                yield piece

    def steps(self) -> Iterator[None]:
        """Run to the end, one target forward per iteration."""
        self.start()
        while not self.done:
            self.push(self.engine.step(self.budget()))
            yield

    def start(self) -> None:
        """Build the engine: drafter, cache and the prompt's prefill."""
        self._t0 = time.perf_counter()
        self.engine = self._engine()
        self.engine.stats.setup_seconds = time.perf_counter() - self._t0

    @property
    def done(self) -> bool:
        return self.finisher.reason is not None

    def budget(self) -> int:
        """How many draft tokens could still be used: one token of the step is the target's own."""
        return self.opts.max_new_tokens - len(self.finisher.ids) - 1

    def push(self, tokens: list[int]) -> int:
        """Hand a step's tokens to the finisher; returns how many it took (fewer once generation ends)."""
        taken = self.finisher.push(tokens)
        self.seconds = time.perf_counter() - self._t0
        return taken

    @property
    def speculates(self) -> bool:
        """Whether its drafter ever proposes (a batch of plain requests says nothing about drafting)."""
        return self.engine is not None and self.engine.drafter.drafts

    def settle(self, draft: Draft, logits: Tensor, seconds: float, features: Tensor | None) -> Progress:
        """Verify this request's draft against its rows of a (batched) forward and take the tokens."""
        tokens = self.engine.settle(draft, logits, seconds, features)
        taken = self.push(tokens)
        return Progress(self.finisher.delta(), taken, len(draft), len(tokens) - 1)

    def text(self) -> str:
        """Text accepted since the last call, safe to stream."""
        return self.finisher.delta()

    def token_logprobs(self) -> list[TokenLogprob]:
        """The log-probabilities of the tokens taken so far, where the request asked for them."""
        return self.engine.logprobs[: len(self.finisher.ids)] if self.engine is not None else []

    @property
    def finish_reason(self) -> str | None:
        return self.finisher.reason

    def _engine(self) -> Engine:
        opts, llm = self.opts, self.llm
        capacity = min(len(self.prompt_ids) + opts.max_new_tokens + opts.max_draft_length + 1,
                       llm.network.max_context)
        rng = PositionRng.for_seed(opts.sampling.seed)  # seeded runs repeat, drafts and all
        request = replace(llm.drafter_resources, params=opts.sampling, gen=rng.drafting(), capacity=capacity,
                          vocab=llm.network.vocab_size)
        drafter = make_drafter(opts.method, request, **opts.drafter_options)
        constraint = self.constraint
        if constraint is not None and drafter.drafts:  # plain decoding stays plain: the baseline it is
            drafter = GrammarDrafter(drafter, constraint)
        k = DraftLength(k=min(opts.draft_length, opts.max_draft_length), k_max=opts.max_draft_length)
        if drafter.picks_length:  # it sizes each draft itself: the cap only, never adapted
            k = DraftLength(k=opts.max_draft_length, k_min=opts.max_draft_length, k_max=opts.max_draft_length)
        return Engine(llm.network, drafter, self.prompt_ids, opts.sampling, llm.policy.request(k), capacity, rng=rng,
                      constraint=constraint, logprobs=opts.logprobs)

    def result(self) -> GenerationResult:
        stats = self.engine.stats if self.engine else None
        res = GenerationResult(text=self.finisher.text, token_ids=list(self.finisher.ids),
                               finish_reason=self.finisher.reason or "length")
        if self.opts.logprobs is not None and self.engine is not None:
            res.logprobs = self.token_logprobs()
        if stats:
            res.stats = stats
            stats.new_tokens, stats.seconds = len(self.finisher.ids), self.seconds
        return res
