"""Opt-in (`pytest -m slow`): Qwen2.5-Coder-1.5B from its 22 PyPI parts (1.1 GB, Q4_K_M), run as stored."""

from __future__ import annotations

import pytest

from leapdecode.api import LLM

pytestmark = pytest.mark.slow

PROMPTS = ["Write a Python function that returns the n-th Fibonacci number.", "Explain what a mutex is."]


@pytest.fixture(scope="module")
def qwen():
    return LLM("qwen2.5-coder-1.5b", dtype="int4", threads=2)


def test_qwen_q4_k_m_runs_as_int4_and_speculation_equals_plain(qwen):
    assert qwen.precision == "int4" and qwen.backend == "leapdecode"
    for prompt in PROMPTS:
        plain = qwen.generate(prompt, method="none", max_new_tokens=48)
        assert qwen.generate(prompt, method="suffix", max_new_tokens=48).token_ids == plain.token_ids
    assert "def" in qwen.generate(PROMPTS[0], max_new_tokens=48).text


@pytest.fixture(scope="module")
def qwen_fp32():
    return LLM("qwen2.5-coder-1.5b", dtype="float32", threads=2)


def test_qwen_pair_draft_equals_transformers_greedy(qwen_fp32):
    """The pair the issue names: the 1.5B at float32 against transformers' own greedy generate(), with the
    0.5B drafting (as stored, int4) and with the model-free drafter."""
    import torch
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(qwen_fp32.checkpoint_dir, dtype=torch.float32).eval()
    for prompt in PROMPTS:
        ids = qwen_fp32.encode(prompt)
        with torch.inference_mode():
            ref = hf.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False)[0, len(ids):].tolist()
        drafted = qwen_fp32.generate(prompt_ids=ids, method="draft", draft_model="qwen2.5-coder-0.5b",
                                     max_new_tokens=32)
        assert drafted.token_ids == ref[: len(drafted.token_ids)] and drafted.stats.mean_accepted > 1.5
        assert qwen_fp32.generate(prompt_ids=ids, method="suffix", max_new_tokens=32).token_ids == drafted.token_ids
