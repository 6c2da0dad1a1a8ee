"""Self-speculation by layer skipping: lossless at float32 and int4, drafts accepted, bad sets refused, the
automatic set searched once per model, and the target's cache left as the engine expects."""

from __future__ import annotations

import json

import pytest
import torch

from leapdecode.api import LLM
from leapdecode.bench.divergence import first_difference, top2_gap
from leapdecode.cli import main
from leapdecode.drafters import LayerSkipDrafter, SkipLayers, make_drafter
from leapdecode.drafters.layerskip import store as skip_store
from leapdecode.drafters.layerskip.search import SkipCosts, _eliminate
from leapdecode.errors import InvalidRequest
from leapdecode.types import SeqView
from tests.conftest import PROMPTS, hf_next_logits

SKIP = "3,5,25"  # layers whose removal alone keeps SmolLM2-135M's argmax closest to the full model's
NEW = 48


@pytest.fixture(scope="module")
def int4_llm():
    return LLM("smollm2-135m", dtype="int4", threads=2)


@pytest.mark.parametrize("precision", ["float32", "int4"])
def test_all_layers_listed_equal_the_default_forward(llm, int4_llm, prompt_ids, precision):
    net = (llm if precision == "float32" else int4_llm).network
    tokens = torch.tensor([prompt_ids[0]])
    default = net.forward(tokens, 0, net.new_cache(tokens.shape[1]))
    listed = net.forward(tokens, 0, net.new_cache(tokens.shape[1]), layers=list(range(net.num_layers)))
    assert torch.equal(default, listed)
    fewer = net.forward(tokens, 0, net.new_cache(tokens.shape[1]), layers=SkipLayers.parse(SKIP, 30).kept)
    assert not torch.equal(default, fewer)


def test_greedy_equals_transformers(llm, hf_model, prompt_ids, hf_greedy):
    for i, (ids, ref) in enumerate(zip(prompt_ids[:4], hf_greedy)):
        out = llm.generate(prompt_ids=ids, method="layerskip", skip_layers=SKIP, max_new_tokens=NEW).token_ids
        split = first_difference(out, ref[:NEW])
        if split is not None:  # tolerated only where the target itself is at a numerical tie
            gap = top2_gap(hf_next_logits(hf_model, ids + ref[:split]))
            assert gap < 1e-4, f"layerskip diverges on prompt {i} ({PROMPTS[i][:40]!r}) at token {split}"


def test_int4_equals_its_own_plain_decoding(int4_llm, prompt_ids):
    for ids in prompt_ids[:3]:
        plain = int4_llm.generate(prompt_ids=ids, method="none", max_new_tokens=NEW)
        spec = int4_llm.generate(prompt_ids=ids, method="layerskip", skip_layers=SKIP, max_new_tokens=NEW)
        assert spec.token_ids == plain.token_ids


def test_drafts_are_accepted(llm, prompt_ids):
    stats = [llm.generate(prompt_ids=ids, method="layerskip", skip_layers=SKIP, max_new_tokens=NEW).stats
             for ids in prompt_ids[:4]]
    assert sum(s.accepted for s in stats) > 0
    assert sum(s.new_tokens for s in stats) > sum(s.target_forwards for s in stats)  # mean accepted > 1


def test_sampling_runs_and_is_reproducible(llm, prompt_ids):
    opts = dict(method="layerskip", skip_layers=SKIP, max_new_tokens=24, temperature=0.8, seed=7)
    assert llm.generate(prompt_ids=prompt_ids[1], **opts).token_ids == llm.generate(prompt_ids=prompt_ids[1], **opts).token_ids


def _prefilled(llm, ids: list[int], capacity: int):
    net = llm.network
    cache = net.new_cache(capacity)
    net.forward(torch.tensor([ids[:-1]]), 0, cache, logits=False)
    cache.rollback(len(ids) - 1)
    return cache


def test_propose_leaves_the_cache_length_and_stays_inside_it(llm, prompt_ids):
    ids = prompt_ids[2]
    drafter = LayerSkipDrafter(llm.network, SkipLayers.parse(SKIP, 30), threshold=0.0)
    cache = _prefilled(llm, ids, len(ids) + 20)
    draft = drafter.propose(SeqView(tokens=ids, prompt_len=len(ids), cache=cache), 6)
    assert cache.length == len(ids) - 1 and len(draft) == 6  # threshold 0: a full chain
    cache.rollback(cache.max_len - 2)  # two slots left: the draft may write only those
    assert len(drafter.propose(SeqView(tokens=ids, prompt_len=len(ids), cache=cache), 8)) == 2
    assert cache.length == cache.max_len - 2
    assert len(drafter.propose(SeqView(tokens=ids, prompt_len=len(ids)), 4)) == 0  # no cache: no draft


