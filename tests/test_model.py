"""Our llama-family forward equals transformers' on the same weights, and rollback loses nothing."""

from __future__ import annotations

import torch

TEXT = "The quick brown fox jumps over the lazy dog, and then it runs into the forest to find"


def test_logits_equal_transformers(llm, hf_model):
    ids = torch.tensor([llm.tokenizer.encode(TEXT)])
    with torch.inference_mode():
        ref = hf_model(ids).logits
    ours = llm.network.forward(ids, 0, llm.network.new_cache(ids.shape[1]))
    assert (ours - ref).abs().max().item() < 1e-4


def test_incremental_forward_equals_full(llm, hf_model):
    ids = torch.tensor([llm.tokenizer.encode(TEXT)])
    with torch.inference_mode():
        ref = hf_model(ids).logits
    net, n = llm.network, ids.shape[1]
    cache = net.new_cache(n)
    net.forward(ids[:, :6], 0, cache, logits=False)
    chunk = net.forward(ids[:, 6:10], 6, cache)
    one = net.forward(ids[:, 10:11], 10, cache)
    assert (chunk - ref[:, 6:10]).abs().max().item() < 1e-4
    assert (one - ref[:, 10:11]).abs().max().item() < 1e-4


def test_rollback_forgets_rejected_tokens(llm, hf_model):
    """Writing wrong drafts and moving the length back must leave no trace in later logits."""
    ids = torch.tensor([llm.tokenizer.encode(TEXT)])
    with torch.inference_mode():
        ref = hf_model(ids).logits
    net = llm.network
    cache = net.new_cache(ids.shape[1] + 8)
    net.forward(ids[:, :8], 0, cache, logits=False)
    net.forward(torch.randint(0, net.vocab_size, (1, 6)), 8, cache)  # a rejected draft
    cache.rollback(8)
    again = net.forward(ids[:, 8:], 8, cache)
    assert (again - ref[:, 8:]).abs().max().item() < 1e-4


def test_tree_mask_matches_separate_chains(llm):
    """An explicit attention mask lets one forward score two branches as if each ran alone."""
    net = llm.network
    prefix = llm.tokenizer.encode(TEXT)[:8]
    a, b = [11, 12, 13], [21, 22]
    cache = net.new_cache(16)
    net.forward(torch.tensor([prefix]), 0, cache, logits=False)
    n = len(prefix)
    mask = torch.ones(5, n + 5, dtype=torch.bool)
    mask[:, n:] = torch.tensor([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 1, 1]]).bool()
    pos = torch.tensor([n, n + 1, n + 2, n, n + 1])
    tree = net.forward(torch.tensor([a + b]), n, cache, mask=mask, positions=pos)[0]
    for branch, rows in ((a, slice(0, 3)), (b, slice(3, 5))):
        alone = net.new_cache(16)
        net.forward(torch.tensor([prefix]), 0, alone, logits=False)
        ref = net.forward(torch.tensor([branch]), n, alone)[0]
        assert (tree[rows] - ref).abs().max().item() < 1e-4


def test_configs_our_code_cannot_honour_fall_back():
    """A sliding window or a scaled RoPE would silently change outputs: those go to the transformers adapter."""
    import pytest

    from leapdecode.errors import ModelLoadError
    from leapdecode.models.llama import LlamaShape

    base = {"model_type": "mistral", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
            "num_attention_heads": 2, "rms_norm_eps": 1e-5, "max_position_embeddings": 32768}
    assert LlamaShape.from_hf(base | {"sliding_window": None}).heads == 2
    with pytest.raises(ModelLoadError, match="sliding-window"):
        LlamaShape.from_hf(base | {"sliding_window": 4096})
    with pytest.raises(ModelLoadError, match="rope type"):
        LlamaShape.from_hf(base | {"model_type": "llama", "rope_scaling": {"rope_type": "llama3", "factor": 8.0}})
    qwen = base | {"model_type": "qwen2", "sliding_window": 4096, "use_sliding_window": False}
    assert LlamaShape.from_hf(qwen).qkv_bias
