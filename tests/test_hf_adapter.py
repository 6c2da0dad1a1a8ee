"""Architectures without our own model code run through transformers: slower, but just as lossless."""

from __future__ import annotations

import pytest

from leapdecode.api import LLM
from tests.conftest import NEW_TOKENS


@pytest.fixture(scope="module")
def adapter_llm():
    return LLM("smollm2-135m", dtype="float32", backend="transformers", threads=2)


def test_adapter_backend_is_used(adapter_llm):
    assert adapter_llm.backend == "transformers"


@pytest.mark.parametrize("method", ["none", "suffix"])
def test_adapter_greedy_equals_transformers(adapter_llm, prompt_ids, hf_greedy, method):
    for ids, ref in list(zip(prompt_ids, hf_greedy))[:3]:
        out = adapter_llm.generate(prompt_ids=ids, method=method, max_new_tokens=NEW_TOKENS)
        assert out.token_ids == ref


def test_adapter_refuses_tree_masks(adapter_llm):
    import torch

    from leapdecode.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match="token trees"):
        adapter_llm.network.forward(torch.tensor([[1, 2]]), 0, adapter_llm.network.new_cache(8),
                                    mask=torch.ones(2, 2, dtype=torch.bool))
