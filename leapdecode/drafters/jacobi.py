"""Jacobi decoding: the target itself refines a guess of the next tokens, one iteration per verify forward."""

from __future__ import annotations

import torch

from leapdecode.drafters.base import Drafter
from leapdecode.drafters.ngram import NgramDrafter
from leapdecode.types import Draft, SeqView


def jacobi_update(predicted: list[int], accepted: int) -> list[int]:
    """The next guess after a verify that kept `accepted` drafts and emitted predicted[accepted].

    predicted[r] is the target's argmax after fed row r; rows past the emitted one were computed from the
    guesses before them, so they are one Jacobi iteration of the positions that follow the emitted token
    (the fixed point y_i = argmax p(y_i | text, y_<i) is where greedy decoding goes)."""
    return predicted[accepted + 1 :]


class JacobiDrafter(Drafter):
    """Keep a guess of the next k tokens and let every verify forward iterate it.

    Row i of a verify forward predicts the token after guess i from the guesses before it. Greedy
    verification keeps the guesses that already equal those predictions (the converged prefix), and the
    predictions past the emitted token become the next guess. Positions the guess does not reach yet (at
    the start, after a full acceptance, or when k grows) are padded with a prompt-lookup draft, else with
    the context's last tokens: a cheap start the iteration then corrects.
    """

    observes = True  # its next guess is what the target predicted at its rows

    def __init__(self) -> None:
        self._pad = NgramDrafter()
        self._guess: list[int] = []  # guesses for the tokens after the first `_at` committed ones
        self._at = -1
        self._predicted: list[int] | None = None  # what the last verify forward predicted, until commit
        self._iterated = 0  # how many leading tokens of the last draft came from the Jacobi iteration
        self.converged = 0  # accepted draft tokens that came from the iteration rather than the padding

    def propose(self, ctx: SeqView, k: int) -> Draft:
        if k <= 0:
            return Draft.empty()
        guess = self._guess[:k] if self._at == len(ctx.tokens) else []
        self._iterated = len(guess)
        if len(guess) < k:
            guess += self._padding(ctx, len(guess), k)
        return Draft(tokens=torch.tensor(guess, dtype=torch.long))  # [k'] k' <= k

    def _padding(self, ctx: SeqView, have: int, k: int) -> list[int]:
        """Guesses for positions have..k-1 after the context: what prompt lookup drafts there, then copies
        of the context's tail."""
        lookup = self._pad.propose(ctx, k).tokens.tolist()[have:]
        need = k - have - len(lookup)
        return lookup + (ctx.tokens[-need:] if need > 0 else [])

    def observe(self, ctx: SeqView, draft: Draft, predicted: list[int]) -> None:
        self._predicted = predicted[: len(draft) + 1]

    def commit(self, ctx: SeqView, accepted: int) -> None:
        predicted, self._predicted = self._predicted, None
        self.converged += min(accepted, self._iterated)
        self._guess = jacobi_update(predicted, accepted) if predicted is not None else []
        self._at = len(ctx.tokens)
