"""EAGLE-style draft heads: trained here on a few of the model's own answers, then lossless in greedy and
sampled decoding, alone and batched; the features the drafter keeps are the target's; bad heads refused."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from leapdecode.batching.scheduler import Scheduler, SchedulerConfig
from leapdecode.bench.divergence import first_difference, top2_gap
from leapdecode.cli import main
from leapdecode.errors import InvalidRequest
from leapdecode.heads.corpus import answers
from leapdecode.heads.head import DraftHead
from leapdecode.heads.training import TrainConfig, _step_masks, examples, fit_head
from leapdecode.models.base import Segment
from leapdecode.models.registry import KNOWN_MODELS, fetch_known
from leapdecode.paths import cache_dir
from tests.conftest import PROMPTS, hf_next_logits

NEW = 48


@pytest.fixture(scope="module")
def trained(llm, tmp_path_factory):
    """A head fitted to 40 short answers: enough for drafts to be accepted, seconds to train."""
    data = examples(llm, answers(llm, 40, 48))
    head, report = fit_head(llm, data, TrainConfig(epochs=10, batch=4, vocab=2048))
    path = tmp_path_factory.mktemp("head") / "head.safetensors"
    head.save(path, "test", {})
    return path, report, data


def test_training_learns_the_models_next_tokens(llm, trained):
    _, report, data = trained
    cfg = TrainConfig(epochs=0, batch=4, vocab=2048)
    _, untrained = fit_head(llm, data, cfg)  # the target's last layer, before any step
    assert report.step_accuracy[0] > untrained.step_accuracy[0] + 0.1
    assert report.tokens_per_forward > 1.0
    assert 0.9 < report.vocab_coverage <= 1.0


@pytest.mark.parametrize("tree", [0, 3])
def test_greedy_equals_transformers(llm, hf_model, prompt_ids, hf_greedy, trained, tree):
    path = str(trained[0])
    accepted = 0
    for i, (ids, ref) in enumerate(zip(prompt_ids[:4], hf_greedy)):
        res = llm.generate(prompt_ids=ids, method="eagle", head=path, tree=tree, max_new_tokens=NEW)
        split = first_difference(res.token_ids, ref[:NEW])
        if split is not None:  # tolerated only where the target itself is at a numerical tie
            gap = top2_gap(hf_next_logits(hf_model, ids + ref[:split]))
            assert gap < 1e-4, f"eagle diverges on prompt {i} ({PROMPTS[i][:40]!r}) at token {split}"
        accepted += res.stats.accepted
    assert accepted > 0  # the head drafts tokens the target keeps


@pytest.mark.parametrize("tree", [0, 3])
def test_seeded_sampling_equals_plain_sampling(llm, prompt_ids, trained, tree):
    for ids in prompt_ids[:3]:
        opts = {"temperature": 0.8, "top_p": 0.95, "seed": 7, "max_new_tokens": NEW}
        plain = llm.generate(prompt_ids=ids, method="none", **opts).token_ids
        assert llm.generate(prompt_ids=ids, method="eagle", head=str(trained[0]), tree=tree, **opts).token_ids == plain


@pytest.mark.parametrize("tree", [0, 3])
def test_the_drafter_keeps_the_targets_features(llm, prompt_ids, trained, tree):
    """At every committed position but the newest, the feature the drafter holds is the one a fresh
    forward over the committed text gives: chains and verified trees (the accepted path's rows) alike."""
    opts = {"method": "eagle", "head": str(trained[0]), "tree": tree, "max_new_tokens": NEW}
    run = llm._start(None, prompt_ids[1], False, opts)
    for _ in run.steps():
        pass
    tokens, drafter = run.engine.tokens, run.engine.drafter
    n = len(tokens) - 1  # features are known for every token but the newest
    net = llm.network
    _, fresh = net.forward_features([Segment(torch.tensor(tokens[:n]), 0, net.new_cache(n))], logits=False)
    assert torch.allclose(drafter.feats[:n], fresh, atol=1e-3)
    assert drafter.entries <= len(tokens)


def test_batched_with_other_methods_each_gets_its_plain_text(llm, prompt_ids, trained):
    methods = ["eagle", "none", "suffix", "eagle", "ngram", "eagle"]
    plain = [llm.generate(prompt_ids=prompt_ids[i], method="none", max_new_tokens=NEW).token_ids
             for i in range(len(methods))]
    scheduler = Scheduler(llm.network, SchedulerConfig(max_batch=8))
    results: dict[int, list[int]] = {}
    for i, m in enumerate(methods):
        opts = {"method": m, "max_new_tokens": NEW} | ({"head": str(trained[0])} if m == "eagle" else {})
        run = llm._start(None, prompt_ids[i], False, opts)
        scheduler.submit(run, lambda ev, i=i: ev.result is not None and results.__setitem__(i, ev.result.token_ids))
    scheduler.run(keep_going=lambda: len(results) < len(methods))
    assert [results[i] for i in range(len(methods))] == plain


def test_step_masks_show_each_draft_step_its_own_cache():
    first, second = _step_masks(4, 2)
    assert first[:, 4:].sum() == 0 and torch.equal(first[:, :4], torch.tril(torch.ones(4, 4, dtype=torch.bool)))
    # step 2 at position 2: true entries 0..1, then its own entry at 2 in the second block
    assert second[2].tolist() == [True, True, False, False, False, False, True, False]


def test_a_missing_head_names_the_command_that_trains_one(llm, prompt_ids, tmp_path, monkeypatch):
    monkeypatch.setenv("LEAPDECODE_CACHE", str(tmp_path))
    with pytest.raises(InvalidRequest, match="leapdecode train-head"):
        llm.generate(prompt_ids=prompt_ids[0], method="eagle", max_new_tokens=4)


def test_bad_head_files_are_refused(llm, prompt_ids, tmp_path, trained):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a head")
    with pytest.raises(InvalidRequest, match="cannot read draft head"):
        llm.generate(prompt_ids=prompt_ids[0], method="eagle", head=str(junk), max_new_tokens=4)
    head = DraftHead.load(trained[0], llm.network.shape)
    other = type(llm.network.shape)(**{**{f: getattr(llm.network.shape, f) for f in llm.network.shape.__slots__},
                                       "dim": 64})
    with pytest.raises(InvalidRequest, match="another model"):
        DraftHead.load(trained[0], other)
    assert head.vocab_ids.shape[0] <= 2048


def test_cli_trains_a_head_and_generates_with_it(tmp_path, capsys):
    out = tmp_path / "h.safetensors"
    assert main(["train-head", "--prompts", "4", "--max-new-tokens", "8", "--epochs", "1", "--dtype", "float32",
                 "--threads", "2", "--out", str(out)]) == 0
    assert out.is_file() and "held-out agreement" in capsys.readouterr().out
    assert main(["generate", "List three colours.", "--method", "eagle", "--head", str(out), "--max-new-tokens", "8",
                 "--dtype", "float32", "--json"]) == 0
    assert main(["generate", "hi", "--method", "suffix", "--head", str(out)]) == 2


def test_cli_trains_a_head_at_int4_where_the_checkpoint_has_no_float_weights(tmp_path, monkeypatch, capsys):
    """At an integer precision the model's checkpoint directory is the GGUF's metadata alone (its tensors are
    read as stored): training reads float weights converted from the GGUF. A fresh cache holding only the
    GGUF (and the compiled kernels), so no float copy lies there from another run."""
    gguf = fetch_known(KNOWN_MODELS["smollm2-135m"])
    (tmp_path / "gguf").mkdir()
    (tmp_path / "gguf" / gguf.name).symlink_to(gguf)
    (tmp_path / "kernels").symlink_to(cache_dir() / "kernels", target_is_directory=True)
    monkeypatch.setenv("LEAPDECODE_CACHE", str(tmp_path))
    out = tmp_path / "h.safetensors"
    assert main(["train-head", "--prompts", "2", "--max-new-tokens", "4", "--epochs", "1", "--dtype", "int4",
                 "--threads", "2", "--out", str(out)]) == 0
    assert out.is_file() and "held-out agreement" in capsys.readouterr().out
    with safe_open(str(out), "pt") as f:
        assert json.loads(f.metadata()["info"])["precision"] == "int4"


def test_auto_takes_the_head_as_an_arm_only_when_given(llm, prompt_ids, trained):
    plain = llm.generate(prompt_ids=prompt_ids[2], method="none", max_new_tokens=NEW).token_ids
    run = llm._start(None, prompt_ids[2], False, {"method": "auto", "head": str(trained[0]), "max_new_tokens": NEW})
    for _ in run.steps():
        pass
    assert "eagle" in run.engine.drafter.arms and run.engine.wants_features
    assert run.result().token_ids == plain
    alone = llm._start(None, prompt_ids[2], False, {"method": "auto", "max_new_tokens": 4})
    alone.start()
    assert "eagle" not in alone.engine.drafter.arms and not alone.engine.wants_features
