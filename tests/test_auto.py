"""auto: lossless; backs off to plain decoding when drafts do not pay and drafts long when they do; fills the
per-position and time-split stats; works in a batch with the planner."""

from __future__ import annotations

import pytest
import torch

from leapdecode.batching.scheduler import Scheduler, SchedulerConfig
from leapdecode.bench.divergence import first_difference, top2_gap
from leapdecode.decode.engine import Engine
from leapdecode.drafters import DrafterResources, make_drafter
from leapdecode.drafters.auto.arms import build_arms
from leapdecode.drafters.auto.drafter import PLAIN, ArmDrafter, AutoDrafter, _Proposal
from leapdecode.drafters.auto.position_acceptance import PositionAcceptance, match_key
from leapdecode.drafters.base import Drafter, NoDrafter
from leapdecode.errors import InvalidRequest
from leapdecode.policy.draft_length import DraftLength
from leapdecode.policy.draft_planner import Acceptance, plan_drafts
from leapdecode.policy.speculation import RequestPolicy, SpeculationPolicy
from leapdecode.policy.step_cost import StepCost
from leapdecode.types import Draft, GenerationStats, SamplingParams, SeqView
from tests.conftest import PROMPTS, hf_next_logits

AUTO_TOKENS = 40  # test_lossless runs auto over the full 128 too
NEAR_TIE = 1e-4
STEPS = 48
WARM_UP = 8


def assert_greedy(hf_model, ids: list[int], ref: list[int], out: list[int], where: str) -> None:
    """out equals transformers' greedy ref as far as both go; a split only where the target is at a tie."""
    n = min(len(out), len(ref))
    split = first_difference(out[:n], ref[:n])
    if split is not None:
        gap = top2_gap(hf_next_logits(hf_model, ids + ref[:split]))
        assert gap < NEAR_TIE, f"{where} diverges at token {split}, gap {gap}"


class Oracle(Drafter):
    """Drafts transformers' greedy continuation: every token right, or (wrong=True) every first token wrong."""

    def __init__(self, prompt_len: int, ref: list[int], wrong: bool = False) -> None:
        self.prompt_len, self.ref, self.wrong = prompt_len, ref, wrong

    def propose(self, ctx: SeqView, k: int) -> Draft:
        done = len(ctx.tokens) - self.prompt_len
        guess = self.ref[done : done + k]
        if self.wrong:
            guess = [t ^ 1 for t in guess]  # never the greedy token
        return Draft(tokens=torch.tensor(guess, dtype=torch.long))


def _decode(llm, drafter, ids: list[int], steps: int) -> tuple[list[int], list[int], GenerationStats]:
    """`steps` engine steps with auto's own cap: the tokens, draft tokens verified per step, the stats. The
    engine times its forwards into the cost auto reads, as an LLM's requests do."""
    policy = RequestPolicy(DraftLength(12, 12, 12), shared=SpeculationPolicy(forward=drafter.memory.step))
    engine = Engine(llm.network, drafter, ids, SamplingParams(), policy, len(ids) + 13 * steps + 1)
    out, drafted = [], []
    with torch.inference_mode():
        for _ in range(steps):
            before = engine.stats.drafted
            out += engine.step(budget=12)
            drafted.append(engine.stats.drafted - before)
    return out, drafted, engine.stats


@pytest.fixture(scope="module")
def auto_runs(llm, prompt_ids):
    return [llm.generate(prompt_ids=ids, method="auto", max_new_tokens=AUTO_TOKENS) for ids in prompt_ids]


def test_auto_greedy_equals_transformers_with_several_arms(hf_model, prompt_ids, hf_greedy, auto_runs):
    arms: dict[str, int] = {}
    for i, (ids, ref, res) in enumerate(zip(prompt_ids, hf_greedy, auto_runs)):
        assert_greedy(hf_model, ids, ref, res.token_ids, f"auto on prompt {i} ({PROMPTS[i][:30]!r})")
        for arm, n in res.stats.arms.items():
            arms[arm] = arms.get(arm, 0) + n
    drafting = [a for a in arms if a != PLAIN]
    assert PLAIN in arms and drafting, f"auto chose only {arms}"
    assert sum(r.stats.accepted for r in auto_runs) > 0


