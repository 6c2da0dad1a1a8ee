"""Temperature / top-k / top-p: one definition of the target distribution, shared by baseline and verify."""

from __future__ import annotations

import torch
from torch import Tensor

from leapdecode.types import SamplingParams


def target_probs(logits: Tensor, params: SamplingParams) -> Tensor:
    """logits [T, V] -> probs [T, V] after temperature, top-k and top-p (sampling only, not greedy)."""
    scaled = logits.float() / params.temperature
    if params.top_k and params.top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, params.top_k, dim=-1).values[..., -1:]  # [T, 1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if params.top_p < 1.0:
        scaled = _top_p(scaled, params.top_p)
    return torch.softmax(scaled, dim=-1)


def _top_p(scaled: Tensor, top_p: float) -> Tensor:
    """Keep the smallest set of tokens whose probability reaches top_p (always at least the top one)."""
    sorted_logits, order = torch.sort(scaled, dim=-1, descending=True)
    cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    drop_sorted = (cum - torch.softmax(sorted_logits, dim=-1)) >= top_p  # mass before this token already enough
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return scaled.masked_fill(drop, float("-inf"))


def sample(probs: Tensor, gen: torch.Generator) -> Tensor:
    """probs [T, V] -> tokens [T]."""
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


class PositionRng:
    """Randomness keyed by output position: the draw for the token at position n comes from its own
    generator seeded by (seed, n). A seeded request then samples the same text whatever was drafted and
    however its steps were batched, because with a deterministic drafter verification is "sample the
    target's token at each position, keep drafts while they equal it" (see verify_sampling)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    @staticmethod
    def for_seed(seed: int | None) -> PositionRng:
        """A request's randomness: its seed, else one drawn from torch's global generator."""
        return PositionRng(seed if seed is not None else int(torch.randint(2**62, ()).item()))

    def at(self, position: int) -> torch.Generator:
        return torch.Generator().manual_seed(hash((self.seed, position)) & (2**63 - 1))

    def drafting(self) -> torch.Generator:
        """A sampling drafter's own stream, apart from every position's (-1 is no position)."""
        return torch.Generator().manual_seed(hash((self.seed, -1)) & (2**63 - 1))