def test_draft_is_the_skipped_models_greedy_chain(llm, prompt_ids):
    """Drafting over the cache gives what running the kept layers over the whole text gives."""
    ids, kept = prompt_ids[0], SkipLayers.parse(SKIP, 30).kept
    drafter = LayerSkipDrafter(llm.network, SkipLayers.parse(SKIP, 30), threshold=0.0)
    cache = _prefilled(llm, ids, len(ids) + 8)
    draft = drafter.propose(SeqView(tokens=ids, prompt_len=len(ids), cache=cache), 3)
    text = list(ids)
    for _ in range(3):  # the prompt through every layer, the drafted tokens through the kept ones
        logits = llm.network.forward(torch.tensor([text[len(ids) - 1 :]]), len(ids) - 1, cache, layers=kept)
        text.append(int(logits[0, -1].argmax()))
    assert draft.tokens.tolist() == text[len(ids) :]


BAD_SETS = {
    "40": "layer 40 does not exist; the model has 30 layers",
    "0,3": "first (0) and last (29) layers always run; the model has 30 layers",
    "0-29": "always run",
    "": "skip_layers is empty",
    "3-x": "cannot read '3-x'",
    "9-4": "runs backwards",
}


@pytest.mark.parametrize("spec", BAD_SETS)
def test_bad_skip_sets_are_clear_errors(llm, prompt_ids, spec):
    with pytest.raises(InvalidRequest, match=BAD_SETS[spec].replace("(", r"\(").replace(")", r"\)")):
        llm.generate(prompt_ids=prompt_ids[0], method="layerskip", skip_layers=spec, max_new_tokens=4)


def test_layerskip_needs_our_network():
    with pytest.raises(InvalidRequest, match="own layers"):
        make_drafter("layerskip", skip_layers="3")


def test_skip_sets_read_and_print_compactly():
    skip = SkipLayers.parse("12, 3,5,7-11,5", 30)
    assert skip.skipped == (3, 5, 7, 8, 9, 10, 11, 12) and str(skip) == "3,5,7-12"
    assert len(skip.kept) == 22 and 0 in skip.kept and 29 in skip.kept
    assert SkipLayers.parse([4, 2], 30) == SkipLayers.parse("2,4", 30)


