"""Jacobi and Lookahead decoding: lossless greedy (transformers) and bfloat16 (our own plain decoding),
seeded sampling equal to plain sampling, batched equal to alone, drafts really accepted (the window's
n-grams among them); the window, pool, Jacobi rule and extra-row mask on small cases; bad options refused."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
import torch

from leapdecode.api import LLM
from leapdecode.batching.scheduler import Scheduler, SchedulerConfig
from leapdecode.bench.divergence import first_difference, top2_gap
from leapdecode.cli import main
from leapdecode.decode.engine import Engine
from leapdecode.decode.layout import segment_layout
from leapdecode.drafters import DrafterResources, JacobiDrafter, LookaheadDrafter, make_drafter
from leapdecode.drafters.jacobi import jacobi_update
from leapdecode.drafters.lookahead.ngram_pool import NgramPool
from leapdecode.drafters.lookahead.window import LookaheadWindow
from leapdecode.errors import InvalidRequest
from leapdecode.policy.draft_length import DraftLength
from leapdecode.policy.speculation import RequestPolicy
from leapdecode.types import Draft, SamplingParams, SeqView
from tests.conftest import NEW_TOKENS, PROMPTS, hf_next_logits

METHODS = ("jacobi", "lookahead")
SHORT = 48


@pytest.fixture(scope="module")
def bf16_llm():
    return LLM("smollm2-135m", dtype="bfloat16", threads=2)


def _run(llm, ids, method, **options):
    """Generate and keep the engine, to read the drafter's own counters."""
    run = llm.stream(prompt_ids=ids, method=method, **options)
    for _ in run.steps():
        pass
    return run


@pytest.mark.parametrize("method", METHODS)
def test_greedy_equals_transformers_and_drafts_are_accepted(llm, hf_model, prompt_ids, hf_greedy, method):
    accepted = own = 0  # own: accepted tokens the method's target-iterated guesses found (not the padding/text)
    for i, (ids, ref) in enumerate(zip(prompt_ids[:5], hf_greedy)):
        run = _run(llm, ids, method, max_new_tokens=NEW_TOKENS)
        split = first_difference(run.result().token_ids, ref)
        if split is not None:  # tolerated only where the target itself is at a numerical tie
            gap = top2_gap(hf_next_logits(hf_model, ids + ref[:split]))
            assert gap < 1e-4, f"{method} diverges on prompt {i} ({PROMPTS[i][:40]!r}) at token {split}, gap {gap}"
        drafter = run.engine.drafter
        accepted += run.result().stats.accepted
        own += drafter.converged if method == "jacobi" else drafter.accepted_from_window
    assert accepted > 0
    assert own > 0


@pytest.mark.parametrize("method", METHODS)
def test_bfloat16_equals_its_own_plain_decoding(bf16_llm, prompt_ids, method):
    accepted = 0
    for ids in prompt_ids[:2]:
        plain = bf16_llm.generate(prompt_ids=ids, method="none", max_new_tokens=SHORT)
        spec = bf16_llm.generate(prompt_ids=ids, method=method, max_new_tokens=SHORT)
        assert spec.token_ids == plain.token_ids
        accepted += spec.stats.accepted
    assert accepted > 0


@pytest.mark.parametrize("method", METHODS)
def test_seeded_sampling_equals_plain_sampling(llm, method):
    """Deterministic drafts are verified by sampling the target's own token per position: a seed names one
    text, whatever the guesses were."""
    ids = llm.encode("List the planets of the solar system.")
    plain = llm.generate(prompt_ids=ids, method="none", temperature=0.7, seed=5, max_new_tokens=SHORT)
    spec = llm.generate(prompt_ids=ids, method=method, temperature=0.7, seed=5, max_new_tokens=SHORT)
    assert spec.token_ids == plain.token_ids


def test_batched_with_other_requests_equals_alone(llm, prompt_ids):
    """One forward packs every request's rows, a lookahead window's included: each answer is its own."""
    asks = [(prompt_ids[0], "lookahead", {}), (prompt_ids[1], "jacobi", {}), (prompt_ids[4], "suffix", {}),
            (prompt_ids[5], "lookahead", {"temperature": 0.8, "seed": 3})]
    alone = [llm.generate(prompt_ids=ids, method=m, max_new_tokens=SHORT, **o).token_ids for ids, m, o in asks]
    scheduler = Scheduler(llm.network, SchedulerConfig(max_batch=4))
    finished: list[object] = []
    done = threading.Event()

    def collect(event):
        if event.finish_reason is not None:
            finished.append(event)
            if len(finished) == len(asks):
                done.set()

    runs = [llm.stream(prompt_ids=ids, method=m, max_new_tokens=SHORT, **o) for ids, m, o in asks]
    for run in runs:
        scheduler.submit(run, collect)
    scheduler.run(keep_going=lambda: not done.is_set())
    assert all(e.finish_reason in ("stop", "length") for e in finished), [e.error for e in finished]
    assert [run.result().token_ids for run in runs] == alone


