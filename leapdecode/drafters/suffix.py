"""Suffix-automaton drafting (SAM-Decoding): copy what followed the longest earlier match of the text's tail."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import torch

from leapdecode.decode.tree import from_branches, tree_width
from leapdecode.drafters.base import Drafter, Mark, continuation, history_mark
from leapdecode.errors import InvalidRequest
from leapdecode.types import Draft, SeqView

Match = tuple[int, list[int]]  # (match length, the tokens that followed that occurrence)


class Encoder(Protocol):
    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


class _Automaton:
    """Online suffix automaton over a token list. Each state knows where its strings first ended, and
    where they ended the last time a match landed there (`recent`, -1 until then)."""

    def __init__(self) -> None:
        self.text: list[int] = []
        self.next: list[dict[int, int]] = [{}]
        self.link, self.length, self.firstpos, self.recent = [-1], [0], [-1], [-1]
        self.last = 0  # state of the whole text

    def _add(self, length: int, next_: dict[int, int], firstpos: int, recent: int) -> int:
        self.next.append(next_)
        self.link.append(-1)
        self.length.append(length)
        self.firstpos.append(firstpos)
        self.recent.append(recent)
        return len(self.length) - 1

    def extend(self, token: int) -> None:
        """Standard online construction: amortised O(1) new states and link walks per token."""
        pos = len(self.text)
        self.text.append(token)
        cur, p = self._add(self.length[self.last] + 1, {}, pos, -1), self.last
        while p != -1 and token not in self.next[p]:
            self.next[p][token] = cur
            p = self.link[p]
        self.last = cur
        if p == -1:
            self.link[cur] = 0
            return
        q = self.next[p][token]
        if self.length[p] + 1 == self.length[q]:
            self.link[cur] = q
        else:  # q also holds longer strings that do not end here: split off the shorter ones
            clone = self._add(self.length[p] + 1, dict(self.next[q]), self.firstpos[q], self.recent[q])
            self.link[clone] = self.link[q]
            while p != -1 and self.next[p].get(token) == q:
                self.next[p][token] = clone
                p = self.link[p]
            self.link[q] = self.link[cur] = clone

    def step(self, state: int, length: int, token: int) -> tuple[int, int]:
        """Extend a match by `token`; on a miss, shorten it along suffix links until it extends (or is empty)."""
        while state and token not in self.next[state]:
            state = self.link[state]
            length = self.length[state]
        if token in self.next[state]:
            return self.next[state][token], length + 1
        return 0, 0

    def settle(self, state: int, length: int) -> int:
        """The state holding a match of `length`: after a split, a match no longer than the clone is the clone's."""
        while state and length <= self.length[self.link[state]]:
            state = self.link[state]
        return state

    def land(self, state: int, end: int) -> int:
        """Where to copy from for a match now ending at `end`: the last earlier end seen here, else the first.
        Remembering `end` makes the next match on this state copy from the most recent occurrence."""
        source = self.recent[state] if self.recent[state] >= 0 else self.firstpos[state]
        self.recent[state] = end
        return source

    def occurrences(self, state: int, length: int, min_len: int, states: int) -> Iterator[tuple[int, int]]:
        """(match length, end) of earlier occurrences of the match's suffixes, longest first, read-only:
        each state on the suffix-link chain gives its recent and its first end. At most `states` states."""
        while state and length >= min_len and states > 0:
            for end in (self.recent[state], self.firstpos[state]):
                if end >= 0:
                    yield length, end
            state = self.link[state]
            length, states = self.length[state], states - 1


class SuffixDrafter(Drafter):
    """Longest suffix of the text that also occurs earlier (in the text, or in a static corpus): propose what
    followed that occurrence. Both automata are walked with a cursor, O(1) amortised per new token.

    With `tree` = w > 1 the draft is a token tree of up to w distinct continuations: the chain's first, then
    what followed other occurrences of the match and of its shorter suffixes (the suffix-link chain), in
    the text and the corpus, longer matches first."""

    def __init__(self, min_match: int = 2, corpus: list[int] | None = None, tree: int | None = 0) -> None:
        if min_match < 1:
            raise InvalidRequest(f"suffix drafter needs min_match >= 1, got {min_match}")
        self.min_match = min_match
        self.width = tree_width(tree)
        self._corpus = _Automaton()  # never grows after this
        for token in corpus or []:
            self._corpus.extend(token)
        self._reset()

    @classmethod
    def from_corpus_file(cls, path: str | Path, tokenizer: Encoder, min_match: int = 2,
                         tree: int | None = 0) -> SuffixDrafter:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InvalidRequest(f"cannot read corpus file {path}: {e}") from e
        return cls(min_match=min_match, corpus=list(tokenizer.encode(text, add_special_tokens=False)), tree=tree)

    def _reset(self) -> None:
        self._live = _Automaton()
        self._seen = 0
        self._mark: Mark | None = None
        self._state, self._len, self._source = 0, 0, -1  # live match: state, length, end it copies after
        self._cstate, self._clen = 0, 0  # corpus match

    @property
    def match_len(self) -> int:
        """Length of the longest suffix match (text or corpus) as of the last propose."""
        return max(self._len, self._clen)

    def _push(self, token: int) -> None:
        live, end = self._live, len(self._live.text)
        # Match before extending: the automaton then holds only text[:end], so the match cannot be itself.
        state, self._len = live.step(self._state, self._len, token)
        live.extend(token)
        self._state = live.settle(state, self._len)
        self._source = live.land(self._state, end) if self._len else -1
        self._cstate, self._clen = self._corpus.step(self._cstate, self._clen, token)

    def _ingest(self, ctx: SeqView) -> None:
        if len(ctx.tokens) < self._seen or history_mark(ctx, self._seen) != self._mark:
            self._reset()
        for token in ctx.tokens[self._seen :]:
            self._push(token)
        self._seen = len(ctx.tokens)
        self._mark = history_mark(ctx, self._seen)

    def propose(self, ctx: SeqView, k: int) -> Draft:
        self._ingest(ctx)
        live = (self._len, continuation(self._live.text, self._source, k) if self._source >= 0 else [])
        src = self._corpus.firstpos[self._cstate]
        corpus = (self._clen, self._corpus.text[src + 1 : src + 1 + max(k, 0)])  # a corpus does not loop
        for length, follow in sorted((live, corpus), key=lambda m: -m[0]):  # longer first; ties: live
            if length >= self.min_match and follow:
                if self.width < 2:
                    return Draft(tokens=torch.tensor(follow, dtype=torch.long))  # [k'] k' <= k
                return from_branches(self._branches(follow, k), k)
        return Draft.empty()

    def _branches(self, chain: list[int], k: int) -> list[list[int]]:
        """Up to `width` distinct continuations, best first: the chain's, then the others, longer match first
        (ties: the text before the corpus). Each automaton's link chain is read for a few states only: in
        repetitive text it is long and its continuations mostly repeat."""
        live, corpus, states = self._live, self._corpus, 4 * self.width
        found: list[Match] = [(n, continuation(live.text, end, k))
                              for n, end in live.occurrences(self._state, self._len, self.min_match, states)]
        found += [(n, corpus.text[end + 1 : end + 1 + k])
                  for n, end in corpus.occurrences(self._cstate, self._clen, self.min_match, states)]
        branches = [chain]
        for _, follow in sorted(found, key=lambda m: -m[0]):
            if follow and follow not in branches:
                branches.append(follow)
                if len(branches) == self.width:
                    break
        return branches

    def commit(self, ctx: SeqView, accepted: int) -> None:
        pass  # the accepted tokens are ingested on the next propose