def test_cli_layerskip(capsys):
    assert main(["generate", "Say hello.", "--method", "layerskip", "--skip-layers", SKIP, "--json",
                 "--max-new-tokens", "8", "--threads", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["stats"]["new_tokens"] >= 1
    for args, message in ((["--method", "layerskip", "--skip-layers", "31"], "layer 31 does not exist"),
                          (["--method", "ngram", "--skip-layers", "3"], "--skip-layers goes with --method layerskip")):
        assert main(["generate", "Hello", "--max-new-tokens", "4", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


def test_elimination_stops_where_expected_speed_peaks():
    """A toy model: each skipped layer costs 4% agreement, layer 7 is vital; drafts cost per layer kept."""
    def agreement(skipped: list[int]) -> float:
        return 0.2 if 7 in skipped else 1.0 - 0.04 * len(skipped)

    steps, evaluated = _eliminate(12, agreement, SkipCosts(per_layer=0.08, verify_row=0.05))
    best = max(steps, key=lambda s: s[2][0])
    assert 7 not in best[0] and 0 < len(best[0]) < 10
    assert evaluated < 10 * 5  # the lazy rounds re-score a few candidates each
    assert SkipCosts(0.03, 0.1).speedup(0.0, 1)[0] < 1 < SkipCosts(0.05, 0.02).speedup(0.95, 15)[0]


def test_search_finds_a_valid_set_once_per_model(llm, prompt_ids, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LEAPDECODE_CACHE", str(tmp_path))
    model_id = llm.drafter_resources.model_id
    skip, draft_length, threshold = skip_store.found_skip_layers(llm.network, llm.tokenizer, model_id)
    assert 1 <= draft_length <= 8 and 0.0 <= threshold < 1.0
    assert skip.total == 30 and skip.skipped  # validated on construction: a usable set
    assert "searching which of 30 layers to skip" in capsys.readouterr().err
    assert json.loads((tmp_path / "layerskip.json").read_text())[f"v{skip_store.VERSION}|{model_id}"]["skip"] == str(skip)

    def no_search(*args, **kwargs):
        raise AssertionError("searched again")

    monkeypatch.setattr(skip_store, "search_skip_layers", no_search)
    assert skip_store.found_skip_layers(llm.network, llm.tokenizer, model_id) == (skip, draft_length, threshold)
    res = llm.generate(prompt_ids=prompt_ids[0], method="layerskip", max_new_tokens=16)  # the api finds it too
    assert res.token_ids == llm.generate(prompt_ids=prompt_ids[0], method="none", max_new_tokens=16).token_ids
    assert capsys.readouterr().err == ""


def test_int4_weights_draft_a_float32_target_losslessly(llm, hf_model, prompt_ids, hf_greedy):
    """skip_dtype="int4": the draft pass reads the target's own GGUF weights as stored, over the float32
    target's cache; the target verifies, so greedy output is still transformers' own."""
    drafter = make_drafter("layerskip", llm.drafter_resources, skip_layers=SKIP, skip_dtype="int4")
    assert drafter.network is not llm.network and drafter.network.precision == "int4"
    assert drafter.network is llm.drafts.load_self("int4")  # loaded once per LLM
    accepted = 0
    for i, (ids, ref) in enumerate(zip(prompt_ids[:3], hf_greedy)):
        res = llm.generate(prompt_ids=ids, method="layerskip", skip_layers=SKIP, skip_dtype="int4", max_new_tokens=NEW)
        split = first_difference(res.token_ids, ref[:NEW])
        if split is not None:
            assert top2_gap(hf_next_logits(hf_model, ids + ref[:split])) < 1e-4, f"prompt {i} at token {split}"
        accepted += res.stats.accepted
    assert accepted > 0


def test_int4_weights_get_a_search_of_their_own(llm, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LEAPDECODE_CACHE", str(tmp_path))
    model_id = llm.drafter_resources.model_id
    int4 = llm.drafts.load_self("int4")
    skip, _, _ = skip_store.found_skip_layers(llm.network, llm.tokenizer, model_id, int4, "int4")
    stored = json.loads((tmp_path / "layerskip.json").read_text())
    assert list(stored) == [f"v{skip_store.VERSION}|{model_id}|draft@int4"] and stored[list(stored)[0]]["skip"] == str(skip)
    assert "searching" in capsys.readouterr().err
    assert main(["generate", "Hi", "--method", "suffix", "--skip-dtype", "int4", "--max-new-tokens", "4"]) == 2
    assert "--skip-dtype goes with --method layerskip" in capsys.readouterr().err


def test_int4_weight_search_prices_the_cheaper_draft():
    plain, cheap = SkipCosts(0.03, 0.01), SkipCosts(0.03, 0.01, draft_full=0.3)
    assert cheap.speedup(0.9, 1)[0] > 1.5 > plain.speedup(0.9, 1)[0]


def test_int4_weights_may_skip_no_layer_and_stay_lossless(llm, hf_model, prompt_ids, hf_greedy, capsys):
    """skip_layers="none" at int4: every layer drafts, over the float32 target's cache (quantized
    self-speculation). Greedy output is still transformers' own, and most drafts are accepted. At the
    target's own precision the same empty set would be the target drafting for itself: refused."""
    accepted = drafted = 0
    for i, (ids, ref) in enumerate(zip(prompt_ids[:3], hf_greedy)):
        res = llm.generate(prompt_ids=ids, method="layerskip", skip_layers="none", skip_dtype="int4", max_new_tokens=NEW)
        split = first_difference(res.token_ids, ref[:NEW])
        if split is not None:
            assert top2_gap(hf_next_logits(hf_model, ids + ref[:split])) < 1e-4, f"prompt {i} at token {split}"
        accepted, drafted = accepted + res.stats.accepted, drafted + res.stats.drafted
    assert accepted > 0.6 * drafted
    with pytest.raises(InvalidRequest, match="the draft would be the target itself"):
        llm.generate(prompt_ids=prompt_ids[0], method="layerskip", skip_layers="none", max_new_tokens=4)
    assert str(SkipLayers.parse("none", 30)) == "none" and SkipLayers.parse("none", 30).kept == tuple(range(30))


def test_confidence_threshold_is_read_from_measured_agreement():
    """Positions the draft is unsure of (low top probability) but still right about do not raise the cut-off;
    a low-confidence tail that is mostly wrong sets it just where that tail ends."""
    from leapdecode.drafters.layerskip.search import confidence_threshold

    sure, unsure = torch.tensor([8.0, 0.0, 0.0]), torch.tensor([0.5, 0.0, 0.0])  # top probability ~1 / ~0.45
    logits = torch.stack([unsure] * 4 + [sure] * 4)
    right, wrong = torch.zeros(8, dtype=torch.long), torch.tensor([1] * 4 + [0] * 4)
    assert confidence_threshold(logits, right, price=0.3) == 0.0  # unsure but right: draft anyway
    assert 0.4 < confidence_threshold(logits, wrong, price=0.3) < 0.5  # the unsure ones are all wrong