def test_window_left_out_when_the_cache_is_nearly_full(llm, prompt_ids):
    """Near the cache's end the window's rows do not fit: the engine drops them and decoding goes on."""
    ids = prompt_ids[0]
    engine = Engine(llm.network, LookaheadDrafter(), ids, SamplingParams(), RequestPolicy(DraftLength()),
                    capacity=len(ids) + 1)
    end = engine.cache.max_len - 1  # the cache rounds its capacity up, to 64 slots at least
    dropped = 0
    while len(engine.tokens) < end:
        budget, room = end - len(engine.tokens), engine.cache.max_len - engine.cache.length - 1
        draft = engine.propose(budget)
        dropped += draft.extra is None and min(engine.policy.length.k, budget, room) > 0
        engine.settle(draft, llm.network.forward_packed([engine.segment(draft)]))
    generated = engine.tokens[len(ids) :]
    plain = llm.generate(prompt_ids=ids, method="none", max_new_tokens=len(generated)).token_ids
    assert generated[: len(plain)] == plain
    assert dropped > 0


# --- the parts on small cases ---------------------------------------------------------------------------


def test_pool_keeps_recent_distinct_continuations_per_key():
    pool = NgramPool(n=3, per_key=2)
    pool.add_text([1, 2, 3, 1, 2, 4, 1, 5, 6])
    assert pool.continuations(1) == [(5, 6), (2, 4)]  # (2, 3) was the least recent: dropped
    assert pool.continuations(2) == [(4, 1), (3, 1)]
    pool.add([1, 2, 4], found_by="window")  # seen again: refreshed, still found by the text first
    assert pool.continuations(1) == [(2, 4), (5, 6)]
    assert pool.found_by(1, (2, 4)) == "text"
    pool.add([7, 8, 9], found_by="window")
    assert pool.found_by(7, (8, 9)) == "window" and pool.found_by(1, (2, 3)) is None
    pool.add_text([1, 2, 3, 1, 2, 4, 1, 5, 6, 7, 7], start=9)  # only the n-grams ending at the new tokens
    assert pool.continuations(6) == [(7, 7)] and pool.continuations(5) == [(6, 7)]
    assert pool.continuations(3) == [(1, 2)]


def test_window_fills_up_then_keeps_its_width():
    """width 3, 3 levels (4-grams): level 0 starts 2 columns wider; each step adds a level from the top
    level's predictions and drops every level's first column, until 3 levels of 3."""
    win = LookaheadWindow(width=3, levels=3, guesses=[11, 12, 13, 14])
    rows = win.rows()
    assert win.cells() == [(0, 1), (0, 2), (0, 3), (0, 4)] and rows.offsets.tolist() == [1, 2, 3, 4]
    assert torch.equal(rows.sees, torch.ones(4, 4, dtype=torch.bool).tril())  # level 0 alone: a chain
    assert win.advance(pending=10, predicted=[20, 21, 22, 23, 24]) == []  # filling: no harvest yet
    assert win.grid == [[11, 12, 13, 14], [21, 22, 23, 24]]
    assert win.advance(pending=30, predicted=[40, 41, 42, 43, 44, 45, 46, 47]) == []
    assert win.full and win.grid == [[12, 13, 14], [22, 23, 24], [45, 46, 47]]
    assert LookaheadWindow.max_rows(3, 3) == len(win.cells()) == 8


