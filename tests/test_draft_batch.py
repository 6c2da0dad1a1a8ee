"""Drafting for a batch: layer-skip drafters of several requests share one forward per draft depth, each
request getting the draft it would get alone, and a batch drafted that way is still every request's own
greedy text."""

from __future__ import annotations

import torch

from leapdecode.batching.scheduler import Scheduler, SchedulerConfig
from leapdecode.drafters import LayerSkipDrafter, SkipLayers
from leapdecode.types import SeqView

SKIP = "3,5,25"


def _view(llm, ids: list[int], capacity: int) -> SeqView:
    cache = llm.network.new_cache(capacity)
    llm.network.forward(torch.tensor([ids[:-1]]), 0, cache, logits=False)
    cache.rollback(len(ids) - 1)
    return SeqView(tokens=ids, prompt_len=len(ids), cache=cache)


def test_drafting_for_many_is_drafting_for_each(llm, prompt_ids):
    drafter = LayerSkipDrafter(llm.network, SkipLayers.parse(SKIP, 30), threshold=0.0)
    ids = [prompt_ids[i] for i in (0, 3, 5)]
    views = [_view(llm, x, len(x) + 8) for x in ids]
    together = drafter.propose_many(views, [4, 0, 6])
    alone = [drafter.propose(v, k) for v, k in zip(views, [4, 0, 6])]
    assert [len(d) for d in together] == [4, 0, 6]  # threshold 0: full chains, and none where k is 0
    assert [d.tokens.tolist() for d in together] == [d.tokens.tolist() for d in alone]
    assert [v.cache.length for v in views] == [len(x) - 1 for x in ids]  # drafting moved no cache
    sure = LayerSkipDrafter(llm.network, SkipLayers.parse(SKIP, 30), threshold=0.9)  # chains stop apart
    assert ([d.tokens.tolist() for d in sure.propose_many(views, [6, 6, 6])]
            == [sure.propose(v, 6).tokens.tolist() for v in views])


def test_a_batch_drafting_together_keeps_every_request_lossless(llm, prompt_ids, monkeypatch):
    sizes: list[int] = []
    many = LayerSkipDrafter.propose_many

    def counted(self, views, ks):
        sizes.append(len(views))
        return many(self, views, ks)

    monkeypatch.setattr(LayerSkipDrafter, "propose_many", counted)
    sched = Scheduler(llm.network, SchedulerConfig(max_batch=3, adaptive=False))
    picks = [0, 4, 7]
    runs = [llm.stream(prompt_ids=prompt_ids[i], method="layerskip", skip_layers=SKIP, max_new_tokens=24)
            for i in picks]
    finished: list[str] = []
    for run in runs:
        sched.submit(run, lambda ev: finished.append(ev.finish_reason) if ev.finish_reason else None)
    sched.run(keep_going=lambda: len(finished) < len(runs))
    assert finished == ["length"] * 3
    assert max(sizes) == 3  # the three requests drafted in shared forwards
    for i, run in zip(picks, runs):
        assert run.result().token_ids == llm.generate(prompt_ids=prompt_ids[i], method="none",
                                                      max_new_tokens=24).token_ids
        assert run.result().stats.accepted > 0
