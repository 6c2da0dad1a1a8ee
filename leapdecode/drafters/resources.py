"""What a drafter is built from besides the request's own options: the caller's model, loaders and limits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from leapdecode.types import SamplingParams

if TYPE_CHECKING:
    import torch

    from leapdecode.drafters.auto.memory import AutoMemory
    from leapdecode.models.base import CausalLM


@dataclass(frozen=True, slots=True)
class DrafterResources:
    """Held by the LLM (the first group) and completed per request (the second). A factory reads the ones
    it needs and says so in a clear error where one is missing; options never carry them."""

    network: CausalLM | None = None  # the target: layerskip drafts with its layers, trees need its masks
    tokenizer: Any = None  # a transformers tokenizer (the suffix drafter's corpus is encoded with it)
    load_model: Callable[[str, str], CausalLM] | None = None  # (name or path, dtype) -> a draft network
    load_self: Callable[[str], CausalLM] | None = None  # dtype -> the target's own weights at that precision
    load_head: Callable[[str | None], Any] | None = None  # a trained draft head's file (None: the model's own)
    model_id: str | None = None  # the target and its precision: the key of searches cached on disk
    auto_memory: AutoMemory | None = None  # what auto measured on earlier requests of this LLM

    params: SamplingParams = field(default_factory=SamplingParams)  # the request's sampling
    gen: torch.Generator | None = None  # the request's drafting RNG
    capacity: int = 0  # the request's cache slots: prompt, answer and one draft
    vocab: int = 0  # the target's vocabulary size
