"""The grammar as a drafter: where the grammar allows only one continuation (a schema's keys, braces,
quotes, separators), those tokens are drafted for nothing and the target verifies them in the same forward
(jump-forward decoding without leaving the engine's loop). A forced run is continued by copying what
followed the same text before (a suffix automaton over the prompt and answer: after `"city": "` the passage's
city), since the value after a key is often in the prompt. Elsewhere the method's own drafter drafts."""

from __future__ import annotations

import torch
from torch import Tensor

from leapdecode.drafters.base import Drafter
from leapdecode.drafters.suffix import SuffixDrafter
from leapdecode.grammar.constraint import Constraint
from leapdecode.types import Draft, SeqView

ARM = "grammar"


class GrammarDrafter(Drafter):
    """Forced tokens (and their copied continuation) first, else the inner drafter's draft. Under the
    constraint a forced token is the only one the masked target can yield, so it is always accepted (up to
    another tokenization of the same text). The inner drafter hears about the steps it drafted, as auto's arms
    do; it reads the text on its own. The forced tokens the target accepted are counted on the constraint."""

    def __init__(self, inner: Drafter, constraint: Constraint) -> None:
        self.inner, self.constraint = inner, constraint
        self.picks_length, self.extra_rows = inner.picks_length, inner.extra_rows
        self.observes, self.reads_features = inner.observes, inner.reads_features
        self.copier = SuffixDrafter(min_match=2)
        self._forced = 0  # forced tokens in the draft being verified; 0: the inner drafter's draft

    def propose(self, ctx: SeqView, k: int) -> Draft:
        forced = self.constraint.forced(k)
        self._forced = len(forced)
        if not forced:
            return self.inner.propose(ctx, k)
        copied = self.copier.propose(SeqView(ctx.tokens + forced, ctx.prompt_len), k - len(forced))
        return Draft(tokens=torch.tensor(forced + copied.tokens.tolist(), dtype=torch.long), arm=ARM)

    def commit(self, ctx: SeqView, accepted: int) -> None:
        if self._forced:
            self.constraint.forced_accepted += min(accepted, self._forced)
        else:
            self.inner.commit(ctx, accepted)

    def observe(self, ctx: SeqView, draft: Draft, predicted: list[int]) -> None:
        if not self._forced:
            self.inner.observe(ctx, draft, predicted)

    def see_features(self, ctx: SeqView, start: int, feats: Tensor) -> None:
        self.inner.see_features(ctx, start, feats)
