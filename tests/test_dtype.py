"""At bfloat16, speculative output is checked against leapdecode's own plain decoding at bfloat16.

Exact equality is the goal (issue 6). What holds today, and is asserted: wherever speculative and plain
bf16 output part, the target sits at a bf16 near-tie there (top-2 logit gap within a few bf16 units in the
last place). A verify forward over k+1 tokens rounds differently from a one-token forward in bf16 (the
CPU attention kernels' results depend on masked-out cache slots), and a tie can flip either way.
"""

from __future__ import annotations

import pytest
import torch

from leapdecode.api import LLM
from leapdecode.bench.divergence import first_difference, tie_tolerance, top2_gap


@pytest.fixture(scope="module")
def bf16_llm():
    return LLM("smollm2-135m", dtype="bfloat16", threads=2)


def _next_logits(llm: LLM, ids: list[int]) -> torch.Tensor:
    net = llm.network
    return net.forward(torch.tensor([ids]), 0, net.new_cache(len(ids)))[0, -1]


@pytest.mark.parametrize("method", ["ngram", "suffix"])
def test_bfloat16_speculation_equals_plain_or_splits_at_a_tie(bf16_llm, prompt_ids, method):
    exact = 0
    for ids in prompt_ids[:6]:
        plain = bf16_llm.generate(prompt_ids=ids, method="none", max_new_tokens=64).token_ids
        spec = bf16_llm.generate(prompt_ids=ids, method=method, max_new_tokens=64).token_ids
        split = first_difference(spec, plain)
        if split is None:
            exact += 1
            continue
        logits = _next_logits(bf16_llm, ids + plain[:split])
        gap = top2_gap(logits)
        assert gap <= tie_tolerance(logits.to(torch.bfloat16)), f"split at token {split} with gap {gap}"
    assert exact >= 1  # most prompts match exactly; a test that never compares equal outputs proves little
