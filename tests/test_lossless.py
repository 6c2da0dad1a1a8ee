"""Greedy output of every method equals transformers' greedy generate(), token for token."""

from __future__ import annotations

import pytest

from leapdecode.bench.divergence import first_difference, top2_gap
from leapdecode.drafters import DRAFTER_METHODS, required_options
from tests.conftest import NEW_TOKENS, PROMPTS, hf_next_logits

NEAR_TIE = 1e-4
# Methods that run on their options' defaults; draft needs a draft model (tests/test_draft_model.py), eagle a
# trained head (tests/test_eagle.py trains one).
STANDALONE = tuple(m for m in DRAFTER_METHODS if not required_options(m) and m != "eagle")
# jacobi and lookahead feed many rows a step, the slowest here: tests/test_lookahead.py checks them on half the prompts.
GREEDY_HERE = tuple(m for m in STANDALONE if m not in ("jacobi", "lookahead"))


@pytest.mark.parametrize("method", GREEDY_HERE)
def test_greedy_equals_transformers(llm, hf_model, prompt_ids, hf_greedy, method):
    for i, (ids, ref) in enumerate(zip(prompt_ids, hf_greedy)):
        out = llm.generate(prompt_ids=ids, method=method, max_new_tokens=NEW_TOKENS).token_ids
        split = first_difference(out, ref)
        if split is None:
            continue
        gap = top2_gap(hf_next_logits(hf_model, ids + ref[:split]))
        # A divergence is tolerated only where the target itself is at a numerical tie.
        assert gap < NEAR_TIE, f"{method} diverges on prompt {i} ({PROMPTS[i][:40]!r}) at token {split}, gap {gap}"


def test_speculation_actually_accepts_drafts(llm, prompt_ids):
    """Losslessness must not come from never speculating: the drafters do get tokens accepted."""
    for method in ("ngram", "suffix"):
        stats = [llm.generate(prompt_ids=ids, method=method, max_new_tokens=64).stats for ids in prompt_ids[:5]]
        assert sum(s.accepted for s in stats) > 0
        assert sum(s.new_tokens for s in stats) > sum(s.target_forwards for s in stats)


@pytest.mark.parametrize("method", ["ngram", "suffix"])
def test_stop_strings_and_eos_match_plain_decoding(llm, prompt_ids, method):
    for ids in prompt_ids[:4]:
        for stop in ([], ["\n"], [".", "!"]):
            plain = llm.generate(prompt_ids=ids, method="none", max_new_tokens=48, stop=stop)
            spec = llm.generate(prompt_ids=ids, method=method, max_new_tokens=48, stop=stop)
            assert (spec.token_ids, spec.text, spec.finish_reason) == (plain.token_ids, plain.text, plain.finish_reason)
            for s in stop:
                assert s not in spec.text


@pytest.mark.parametrize("max_new", [1, 2, 7])
def test_max_new_tokens_is_exact(llm, prompt_ids, hf_greedy, max_new):
    """Exactly max_new tokens, the first max_new of transformers' greedy answer (which runs on well past
    them, without an end-of-sequence token), never one drafted token more."""
    ref = hf_greedy[4]
    assert len(ref) > max_new and not set(ref[:max_new]) & llm.eos_ids
    for method in STANDALONE:
        res = llm.generate(prompt_ids=prompt_ids[4], method=method, max_new_tokens=max_new)
        assert (res.token_ids, res.finish_reason) == (ref[:max_new], "length"), method
        assert res.stats.new_tokens == max_new
