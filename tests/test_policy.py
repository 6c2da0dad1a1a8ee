"""The speculation policy: one request's draft length and acceptance move together, by a draft's depth, in
`generate` and in the server's scheduler alike; one forward-cost fit feeds auto and the batch planner."""

from __future__ import annotations

import pytest
import torch

from leapdecode.batching.scheduler import Scheduler, SchedulerConfig
from leapdecode.drafters.base import Drafter
from leapdecode.types import Draft, SeqView

DEPTH, NEW = 3, 13


class TreeOracle(Drafter):
    """A token tree whose main path is transformers' greedy continuation (DEPTH deep) and whose extra
    first-level branch is always wrong: every step is fully accepted at the tree's depth, never at its
    node count."""

    def __init__(self, prompt_len: int, ref: list[int]) -> None:
        self.prompt_len, self.ref = prompt_len, ref

    def propose(self, ctx: SeqView, k: int) -> Draft:
        done = len(ctx.tokens) - self.prompt_len
        path = self.ref[done : done + min(k, DEPTH)]
        if not path:
            return Draft.empty()
        tokens, parents = path + [path[0] ^ 1], [-1, *range(len(path) - 1), -1]
        return Draft(tokens=torch.tensor(tokens), parents=torch.tensor(parents))


@pytest.fixture
def oracle(monkeypatch, prompt_ids, hf_greedy):
    drafter = TreeOracle(len(prompt_ids[0]), hf_greedy[0])
    monkeypatch.setattr("leapdecode.decode.run.make_drafter", lambda *args, **kwargs: drafter)
    return drafter


def _assert_all_accepted(run, ref: list[int]) -> None:
    acceptance, length = run.engine.policy.acceptance, run.engine.policy.length
    assert run.result().token_ids == ref[: len(run.result().token_ids)]
    assert run.engine.stats.accepted >= 6 and acceptance.accepted == 1.0 + run.engine.stats.accepted
    assert acceptance.rejected == 1.0, "a fully accepted tree was counted as a rejection"
    assert length.k > 6  # grown from the default 6: every draft was right to its depth


def test_a_fully_accepted_tree_counts_as_accepted_in_generate(llm, oracle, prompt_ids, hf_greedy):
    run = llm.stream(prompt_ids=prompt_ids[0], method="suffix", max_new_tokens=NEW)
    for _ in run:
        pass
    _assert_all_accepted(run, hf_greedy[0])


def test_a_fully_accepted_tree_counts_as_accepted_in_the_scheduler(llm, oracle, prompt_ids, hf_greedy):
    # adaptive off: every draft is verified whole (the planner would trim trees by measured step costs)
    sched = Scheduler(llm.network, SchedulerConfig(max_batch=2, adaptive=False), policy=llm.policy)
    run = llm.stream(prompt_ids=prompt_ids[0], method="suffix", max_new_tokens=NEW)
    other = llm.stream(prompt_ids=prompt_ids[1], method="none", max_new_tokens=NEW)  # in one batch with it
    finished: list[str] = []
    for r in (run, other):
        sched.submit(r, lambda ev: finished.append(ev.finish_reason) if ev.finish_reason else None)
    sched.run(keep_going=lambda: len(finished) < 2)
    _assert_all_accepted(run, hf_greedy[0])


def test_one_forward_cost_is_fed_by_generate_and_the_scheduler_and_read_by_auto(llm, prompt_ids):
    forward = llm.policy.forward
    assert llm.drafter_resources.auto_memory.step is forward  # auto reads the fit, never times on its own
    before = len(forward.samples), forward.last
    llm.generate(prompt_ids=prompt_ids[2], method="none", max_new_tokens=4)
    assert forward.samples[-1][0] == 1 and forward.last != before[1]
    sched = Scheduler(llm.network, SchedulerConfig(max_batch=2), policy=llm.policy)
    runs = [llm.stream(prompt_ids=prompt_ids[i], method="none", max_new_tokens=3) for i in (3, 4)]
    finished: list[str] = []
    for r in runs:
        sched.submit(r, lambda ev: finished.append(ev.finish_reason) if ev.finish_reason else None)
    sched.run(keep_going=lambda: len(finished) < 2)
    assert (2, forward.last) in forward.samples  # a batch of two requests: one forward over both rows
