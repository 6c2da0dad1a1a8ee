"""Draft-model speculation: lossless greedy and sampling, its own KV cache, and a refused foreign tokenizer.

The drafts are built from the default model, so nothing beyond it is downloaded: the model itself (a draft
that agrees with the target almost always) and a copy truncated to its first layers, saved as a Hugging
Face checkpoint and loaded by path.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from leapdecode.bench.divergence import first_difference, top2_gap
from leapdecode.decode.sampling import target_probs
from leapdecode.decode.verify import verify_sampling
from leapdecode.drafters.draft_model import (
    DraftModelConfig,
    DraftModelDrafter,
    common_prefix,
    fit_width,
)
from leapdecode.errors import InvalidRequest, LeapError
from leapdecode.models.kv import KVCache
from leapdecode.types import SamplingParams, SeqView
from tests.conftest import PROMPTS, hf_next_logits
from tests.test_sampling import SETTINGS, TV_TOL, N, _tv, assert_kept_as_often_as, tolerance

LAYERS = 24  # of SmolLM2-135M's 30: an untrained early exit, right about a third of the time
NEAR_TIE = 1e-4


def truncated_checkpoint(source: Path, dest: Path, layers: int) -> Path:
    """A Hugging Face checkpoint of source's first `layers` decoder layers (same embedding, norm and head)."""
    from safetensors.torch import load_file, save_file

    dest.mkdir(parents=True)
    keep = {f"model.layers.{i}." for i in range(layers)}
    sd = {k: v for k, v in load_file(source / "model.safetensors").items()
          if not k.startswith("model.layers.") or any(k.startswith(p) for p in keep)}
    save_file(sd, dest / "model.safetensors")
    cfg = json.loads((source / "config.json").read_text()) | {"num_hidden_layers": layers}
    (dest / "config.json").write_text(json.dumps(cfg))
    for f in source.iterdir():
        if f.name not in ("config.json", "model.safetensors"):
            shutil.copy(f, dest / f.name)
    return dest


@pytest.fixture(scope="module")
def truncated(llm, tmp_path_factory) -> str:
    return str(truncated_checkpoint(llm.checkpoint_dir, tmp_path_factory.mktemp("draft") / "short", LAYERS))


def _assert_equals_greedy(hf_model, ids, ref, out, where):
    split = first_difference(out, ref)
    if split is not None:  # tolerated only where the target itself is at a numerical tie, as in test_lossless
        gap = top2_gap(hf_next_logits(hf_model, ids + ref[:split]))
        assert gap < NEAR_TIE, f"{where} diverges at token {split}, gap {gap}"


# The target itself as its draft: every step drafts the full length, so a short run covers many steps. At
# float32 it is the target exactly; "auto" runs the GGUF draft as stored (int4) under the float32 target.
@pytest.mark.parametrize(("draft", "dtype", "new_tokens"),
                         [("smollm2-135m", "float32", 32), ("smollm2-135m", "auto", 32), ("truncated", "auto", 32)])
def test_greedy_equals_transformers(llm, hf_model, prompt_ids, hf_greedy, truncated, draft, dtype, new_tokens):
    spec = truncated if draft == "truncated" else draft
    stats = []
    for i, (ids, ref) in enumerate(zip(prompt_ids, hf_greedy)):
        res = llm.generate(prompt_ids=ids, method="draft", draft_model=spec, draft_dtype=dtype,
                           max_new_tokens=new_tokens)
        where = f"prompt {i} ({PROMPTS[i][:30]!r})"
        _assert_equals_greedy(hf_model, ids, ref[:new_tokens], res.token_ids, where)
        stats.append(res.stats)
    accepted, drafted = sum(s.accepted for s in stats), sum(s.drafted for s in stats)
    per_forward = sum(s.new_tokens for s in stats) / sum(s.target_forwards for s in stats)
    if draft == "smollm2-135m" and dtype == "float32":  # the target as its own draft: nearly every draft is kept
        assert accepted >= 0.95 * drafted and per_forward > 4
    elif draft == "smollm2-135m":  # its int4 self: a different network, still mostly right
        assert llm.drafts.load(spec, dtype).precision == "int4" and per_forward > 2.5
    else:  # drafts are used and pay: more than one token per target forward
        assert accepted > 0 and per_forward > 1.3


def test_draft_model_is_loaded_once(llm, truncated):
    assert llm.drafts.load(truncated) is llm.drafts.load(truncated)


def test_seeded_sampling_is_reproducible(llm, truncated):
    ids = llm.encode("Write one sentence about the moon.")
    runs = [llm.generate(prompt_ids=ids, method="draft", draft_model=truncated, temperature=0.9, top_p=0.95,
                         seed=s, max_new_tokens=16) for s in (1, 1, 2)]
    assert runs[0].token_ids == runs[1].token_ids
    assert runs[0].token_ids != runs[2].token_ids
    assert runs[0].stats.accepted > 0


