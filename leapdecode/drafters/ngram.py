"""Prompt lookup / adaptive n-gram drafting (ANPD): copy what followed the last time the context's tail appeared."""

from __future__ import annotations

import torch

from leapdecode.drafters.base import Mark, continuation, history_mark
from leapdecode.errors import InvalidRequest
from leapdecode.types import Draft, SeqView


class NgramDrafter:
    """Longest n-gram first: find the latest earlier occurrence of the last n tokens, propose what followed.

    One dict per n maps an n-gram to the end positions of its two latest occurrences. It is filled as
    tokens arrive, so propose costs O(max_n) lookups plus the new tokens, never a scan of the context.
    """

    def __init__(self, max_n: int = 4, min_n: int = 1) -> None:
        if not 1 <= min_n <= max_n:
            raise InvalidRequest(f"ngram drafter needs 1 <= min_n <= max_n, got min_n={min_n}, max_n={max_n}")
        self.max_n, self.min_n = max_n, min_n
        self.match_len = 0  # n of the n-gram the last proposal copied after; 0: none matched
        self._reset()

    def _reset(self) -> None:
        # n -> n-gram -> (end of latest occurrence, end of the one before or -1)
        self._index: dict[int, dict[tuple[int, ...], tuple[int, int]]] = {
            n: {} for n in range(self.min_n, self.max_n + 1)
        }
        self._seen = 0  # tokens of ctx.tokens ingested
        self._mark: Mark | None = None

    def _ingest(self, ctx: SeqView) -> None:
        toks = ctx.tokens
        if len(toks) < self._seen or history_mark(ctx, self._seen) != self._mark:
            self._reset()
        # Index n-grams ending up to len-2 only: one ending at the last token would match the tail itself
        # and leave nothing to copy.
        for end in range(max(self._seen - 1, 0), len(toks) - 1):
            for n, grams in self._index.items():
                if end + 1 >= n:
                    key = tuple(toks[end + 1 - n : end + 1])
                    latest = grams.get(key)
                    grams[key] = (end, latest[0] if latest else -1)
        self._seen = len(toks)
        self._mark = history_mark(ctx, self._seen)

    def propose(self, ctx: SeqView, k: int) -> Draft:
        self._ingest(ctx)
        toks, size = ctx.tokens, len(ctx.tokens)
        self.match_len = 0
        if k <= 0:
            return Draft.empty()
        for n in range(min(self.max_n, size - 1), self.min_n - 1, -1):
            hit = self._index[n].get(tuple(toks[size - n :]))
            if hit is None:
                continue
            self.match_len = n
            latest, older = hit
            # The latest occurrence may sit so close to the tail that fewer than k tokens follow it;
            # the one before always has more, and is the only fallback kept, so lookup stays O(1).
            end = older if size - 1 - latest < k and older >= 0 else latest
            return Draft(tokens=torch.tensor(continuation(toks, end, k), dtype=torch.long))  # [k'] k' <= k
        return Draft.empty()

    def commit(self, ctx: SeqView, accepted: int) -> None:
        pass  # the accepted tokens are ingested on the next propose
