"""The speculation gate: per batch size, speculate only where whole steps measured both ways say it pays.
A batch whose steps switch speculation on and off still gives every request its plain greedy text."""

from __future__ import annotations

from leapdecode.batching.scheduler import Scheduler, SchedulerConfig
from leapdecode.policy.speculation_gate import EARLY_STEPS, LOOK_EVERY, TRY_STEPS, SpeculationGate


def _drive(gate: SpeculationGate, batch: int, steps: int, on_rate: float, off_rate: float) -> list[bool]:
    """Run `steps` steps at a batch size whose steps yield on_rate / off_rate tokens per second."""
    chosen = []
    for _ in range(steps):
        on = gate.speculate(batch)
        gate.observe(batch, on, tokens=int(100 * (on_rate if on else off_rate)), seconds=100.0)
        chosen.append(on)
    return chosen


def test_tries_both_ways_then_keeps_the_faster():
    gate = SpeculationGate()
    chosen = _drive(gate, 8, 2 * TRY_STEPS + 50, on_rate=0.9, off_rate=1.0)
    assert chosen[:TRY_STEPS] == [False] * TRY_STEPS and chosen[TRY_STEPS : 2 * TRY_STEPS] == [True] * TRY_STEPS
    assert not any(chosen[2 * TRY_STEPS :])  # off wins at this batch size
    assert gate.rates(8)[0] < gate.rates(8)[1]
    faster_on = _drive(SpeculationGate(), 1, 2 * TRY_STEPS + 50, on_rate=1.3, off_rate=1.0)
    assert all(faster_on[2 * TRY_STEPS :])


def test_batch_sizes_are_judged_apart():
    gate = SpeculationGate()
    _drive(gate, 1, 3 * TRY_STEPS, on_rate=1.5, off_rate=1.0)
    _drive(gate, 8, 3 * TRY_STEPS, on_rate=0.8, off_rate=1.0)
    assert gate.speculate(1) and not gate.speculate(8)
    assert gate.rates(4) == (0.0, 0.0) and not gate.speculate(4)  # a new size tries both, plain first


def test_judged_batch_sizes_tell_the_sizes_beyond_them():
    """Speculation that lost at a smaller batch is not tried again at a larger one (its drafts would cost
    whole steps there), and speculation that won at a larger batch is kept at a smaller one; a look at the
    other way still comes, and can overturn it."""
    gate = SpeculationGate()
    _drive(gate, 4, 2 * TRY_STEPS, on_rate=0.5, off_rate=1.0)  # off wins at 4
    assert not any(_drive(gate, 8, LOOK_EVERY - 1, on_rate=0.5, off_rate=1.0))  # so 8 starts off, no trial
    assert _drive(gate, 8, 2 * TRY_STEPS, on_rate=2.0, off_rate=1.0).count(True) == TRY_STEPS  # the look
    assert gate.speculate(8)  # found that speculation pays at 8 after all
    gate = SpeculationGate()
    _drive(gate, 6, 2 * TRY_STEPS, on_rate=2.0, off_rate=1.0)  # on wins at 6
    assert all(_drive(gate, 3, 2 * TRY_STEPS, on_rate=2.0, off_rate=1.0))  # so 3 keeps on, no trial of off


def test_a_hopeless_trial_of_speculation_stops_early():
    """Where speculative steps run at a third of plain ones' rate (a drafting model per request in a big
    batch), two of them settle it: a full trial would cost more than the answer is worth."""
    chosen = _drive(SpeculationGate(), 8, TRY_STEPS + 20, on_rate=0.3, off_rate=1.0)
    assert chosen.count(True) == EARLY_STEPS and chosen[TRY_STEPS : TRY_STEPS + EARLY_STEPS] == [True] * EARLY_STEPS