def test_stats_per_position_and_time_split_add_up(auto_runs):
    for res in auto_runs:
        s = res.stats
        assert sum(s.drafted_at) == s.drafted and sum(s.accepted_at) == s.accepted
        assert all(a <= d for a, d in zip(s.accepted_at, s.drafted_at))
        assert s.drafted_at == sorted(s.drafted_at, reverse=True)  # a draft reaching i reached every j < i
        assert s.accepted_at == sorted(s.accepted_at, reverse=True)
        # every step auto chose for; the engine skips the drafter when no draft could be used (the last token)
        assert s.target_forwards - 1 <= sum(s.arms.values()) <= s.target_forwards
        assert s.setup_seconds > 0 and s.draft_seconds > 0 and s.verify_seconds > 0
        assert s.setup_seconds + s.draft_seconds + s.verify_seconds <= s.seconds + 1e-3
        d = s.as_dict()
        assert d["drafted_at"] == s.drafted_at and d["arms"] == s.arms
        assert d["overhead_seconds"] == pytest.approx(s.seconds - s.setup_seconds - s.draft_seconds
                                                      - s.verify_seconds, abs=1e-3)


def test_plain_decoding_stats_have_no_drafts(llm, prompt_ids):
    s = llm.generate(prompt_ids=prompt_ids[2], method="none", max_new_tokens=8).stats
    assert s.drafted_at == [] and s.arms == {} and s.draft_seconds < s.verify_seconds  # proposing nothing
    assert s.verify_seconds > 0 and s.target_forwards == s.new_tokens


@pytest.mark.parametrize("cheap", [True, False])
def test_backs_off_to_plain_when_drafts_are_always_wrong(llm, hf_model, prompt_ids, hf_greedy, cheap):
    """A cheap arm is scored every step for free; a costly one only by probes, at doubling gaps."""
    ids, ref = prompt_ids[1], hf_greedy[1]
    auto = AutoDrafter([ArmDrafter("wrong", Oracle(len(ids), ref, wrong=True), cheap)])
    out, drafted, stats = _decode(llm, auto, ids, STEPS)
    assert_greedy(hf_model, ids, ref, out, "auto over a wrong arm")
    assert stats.accepted == 0
    drafting_steps = sum(1 for n in drafted[WARM_UP:] if n)
    assert drafting_steps <= 0.15 * (STEPS - WARM_UP), f"drafted on {drafting_steps} steps after warm-up: {drafted}"


def test_drafts_long_when_drafts_are_always_right(llm, hf_model, prompt_ids, hf_greedy):
    ids, ref = prompt_ids[1], hf_greedy[1]
    arms = [ArmDrafter("wrong", Oracle(len(ids), ref, wrong=True), True), ArmDrafter("right", Oracle(len(ids), ref), True)]
    out, _, stats = _decode(llm, AutoDrafter(arms), ids, 12)
    assert_greedy(hf_model, ids, ref, out, "auto over a right arm")
    assert stats.arms.get("right", 0) >= 10 and stats.arms.get("wrong", 0) <= 1  # a tie at first: equal priors
    assert len(out) / stats.target_forwards > 4  # draft lengths grew with the measured acceptance


def test_seeded_sampling_equals_plain_sampling(llm):
    """auto's arms draft deterministically, so a seed gives the text plain sampling gives."""
    for prompt in ("List the planets of the solar system.", "Count from 1 to 40, separated by commas."):
        ids = llm.encode(prompt)
        plain = llm.generate(prompt_ids=ids, method="none", temperature=0.7, seed=5, max_new_tokens=48)
        auto = llm.generate(prompt_ids=ids, method="auto", temperature=0.7, seed=5, max_new_tokens=48)
        assert auto.token_ids == plain.token_ids


