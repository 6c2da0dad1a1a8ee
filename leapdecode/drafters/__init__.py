"""Drafters by name, so config and CLI pick one and the engine never asks which one it holds."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leapdecode.drafters.auto import AutoDrafter
from leapdecode.drafters.auto_arms import build_arms
from leapdecode.drafters.auto_memory import AutoMemory
from leapdecode.drafters.base import Drafter, NoDrafter
from leapdecode.drafters.draft_model import DraftModelConfig, DraftModelDrafter
from leapdecode.drafters.eagle import EagleDrafter
from leapdecode.drafters.jacobi import JacobiDrafter
from leapdecode.drafters.layerskip import LayerSkipDrafter
from leapdecode.drafters.lookahead import LookaheadDrafter
from leapdecode.drafters.ngram import NgramDrafter
from leapdecode.drafters.skip_layers import SkipLayers
from leapdecode.drafters.skip_store import found_skip_layers
from leapdecode.drafters.suffix import Encoder, SuffixDrafter
from leapdecode.errors import InvalidRequest
from leapdecode.tree import TREES_REFUSED, tree_width
from leapdecode.types import SamplingParams

if TYPE_CHECKING:
    import torch


def _suffix(
    min_match: int = 2, corpus_path: str | Path | None = None, tree: int | None = 0, tokenizer: Encoder | None = None
) -> SuffixDrafter:
    if corpus_path is None:
        return SuffixDrafter(min_match=min_match, tree=tree)
    if tokenizer is None:
        raise InvalidRequest("the suffix drafter needs a tokenizer to read corpus_path")
    return SuffixDrafter.from_corpus_file(corpus_path, tokenizer, min_match=min_match, tree=tree)


def _draft_model(
    draft_model: str, draft_threshold: float = 0.4, draft_dtype: str = "auto", tree: int | None = 0, *,
    load_model: Callable[[str, str], Any], params: SamplingParams, gen: torch.Generator, capacity: int, vocab: int
) -> DraftModelDrafter:
    """draft_model: a name or path that load_model turns into a network with the target's tokenizer, at
    draft_dtype (auto: a GGUF at its stored precision, see models/draft_models.py). tree: grow token trees of
    that many first-level branches, which needs a draft network that takes a tree mask."""
    cfg = DraftModelConfig(threshold=draft_threshold, capacity=capacity, vocab=vocab, tree=tree or 0)
    network = load_model(draft_model, draft_dtype)
    if cfg.tree > 1 and not getattr(network, "token_trees", False):
        raise InvalidRequest(f"draft model {draft_model!r}: {TREES_REFUSED}")
    return DraftModelDrafter(network, cfg, params, gen)


def _layerskip(
    skip_layers: str | Sequence[int] | None = None, threshold: float | None = None, skip_dtype: str | None = None, *,
    network: Any = None, tokenizer: Any = None, model_id: str | None = None,
    load_self: Callable[[str], Any] | None = None,
) -> LayerSkipDrafter:
    """skip_dtype: the draft pass reads the target's own weights at this precision ("int4": its GGUF as
    stored) instead of the target's; None: the target's network itself. threshold: the draft confidence
    below which drafting stops; None: the cut-off the search measured from agreement, or for a set given by hand
    0.6 at the target's precision (a draft token costs most of a step) and 0.3 at another (a fraction)."""
    if not hasattr(network, "num_layers"):
        raise InvalidRequest("layerskip drafts with the target's own layers: it needs leapdecode's llama code "
                             "(not the transformers fallback)")
    drafting = _own_weights(network, skip_dtype, load_self)
    if skip_layers is not None:  # by hand: the engine's adaptive draft length decides how far to draft
        skip = SkipLayers.parse(skip_layers, network.num_layers)
        if not skip.skipped and drafting is network:
            raise InvalidRequest(f"skip_layers is empty: at the target's own precision the draft would be the "
                                 f"target itself; name layers 1-{network.num_layers - 2}, or give a skip_dtype")
        return LayerSkipDrafter(drafting, skip, (0.6 if drafting is network else 0.3) if threshold is None else threshold)
    if tokenizer is None or model_id is None:
        raise InvalidRequest("layerskip without skip_layers searches for a set: it needs the tokenizer and a model_id")
    searched = None if drafting is network else drafting
    skip, draft_length, measured = found_skip_layers(network, tokenizer, model_id, searched, skip_dtype)
    return LayerSkipDrafter(drafting, skip, measured if threshold is None else threshold, max_draft=draft_length)


def _own_weights(network: Any, skip_dtype: str | None, load_self: Callable[[str], Any] | None) -> Any:
    """The network layerskip drafts with: the target's, or the same weights loaded at skip_dtype. Either
    writes its keys and values into the target's cache (the same shape, always float32)."""
    if skip_dtype is None:
        return network
    if load_self is None:
        raise InvalidRequest("layerskip's skip_dtype loads the target again at that precision: it needs load_self")
    drafting = load_self(skip_dtype)
    if getattr(drafting, "shape", None) != network.shape:
        raise InvalidRequest(f"layerskip: the target at {skip_dtype} does not have the target's layer shapes")
    return drafting


