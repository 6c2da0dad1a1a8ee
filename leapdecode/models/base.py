"""What the engine needs of a network: a forward over new tokens at a cache offset."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor


@dataclass(frozen=True, slots=True)
class Segment:
    """One sequence's share of a packed forward: its new tokens and where they go in its own cache."""

    tokens: Tensor  # [T] int64
    start: int  # cache slot of tokens[0]
    cache: Any  # the sequence's own cache
    mask: Tensor | None = None  # [T, start+T] bool, True = may attend (token trees); None = causal
    positions: Tensor | None = None  # [T] rope positions; None = start..start+T


class CausalLM(Protocol):
    """A network the engine decodes with: leapdecode's own (models/llama.py) or transformers' (hf_adapter.py).
    What a method needs beyond the forward is a declared capability, asked of the network by name."""

    vocab_size: int
    max_context: int
    dtype: torch.dtype  # what its linears compute in
    token_trees: bool  # honours Segment.mask and .positions, so a token tree can be verified in one forward
    skips_layers: bool  # runs a subset of its layers (layerskip) and has num_layers and shape
    gives_features: bool  # has forward_features: each row's final hidden state too (a trained draft head reads it)

    def new_cache(self, max_len: int) -> Any:
        """An empty cache able to hold max_len slots; it has `length` and `rollback(length)`."""
        ...

    def forward(self, tokens: Tensor, start: int, cache: Any, mask: Tensor | None = None, logits: bool = True) -> Tensor | None:
        """tokens [1, T] at slots start..start+T -> logits [1, T, V] float32 (None when logits=False).

        mask [T, start+T] bool (True = may attend) replaces the default causal mask, for token trees.
        """
        ...

    def forward_packed(self, segments: Sequence[Segment], logits: bool = True) -> Tensor | None:
        """Several sequences in one forward -> logits [sum T, V], each row as it would be alone. A segment's
        mask and positions (a token tree's, see tree.py) replace its causal defaults."""
        ...
