"""The benchmark harness: prompt sets, summary math, report files, divergence finding; model generation only in
one tiny end-to-end run (the engine's breakdown: acceptance by position, time per step, its plots)."""

from __future__ import annotations

import argparse
import gzip
import io
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from rich.console import Console

from leapdecode.bench import (
    BenchConfig,
    add_bench_arguments,
    bench_config_from_args,
    llamacpp_baseline,
)
from leapdecode.bench.divergence import (
    NEAR_TIE,
    find_divergence,
    first_difference,
    tie_tolerance,
    top2_gap,
)
from leapdecode.bench.llamacpp_baseline import (
    LlamaCppBaseline,
    gguf_file,
    require_llama_cpp,
)
from leapdecode.bench.prompts import load_prompts, prompt_set_name
from leapdecode.bench.record import RunRecord
from leapdecode.bench.report import assemble, markdown, print_table, write_report
from leapdecode.bench.runner import rotated
from leapdecode.errors import LeapError


def _rec(
    method: str, pid: str, tokens: list[int], seconds: float, acc: float | None = 1.0, cat: str = "a"
) -> RunRecord:
    return RunRecord(method, pid, cat, 5, tokens, seconds, acc, "length", 100.0)


# --- prompts ---------------------------------------------------------------------------------------------------


def test_mt_bench_builtin_has_80_first_turns_in_8_categories() -> None:
    prompts = load_prompts("mt-bench")
    assert len(prompts) == 80
    assert {p.category for p in prompts} == {
        "writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities",
    }  # fmt: skip
    first = prompts[0]
    assert first.id == "81" and first.category == "writing"
    assert first.prompt == [{"role": "user", "content": first.prompt[0]["content"]}]
    assert first.prompt[0]["content"].startswith("Compose an engaging travel blog post about a recent trip")


def test_humaneval_builtin_has_164_code_prompts() -> None:
    prompts = load_prompts("humaneval")
    assert len(prompts) == 164
    assert prompts[0].id == "HumanEval/0" and {p.category for p in prompts} == {"code"}
    content = prompts[0].prompt[0]["content"]
    assert content.startswith("Complete the following Python function:\n```python\n")
    assert "def has_close_elements(numbers: List[float], threshold: float) -> bool:" in content


def test_limit_and_set_names() -> None:
    assert len(load_prompts("mt-bench", limit=3)) == 3
    assert prompt_set_name("mt-bench") == "mt-bench"
    assert prompt_set_name("/tmp/my_prompts.jsonl") == "my_prompts"


def test_jsonl_accepts_prompt_messages_and_turns(tmp_path: Path) -> None:
    rows = [
        {"id": "p", "category": "c1", "prompt": "hello"},
        {"prompt": "raw text", "raw": True},
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]},
        {"question_id": 7, "category": "math", "turns": ["first", "second"]},
    ]
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    p = load_prompts(str(path))
    assert [x.id for x in p] == ["p", "2", "3", "7"]
    assert [x.category for x in p] == ["c1", "default", "default", "math"]
    assert p[0].prompt == "hello" and not p[0].raw
    assert p[1].prompt == "raw text" and p[1].raw
    assert p[2].prompt == rows[2]["messages"]
    assert p[3].prompt == [{"role": "user", "content": "first"}]


def test_gzipped_jsonl_loads(tmp_path: Path) -> None:
    path = tmp_path / "z.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"prompt": "x"}\n'))
    assert load_prompts(str(path))[0].prompt == "x"


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"prompt": "ok"}\n{not json\n', "line 2 is not valid JSON"),
        ('["a list"]\n', "line 1 is not a JSON object"),
        ('{"text": "wrong field"}\n', "needs a non-empty 'prompt' string"),
        ('{"messages": [{"role": "user"}]}\n', "needs a non-empty 'prompt' string"),
        ("\n\n", "no prompts found"),
        ('{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n', "id 'a' appears more than once"),
    ],
)
def test_malformed_jsonl_is_a_clear_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(LeapError, match=message):
        load_prompts(str(path))


def test_missing_prompt_file_is_a_clear_error() -> None:
    with pytest.raises(LeapError, match="not a built-in set"):
        load_prompts("/no/such/file.jsonl")


# --- config ----------------------------------------------------------------------------------------------------


