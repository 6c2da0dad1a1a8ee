"""Drafters by name, so config and CLI pick one and the engine never asks which one it holds."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from leapdecode.drafters.base import Drafter, NoDrafter
from leapdecode.drafters.ngram import NgramDrafter
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


_FACTORIES: dict[str, Callable[..., Drafter]] = {"none": NoDrafter, "ngram": NgramDrafter, "suffix": _suffix}
DRAFTER_METHODS = tuple(_FACTORIES)  # ("none", "ngram", "suffix")


def make_drafter(method: str, **options: Any) -> Drafter:
    factory = _FACTORIES.get(method)
    if factory is None:
        raise InvalidRequest(f"unknown draft method {method!r}; known methods: {', '.join(DRAFTER_METHODS)}")
    try:  # name a misspelt option here rather than surface a TypeError from deep inside
        inspect.signature(factory).bind(**options)
    except TypeError as e:
        raise InvalidRequest(f"bad options for draft method {method!r}: {e}") from e
    return factory(**options)


__all__ = ["DRAFTER_METHODS", "Drafter", "NgramDrafter", "NoDrafter", "SuffixDrafter", "make_drafter"]
