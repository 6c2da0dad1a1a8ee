"""Drafters by name, so config and CLI pick one and the engine never asks which one it holds."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from leapdecode.drafters.base import Drafter, NoDrafter
from leapdecode.drafters.layerskip import LayerSkipDrafter
from leapdecode.drafters.ngram import NgramDrafter
from leapdecode.drafters.skip_layers import SkipLayers
from leapdecode.drafters.skip_store import found_skip_layers
from leapdecode.drafters.suffix import Encoder, SuffixDrafter
from leapdecode.errors import InvalidRequest


def _suffix(
    min_match: int = 2, corpus_path: str | Path | None = None, tokenizer: Encoder | None = None
) -> SuffixDrafter:
    if corpus_path is None:
        return SuffixDrafter(min_match=min_match)
    if tokenizer is None:
        raise InvalidRequest("the suffix drafter needs a tokenizer to read corpus_path")
    return SuffixDrafter.from_corpus_file(corpus_path, tokenizer, min_match=min_match)


def _layerskip(
    network: Any = None, tokenizer: Any = None, model_id: str | None = None,
    skip_layers: str | Sequence[int] | None = None, threshold: float = 0.6,
) -> LayerSkipDrafter:
    if not hasattr(network, "num_layers"):
        raise InvalidRequest("layerskip drafts with the target's own layers: it needs leapdecode's llama code "
                             "(not the transformers fallback)")
    if skip_layers is not None:  # by hand: the engine's adaptive draft length decides how far to draft
        return LayerSkipDrafter(network, SkipLayers.parse(skip_layers, network.num_layers), threshold)
    if tokenizer is None or model_id is None:
        raise InvalidRequest("layerskip without skip_layers searches for a set: it needs the tokenizer and a model_id")
    skip, draft_length = found_skip_layers(network, tokenizer, model_id)
    return LayerSkipDrafter(network, skip, threshold, max_draft=draft_length)


_FACTORIES: dict[str, Callable[..., Drafter]] = {
    "none": NoDrafter, "ngram": NgramDrafter, "suffix": _suffix, "layerskip": _layerskip,
}
DRAFTER_METHODS = tuple(_FACTORIES)  # ("none", "ngram", "suffix", "layerskip")


def make_drafter(method: str, resources: Mapping[str, Any] | None = None, **options: Any) -> Drafter:
    """options: the request's own, checked against the factory's signature. resources: what the caller
    holds (network, tokenizer, model_id); each goes only to a factory that names it, unless options do."""
    factory = _FACTORIES.get(method)
    if factory is None:
        raise InvalidRequest(f"unknown draft method {method!r}; known methods: {', '.join(DRAFTER_METHODS)}")
    wanted = inspect.signature(factory).parameters
    given = {k: v for k, v in (resources or {}).items() if k in wanted and k not in options}
    try:  # name a misspelt option here rather than surface a TypeError from deep inside
        inspect.signature(factory).bind(**options, **given)
    except TypeError as e:
        raise InvalidRequest(f"bad options for draft method {method!r}: {e}") from e
    return factory(**options, **given)


__all__ = [
    "DRAFTER_METHODS", "Drafter", "LayerSkipDrafter", "NgramDrafter", "NoDrafter", "SkipLayers", "SuffixDrafter",
    "make_drafter",
]