def test_in_a_batch_auto_equals_plain(llm, prompt_ids):
    sched = Scheduler(llm.network, SchedulerConfig(max_batch=3))
    methods = ["auto", "auto", "suffix"]
    runs = [llm.stream(prompt_ids=prompt_ids[i], method=m, max_new_tokens=32) for i, m in zip((0, 4, 7), methods)]
    finished: list[str] = []
    for run in runs:
        sched.submit(run, lambda ev: finished.append(ev.finish_reason) if ev.finish_reason else None)
    sched.run(keep_going=lambda: len(finished) < len(runs))
    assert finished.count("error") == 0 and len(finished) == len(runs)
    for i, run in zip((0, 4, 7), runs):
        plain = llm.generate(prompt_ids=prompt_ids[i], method="none", max_new_tokens=32)
        assert run.result().token_ids == plain.token_ids
        assert run.result().stats.verify_seconds > 0
    assert sum(run.result().stats.arms.get(PLAIN, 0) for run in runs[:2]) < sum(r.result().stats.target_forwards
                                                                               for r in runs[:2])


def test_planner_trims_by_the_drafters_own_chances():
    cost = StepCost(base=0.010, per_row=0.002)
    assert plan_drafts([4], [0.9], cost) == [4]  # alpha 0.9: every token pays
    assert plan_drafts([4], [0.9], cost, [(0.9, 0.1, 0.05, 0.01)]) == [1]  # auto says only the first does
    assert plan_drafts([4, 3], [0.9, 0.9], cost, [None, (0.01, 0.001, 0.0)]) == [4, 0]


def test_planner_weighs_making_a_draft_before_it_is_made():
    """Asked before drafting (a batch's drafts cost forwards of their own), a token pays only if making it
    and verifying it does."""
    cost = StepCost(base=0.010, per_row=0.002)
    assert plan_drafts([4], [0.9], cost) == [4]
    assert plan_drafts([4], [0.9], cost, draft_cost=StepCost(base=0.0, per_row=0.008)) == [1]


def test_acceptance_reads_each_draft_position_apart():
    """Rejections in bursts (all at the first token, or none): past the first position, drafts pass far
    more often than alpha says, and the chances say so."""
    acc = Acceptance()
    for _ in range(20):
        acc.update(4, 4)
    for _ in range(10):
        acc.update(4, 0)
    chances = acc.chances(4)
    assert chances[0] < acc.alpha < chances[1] / chances[0]
    assert chances == sorted(chances, reverse=True) and Acceptance().chances(2) == [0.5, 0.25]


def test_position_acceptance_and_match_keys():
    table = PositionAcceptance(positions=4, decay=1.0)
    table.observe(key=2, matched=2, rejected=True)  # tokens 0, 1 right, 2 wrong
    table.observe(key=2, matched=3, rejected=False)  # right so far: tokens 0..2
    table.observe(key=2, matched=6, rejected=False, start=3)  # and on, past the tracked positions
    assert [table.counts(2, i) for i in range(4)] == [(2, 2), (2, 2), (1, 2), (1, 1)]
    assert table.counts(0, 0) == (0, 0)
    assert [match_key(n) for n in (0, 1, 2, 3, 4, 5, 6, 12, 100)] == [0, 1, 2, 3, 4, 4, 5, 7, 9]


def test_auto_options_are_checked():
    assert set(make_drafter("auto").arms) == {"suffix", "ngram"}
    assert set(make_drafter("auto", arms="ngram").arms) == {"ngram"}
    with pytest.raises(InvalidRequest, match="choose from none, suffix, ngram"):
        make_drafter("auto", arms="suffix,draft")  # draft needs draft_model
    with pytest.raises(InvalidRequest, match="not max_n"):
        make_drafter("auto", max_n=3)
    with pytest.raises(InvalidRequest, match="distinct names"):
        AutoDrafter([ArmDrafter("none", Oracle(0, []), True)])


def test_draft_model_arm_is_probed_and_lossless(llm, hf_model, prompt_ids, hf_greedy):
    """The target drafting for itself: right almost always, but each draft token costs a full forward."""
    res = llm.generate(prompt_ids=prompt_ids[3], method="auto", draft_model="smollm2-135m", max_new_tokens=32)
    assert_greedy(hf_model, prompt_ids[3], hf_greedy[3], res.token_ids, "auto with a draft model")
    assert res.stats.arms.get("draft", 0) >= 1


