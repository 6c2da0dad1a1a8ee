"""Fast dLLM decoding: the lossy methods (fixed, threshold, prophet, auto below quality 1) and the caches
(none, prefix, dual), on tiny dLLMs trained in seconds; what is exact stays identical to stepwise decoding."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_dllm import make_tiny_dllm

from leapdecode.dllm.canvas import FullCanvas
from leapdecode.dllm.llm import DiffusionLLM
from leapdecode.dllm.tasks import make_tasks
from leapdecode.errors import InvalidRequest, LeapError

TASKS = make_tasks(1, seed=11, sizes=("easy", "medium"))  # 18 prompts


def _ids(llm, method, tasks=TASKS, **options):
    return [llm.generate(t.prompt, method=method, max_new_tokens=16, block_size=4, **options) for t in tasks]


def test_lossy_methods_at_their_strictest_setting_are_stepwise(tiny_dllm):
    """fixed with one fill, threshold at certainty, prophet with an unreachable gap (without end-of-text
    prediction): stepwise decoding. End-of-text prediction only saves forwards."""
    step = _ids(tiny_dllm, "stepwise")
    ref = [r.token_ids for r in step]
    for method, knob in (("fixed", {"parallel": 1}), ("threshold", {"confidence": 1.0}),
                         ("prophet", {"commit_gap": 1e9}), ("auto", {"quality": 1.0})):
        assert [r.token_ids for r in _ids(tiny_dllm, method, end_of_text=0.0, **knob)] == ref, method
    eot = _ids(tiny_dllm, "fixed", parallel=1, end_of_text=0.5)
    assert sum(r.stats.target_forwards for r in eot) < sum(r.stats.target_forwards for r in step)


def test_lossy_methods_fill_several_tokens_per_forward(tiny_dllm):
    step = _ids(tiny_dllm, "stepwise")
    forwards = {"stepwise": sum(r.stats.target_forwards for r in step)}
    for method, knob in (("fixed", {"parallel": 4}), ("threshold", {"confidence": 0.3}),
                         ("prophet", {"commit_gap": 0.5}), ("auto", {"quality": 0.3})):
        got = _ids(tiny_dllm, method, **knob)
        forwards[method] = sum(r.stats.target_forwards for r in got)
        assert all(len(r.token_ids) <= 16 and tiny_dllm.config.mask_token_id not in r.token_ids for r in got)
        assert sum(r.stats.drafted for r in got) == 0  # nothing is verified, so nothing counts as drafted
    assert forwards["fixed"] <= forwards["stepwise"] / 2, forwards  # 4 per forward, less where blocks end early
    for m in ("threshold", "prophet", "auto"):
        assert forwards[m] < forwards["stepwise"], forwards


def test_the_prefix_cache_is_exact_on_a_block_causal_model(tiny_dllm):
    """Without a cache every forward recomputes prompt and finished blocks; the same tokens come out."""
    for method in ("stepwise", "ssd", "threshold"):
        none = _ids(tiny_dllm, method, TASKS[::2], cache="none")
        for cache in ("prefix", "dual"):
            got = _ids(tiny_dllm, method, TASKS[::2], cache=cache)
            assert [r.token_ids for r in got] == [r.token_ids for r in none], (method, cache)
    assert tiny_dllm.lossless("stepwise", _options(), "none") and tiny_dllm.lossless("ssd", _options(), "dual")
    assert not tiny_dllm.lossless("threshold", _options()) and not tiny_dllm.lossless("auto", _options(0.9))


def _options(quality=1.0):
    from leapdecode.dllm.methods import DllmOptions

    return DllmOptions(quality=quality)


@pytest.mark.parametrize("shifted", [True, False])
def test_bidirectional_caches_lay_out_prefix_and_suffix_right(tmp_path, shifted):
    """On a bidirectional model the caches are approximate, but a block's first step, taken from the cache,
    must equal the opening forward over the whole sequence; and ssd still reproduces stepwise decoding run
    with the same cache."""
    path = str(make_tiny_dllm(tmp_path / "bi", attention="bidirectional", shifted=shifted))
    f32 = DiffusionLLM(path, dtype="float32")  # float32: only the order of the sums differs, not the rounding
    ids, mask = f32.encode("Reverse the words: red blue green"), f32.config.mask_token_id
    for cache in ("prefix", "dual"):
        canvas = FullCanvas(f32.network, f32.config, ids, 4, 12, cache)
        for committed in (None, [7, 8, 9, 10]):
            opened = canvas.open(committed)
            cached = canvas.logits(torch.full((1, 4), mask))[0]
            assert (cached - opened).abs().max() < 1e-4, (cache, committed)
    llm = DiffusionLLM(path)
    assert not llm.lossless("stepwise", _options(), "prefix") and llm.lossless("stepwise", _options(), "none")
    for cache in ("none", "prefix", "dual"):
        step = _ids(llm, "stepwise", TASKS[:6], cache=cache)
        assert [r.token_ids for r in _ids(llm, "ssd", TASKS[:6], cache=cache)] == [r.token_ids for r in step]


def test_generate_says_a_method_is_lossy_and_where_it_differs(tiny_dllm, capsys):
    from leapdecode.cli import main

    model = str(tiny_dllm.checkpoint_dir)
    base = ["generate", TASKS[3].prompt, "--model", model, "--max-new-tokens", "16", "--block-size", "4"]
    assert main(base + ["--method", "fixed", "--parallel", "4", "--compare", "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert "lossy" in captured.err and out["method"] == "fixed"
    first = out["stepwise"]["first_difference"]
    assert out["stepwise"]["identical"] is (first is None)
    if first is not None:
        assert out["token_ids"][:first] == out["token_ids"][:first] and first <= 16
    assert main(base + ["--method", "ssd", "--cache", "none", "--compare"]) == 0
    err = capsys.readouterr().err
    assert "lossy" not in err and "identical output: yes" in err
    assert main(["generate", "hi", "--confidence", "0.8"]) == 2  # the default model is autoregressive
    assert "for diffusion LMs" in capsys.readouterr().err


def test_bad_knobs_are_one_clear_error(tiny_dllm):
    for knob, match in (({"parallel": 0}, ">= 1"), ({"confidence": 1.5}, r"\(0, 1\]"),
                        ({"commit_gap": -1.0}, "> 0"), ({"quality": 0.0}, r"\(0, 1\]"), ({"cache": "warm"}, "none")):
        with pytest.raises(InvalidRequest, match=match):
            tiny_dllm.generate("hi", method="threshold", max_new_tokens=8, block_size=4, **knob)


def test_bench_runs_method_variants_with_caches(tiny_dllm, tmp_path):
    from leapdecode.bench.config import BenchConfig
    from leapdecode.bench.harness import run_bench

    methods = ("stepwise+none", "stepwise", "threshold@0.5", "fixed@4+dual")
    cfg = BenchConfig(model=str(tiny_dllm.checkpoint_dir), prompts="parallel-tasks", methods=methods,
                      max_new_tokens=16, limit=3, out=tmp_path / "b", threads=2, warmup=0, block_size=4)
    m = run_bench(cfg)["methods"]
    assert m["stepwise+none"]["exact_match_vs_plain"] == 1.0  # no cache: the same tokens as the exact prefix cache
    assert m["fixed@4+dual"]["mean_accepted"] > m["stepwise"]["mean_accepted"]
    for bad in (("stepwise", "threshold@x"), ("stepwise", "stepwise+warm"), ("stepwise", "none@2")):
        with pytest.raises(LeapError):
            BenchConfig(model=str(tiny_dllm.checkpoint_dir), prompts="parallel-tasks", methods=bad)


def test_learned_filter_trains_on_stepwise_runs_and_fills_in_parallel(tiny_dllm, tmp_path, monkeypatch):
    from leapdecode.dllm.filter_training import filter_path, train_filter

    monkeypatch.setenv("LEAPDECODE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(LeapError, match="train-filter"):
        tiny_dllm.generate("hi", method="filter", max_new_tokens=8, block_size=4)
    report = train_filter(tiny_dllm, prompts=8, max_new=16, block=4, epochs=100)
    assert report["positions"] > 50 and 0.0 < report["final_share"] < 1.0
    assert filter_path(tiny_dllm.checkpoint_dir).is_file()
    tiny_dllm.learned.net = None  # loaded afresh from the file just written
    step = _ids(tiny_dllm, "stepwise", TASKS[:6])
    loose = _ids(tiny_dllm, "filter", TASKS[:6], filter_threshold=0.3)
    assert sum(r.stats.target_forwards for r in loose) < sum(r.stats.target_forwards for r in step)
    assert all(tiny_dllm.config.mask_token_id not in r.token_ids for r in loose)
    assert tiny_dllm.learned.net is not None  # loaded by the filter method
    # auto below quality 1 fills by the filter once the model has one: the same tokens as filter + early commit
    from leapdecode.dllm.early_commit import EarlyCommit

    auto = _ids(tiny_dllm, "auto", TASKS[:6], quality=0.3)
    inner = EarlyCommit(5.0, inner=tiny_dllm.learned.unmasker(0.3))
    ref = _ids(tiny_dllm, "auto", TASKS[:6], unmasker=_with_end_of_text(tiny_dllm, inner))
    assert [r.token_ids for r in auto] == [r.token_ids for r in ref]
    tiny_dllm.learned.net = None  # the session's model has no filter outside this test's cache


def _with_end_of_text(llm, inner):
    from leapdecode.dllm.end_of_text import EndOfText

    return EndOfText(inner, frozenset(llm.eos_ids), 0.9)


def test_ignore_eos_decodes_every_position(tiny_dllm):
    for method in ("stepwise", "threshold"):
        r = tiny_dllm.generate(TASKS[0].prompt, method=method, max_new_tokens=12, block_size=4, ignore_eos=True)
        assert len(r.token_ids) == 12 and r.finish_reason == "length"
        assert tiny_dllm.config.mask_token_id not in r.token_ids


def test_adaptive_blocks_end_at_a_sure_closing_token(tiny_dllm, tmp_path):
    from leapdecode.dllm.adaptive_block import BlockSizer, closing_tokens
    from leapdecode.dllm.config import split_variant

    closers = closing_tokens(tiny_dllm.tokenizer)
    period = tiny_dllm.tokenizer.convert_tokens_to_ids(".")
    assert period in closers and tiny_dllm.tokenizer.convert_tokens_to_ids("red") not in closers
    sizer, V, mask = BlockSizer(closers, default=4), tiny_dllm.config.vocab_size, tiny_dllm.config.mask_token_id
    logits = torch.zeros(8, V)
    assert sizer.window == 8 and sizer.size(logits, mask, room=8) == 4  # nothing sure: the default size
    logits[2, period] = 30.0  # a sure "." at the third position
    assert sizer.size(logits, mask, room=8) == 3 and sizer.size(logits, mask, room=2) == 4 - 2
    for method in ("stepwise", "threshold"):
        for r in _ids(tiny_dllm, method, TASKS[:4], adaptive_blocks=True):
            assert len(r.token_ids) <= 16 and mask not in r.token_ids
    assert not tiny_dllm.lossless("stepwise", _options_ada())
    assert split_variant("threshold@0.9+none+ada") == ("threshold", {"confidence": 0.9, "cache": "none",
                                                                     "adaptive_blocks": True})
    bi = DiffusionLLM(str(make_tiny_dllm(tmp_path / "bi", attention="bidirectional")))
    with pytest.raises(InvalidRequest, match="block-causal"):
        bi.generate("hi", method="stepwise", max_new_tokens=8, block_size=4, adaptive_blocks=True)


def _options_ada():
    from leapdecode.dllm.methods import DllmOptions

    return DllmOptions(adaptive_blocks=True)