def test_arguments_build_a_config() -> None:
    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)
    args = parser.parse_args(["--methods", "hf, ngram", "--limit", "0", "--prompts", "humaneval"])
    cfg = bench_config_from_args(args)
    assert cfg.methods == ("hf", "ngram") and cfg.limit is None and cfg.max_new_tokens == 256
    assert cfg.out_dir == Path("bench-out/humaneval")
    default = bench_config_from_args(parser.parse_args([]))
    assert default == BenchConfig() and default.methods == ("hf", "hf-pld", "none", "ngram", "suffix")


@pytest.mark.parametrize(
    "kwargs", [{"methods": ("hf", "bogus")}, {"methods": ("hf", "hf")}, {"max_new_tokens": 0}, {"dtype": "int3"}]
)
def test_bad_config_is_rejected(kwargs: dict) -> None:
    with pytest.raises(LeapError):
        BenchConfig(**kwargs)


def test_method_order_rotates_per_prompt() -> None:
    names = ["a", "b", "c"]
    orders = [rotated(names, n) for n in range(4)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]


# --- summary and report ----------------------------------------------------------------------------------------


def _synthetic_records() -> list[RunRecord]:
    return [
        _rec("hf", "1", [1, 2, 3, 4], 2.0, cat="a"),
        _rec("hf", "2", [5, 6], 2.0, cat="b"),
        _rec("hf-pld", "1", [1, 2, 3, 4], 1.0, acc=None, cat="a"),
        _rec("hf-pld", "2", [5, 6], 1.0, acc=None, cat="b"),
        _rec("ngram", "1", [1, 2, 3, 4], 0.5, acc=4.0, cat="a"),  # 1 target forward
        _rec("ngram", "2", [5, 7], 1.5, acc=1.0, cat="b"),  # 2 forwards, and a divergence
    ]


def test_summary_numbers() -> None:
    methods = assemble({}, {}, _synthetic_records(), [])["methods"]
    hf, pld, ngram = methods["hf"], methods["hf-pld"], methods["ngram"]
    assert hf["tokens_per_s"] == 1.5 and hf["speedup_vs_hf"] == 1.0 and hf["exact_match_rate"] == 1.0
    assert pld["tokens_per_s"] == 3.0 and pld["speedup_vs_hf"] == 2.0 and pld["mean_accepted"] is None
    # ngram: 6 tokens in 2 s = 3 tok/s; 6 tokens over 1 + 2 target forwards = 2.0 accepted per forward
    assert ngram["tokens_per_s"] == 3.0 and ngram["speedup_vs_hf"] == 2.0 and ngram["speedup_vs_hf_pld"] == 1.0
    assert ngram["mean_accepted"] == 2.0 and ngram["exact_match_rate"] == 0.5
    cat_a = ngram["by_category"]["a"]
    assert cat_a["tokens_per_s"] == 8.0 and cat_a["speedup_vs_hf"] == 4.0 and cat_a["exact_match_rate"] == 1.0
    assert ngram["by_category"]["b"]["speedup_vs_hf"] == pytest.approx((2 / 1.5) / 1.0)
    assert ngram["peak_rss_mb"] == 100.0


def test_summary_without_hf_has_no_speedups() -> None:
    methods = assemble({}, {}, [r for r in _synthetic_records() if r.method != "hf"], [])["methods"]
    assert methods["ngram"]["speedup_vs_hf"] is None and methods["ngram"]["exact_match_rate"] is None
    assert methods["ngram"]["speedup_vs_hf_pld"] == 1.0


def test_report_files(tmp_path: Path) -> None:
    records = _synthetic_records()
    logits = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 3.0, 2.0, 2.5])
    div = find_divergence(records[1], records[5], [9, 9], lambda ids: logits)
    results = assemble({"model": "m", "prompts": "p", "prompt_count": 2}, {"threads": 2}, records, [div])
    paths = write_report(results, tmp_path / "out")
    assert all(p.exists() and p.stat().st_size > 0 for p in paths.values())
    saved = json.loads(paths["json"].read_text())
    assert saved["methods"]["ngram"]["speedup_vs_hf"] == 2.0 and len(saved["records"]) == 6
    assert saved["records"][0]["tokens_per_s"] == 2.0 and saved["divergences"][0]["index"] == 1
    md = paths["markdown"].read_text()
    header = ("| method | tok/s | speedup vs hf | speedup vs hf-pld | mean accepted | exact match vs hf "
              "| exact match vs own plain | peak RSS MB |")
    assert header in md
    assert "| ngram | 3.00 | 2.00x | 1.00x | 2.00 | 50% | - | 100 |" in md  # no `none` ran: no own plain
    assert "| ngram | 2 | 1 | 6 | 7 | 0.5 | -0.5 | 0.01 | SUSPECT |" in md
    assert paths["chart"].read_bytes()[:4] == b"\x89PNG"


