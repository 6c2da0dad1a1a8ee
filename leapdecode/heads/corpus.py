"""Self-distillation data: the target's own greedy answers to synthetic instructions, decoded in batches."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from leapdecode.heads.prompts import instructions


@dataclass(frozen=True, slots=True)
class Sample:
    prompt_ids: list[int]
    answer_ids: list[int]

    @property
    def tokens(self) -> list[int]:
        return self.prompt_ids + self.answer_ids


def answers(llm: Any, count: int, max_tokens: int, seed: int = 0, cache: Path | None = None) -> list[Sample]:
    """The target's greedy answers to `count` instructions; read from / written to `cache` (JSON lines)."""
    if cache is not None and cache.is_file():
        rows = [json.loads(line) for line in cache.read_text().splitlines()]
        if len(rows) == count and all(len(r["answer_ids"]) <= max_tokens for r in rows):
            return [Sample(r["prompt_ids"], r["answer_ids"]) for r in rows]
    from leapdecode.batching.scheduler import Scheduler, SchedulerConfig

    scheduler = Scheduler(llm.network, SchedulerConfig(max_batch=16, max_queue=count, adaptive=False), policy=llm.policy)
    runs, done = [], {}
    bar = tqdm(total=count, desc="answers", unit="prompt")
    for i, text in enumerate(instructions(count, seed)):
        run = llm.stream(text, method="none", max_new_tokens=max_tokens)
        runs.append(run)
        scheduler.submit(run, _collector(i, done, bar))
    scheduler.run(keep_going=lambda: len(done) < count)
    bar.close()
    samples = [Sample(run.prompt_ids, done[i]) for i, run in enumerate(runs)]
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text("".join(json.dumps({"prompt_ids": s.prompt_ids, "answer_ids": s.answer_ids}) + "\n"
                                 for s in samples))
    return samples


def _collector(i: int, done: dict[int, list[int]], bar: tqdm) -> Any:
    def emit(event: Any) -> None:
        if event.finish_reason is not None:
            done[i] = list(event.result.token_ids) if event.result is not None else []
            bar.update(1)
    return emit
