"""`leapdecode bench` end to end: prompts -> models -> interleaved timed runs -> divergence check -> report."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import asdict
from typing import Any

import torch

from leapdecode.api import LLM
from leapdecode.bench.baselines import needs_hf, start_baselines
from leapdecode.bench.config import (
    LLAMA_SERVER_METHODS,
    LLAMACPP_METHODS,
    OUTSIDE_METHODS,
    TREE_VARIANT,
    BenchConfig,
    base_method,
)
from leapdecode.bench.contenders import GenerateFn, build_contenders
from leapdecode.bench.diffusion import ar_contenders, check_model_kind, score
from leapdecode.bench.divergence import Divergence, LogitsFn, find_divergence
from leapdecode.bench.llama_server import llamacpp_tool
from leapdecode.bench.llamacpp_baseline import check_llama_cpp, gguf_file
from leapdecode.bench.machine import machine_info
from leapdecode.bench.prompts import BenchPrompt, load_prompts
from leapdecode.bench.record import RunRecord, peak_rss_mb
from leapdecode.bench.report import assemble, print_table, write_report
from leapdecode.bench.roofline import roofline
from leapdecode.bench.runner import EncodedPrompt, run_interleaved, warm_up
from leapdecode.bench.structured import check_methods, encode_structured
from leapdecode.bench.summary import REFERENCE
from leapdecode.bench.worker import Worker
from leapdecode.dllm.config import DLLM_METHODS, is_variant, split_variant
from leapdecode.models.loader import resolve_checkpoint

DRAFT_USERS = ("draft", "auto")  # engine methods that draft with --draft-model when it is given


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Run the benchmark `cfg` describes, write its report under cfg.out_dir, and return the results."""
    torch.set_num_threads(cfg.threads)
    measured, warm = _split(load_prompts(cfg.prompts), cfg)  # first: a bad prompt file fails before a model load
    check_methods(cfg.methods, measured)
    _check_outside_tools(cfg)  # likewise: no llama.cpp, or a model with no GGUF, fails before any load
    llm = LLM(model=cfg.model, dtype=cfg.dtype)
    check_model_kind(cfg, llm.is_diffusion)
    models_rss = _models_rss(llm, cfg)  # the baselines load theirs in their own processes
    prompts, warm_prompts = _encode(llm, measured), _encode(llm, warm)
    precision = getattr(llm, "precision", cfg.dtype)  # what the engine runs: dtype="auto" resolved
    records, divergences, runtimes = _measure(cfg, llm, prompts, warm_prompts, precision)
    config = asdict(cfg) | {"out": str(cfg.out_dir), "prompt_count": len(prompts), "precision": precision}
    config |= {"hf_dtype": str(_hf_dtype(precision)).removeprefix("torch.")} if needs_hf(cfg) else {}
    results = assemble(config, machine_info() | runtimes, records, divergences, models_rss)
    results["forward_cost"] = roofline(llm.network)  # after every timed run, so it disturbs none of them
    paths = write_report(results, cfg.out_dir)
    print_table(results)
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return results


def _measure(
    cfg: BenchConfig, llm: Any, prompts: list[EncodedPrompt], warm_prompts: list[EncodedPrompt], precision: str
) -> tuple[list[RunRecord], list[Divergence], dict[str, Any]]:
    """Start the baselines' processes, run every method on every prompt, check divergences, and stop them all
    (also on an error or Ctrl-C). Returns the records, divergences and the baselines' runtime info."""
    eos_ids = sorted(llm.eos_ids)  # the engine's own stop tokens, so every side stops on the same ids
    # int precisions' checkpoint dir may hold no floats: transformers reads the model's own weights
    hf_weights = (resolve_checkpoint(cfg.model), _hf_dtype(precision)) if needs_hf(cfg) else None
    with ExitStack() as stack:
        baselines = start_baselines(cfg, stack, eos_ids, hf_weights)
        own = tuple(m for m in cfg.methods if m not in cfg.ar_methods)
        contenders = build_contenders(llm, baselines.hf, own, cfg.max_new_tokens, baselines.llamacpp,
                                      drafter_options(cfg))
        contenders = _in_given_order(cfg, contenders | ar_contenders(cfg, llm))
        warm_up(warm_prompts, contenders)
        records = score(run_interleaved(prompts, contenders), prompts, llm.tokenizer)
        # At int8/int4/gguf the engine runs other weights than hf does: lossless is judged against its own plain
        # decoding there (the report's "exact match vs own plain"), not by scoring splits from hf.
        same_weights = baselines.hf is not None and precision in ("float32", "bfloat16")
        divergences = _divergences(records, prompts, _next_logits(baselines.hf)) if same_weights else []
    return records, divergences, baselines.info