def _auto(arms: str | Sequence[str] | None = None, *, resources: Mapping[str, Any] | None = None,
          auto_memory: AutoMemory | None = None, **options: Any) -> AutoDrafter:
    """arms: restrict the choice ("suffix,ngram"); options: what its arms take (draft_model, ...), each arm
    built from the same resources as the method alone (head: a trained draft head's file, or None for the
    model's own, adds the eagle arm). auto_memory: what earlier requests measured."""
    return AutoDrafter(build_arms(make_drafter, options, resources or {}, arms), auto_memory)

def _lookahead(window: int = 4, ngram: int = 4, guesses: int = 3, *, network: Any = None) -> LookaheadDrafter:
    drafter = LookaheadDrafter(window, ngram, guesses)  # bad options first: they are the request's problem
    if network is not None and not getattr(network, "token_trees", False):
        raise InvalidRequest("lookahead feeds rows with positions and an attention mask of their own: it needs "
                             "leapdecode's llama code (not the transformers fallback)")
    return drafter


def _eagle(head: str | None = None, head_threshold: float = 0.1, tree: int | None = 0, *,
           load_head: Callable[[str | None], Any], capacity: int) -> EagleDrafter:
    """head: a trained head's file (`leapdecode train-head`); None: the one trained for this model.
    tree: grow token trees from the head's that many likeliest first tokens."""
    if not 0.0 <= head_threshold <= 1.0:
        raise InvalidRequest(f"head_threshold must be between 0 and 1, got {head_threshold}")
    tree_width(tree or 0)  # a bad width is the request's error before the head loads
    return EagleDrafter(load_head(head), capacity, head_threshold, tree or 0)


_FACTORIES: dict[str, Callable[..., Drafter]] = {
    "none": NoDrafter, "ngram": NgramDrafter, "suffix": _suffix, "draft": _draft_model, "layerskip": _layerskip,
    "auto": _auto, "jacobi": JacobiDrafter, "lookahead": _lookahead, "eagle": _eagle,
}
DRAFTER_METHODS = tuple(_FACTORIES)  # ("none", "ngram", "suffix", "draft", "layerskip", "auto", "jacobi", ...)


def required_options(method: str) -> tuple[str, ...]:
    """The options a method cannot run without (draft: draft_model). A factory's keyword-only parameters
    are resources the caller supplies, not options."""
    params = inspect.signature(_FACTORIES[method]).parameters.values()
    resources = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_KEYWORD)
    return tuple(p.name for p in params if p.default is p.empty and p.kind not in resources)


def make_drafter(method: str, resources: Mapping[str, Any] | None = None, **options: Any) -> Drafter:
    """options: the request's own, checked against the factory's signature. resources: what the caller
    holds (tokenizer, load_model, the request's params, gen, capacity, vocab); each goes only to a factory
    that names it, unless options do."""
    factory = _FACTORIES.get(method)
    if factory is None:
        raise InvalidRequest(f"unknown draft method {method!r}; known methods: {', '.join(DRAFTER_METHODS)}")
    options = _tree_option(method, options, (resources or {}).get("network"))
    missing = [name for name in required_options(method) if name not in options]
    if missing:
        raise InvalidRequest(f"draft method {method!r} needs the option(s) {', '.join(missing)}")
    wanted = inspect.signature(factory).parameters
    given = {k: v for k, v in (resources or {}).items() if k in wanted and k not in options}
    if "resources" in wanted:  # a drafter over drafters (auto) builds its arms with all of them
        given["resources"] = dict(resources or {})
    try:  # name a misspelt option here rather than surface a TypeError from deep inside
        inspect.signature(factory).bind(**options, **given)
    except TypeError as e:
        raise InvalidRequest(f"bad options for draft method {method!r}: {e}") from e
    return factory(**options, **given)


def can_tree(method: str) -> bool:
    """Whether a method proposes token trees when given the option tree=N."""
    return "tree" in inspect.signature(_FACTORIES[method]).parameters


def _tree_option(method: str, options: dict[str, Any], network: Any) -> dict[str, Any]:
    """A method that cannot tree is refused a tree, but tolerates tree=0/None (a chain: the default);
    a model whose forward cannot mask (the transformers fallback) is refused trees here, before any work."""
    if not options.get("tree"):
        return options if can_tree(method) else {k: v for k, v in options.items() if k != "tree"}
    if not can_tree(method):
        raise InvalidRequest(f"method {method} cannot propose token trees")
    if not getattr(network, "token_trees", True):
        raise InvalidRequest(TREES_REFUSED)
    return options


__all__ = [
    "DRAFTER_METHODS", "AutoDrafter", "AutoMemory", "DraftModelDrafter", "Drafter", "EagleDrafter", "JacobiDrafter",
    "LayerSkipDrafter", "LookaheadDrafter", "NgramDrafter", "NoDrafter",
    "SkipLayers", "SuffixDrafter",
    "can_tree", "make_drafter", "required_options",
]