def test_report_says_when_nothing_diverged() -> None:
    records = [r for r in _synthetic_records() if r.method != "ngram"]
    assert "None: every method reproduced" in markdown(assemble({}, {}, records, []))


# --- divergence ------------------------------------------------------------------------------------------------


def test_first_difference() -> None:
    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert first_difference([1, 2, 3], [1, 2]) == 2
    assert first_difference([], [4]) == 0


def test_top2_gap() -> None:
    assert top2_gap(torch.tensor([1.0, 5.0, 4.5, -2.0])) == pytest.approx(0.5)


def test_divergence_near_tie_and_bug() -> None:
    ref, seen = _rec("hf", "q", [1, 2, 3], 1.0), []

    def logits(ids: list[int]) -> torch.Tensor:
        seen.append(ids)
        return torch.tensor([0.0, 0.0, 0.0, 7.0, 7.0 - NEAR_TIE / 10, 1.0])  # tokens 3 and 4 nearly tie

    tie = find_divergence(ref, _rec("ngram", "q", [1, 2, 4], 1.0), [8, 8], logits)
    assert seen == [[8, 8, 1, 2]]  # prompt + common prefix
    assert tie.index == 2 and tie.reference_token == 3 and tie.method_token == 4 and tie.near_tie
    bug = find_divergence(ref, _rec("ngram", "q", [1, 2, 5], 1.0), [8, 8], logits)
    assert bug.chosen_gap == pytest.approx(6.0) and not bug.near_tie
    short = find_divergence(ref, _rec("ngram", "q", [1], 1.0), [8], logits)
    assert short.index == 1 and short.method_token is None and short.chosen_gap is None
    assert find_divergence(ref, _rec("ngram", "q", [1, 2, 3], 1.0), [8], logits) is None


def test_tie_tolerance_follows_the_dtype() -> None:
    assert tie_tolerance(torch.tensor([20.0, 19.0])) == NEAR_TIE  # fp32: rounding is far below the floor
    assert tie_tolerance(torch.tensor([20.0, 19.0], dtype=torch.bfloat16)) == 4 * 0.125  # bf16 step at 16..32
    ref, other = _rec("hf", "q", [1, 3], 1.0), _rec("ngram", "q", [1, 2], 1.0)
    bf16 = torch.tensor([0.0, 0.0, 20.25, 20.0], dtype=torch.bfloat16)  # 2 steps apart: a rounding tie
    assert find_divergence(ref, other, [0], lambda ids: bf16).near_tie
    assert not find_divergence(ref, other, [0], lambda ids: bf16.float()).near_tie


# --- llama.cpp (llama-cpp-python is an optional extra: none of these need it installed) --------------------------


class _FakeLlama:
    """Stands in for llama_cpp.Llama: yields a fixed answer, one eval per token as the real generate() does."""

    answer = [5, 6, 7, 2, 9]

    def __init__(self, **kwargs: object) -> None:
        self.kwargs, self.resets = kwargs, 0
        self.extra_bufts_at_load = _FAKE_LIB.llama_model_default_params().use_extra_bufts

    def reset(self) -> None:
        self.resets += 1

    def eval(self, tokens: list[int]) -> None:
        pass

    def generate(self, tokens: list[int], **kwargs: object):
        self.sampling = kwargs
        self.eval(tokens)  # prefill
        for tok in self.answer:
            yield tok
            self.eval([tok])


_FAKE_LIB = SimpleNamespace(llama_model_default_params=lambda: SimpleNamespace(use_extra_bufts=True))


