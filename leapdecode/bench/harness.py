"""`leapdecode bench` end to end: prompts -> models -> interleaved timed runs -> divergence check -> report."""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

import torch

from leapdecode.api import LLM
from leapdecode.bench.config import HF_METHODS, BenchConfig
from leapdecode.bench.contenders import build_contenders
from leapdecode.bench.divergence import Divergence, find_divergence
from leapdecode.bench.hf_baseline import HFBaseline
from leapdecode.bench.machine import machine_info
from leapdecode.bench.prompts import BenchPrompt, load_prompts
from leapdecode.bench.record import RunRecord
from leapdecode.bench.report import assemble, print_table, write_report
from leapdecode.bench.runner import EncodedPrompt, run_interleaved, warm_up
from leapdecode.bench.summary import REFERENCE


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Run the benchmark `cfg` describes, write its report under cfg.out_dir, and return the results."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    torch.set_num_threads(cfg.threads)
    measured, warm = _split(load_prompts(cfg.prompts), cfg)  # first: a bad prompt file fails before a model load
    llm = LLM(model=cfg.model, dtype=cfg.dtype)
    prompts, warm_prompts = _encode(llm, measured), _encode(llm, warm)
    needs_hf = any(m in HF_METHODS for m in cfg.methods)
    # The engine's own stop tokens, so both sides stop on the same ids.
    baseline = HFBaseline(llm.checkpoint_dir, llm.dtype, sorted(llm.eos_ids)) if needs_hf else None
    contenders = build_contenders(llm, baseline, cfg.methods, cfg.max_new_tokens)
    warm_up(warm_prompts, contenders)
    records = run_interleaved(prompts, contenders)
    divergences = _divergences(records, prompts, baseline) if baseline is not None else []
    config = asdict(cfg) | {"out": str(cfg.out_dir), "prompt_count": len(prompts)}
    results = assemble(config, machine_info(), records, divergences)
    paths = write_report(results, cfg.out_dir)
    print_table(results)
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return results


def _split(prompts: list[BenchPrompt], cfg: BenchConfig) -> tuple[list[BenchPrompt], list[BenchPrompt]]:
    """Measured prompts, and warm-up ones taken from beyond them: a drafter that learns across requests
    (a suffix corpus) must not have seen a measured prompt's answer during warm-up."""
    measured = prompts[: cfg.limit] if cfg.limit is not None else prompts
    rest = prompts[len(measured) :]
    return measured, (rest or measured)[: cfg.warmup]


def _encode(llm: Any, prompts: list[BenchPrompt]) -> list[EncodedPrompt]:
    return [EncodedPrompt(p, list(llm.encode(p.prompt, raw=p.raw))) for p in prompts]


def _divergences(records: list[RunRecord], prompts: list[EncodedPrompt], baseline: HFBaseline) -> list[Divergence]:
    """Run after all timing, so the extra forwards cannot disturb it."""
    ids = {p.prompt.id: p.ids for p in prompts}
    reference = {r.prompt_id: r for r in records if r.method == REFERENCE}
    found = []
    for r in records:
        if r.method != REFERENCE and r.prompt_id in reference:
            d = find_divergence(reference[r.prompt_id], r, ids[r.prompt_id], baseline.next_logits)
            found += [d] if d is not None else []
    return found
