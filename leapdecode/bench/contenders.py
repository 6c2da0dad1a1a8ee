"""Every method under test as one callable: prompt ids (and the prompt's output constraint) in, a timed
Generation out."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from leapdecode.bench.config import HF_METHODS, LLAMA_SERVER_METHODS, LLAMACPP_METHODS, base_method
from leapdecode.bench.record import Generation

GenerateFn = Callable[[list[int], dict[str, Any]], Generation]  # (ids, constraint options) -> Generation


class HFLike(Protocol):
    """HFBaseline's generate(), as its worker (bench.worker.Worker) forwards it."""

    def generate(self, prompt_ids: list[int], max_new_tokens: int, prompt_lookup: bool = False,
                 assisted: bool = False) -> Generation: ...


class LlamaCppLike(Protocol):
    """LlamaCppBaseline's generate() in its worker, or a LlamaServer's."""

    def generate(self, prompt_ids: list[int], max_new_tokens: int, json_schema: dict[str, Any] | None = None
                 ) -> Generation: ...


def build_contenders(
    llm: Any,
    baseline: HFLike | None,
    methods: tuple[str, ...],
    max_new_tokens: int,
    llamacpp: dict[str, LlamaCppLike] | None = None,
    drafter_options: dict[str, dict[str, Any]] | None = None,
) -> dict[str, GenerateFn]:
    """Name -> generate function, in the order given; hf methods need the baseline (hf-assist its assistant),
    llamacpp methods their own llama.cpp instance or server (keyed by method name); the baselines run in
    processes of their own (see baselines.py), the engine's methods here; engine methods get their
    drafter_options[method] (a :tree variant runs its base method with its own options)."""
    contenders: dict[str, GenerateFn] = {}
    for method in methods:
        if method in HF_METHODS:
            assert baseline is not None, "hf methods need the HF baseline loaded"
            contenders[method] = _hf(baseline, max_new_tokens, method)
        elif method in LLAMACPP_METHODS + LLAMA_SERVER_METHODS:
            assert llamacpp is not None and method in llamacpp, f"{method} needs its llama.cpp instance loaded"
            contenders[method] = _llamacpp(llamacpp[method], max_new_tokens)
        else:
            options = (drafter_options or {}).get(method, {})
            contenders[method] = _engine(llm, base_method(method), max_new_tokens, options)
    return contenders


def _hf(baseline: HFLike, max_new_tokens: int, method: str) -> GenerateFn:
    pld, assisted = method == "hf-pld", method == "hf-assist"
    return lambda ids, constraint=None: baseline.generate(ids, max_new_tokens, prompt_lookup=pld, assisted=assisted)


def _llamacpp(instance: LlamaCppLike, max_new_tokens: int) -> GenerateFn:
    """llama-server takes a prompt's JSON schema as its own grammar (checked before the run: structured.py)."""
    return lambda ids, constraint=None: instance.generate(ids, max_new_tokens, **(constraint or {}))


def _engine(llm: Any, method: str, max_new_tokens: int, options: dict[str, Any]) -> GenerateFn:
    def run(ids: list[int], constraint: dict[str, Any] | None = None) -> Generation:
        # Timed here, the same way as the HF baseline, rather than trusting each side's own clock.
        start = time.perf_counter()
        res = llm.generate(prompt_ids=ids, method=method, max_new_tokens=max_new_tokens, **options, **(constraint or {}))
        seconds = time.perf_counter() - start
        stats = res.stats.as_dict()
        return Generation(list(res.token_ids), seconds, res.stats.mean_accepted, res.finish_reason, stats)

    return run