@pytest.fixture
def fake_llama_cpp(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    module = SimpleNamespace(
        Llama=_FakeLlama, llama_cpp=_FAKE_LIB, __version__="0.0-fake", llama_print_system_info=lambda: b"AVX2 = 1 |"
    )
    speculative = SimpleNamespace(LlamaPromptLookupDecoding=lambda **kw: ("pld", kw))
    monkeypatch.setitem(sys.modules, "llama_cpp", module)
    monkeypatch.setitem(sys.modules, "llama_cpp.llama_speculative", speculative)
    return module


@pytest.fixture
def no_llama_cpp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # `import llama_cpp` now raises ImportError


def test_llamacpp_methods_are_accepted() -> None:
    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)
    cfg = bench_config_from_args(parser.parse_args(["--methods", "hf,llamacpp,llamacpp-pld,none"]))
    assert cfg.methods == ("hf", "llamacpp", "llamacpp-pld", "none")
    with pytest.raises(LeapError, match="choose distinct ones from .*llamacpp-pld"):
        bench_config_from_args(parser.parse_args(["--methods", "llamacpp-lookahead"]))
    with pytest.raises(LeapError, match="llamacpp-draft need --draft-model"):
        bench_config_from_args(parser.parse_args(["--methods", "llamacpp-draft"]))


def test_llamacpp_methods_run_on_their_own_instances() -> None:
    """Each llama.cpp method is answered by the instance started for it, with the run's token budget."""
    from leapdecode.bench.contenders import build_contenders
    from leapdecode.bench.record import Generation

    class Instance:
        def __init__(self, token: int) -> None:
            self.token, self.calls = token, []

        def generate(self, prompt_ids: list[int], max_new_tokens: int) -> Generation:
            self.calls.append((prompt_ids, max_new_tokens))
            return Generation([self.token] * max_new_tokens, 0.1, None, "length")

    instances = {"llamacpp": Instance(1), "llamacpp-pld": Instance(2)}
    contenders = build_contenders(None, None, ("llamacpp-pld", "llamacpp"), 3, instances)
    assert list(contenders) == ["llamacpp-pld", "llamacpp"]
    assert contenders["llamacpp"]([5, 6]).token_ids == [1, 1, 1]
    assert contenders["llamacpp-pld"]([7]).token_ids == [2, 2, 2]
    assert instances["llamacpp"].calls == [([5, 6], 3)] and instances["llamacpp-pld"].calls == [([7], 3)]


def test_dtypes_follow_the_engine() -> None:
    """--dtype takes every precision the engine loads at, and BenchConfig refuses any other."""
    from leapdecode.models.precision import DTYPE_CHOICES

    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)
    for dtype in DTYPE_CHOICES:
        assert bench_config_from_args(parser.parse_args(["--dtype", dtype])).dtype == dtype
    assert {"float32", "bfloat16", "int8", "int4", "gguf"} <= set(DTYPE_CHOICES)
    with pytest.raises(SystemExit):
        parser.parse_args(["--dtype", "int3"])
    with pytest.raises(LeapError, match="dtype 'int3'"):
        BenchConfig(dtype="int3")


def test_missing_llama_cpp_is_a_clear_error(no_llama_cpp: None, tmp_path: Path) -> None:
    with pytest.raises(LeapError, match=re.escape('pip install -e ".[llamacpp]"')):
        require_llama_cpp()
    with pytest.raises(LeapError, match=re.escape('pip install -e ".[llamacpp]"')):
        LlamaCppBaseline(tmp_path / "m.gguf", 2, [2])


