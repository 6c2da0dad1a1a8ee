"""What the engine needs of a network: a forward over new tokens at a cache offset."""

from __future__ import annotations

from typing import Any, Protocol

from torch import Tensor


class CausalLM(Protocol):
    vocab_size: int
    max_context: int

    def new_cache(self, max_len: int) -> Any:
        """An empty cache able to hold max_len slots; it has `length` and `rollback(length)`."""
        ...

    def forward(self, tokens: Tensor, start: int, cache: Any, mask: Tensor | None = None, logits: bool = True) -> Tensor | None:
        """tokens [1, T] at slots start..start+T -> logits [1, T, V] float32 (None when logits=False).

        mask [T, start+T] bool (True = may attend) replaces the default causal mask, for token trees.
        """
        ...