def test_the_losing_way_is_looked_at_again_and_can_win():
    gate = SpeculationGate()
    chosen = _drive(gate, 2, 2 * TRY_STEPS + LOOK_EVERY + TRY_STEPS, on_rate=0.8, off_rate=1.0)
    looks = chosen[2 * TRY_STEPS :]
    assert looks.count(True) == TRY_STEPS  # one look of TRY_STEPS steps after LOOK_EVERY
    # The text turns repetitive: speculation now pays, and the next look (twice as far off) finds it.
    later = _drive(gate, 2, 4 * LOOK_EVERY, on_rate=3.0, off_rate=1.0)
    assert later[-LOOK_EVERY:].count(False) <= EARLY_STEPS  # on, but for a short look back at off
    assert gate.speculate(2)


def test_looks_that_confirm_the_verdict_are_short_and_ever_rarer():
    """Where speculation costs three plain steps a step (drafting for many requests), a look at it stops
    after two steps, and each look that finds it still losing puts the next one twice as far off."""
    chosen = _drive(SpeculationGate(), 8, TRY_STEPS + EARLY_STEPS + 7 * LOOK_EVERY + 10, on_rate=0.3, off_rate=1.0)
    on_at = [i for i, on in enumerate(chosen) if on][EARLY_STEPS:]  # after the trial's own steps
    starts = [i for n, i in enumerate(on_at) if n % EARLY_STEPS == 0]
    assert len(on_at) == 3 * EARLY_STEPS  # three looks, each cut short, in 7 * LOOK_EVERY steps
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert gaps == [2 * LOOK_EVERY + EARLY_STEPS, 4 * LOOK_EVERY + EARLY_STEPS]


def test_a_stall_does_not_decide():
    """The first speculative step of a fresh server can take seconds (first calls); it is not the way's cost."""
    gate = SpeculationGate()
    gate.observe(1, True, tokens=2, seconds=5.0)
    _drive(gate, 1, 3 * TRY_STEPS, on_rate=1.3, off_rate=1.0)
    assert gate.speculate(1) and gate.rates(1)[0] > gate.rates(1)[1]


def test_batches_that_do_not_draft_leave_the_gate_alone(llm, prompt_ids):
    sched = Scheduler(llm.network, SchedulerConfig(max_batch=2))
    runs = [llm.stream(prompt_ids=prompt_ids[i], method="none", max_new_tokens=12) for i in (0, 1)]
    finished: list[str] = []
    for run in runs:
        sched.submit(run, lambda ev: finished.append(ev.finish_reason) if ev.finish_reason else None)
    sched.run(keep_going=lambda: len(finished) < len(runs))
    assert all(gate_rate == 0.0 for size in (1, 2) for gate_rate in sched.policy.gate.rates(size))


class _AlternatingGate(SpeculationGate):
    """Speculation on and off every other step: drafters are skipped, then asked again, mid-request."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def speculate(self, batch: int) -> bool:
        self.calls += 1
        return self.calls % 2 == 0


def test_steps_without_drafts_keep_every_request_lossless(llm, prompt_ids):
    sched = Scheduler(llm.network, SchedulerConfig(max_batch=3))
    sched.policy.gate = _AlternatingGate()
    picks = [(0, "auto"), (4, "suffix"), (7, "ngram")]
    runs = [llm.stream(prompt_ids=prompt_ids[i], method=m, max_new_tokens=32) for i, m in picks]
    drafted: list[int] = []
    finished: list[str] = []

    def listen(ev) -> None:
        drafted.append(ev.drafted)
        if ev.finish_reason:
            finished.append(ev.finish_reason)

    for run in runs:
        sched.submit(run, listen)
    sched.run(keep_going=lambda: len(finished) < len(runs))
    assert finished.count("error") == 0 and len(finished) == len(runs)
    for (i, _), run in zip(picks, runs):
        assert run.result().token_ids == llm.generate(prompt_ids=prompt_ids[i], method="none",
                                                      max_new_tokens=32).token_ids
    assert sum(drafted) > 0 and drafted.count(0) > len(drafted) // 2  # off steps drafted nothing