class FixedLogits:
    """A stand-in draft network answering every position with the same logits: each propose costs microseconds,
    so the sampling test can draw tens of thousands of drafts from the drafter's own code."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits, self.max_context = logits, 1 << 16  # [V]

    def new_cache(self, max_len: int) -> KVCache:
        return KVCache(1, 1, max_len, 1, torch.float32)

    def forward(self, tokens, start, cache, logits=True):
        return self.logits.expand(1, tokens.shape[1], -1) if logits else None  # [1, T, V]


@pytest.fixture(scope="module")
def logit_pair(llm, truncated):
    """Target logits [3, V] (after a prompt, then fed its likeliest two tokens) and the truncated draft's
    logits [V] after the prompt, over the target's 512 likeliest ids (as in test_sampling)."""
    ids = llm.encode("Name a colour and an animal.")
    net, draft = llm.network, llm.drafts.load(truncated)
    cache = net.new_cache(len(ids) + 4)
    net.forward(torch.tensor([ids[:-1]]), 0, cache, logits=False)
    probe = net.forward(torch.tensor([ids[-1:]]), len(ids) - 1, cache)[0, 0]
    fed = torch.cat([torch.tensor(ids[-1:]), torch.topk(probe, 2).indices])[None]  # [1, 3]
    target = net.forward(fed, len(ids) - 1, cache)[0]  # [3, V]
    keep = torch.topk(target.max(dim=0).values, 512).indices
    draft_logits = draft.forward(torch.tensor([ids]), 0, draft.new_cache(len(ids)))[0, -1]  # [V]
    return target[:, keep], draft_logits[keep]


@pytest.mark.parametrize("params", SETTINGS, ids=lambda p: f"T{p.temperature}-p{p.top_p}-k{p.top_k}")
@pytest.mark.parametrize("draft", ["truncated", "flattened-target"])
def test_stochastic_draft_sampling_matches_target(logit_pair, params, draft):
    """Drafts sampled by the drafter (q: the draft's distribution under the request's transform) and
    verified against the target: the first token follows p[0], and after an accepted first draft the
    second follows p[1]. Same N and tolerance as test_sampling. The truncated draft is mostly rejected (the
    recovered token carries the test: its second token is reached too rarely to test); the target's own
    logits, flattened, are accepted about half the time, and carry the second token's test."""
    target_logits, draft_logits = logit_pair
    if draft == "flattened-target":
        draft_logits = 0.5 * target_logits[0]
    p = target_probs(target_logits, params)  # [3, V]
    gen = torch.Generator().manual_seed(99)
    drafter = DraftModelDrafter(FixedLogits(draft_logits), DraftModelConfig(0.0, 64, p.shape[-1]), params, gen)
    ctx = SeqView(tokens=[1, 2, 3], prompt_len=3)
    first, second = torch.zeros(p.shape[-1]), torch.zeros(p.shape[-1])
    for _ in range(N):
        proposal = drafter.propose(ctx, 2)
        assert proposal.probs is not None and proposal.probs.shape == (2, p.shape[-1])
        v = verify_sampling(proposal, p, [gen] * 3)
        first[v.tokens[0]] += 1
        if v.accepted >= 1:
            second[v.tokens[1]] += 1
    q = target_probs(draft_logits[None], params)[0]  # [V]
    assert torch.allclose(proposal.probs[0], q)
    assert _tv(first, p[0]) < TV_TOL
    # The first draft is kept with probability sum min(p, q): 0 to 3% for the truncated draft, 40-50% for the
    # flattened target, which therefore also tests what follows a kept draft: the next token follows p[1].
    assert_kept_as_often_as(second.sum(), float(torch.minimum(p[0], q).sum()))
    if draft == "flattened-target":
        assert second.sum() > N / 10 and _tv(second, p[1]) < tolerance(second.sum())


def test_greedy_drafts_argmax_and_stops_below_threshold():
    logits = torch.tensor([0.0, 3.0, 1.0])  # top probability about 0.84

    def make(threshold: float) -> DraftModelDrafter:
        return DraftModelDrafter(FixedLogits(logits), DraftModelConfig(threshold, 64, 3), SamplingParams(),
                                 torch.Generator())

    ctx = SeqView(tokens=[0, 2], prompt_len=2)
    assert make(0.0).propose(ctx, 4).tokens.tolist() == [1, 1, 1, 1]
    assert make(0.9).propose(ctx, 4).tokens.tolist() == [1]  # stops after the first unsure token
    assert make(0.9).propose(ctx, 4).probs is None


