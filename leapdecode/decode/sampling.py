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


MASK64 = 2**64 - 1
GOLDEN_GAMMA = 0x9E3779B97F4A7C15  # SplitMix64's increment, 2^64 / golden ratio


def splitmix64(x: int) -> int:
    """SplitMix64's output for state x (Steele, Lea and Flood 2014): a fixed 64-bit mix, the same on every
    Python, unlike hash() of a tuple, which a Python release may change."""
    x = (x + GOLDEN_GAMMA) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def position_seed(seed: int, position: int) -> int:
    """The generator seed for one output position (-1: the drafter's stream), in [0, 2^64)."""
    return splitmix64(splitmix64(seed & MASK64) ^ (position & MASK64))


class PositionRng:
    """Randomness keyed by output position: the draw for the token at position n comes from its own
    generator seeded by a fixed mix of (seed, n). A seeded request then samples the same text whatever was drafted and
    however its steps were batched, because with a deterministic drafter verification is "sample the
    target's token at each position, keep drafts while they equal it" (see verify_sampling)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    @staticmethod
    def for_seed(seed: int | None) -> PositionRng:
        """A request's randomness: its seed, else one drawn from torch's global generator."""
        return PositionRng(seed if seed is not None else int(torch.randint(2**62, ()).item()))

    def at(self, position: int) -> torch.Generator:
        return torch.Generator().manual_seed(position_seed(self.seed, position))

    def drafting(self) -> torch.Generator:
        """A sampling drafter's own stream, apart from every position's (-1 is no position)."""
        return torch.Generator().manual_seed(position_seed(self.seed, -1))
