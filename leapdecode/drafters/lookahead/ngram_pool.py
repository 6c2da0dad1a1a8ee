"""Lookahead decoding's n-gram pool: continuations seen so far, keyed by the token they follow."""

from __future__ import annotations

from collections.abc import Sequence

from leapdecode.errors import InvalidRequest


class NgramPool:
    """For each token, the last `per_key` distinct (n-1)-token continuations seen after it.

    Fed from the Jacobi trajectories of the lookahead window, the prompt and the committed text. A key
    keeps only its most recent continuations (least recently seen dropped first): old guesses about a
    topic the text has left are the likeliest wrong, and only so many are ever verified.
    """

    def __init__(self, n: int, per_key: int) -> None:
        if n < 2 or per_key < 1:
            raise InvalidRequest(f"an n-gram pool needs n >= 2 and per_key >= 1, got n={n}, per_key={per_key}")
        self.n, self.per_key = n, per_key
        self._grams: dict[int, list[tuple[int, ...]]] = {}  # key -> continuations, most recent last
        self._found_by: dict[tuple[int, ...], str] = {}  # n-gram in the pool -> who added it first

    def add(self, gram: Sequence[int], found_by: str = "text") -> None:
        """Remember one n-gram: its first token is the key, the other n-1 the continuation."""
        key, rest = gram[0], tuple(gram[1:])
        seen = self._grams.setdefault(key, [])
        if rest in seen:
            seen.remove(rest)
        elif len(seen) == self.per_key:
            del self._found_by[(key, *seen.pop(0))]
        seen.append(rest)
        self._found_by.setdefault((key, *rest), found_by)

    def add_text(self, tokens: Sequence[int], start: int = 0) -> None:
        """Every n-gram of tokens that ends at index `start` or later (start: where new text begins)."""
        for end in range(max(start, self.n - 1), len(tokens)):
            self.add(tokens[end - self.n + 1 : end + 1])

    def found_by(self, key: int, continuation: Sequence[int]) -> str | None:
        """Who first added this n-gram while it has been in the pool ("text", "window"); None if absent."""
        return self._found_by.get((key, *continuation))

    def continuations(self, key: int) -> list[tuple[int, ...]]:
        """What followed `key`, most recent first."""
        return self._grams.get(key, [])[::-1]

    def __len__(self) -> int:
        return sum(len(v) for v in self._grams.values())