def test_full_window_mask_follows_the_paper():
    """Cell (l, c) sees level 0 up to column c and column c on the levels up to l; positions c + l."""
    win = LookaheadWindow(width=3, levels=3, guesses=[1, 2, 3, 4])
    win.grid = [[-1, 5, 6], [7, 8, 9], [10, 11, 12]]  # full: 3 levels of width 3
    cells = win.cells()
    assert cells == [(0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]
    rows = win.rows()
    assert rows.tokens.tolist() == [5, 6, 7, 8, 9, 10, 11, 12]
    assert rows.offsets.tolist() == [1, 2, 1, 2, 3, 2, 3, 4]
    seen = {cells[i]: {cells[j] for j in range(len(cells)) if rows.sees[i, j]} for i in range(len(cells))}
    assert seen[(2, 2)] == {(0, 1), (0, 2), (1, 2), (2, 2)}
    assert seen[(2, 0)] == {(1, 0), (2, 0)}  # and the pending token, which every extra row sees
    assert seen[(1, 1)] == {(0, 1), (1, 1)}
    # predictions after the pending token, then per cell: the top level's are the 4-grams' last tokens
    grams = win.advance(pending=99, predicted=[50, 51, 52, 53, 54, 55, 60, 61, 62])
    assert grams == [(99, 7, 10, 60), (5, 8, 11, 61), (6, 9, 12, 62)]
    assert win.grid == [[7, 8, 9], [10, 11, 12], [60, 61, 62]]  # one position on: level 0 dropped


def test_extra_rows_mask_and_positions():
    """Pending token + 2-token chain + 2 extra rows at cache slot 5: the draft never sees the extras."""
    extra = LookaheadWindow(width=3, levels=1, guesses=[7, 8]).rows()
    mask, positions = segment_layout(Draft(tokens=torch.tensor([3, 4]), extra=extra), start=5)
    assert mask.shape == (5, 10) and mask[:, :5].all()  # every row sees the committed cache
    assert mask[:, 5:].int().tolist() == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [1, 0, 0, 1, 0],  # extra (0, 1): the pending token and itself
        [1, 0, 0, 1, 1],  # extra (0, 2): the pending token, (0, 1) and itself
    ]
    assert positions.tolist() == [5, 6, 7, 6, 7]
    # a tree (two children of the pending token, one grandchild) keeps its own mask and depths
    tree = Draft(tokens=torch.tensor([3, 4, 9]), parents=torch.tensor([-1, -1, 0]), extra=extra)
    mask, positions = segment_layout(tree, start=2)
    assert mask[:, 2:].int().tolist() == [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 0, 1, 0, 0, 0],
        [1, 1, 0, 1, 0, 0],
        [1, 0, 0, 0, 1, 0],
        [1, 0, 0, 0, 1, 1],
    ]
    assert positions.tolist() == [2, 3, 3, 4, 3, 4]
    assert segment_layout(Draft(tokens=torch.tensor([3, 4])), start=5) == (None, None)  # plain causal


def test_jacobi_update_rule():
    # guess [a, b, c] verified: row 0 predicted a (accepted), row 1 predicted x != b: emitted x; rows 2
    # and 3 were computed after the guessed b and c, the next iterate of the positions after x.
    assert jacobi_update([1, 9, 30, 40], accepted=1) == [30, 40]
    assert jacobi_update([1, 2, 3, 4], accepted=3) == []  # all accepted, the bonus emitted: start afresh
    drafter = JacobiDrafter()
    ctx = SeqView(tokens=[5, 6, 7, 5, 6, 7, 5], prompt_len=7)
    first = drafter.propose(ctx, 4).tokens.tolist()
    assert first == [6, 7, 5, 6]  # padded by prompt lookup
    drafter.observe(ctx, Draft(torch.tensor(first)), [6, 9, 31, 32, 33])  # 6 accepted, then 9 emitted
    ctx.tokens.extend([6, 9])
    drafter.commit(ctx, accepted=1)
    second = drafter.propose(ctx, 3).tokens.tolist()
    assert second == [31, 32, 33] and drafter.converged == 0
    drafter.observe(ctx, Draft(torch.tensor(second)), [31, 32, 70, 71])  # two iterated guesses converged
    ctx.tokens.extend([31, 32, 70])
    drafter.commit(ctx, accepted=2)
    assert drafter.converged == 2 and drafter.propose(ctx, 1).tokens.tolist() == [71]


def test_lookahead_proposes_the_pools_candidates_as_a_tree_with_its_window():
    drafter = LookaheadDrafter(window=3, ngram=3, guesses=3)
    ctx = SeqView(tokens=[1, 2, 3, 4, 1, 2, 5, 1, 6, 7, 1], prompt_len=11)
    draft = drafter.propose(ctx, 5)  # after token 1 the prompt had (2, 3), (2, 5), (6, 7): most recent first
    assert draft.tokens.tolist() == [6, 7, 2, 5, 3] and draft.parents.tolist() == [-1, 0, -1, 2, 2]
    assert drafter.propose(ctx, 2).tokens.tolist() == [6, 7] and drafter.propose(ctx, 2).parents is None
    assert draft.extra is not None and len(draft.extra) == 3  # filling up: level 0 alone, 4 columns

    assert set(draft.extra.tokens.tolist()) <= set(ctx.tokens)  # the window starts from the prompt's tokens


@pytest.mark.parametrize("options, fragment", [
    ({"window": 0}, "window must be an integer >= 1"),
    ({"ngram": 1}, "ngram must be an integer >= 2"),
    ({"guesses": 0}, "guesses must be an integer >= 1"),
    ({"window": "4"}, "window must be an integer"),
    ({"window": 12, "ngram": 6}, "rows a step, more than 64"),
    ({"windows": 4}, "bad options"),
])
def test_bad_options_are_refused(options, fragment):
    with pytest.raises(InvalidRequest, match=fragment):
        make_drafter("lookahead", **options)


def test_lookahead_needs_our_model_code_and_the_cli_checks_its_flags(capsys):
    with pytest.raises(InvalidRequest, match="llama code"):
        make_drafter("lookahead", DrafterResources(network=SimpleNamespace(token_trees=False)))
    assert main(["generate", "hi", "--method", "suffix", "--guesses", "2"]) == 2
    assert "--guesses goes with --method lookahead" in capsys.readouterr().err
