"""Drafters by name, so config and CLI pick one and the engine never asks which one it holds."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leapdecode.decode.tree import TREES_REFUSED, tree_width
from leapdecode.dllm.config import DLLM_ONLY
from leapdecode.drafters.auto.arms import build_arms
from leapdecode.drafters.auto.drafter import AutoDrafter
from leapdecode.drafters.auto.memory import AutoMemory
from leapdecode.drafters.base import Drafter, NoDrafter
from leapdecode.drafters.draft_model import DraftModelConfig, DraftModelDrafter
from leapdecode.drafters.eagle import EagleDrafter
from leapdecode.drafters.jacobi import JacobiDrafter
from leapdecode.drafters.layerskip.drafter import LayerSkipDrafter
from leapdecode.drafters.layerskip.skip_layers import SkipLayers
from leapdecode.drafters.layerskip.store import found_skip_layers
from leapdecode.drafters.lookahead.drafter import LookaheadDrafter
from leapdecode.drafters.ngram import NgramDrafter
from leapdecode.drafters.resources import DrafterResources
from leapdecode.drafters.suffix import SuffixDrafter
from leapdecode.errors import InvalidRequest

if TYPE_CHECKING:
    from leapdecode.models.base import CausalLM


def _none(res: DrafterResources) -> NoDrafter:
    return NoDrafter()


def _ngram(res: DrafterResources, max_n: int = 4, min_n: int = 1, tree: int | None = 0) -> NgramDrafter:
    return NgramDrafter(max_n, min_n, tree)


def _jacobi(res: DrafterResources) -> JacobiDrafter:
    return JacobiDrafter()


def _suffix(res: DrafterResources, min_match: int = 2, corpus_path: str | Path | None = None,
            tree: int | None = 0) -> SuffixDrafter:
    if corpus_path is None:
        return SuffixDrafter(min_match=min_match, tree=tree)
    if res.tokenizer is None:
        raise InvalidRequest("the suffix drafter needs a tokenizer to read corpus_path")
    return SuffixDrafter.from_corpus_file(corpus_path, res.tokenizer, min_match=min_match, tree=tree)


def _draft_model(res: DrafterResources, draft_model: str, draft_threshold: float = 0.4, draft_dtype: str = "auto",
                 tree: int | None = 0) -> DraftModelDrafter:
    """draft_model: a name or path that load_model turns into a network with the target's tokenizer, at
    draft_dtype (auto: a GGUF at its stored precision, see models/draft_models.py). tree: grow token trees of
    that many first-level branches, which needs a draft network that takes a tree mask."""
    if res.load_model is None or res.gen is None:
        raise InvalidRequest("the draft method loads a second model: it needs load_model and a generator")
    cfg = DraftModelConfig(threshold=draft_threshold, capacity=res.capacity, vocab=res.vocab, tree=tree or 0)
    network = res.load_model(draft_model, draft_dtype)
    if cfg.tree > 1 and not network.token_trees:
        raise InvalidRequest(f"draft model {draft_model!r}: {TREES_REFUSED}")
    return DraftModelDrafter(network, cfg, res.params, res.gen)


def _layerskip(res: DrafterResources, skip_layers: str | Sequence[int] | None = None, threshold: float | None = None,
               skip_dtype: str | None = None) -> LayerSkipDrafter:
    """skip_dtype: the draft pass reads the target's own weights at this precision ("int4": its GGUF as
    stored) instead of the target's; None: the target's network itself. threshold: the draft confidence
    below which drafting stops; None: the cut-off the search measured from agreement, or for a set given by hand
    0.6 at the target's precision (a draft token costs most of a step) and 0.3 at another (a fraction)."""
    network = res.network
    if network is None or not network.skips_layers:
        raise InvalidRequest("layerskip drafts with the target's own layers: it needs leapdecode's llama code "
                             "(not the transformers fallback)")
    drafting = _own_weights(network, skip_dtype, res.load_self)
    if skip_layers is not None:  # by hand: the engine's adaptive draft length decides how far to draft
        skip = SkipLayers.parse(skip_layers, network.num_layers)
        if not skip.skipped and drafting is network:
            raise InvalidRequest(f"skip_layers is empty: at the target's own precision the draft would be the "
                                 f"target itself; name layers 1-{network.num_layers - 2}, or give a skip_dtype")
        return LayerSkipDrafter(drafting, skip, (0.6 if drafting is network else 0.3) if threshold is None else threshold)
    if res.tokenizer is None or res.model_id is None:
        raise InvalidRequest("layerskip without skip_layers searches for a set: it needs the tokenizer and a model_id")
    searched = None if drafting is network else drafting
    skip, draft_length, measured = found_skip_layers(network, res.tokenizer, res.model_id, searched, skip_dtype)
    return LayerSkipDrafter(drafting, skip, measured if threshold is None else threshold, max_draft=draft_length)


def _own_weights(network: CausalLM, skip_dtype: str | None, load_self: Callable[[str], CausalLM] | None) -> CausalLM:
    """The network layerskip drafts with: the target's, or the same weights loaded at skip_dtype. Either
    writes its keys and values into the target's cache (the same shape, always float32)."""
    if skip_dtype is None:
        return network
    if load_self is None:
        raise InvalidRequest("layerskip's skip_dtype loads the target again at that precision: it needs load_self")
    drafting = load_self(skip_dtype)
    if not drafting.skips_layers or drafting.shape != network.shape:
        raise InvalidRequest(f"layerskip: the target at {skip_dtype} does not have the target's layer shapes")
    return drafting


