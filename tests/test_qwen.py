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