def test_draft_cache_follows_the_sequence_within_capacity(llm, truncated):
    draft = llm.drafts.load(truncated)
    ids = llm.encode("Count from one to twenty.")
    capacity = len(ids) + 5
    drafter = DraftModelDrafter(draft, DraftModelConfig(0.0, capacity, llm.network.vocab_size), SamplingParams(),
                                torch.Generator())
    tokens = list(ids)
    d = drafter.propose(SeqView(tokens, len(ids)), 4)
    assert len(d) == 4 and drafter.cache.length == len(ids) + 3  # the last draft is never fed
    tokens += d.tokens[:2].tolist() + [7]  # two accepted, then a recovered token of the target's
    d = drafter.propose(SeqView(tokens, len(ids)), 4)
    assert drafter.fed[: len(tokens)] == tokens and len(d) == 3  # capped: never past capacity
    assert drafter.cache.length == capacity
    tokens += d.tokens.tolist() + [9]
    assert len(drafter.propose(SeqView(tokens, len(ids)), 4)) == 0


def test_draft_cache_in_a_request_never_exceeds_capacity(llm, truncated):
    run = llm.stream("List ten fruits, one per line.", method="draft", draft_model=truncated, max_new_tokens=40)
    capacity = len(run.prompt_ids) + 40 + 12 + 1  # prompt + max_new_tokens + max_draft_length + 1, as api.py
    lengths = [run.engine.drafter.cache.length for _ in run.steps()]
    assert run.engine.drafter.limit == capacity and max(lengths) <= capacity
    assert run.engine.drafter.cache.max_len == run.engine.cache.max_len  # the same allocation as the target's


def test_foreign_tokenizer_is_refused(llm, truncated, tmp_path):
    from transformers import AutoTokenizer

    foreign = tmp_path / "foreign"
    shutil.copytree(truncated, foreign)
    tok = AutoTokenizer.from_pretrained(foreign)
    tok.add_tokens(["<not-in-the-target>"])
    tok.save_pretrained(foreign)
    with pytest.raises(InvalidRequest, match="tokenizer") as err:
        llm.generate("Hi", method="draft", draft_model=str(foreign), max_new_tokens=4)
    assert str(foreign) in str(err.value) and "smollm2-135m" in str(err.value)


def test_draft_method_needs_a_draft_model(llm, capsys):
    from leapdecode.bench.config import BenchConfig
    from leapdecode.cli import main

    with pytest.raises(InvalidRequest, match="draft_model"):
        llm.generate("Hi", method="draft", max_new_tokens=4)
    assert main(["generate", "Hi", "--method", "draft"]) == 2
    assert "--method draft needs --draft-model" in capsys.readouterr().err
    assert main(["generate", "Hi", "--method", "suffix", "--draft-model", "x"]) == 2
    assert "--draft-model goes with --method draft" in capsys.readouterr().err
    with pytest.raises(LeapError, match="hf-assist need --draft-model"):
        BenchConfig(methods=("hf", "hf-assist"))


def test_widths_and_prefixes():
    assert fit_width(torch.tensor([1.0, 2.0, 3.0]), 2).tolist() == [1.0, 2.0]
    assert fit_width(torch.tensor([1.0, 2.0]), 3).tolist() == [1.0, 2.0, float("-inf")]
    assert common_prefix([1, 2, 3, 4], [1, 2, 5], 2) == 2
    assert common_prefix([1, 2, 3], [1, 2, 3, 4], 3) == 3
    assert common_prefix([9, 2, 3], [1, 2, 3], 3) == 0  # a wrong hint is checked, not trusted


def test_bench_runs_hf_assist_on_the_baseline_and_passes_the_draft_to_the_engine():
    from types import SimpleNamespace

    from leapdecode.bench.contenders import build_contenders
    from leapdecode.bench.record import Generation

    calls = []

    class Baseline:
        def generate(self, ids, max_new_tokens, prompt_lookup=False, assisted=False):
            calls.append(("hf", prompt_lookup, assisted))
            return Generation([1], 1.0, None)

    class Engine:
        def generate(self, prompt_ids, **options):
            calls.append(("engine", options["method"], options.get("draft_model")))
            stats = SimpleNamespace(mean_accepted=1.0, as_dict=dict)
            return SimpleNamespace(token_ids=[1], stats=stats, finish_reason="length")

    contenders = build_contenders(Engine(), Baseline(), ("hf", "hf-assist", "none", "draft"), 4,
                                  drafter_options={"draft": {"draft_model": "d"}})
    for generate in contenders.values():
        generate([5])
    assert calls == [("hf", False, False), ("hf", False, True), ("engine", "none", None), ("engine", "draft", "d")]
