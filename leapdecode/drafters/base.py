"""The one interface every drafter implements."""

from __future__ import annotations

from typing import Protocol

from leapdecode.types import Draft, SeqView


class Drafter(Protocol):
    def propose(self, ctx: SeqView, k: int) -> Draft:
        """Guess at most k tokens that follow ctx.tokens. An empty Draft means: decode plainly this step."""
        ...

    def commit(self, ctx: SeqView, accepted: int) -> None:
        """Feedback after verification: ctx now holds the committed tokens; `accepted` drafts were kept."""
        ...


class NoDrafter:
    """Plain decoding: never proposes, so each step is one ordinary forward."""

    def propose(self, ctx: SeqView, k: int) -> Draft:
        return Draft.empty()

    def commit(self, ctx: SeqView, accepted: int) -> None:
        pass
