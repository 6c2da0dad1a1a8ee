"""Prompt lookup / adaptive n-gram drafting (ANPD): copy what followed the last time the context's tail appeared."""

from __future__ import annotations

import torch

from leapdecode.decode.tree import from_branches, tree_width
from leapdecode.drafters.base import Drafter, Mark, continuation, history_mark
from leapdecode.errors import InvalidRequest
from leapdecode.types import Draft, SeqView


class NgramDrafter(Drafter):
    """Longest n-gram first: find the latest earlier occurrence of the last n tokens, propose what followed.

    One dict per n maps an n-gram to the end positions of its latest occurrences (two, or `tree` of them).
    It is filled as tokens arrive, so propose costs O(max_n) lookups plus the new tokens, never a scan of
    the context. With `tree` = w > 1 the draft is a token tree of up to w distinct continuations: the
    chain's first, then what followed the other remembered occurrences, longest n-gram first.
    """

    def __init__(self, max_n: int = 4, min_n: int = 1, tree: int | None = 0) -> None:
        if not 1 <= min_n <= max_n:
            raise InvalidRequest(f"ngram drafter needs 1 <= min_n <= max_n, got min_n={min_n}, max_n={max_n}")
        self.max_n, self.min_n = max_n, min_n
        self.match_len = 0  # n of the n-gram the last proposal copied after; 0: none matched
        self.width = tree_width(tree)
        self._keep = max(2, self.width)  # occurrences remembered per n-gram
        self._reset()

    def _reset(self) -> None:
        # n -> n-gram -> ends of its latest occurrences, latest first (at most self._keep)
        self._index: dict[int, dict[tuple[int, ...], tuple[int, ...]]] = {
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
                    grams[key] = (end, *grams.get(key, ())[: self._keep - 1])
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
            # The latest occurrence may sit so close to the tail that fewer than k tokens follow it;
            # the one before always has more, and is the only fallback kept, so lookup stays O(1).
            end = hit[1] if size - 1 - hit[0] < k and len(hit) > 1 else hit[0]
            chain = continuation(toks, end, k)
            if self.width < 2:
                return Draft(tokens=torch.tensor(chain, dtype=torch.long))  # [k'] k' <= k
            return from_branches(self._branches(toks, n, chain, k), k)
        return Draft.empty()

    def _branches(self, toks: list[int], n: int, chain: list[int], k: int) -> list[list[int]]:
        """Up to `width` distinct continuations, best first: the chain's, then the other occurrences' of
        the longest matching n-gram, latest first, then those of shorter n-grams."""
        branches = [chain]
        for m in range(n, self.min_n - 1, -1):
            for end in self._index[m].get(tuple(toks[len(toks) - m :]), ()):
                follow = continuation(toks, end, k)
                if follow and follow not in branches:
                    branches.append(follow)
                    if len(branches) == self.width:
                        return branches
        return branches

    def commit(self, ctx: SeqView, accepted: int) -> None:
        pass  # the accepted tokens are ingested on the next propose
