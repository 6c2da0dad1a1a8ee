"""The one interface every drafter implements."""

from __future__ import annotations

from typing import Protocol

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


class Drafter(Protocol):
    def propose(self, ctx: SeqView, k: int) -> Draft:
        """Guess at most k tokens that follow ctx.tokens. An empty Draft means: decode plainly this step."""
        ...

    def commit(self, ctx: SeqView, accepted: int) -> None:
        """Feedback after verification: ctx now holds the committed tokens; `accepted` drafts were kept."""
        ...


class Observer(Protocol):
    """Optional, for drafters that learn from the target itself (Jacobi, Lookahead). The engine calls
    observe after verification and before commit, only on drafters that define it, so the others pay no
    extra host sync for it."""

    def observe(self, ctx: SeqView, draft: Draft, predicted: list[int]) -> None:
        """predicted[r]: the target's argmax at fed row r of the verify forward. Row 0 is the pending last
        token, row i+1 draft token i, then the draft's extra rows in order. ctx still holds the tokens
        the draft was proposed for."""
        ...


class NoDrafter:
    """Plain decoding: never proposes, so each step is one ordinary forward."""

    def propose(self, ctx: SeqView, k: int) -> Draft:
        return Draft.empty()

    def commit(self, ctx: SeqView, accepted: int) -> None:
        pass
