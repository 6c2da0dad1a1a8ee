"""At bfloat16, losslessness means: speculative output equals leapdecode's own plain decoding at bfloat16."""

from __future__ import annotations

import pytest

from leapdecode.api import LLM


@pytest.fixture(scope="module")
def bf16_llm():
    return LLM("smollm2-135m", dtype="bfloat16", threads=2)


@pytest.mark.parametrize("method", ["ngram", "suffix"])
def test_bfloat16_speculation_equals_plain(bf16_llm, prompt_ids, method):
    for ids in prompt_ids[:4]:
        plain = bf16_llm.generate(prompt_ids=ids, method="none", max_new_tokens=64)
        spec = bf16_llm.generate(prompt_ids=ids, method=method, max_new_tokens=64)
        assert spec.token_ids == plain.token_ids