def test_lookahead_arm_is_opt_in_lossless_and_fed(llm, hf_model, prompt_ids, hf_greedy):
    """Its window's rows are paid on every step it runs, so auto runs it only when asked. When it drafts,
    the target's predictions at its rows reach it (its window fills), and the output stays greedy."""
    assert "lookahead" not in make_drafter("auto").arms
    assert set(make_drafter("auto", window=3).arms) == {"suffix", "ngram", "lookahead"}
    run = llm.stream(prompt_ids=prompt_ids[0], method="auto", arms="suffix,lookahead", max_new_tokens=64)
    for _ in run.steps():
        pass
    res = run.result()
    assert_greedy(hf_model, prompt_ids[0], hf_greedy[0], res.token_ids, "auto with a lookahead arm")
    lookahead = run.engine.drafter.arms["lookahead"].drafter
    assert res.stats.arms.get("lookahead", 0) >= 2 and lookahead._window.full


def test_layerskip_arm_comes_with_a_set_or_a_precision_and_is_lossless(llm, hf_model, prompt_ids, hf_greedy):
    """A skip set or a cheaper precision (the search then finds the set) makes layerskip an arm; at int4
    with every layer kept it is the arm auto should lean on, and the output stays greedy."""
    def names(**given):
        return [a.name for a in build_arms(lambda method, resources, **options: NoDrafter(), given, DrafterResources())]

    assert "layerskip" in names(skip_dtype="int4") and "layerskip" in names(skip_layers="3")
    assert "layerskip" not in names()
    ids, ref = prompt_ids[1], hf_greedy[1]
    res = llm.generate(prompt_ids=ids, method="auto", skip_layers="none", skip_dtype="int4", max_new_tokens=48)
    assert_greedy(hf_model, ids, ref, res.token_ids, "auto with an int4 layerskip arm")
    assert res.stats.arms.get("layerskip", 0) >= 1 and res.stats.accepted > 0


def test_a_tree_proposal_is_scored_along_the_text():
    """A tree is right as deep as the text follows one of its paths, as greedy verification would find."""
    tree = Draft(tokens=torch.tensor([5, 7, 6]), parents=torch.tensor([-1, -1, 0]))  # 5 -> 6, and 7

    def match(text: list[int]) -> tuple[int, bool, bool]:  # (right, rejected, settled)
        return _Proposal.of("arm", 0, 2, tree).match([0, 0, *text])

    assert match([5, 6, 9]) == (2, False, True)  # right to a leaf
    assert match([7, 1]) == (1, False, True)  # the other branch, to its leaf
    assert match([8]) == (0, True, True)  # no branch has it
    assert match([5, 4]) == (1, True, True)
    assert match([5]) == (1, False, False)  # right so far: it waits for more text
    assert _Proposal.of("arm", 0, 2, Draft(tokens=torch.tensor([5, 6]))).match([0, 0, 5, 6]) == (2, False, True)


def test_generate_and_serve_take_auto_and_its_arms_options():
    from leapdecode.cli import _generate_options, _parser, _server_config
    from leapdecode.server import ServerConfig

    args = _parser().parse_args(["generate", "hi", "--method", "auto", "--draft-model", "m", "--skip-layers", "3"])
    options = _generate_options(args)
    assert (options["method"], options["draft_model"], options["skip_layers"]) == ("auto", "m", "3")
    assert _generate_options(_parser().parse_args(["generate", "hi", "--method", "auto", "--window", "3"]))["window"] == 3
    serve = _server_config(_parser().parse_args(["serve", "--method", "auto", "--draft-model", "m",
                                                 "--skip-layers", "3"]))
    assert (serve.method, serve.draft_model, serve.skip_layers) == ("auto", "m", "3")
    with pytest.raises(InvalidRequest, match="unknown method 'autox'; known: .*auto"):
        ServerConfig(method="autox")
