"""The timed loop: every method on every prompt, interleaved, so slow drift (heat, other load) hits all alike."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from leapdecode.bench.contenders import GenerateFn
from leapdecode.bench.prompts import BenchPrompt
from leapdecode.bench.record import RunRecord, peak_rss_mb


@dataclass(frozen=True, slots=True)
class EncodedPrompt:
    prompt: BenchPrompt
    ids: list[int]  # the model's input, chat template applied once for every method
    options: dict[str, Any] = field(default_factory=dict)  # generate()'s constraint for it: a schema, the tools' grammar


def rotated(names: list[str], shift: int) -> list[str]:
    """The method order for one prompt: shifted by one per prompt, so no method always runs first or last."""
    k = shift % len(names) if names else 0
    return names[k:] + names[:k]


def warm_up(prompts: list[EncodedPrompt], contenders: dict[str, GenerateFn]) -> None:
    """Run each method untimed: first calls pay for lazy init, allocator growth and kernel selection."""
    for p in prompts:
        for generate in contenders.values():
            generate(p.ids, p.options)


def run_interleaved(prompts: list[EncodedPrompt], contenders: dict[str, GenerateFn]) -> list[RunRecord]:
    """For each prompt, each method once (rotating the order); one record per (method, prompt)."""
    records: list[RunRecord] = []
    names = list(contenders)
    with tqdm(total=len(prompts) * len(names), desc="bench", unit="run", file=sys.stderr) as bar:
        for n, p in enumerate(prompts):
            for method in rotated(names, n):
                bar.set_postfix_str(f"{p.prompt.id} {method}")
                records.append(_record(method, p, contenders[method]))
                bar.update()
    return records


def _record(method: str, p: EncodedPrompt, generate: GenerateFn) -> RunRecord:
    g = generate(p.ids, p.options)
    return RunRecord(
        method=method,
        prompt_id=p.prompt.id,
        category=p.prompt.category,
        prompt_tokens=len(p.ids),
        token_ids=g.token_ids,
        seconds=g.seconds,
        mean_accepted=g.mean_accepted,
        finish_reason=g.finish_reason,
        peak_rss_mb=g.peak_rss_mb if g.peak_rss_mb is not None else peak_rss_mb(),
        engine_stats=g.engine_stats,
        pid=g.pid,
        level=p.prompt.level,
    )