def _in_given_order(cfg: BenchConfig, contenders: dict[str, GenerateFn]) -> dict[str, GenerateFn]:
    return {m: contenders[m] for m in cfg.methods}


def _next_logits(hf: Worker | None) -> LogitsFn:
    """The divergence check's logits, from the hf worker's model."""
    assert hf is not None
    return lambda ids: hf.call("next_logits", ids)


def drafter_options(cfg: BenchConfig) -> dict[str, dict[str, Any]]:
    """Per engine method, the options the flags give it; auto gets every arm the flags make possible, and a
    :tree variant its chain method's options and a tree."""
    draft = {"draft_model": cfg.draft_model, "draft_dtype": cfg.draft_dtype} if cfg.draft_model else {}
    skip = {"skip_layers": cfg.skip_layers} if cfg.skip_layers else {}
    own = {"skip_dtype": cfg.skip_dtype} if cfg.skip_dtype else {}
    options = {"draft": draft, "layerskip": skip | own, "auto": draft | skip | own}
    if cfg.block_size is not None:  # diffusion LMs
        options |= {m: options.get(m, {}) | {"block_size": cfg.block_size} for m in DLLM_METHODS}
    for m in (m for m in cfg.methods if is_variant(m)):  # a diffusion LM's method with its knob (and cache) set
        method, knob = split_variant(m)
        options[m] = options.get(method, {}) | knob
    for m in (m for m in cfg.methods if m.endswith(TREE_VARIANT)):
        options[m] = options.get(base_method(m), {}) | {"tree": cfg.tree_width}
    return options


def _models_rss(llm: Any, cfg: BenchConfig) -> dict[str, float]:
    """Method -> the process's peak RSS once the models it runs on are loaded: the target, plus the draft for
    the methods that draft with it (loaded here, once; the LLM keeps it for them)."""
    target = peak_rss_mb()
    with_draft = target
    if llm.is_diffusion:
        return {m: target for m in cfg.methods if m not in cfg.ar_methods}
    if cfg.draft_model and any(base_method(m) in DRAFT_USERS for m in cfg.methods):
        llm.drafts.load(cfg.draft_model, cfg.draft_dtype)
        with_draft = peak_rss_mb()
    return {m: with_draft if base_method(m) in DRAFT_USERS and cfg.draft_model else target
            for m in cfg.methods if m not in OUTSIDE_METHODS}


def _check_outside_tools(cfg: BenchConfig) -> None:
    """Fail fast, before any model load: llama-cpp-python installed, llama-server built, GGUF files at hand
    (a known model's is fetched here, once)."""
    if any(m in LLAMACPP_METHODS for m in cfg.methods):
        check_llama_cpp()
    if any(m in LLAMA_SERVER_METHODS for m in cfg.methods):
        llamacpp_tool("llama-server")
    if any(m in LLAMACPP_METHODS + LLAMA_SERVER_METHODS for m in cfg.methods):
        gguf_file(cfg.model)
    if "llamacpp-draft" in cfg.methods and cfg.draft_model:
        gguf_file(cfg.draft_model)


def _hf_dtype(precision: str) -> torch.dtype:
    """transformers runs the float formats only: bfloat16 when the engine does, float32 for everything else (the
    int and gguf formats are the engine's own)."""
    return torch.bfloat16 if precision == "bfloat16" else torch.float32


def _split(prompts: list[BenchPrompt], cfg: BenchConfig) -> tuple[list[BenchPrompt], list[BenchPrompt]]:
    """Measured prompts, and warm-up ones taken from beyond them: a drafter that learns across requests
    (a suffix corpus) must not have seen a measured prompt's answer during warm-up."""
    measured = prompts[: cfg.limit] if cfg.limit is not None else prompts
    rest = prompts[len(measured) :]
    return measured, (rest or measured)[: cfg.warmup]


def _encode(llm: Any, prompts: list[BenchPrompt]) -> list[EncodedPrompt]:
    return [EncodedPrompt(p, *encode_structured(llm, p)) for p in prompts]


def _divergences(records: list[RunRecord], prompts: list[EncodedPrompt], next_logits: LogitsFn) -> list[Divergence]:
    """Run after all timing, so the extra forwards cannot disturb it."""
    ids = {p.prompt.id: p.ids for p in prompts}
    reference = {r.prompt_id: r for r in records if r.method == REFERENCE}
    # llama.cpp computes with its own quantized kernels: a split from hf there is expected, not a bug this
    # check could point to, so its methods are compared by exact match only.
    other_runtime = LLAMACPP_METHODS + LLAMA_SERVER_METHODS
    found = []
    for r in records:
        if r.method != REFERENCE and r.method not in other_runtime and r.prompt_id in reference:
            d = find_divergence(reference[r.prompt_id], r, ids[r.prompt_id], next_logits)
            found += [d] if d is not None else []
    return found