def test_missing_llama_cpp_fails_before_any_model_load(no_llama_cpp: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from leapdecode.bench import harness

    def no_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the llama.cpp check")

    monkeypatch.setattr(harness, "LLM", no_load)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # run_bench sets it: restored after the test
    threads = torch.get_num_threads()
    try:
        with pytest.raises(LeapError, match="llama-cpp-python"):
            harness.run_bench(BenchConfig(methods=("hf", "llamacpp"), limit=1))
    finally:
        torch.set_num_threads(threads)


def test_llamacpp_needs_a_gguf_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text("{}")
    with pytest.raises(LeapError, match="need a GGUF file.*is a Hugging Face directory"):
        gguf_file(str(hf_dir))
    with pytest.raises(LeapError, match="is not found"):
        gguf_file(str(tmp_path / "missing.gguf"))
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    assert gguf_file(str(tmp_path / "m.gguf")) == (tmp_path / "m.gguf").resolve()
    monkeypatch.setattr(llamacpp_baseline, "fetch_known", lambda model: Path(f"/cache/{model.name}.gguf"))
    assert gguf_file("smollm2-135m") == Path("/cache/smollm2-135m.gguf")


def test_llamacpp_baseline_is_greedy_and_stops_like_hf(fake_llama_cpp: SimpleNamespace, tmp_path: Path) -> None:
    plain = LlamaCppBaseline(tmp_path / "m.gguf", 3, eos_ids=[2])
    kw = plain.llm.kwargs
    assert kw["n_threads"] == kw["n_threads_batch"] == 3 and "draft_model" not in kw
    g = plain.generate([1, 1], max_new_tokens=10)
    assert g.token_ids == [5, 6, 7, 2] and g.finish_reason == "stop"  # the EOS is kept, as hf keeps it
    assert g.mean_accepted == 1.0 and plain.llm.resets == 1
    sampling = plain.llm.sampling
    assert sampling["temp"] == 0.0 and sampling["repeat_penalty"] == 1.0 and sampling["top_k"] == 1
    assert sampling["min_p"] == 0.0 and sampling["frequency_penalty"] == sampling["presence_penalty"] == 0.0
    g = plain.generate([1, 1], max_new_tokens=2)
    assert g.token_ids == [5, 6] and g.finish_reason == "length" and plain.llm.resets == 2
    pld = LlamaCppBaseline(tmp_path / "m.gguf", 3, eos_ids=[2], prompt_lookup=True)
    assert pld.llm.kwargs["draft_model"] == ("pld", {"num_pred_tokens": 10})
    with pytest.raises(LeapError, match="does not fit"):
        plain.generate([1] * 4000, max_new_tokens=256)


def test_llamacpp_extra_buffers_are_off_on_amx(fake_llama_cpp: SimpleNamespace, tmp_path: Path) -> None:
    assert LlamaCppBaseline(tmp_path / "m.gguf", 2, [2]).llm.extra_bufts_at_load
    fake_llama_cpp.llama_print_system_info = lambda: b"AVX512 = 1 | AMX_INT8 = 1 |"
    assert not LlamaCppBaseline(tmp_path / "m.gguf", 2, [2]).llm.extra_bufts_at_load
    assert _FAKE_LIB.llama_model_default_params().use_extra_bufts  # the library's defaults are restored


def test_report_with_llamacpp(tmp_path: Path) -> None:
    records = _synthetic_records() + [
        _rec("llamacpp", "1", [1, 2, 9, 9], 1.0, cat="a"),  # differs from hf
        _rec("llamacpp", "2", [5, 6], 1.0, cat="b"),
        _rec("llamacpp-pld", "1", [1, 2, 9, 9], 0.5, acc=2.0, cat="a"),  # reproduces llamacpp, not hf
        _rec("llamacpp-pld", "2", [5, 8], 0.5, acc=2.0, cat="b"),
    ]
    machine = {"threads": 2, "llama_cpp_python": "0.3.36", "llama_cpp_extra_buffers": False}
    results = assemble({"model": "m", "prompts": "p", "prompt_count": 2}, machine, records, [])
    m = results["methods"]
    assert m["llamacpp"]["speedup_vs_hf"] == 2.0 and m["llamacpp-pld"]["speedup_vs_llamacpp"] == 2.0
    assert m["llamacpp"]["exact_match_rate"] == 0.5 and m["llamacpp-pld"]["exact_match_rate"] == 0.0
    assert m["llamacpp-pld"]["exact_match_vs_plain"] == 0.5 and m["hf-pld"]["exact_match_vs_plain"] == 1.0
    assert m["llamacpp"]["exact_match_vs_plain"] is None and m["ngram"]["exact_match_vs_plain"] is None
    md = markdown(results)
    header = (
        "| method | tok/s | speedup vs hf | speedup vs hf-pld | speedup vs llamacpp | mean accepted | exact match vs hf "
        "| exact match vs own plain | peak RSS MB |"
    )
    assert header in md
    assert "| llamacpp-pld | 6.00 | 4.00x | 2.00x | 2.00x | 2.00 | 0% | 50% | 100 |" in md
    assert "| ngram | 3.00 | 2.00x | 1.00x | 1.00x | 2.00 | 50% | - | 100 |" in md
    assert "llama-cpp-python 0.3.36 (extra CPU buffers off: AMX bug)" in md
    assert "Not checked here: llamacpp, llamacpp-pld" in md and "None: every method checked reproduced" in md
    assert any(note.startswith("llamacpp, llamacpp-pld:") for note in results["notes"])
    plain_only = markdown(assemble({}, {}, _synthetic_records(), []))
    assert "llamacpp" not in plain_only


def test_hf_baseline_runs_float_formats_only() -> None:
    from leapdecode.bench.harness import _hf_dtype

    assert _hf_dtype("bfloat16") == torch.bfloat16
    assert [_hf_dtype(d) for d in ("float32", "int8", "int4", "gguf")] == [torch.float32] * 4


def test_terminal_table_keeps_method_names() -> None:
    records = _synthetic_records() + [_rec("llamacpp", "1", [1], 1.0), _rec("llamacpp-pld", "1", [1], 1.0)]
    out = io.StringIO()
    print_table(assemble({}, {}, records, []), Console(file=out, width=80))
    assert "llamacpp-pld" in out.getvalue() and "llamacpp " in out.getvalue()


# --- the engine's breakdown: acceptance by draft position, time per step, auto's arms, memory --------------------


def _engine_rec(method: str, pid: str, drafted_at: list[int], accepted_at: list[int], arms: dict[str, int]) -> RunRecord:
    stats = {"target_forwards": 4, "drafted_at": drafted_at, "accepted_at": accepted_at, "draft_seconds": 0.004,
             "verify_seconds": 0.04, "overhead_seconds": 0.002, "arms": arms}
    return RunRecord(method, pid, "a", 5, [1, 2, 3, 4, 5, 6], 0.1, 1.5, "length", 100.0, stats)


def test_breakdown_sums_prompts_and_reports_sections(tmp_path: Path) -> None:
    records = _synthetic_records() + [
        _engine_rec("auto", "1", [3, 2, 1], [2, 1, 0], {"suffix": 3, "none": 1}),
        _engine_rec("auto", "2", [1], [1], {"ngram": 1, "none": 3}),
        _engine_rec("none", "1", [], [], {}),
    ]
    results = assemble({"model": "m"}, {}, records, [], models_rss={"auto": 812.0, "none": 800.0})
    auto = results["methods"]["auto"]
    assert auto["drafted_at"] == [4, 2, 1] and auto["accepted_at"] == [3, 1, 0]
    assert auto["acceptance_at"] == [0.75, 0.5, 0.0]
    assert auto["steps"] == 8 and auto["step_ms"] == pytest.approx({"draft": 1.0, "verify": 10.0, "overhead": 0.5})
    assert auto["arms"] == {"suffix": 3, "none": 4, "ngram": 1} and auto["peak_rss_models_mb"] == 812.0
    assert "step_ms" not in results["methods"]["hf"] and results["methods"]["hf"]["peak_rss_models_mb"] is None
    md = markdown(results)
    assert "| auto | 75% | 50% | 0% |" in md  # acceptance by position; none drafted nothing: no row
    assert "| auto | 8 | 1.00 | 10.00 | 0.50 | 11.50 |" in md and "| none | 4 |" in md
    assert "auto chose, per step: none 50%, suffix 38%, ngram 12%" in md
    assert "| auto | 812 |" in md
    paths = write_report(results, tmp_path)
    assert paths["acceptance"].read_bytes()[:4] == b"\x89PNG" and paths["time_split"].read_bytes()[:4] == b"\x89PNG"


def test_tiny_bench_run_with_auto_writes_the_breakdown(llm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from leapdecode.bench import harness

    monkeypatch.setattr(harness, "LLM", lambda model, dtype: llm)  # the session's model: no second load
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # run_bench sets it: restored after the test
    threads = torch.get_num_threads()
    try:
        cfg = BenchConfig(methods=("none", "auto"), limit=2, max_new_tokens=16, warmup=0, out=tmp_path, threads=threads)
        results = harness.run_bench(cfg)
    finally:
        torch.set_num_threads(threads)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["methods"] == json.loads(json.dumps(results["methods"]))
    for method in ("none", "auto"):
        m = saved["methods"][method]
        assert m["prompts"] == 2 and m["tokens_per_s"] > 0 and "exact_match_vs_plain" in m  # earlier fields
        assert m["steps"] >= 2 and set(m["step_ms"]) == {"draft", "verify", "overhead"}
        assert m["step_ms"]["verify"] > 0 and m["peak_rss_models_mb"] > 0
        assert len(m["acceptance_at"]) == len(m["drafted_at"])
    assert saved["methods"]["auto"]["exact_match_vs_plain"] == 1.0
    assert sum(saved["methods"]["auto"]["arms"].values()) >= saved["methods"]["auto"]["steps"] - 2
    assert all(r["engine_stats"]["drafted_at"] is not None for r in saved["records"])
    for name in ("acceptance.png", "time_split.png", "speedup.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    md = (tmp_path / "report.md").read_text()
    assert "## Time per step" in md and "## Memory" in md
