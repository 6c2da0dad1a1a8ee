"""The one interface every drafter implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence

from torch import Tensor

from leapdecode.types import Draft, SeqView

Mark = tuple[int, tuple[int, ...], tuple[int, ...], int]


def history_mark(ctx: SeqView, seen: int) -> Mark:
    """A few tokens that tell, in O(1), whether ctx still extends the first `seen` tokens a drafter ingested.

    Comparing the whole prompt on every step would cost what the index saves; the prompt's ends plus the
    last ingested token catch a new request or a rolled-back sequence in practice.
    """
    toks, p = ctx.tokens, ctx.prompt_len
    return p, tuple(toks[:4]), tuple(toks[max(p - 4, 0) : p]), toks[seen - 1] if seen else -1


def continuation(text: list[int], end: int, k: int) -> list[int]:
    """Up to k tokens that follow position `end` of text, read on into the draft itself past the text's end.

    The match says the tail repeats what ended at `end`, so text + draft is periodic with period
    len(text) - 1 - end: an overlapping copy, as in LZ77, drafts a full k tokens even for a short loop.
    """
    size = len(text)
    if not 0 <= end < size - 1:  # no earlier occurrence, or the tail itself: nothing to copy
        return []
    out: list[int] = []
    for i in range(end + 1, end + 1 + k):
        out.append(text[i] if i < size else out[i - size])
    return out


class Drafter(ABC):
    """The one interface every drafter implements: propose, then commit after verification. The rest are
    optional hooks whose defaults do nothing; a drafter overrides the ones it uses and says so by a flag,
    because two of them cost the engine work it skips for everyone else (observe: a host sync a step;
    see_features: the target's features returned by every forward)."""

    drafts: bool = True  # ever proposes (plain decoding does not)
    picks_length: bool = False  # sizes each draft from its own estimates: the engine passes the cap, never adapts it
    observes: bool = False  # wants observe() after every verify
    reads_features: bool = False  # wants see_features() with the target's features of every committed row
    extra_rows: int = 0  # rows each draft adds besides its tokens (Lookahead's window): paid, never accepted
    match_len: int = 0  # tokens of the match the last proposal copied (model-free drafters): how far to trust it
    batch_key: Hashable | None = None  # drafters with equal keys draft a batch together through propose_many

    @abstractmethod
    def propose(self, ctx: SeqView, k: int) -> Draft:
        """Guess at most k tokens that follow ctx.tokens. An empty Draft means: decode plainly this step."""

    def commit(self, ctx: SeqView, accepted: int) -> None:
        """Feedback after verification: ctx now holds the committed tokens; `accepted` drafts were kept."""

    def observe(self, ctx: SeqView, draft: Draft, predicted: list[int]) -> None:
        """Where `observes` (Jacobi, Lookahead): called after verification and before commit.
        predicted[r]: the target's argmax at fed row r of the verify forward. Row 0 is the pending last
        token, row i+1 draft token i, then the draft's extra rows in order. ctx still holds the tokens
        the draft was proposed for."""

    def see_features(self, ctx: SeqView, start: int, feats: Tensor) -> None:
        """Where `reads_features` (EAGLE): the target's final hidden states [n, dim] of the committed tokens
        ctx.tokens[start:start + n] (the prompt's at prefill, then each step's)."""

    def propose_many(self, views: Sequence[SeqView], ks: Sequence[int]) -> list[Draft]:
        """Where `batch_key` is set: one draft per view, made together (draft_batch.py)."""
        return [self.propose(v, k) for v, k in zip(views, ks)]


class NoDrafter(Drafter):
    """Plain decoding: never proposes, so each step is one ordinary forward."""

    drafts = False

    def propose(self, ctx: SeqView, k: int) -> Draft:
        return Draft.empty()