def _auto(res: DrafterResources, arms: str | Sequence[str] | None = None, **options: Any) -> AutoDrafter:
    """arms: restrict the choice ("suffix,ngram"); options: what its arms take (draft_model, ...), each arm
    built from the same resources as the method alone (head: a trained draft head's file, or None for the
    model's own, adds the eagle arm). res.auto_memory: what earlier requests measured."""
    return AutoDrafter(build_arms(make_drafter, options, res, arms), res.auto_memory)


def _lookahead(res: DrafterResources, window: int = 4, ngram: int = 4, guesses: int = 3) -> LookaheadDrafter:
    drafter = LookaheadDrafter(window, ngram, guesses)  # bad options first: they are the request's problem
    if res.network is not None and not res.network.token_trees:
        raise InvalidRequest("lookahead feeds rows with positions and an attention mask of their own: it needs "
                             "leapdecode's llama code (not the transformers fallback)")
    return drafter


def _eagle(res: DrafterResources, head: str | None = None, head_threshold: float = 0.1,
           tree: int | None = 0) -> EagleDrafter:
    """head: a trained head's file (`leapdecode train-head`); None: the one trained for this model.
    tree: grow token trees from the head's that many likeliest first tokens."""
    if not 0.0 <= head_threshold <= 1.0:
        raise InvalidRequest(f"head_threshold must be between 0 and 1, got {head_threshold}")
    tree_width(tree or 0)  # a bad width is the request's error before the head loads
    if res.load_head is None:
        raise InvalidRequest("eagle drafts with a trained head: it needs load_head")
    return EagleDrafter(res.load_head(head), res.capacity, head_threshold, tree or 0)


_FACTORIES: dict[str, Callable[..., Drafter]] = {
    "none": _none, "ngram": _ngram, "suffix": _suffix, "draft": _draft_model, "layerskip": _layerskip,
    "auto": _auto, "jacobi": _jacobi, "lookahead": _lookahead, "eagle": _eagle,
}
DRAFTER_METHODS = tuple(_FACTORIES)  # ("none", "ngram", "suffix", "draft", "layerskip", "auto", "jacobi", ...)


def _options(method: str) -> list[inspect.Parameter]:
    """A method's options: its factory's parameters after the resources."""
    return [p for p in inspect.signature(_FACTORIES[method]).parameters.values() if p.name != "res"]


def required_options(method: str) -> tuple[str, ...]:
    """The options a method cannot run without (draft: draft_model)."""
    return tuple(p.name for p in _options(method) if p.default is p.empty and p.kind is not p.VAR_KEYWORD)


def make_drafter(method: str, resources: DrafterResources | None = None, **options: Any) -> Drafter:
    """options: the request's own, checked against the method's factory. resources: what the caller holds
    (the target, loaders, the request's sampling and cache size); each factory reads what it needs."""
    factory = _FACTORIES.get(method)
    if factory is None and method in DLLM_ONLY:
        raise InvalidRequest(f"method {method} is for diffusion LMs (e.g. --model smollm2-135m-dllm); "
                             "this model is autoregressive")
    if factory is None:
        raise InvalidRequest(f"unknown draft method {method!r}; known methods: {', '.join(DRAFTER_METHODS)}")
    res = resources if resources is not None else DrafterResources()
    options = _tree_option(method, options, res.network)
    missing = [name for name in required_options(method) if name not in options]
    if missing:
        raise InvalidRequest(f"draft method {method!r} needs the option(s) {', '.join(missing)}")
    try:  # name a misspelt option here rather than surface a TypeError from deep inside
        inspect.signature(factory).bind(res, **options)
    except TypeError as e:
        raise InvalidRequest(f"bad options for draft method {method!r}: {e}") from e
    return factory(res, **options)


def can_tree(method: str) -> bool:
    """Whether a method proposes token trees when given the option tree=N."""
    return any(p.name == "tree" for p in _options(method))


def _tree_option(method: str, options: dict[str, Any], network: CausalLM | None) -> dict[str, Any]:
    """A method that cannot tree is refused a tree, but tolerates tree=0/None (a chain: the default);
    a model whose forward cannot mask (the transformers fallback) is refused trees here, before any work."""
    if not options.get("tree"):
        return options if can_tree(method) else {k: v for k, v in options.items() if k != "tree"}
    if not can_tree(method):
        raise InvalidRequest(f"method {method} cannot propose token trees")
    if network is not None and not network.token_trees:
        raise InvalidRequest(TREES_REFUSED)
    return options


__all__ = [
    "DRAFTER_METHODS", "AutoDrafter", "AutoMemory", "DraftModelDrafter", "Drafter", "DrafterResources", "EagleDrafter", "JacobiDrafter",
    "LayerSkipDrafter", "LookaheadDrafter", "NgramDrafter", "NoDrafter",
    "SkipLayers", "SuffixDrafter",
    "can_tree", "make_drafter", "required_options",
]
