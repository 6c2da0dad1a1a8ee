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


def seeded_generator(seed: int | None) -> torch.Generator:
    """A request's generator: seeded for reproducible runs, else from torch's global generator."""
    gen = torch.Generator()
    gen.manual_seed(seed if seed is not None else int(torch.randint(2**62, ()).item()))
    return gen
