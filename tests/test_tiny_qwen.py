"""The qwen2 path in CI, on tiny random checkpoints built at test time (tests/tiny_qwen.py): q/k/v biases, an
untied head, an embedding table wider than the tokenizer, and a real draft model of another size. Greedy
output of every method equals transformers' greedy generate() token for token.

Both networks are tiny (64 wide, 2 and 4 layers), so they run on one thread: a second one only adds
synchronisation to microsecond-sized matmuls (and waits on a busy machine).
"""

from __future__ import annotations

import pytest
import torch

from leapdecode.api import LLM
from tiny_qwen import PAD_ROWS

PROMPTS = ["Write a Python function that checks whether a number is prime.",
           "Tell me a short story about a dragon who is afraid of fire.",
           "List ten fruits, one per line."]
NEW_TOKENS = 48


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_llm(tiny_qwen) -> LLM:
    return LLM(tiny_qwen[0], dtype="float32")


@pytest.fixture(scope="module")
def tiny_hf(tiny_qwen):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_qwen[0], dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def tiny_greedy(tiny_llm, tiny_hf) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, transformers' greedy continuation) per prompt."""
    out = []
    with torch.inference_mode():
        for prompt in PROMPTS:
            ids = tiny_llm.encode(prompt)
            ref = tiny_hf.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False)
            out.append((ids, ref[0, len(ids):].tolist()))
    return out


def test_loads_as_qwen2_with_biases_an_untied_head_and_a_padded_vocabulary(tiny_qwen, tiny_llm, tiny_hf):
    """leapdecode's own qwen2 code (not the transformers fallback) computes transformers' logits, padding
    columns included."""
    from safetensors.torch import load_file

    sd = load_file(f"{tiny_qwen[0]}/model.safetensors")
    assert all(sd[f"model.layers.0.self_attn.{p}_proj.bias"].abs().mean() > 0.2 for p in "qkv")
    assert not torch.equal(sd["lm_head.weight"], sd["model.embed_tokens.weight"])
    assert tiny_llm.backend == "leapdecode" and tiny_llm.precision == "float32"
    assert tiny_llm.network.vocab_size == len(tiny_llm.tokenizer) + PAD_ROWS == tiny_hf.config.vocab_size

    ids = tiny_llm.encode(PROMPTS[0])
    net = tiny_llm.network
    with torch.inference_mode():
        ours = net.forward(torch.tensor([ids]), 0, net.new_cache(len(ids)))[0]  # [T, V]
        theirs = tiny_hf(torch.tensor([ids])).logits[0]
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    assert ours.std() > 1.0  # logits far apart: a greedy choice is no rounding accident


METHODS = {
    "none": {},
    "ngram": {},
    "suffix": {},
    "suffix-tree": {"method": "suffix", "tree": 3},
    "layerskip": {"skip_layers": "2"},
    "lookahead": {},
    "draft": {"draft_model": "DRAFT"},
    "draft-tree": {"method": "draft", "draft_model": "DRAFT", "tree": 3},
}


@pytest.mark.parametrize("name", list(METHODS))
def test_greedy_equals_transformers(tiny_qwen, tiny_llm, tiny_greedy, name):
    options = {"method": name} | {k: tiny_qwen[1] if v == "DRAFT" else v for k, v in METHODS[name].items()}
    for i, (ids, ref) in enumerate(tiny_greedy):
        out = tiny_llm.generate(prompt_ids=ids, max_new_tokens=NEW_TOKENS, **options).token_ids
        assert out == ref, f"{name} on prompt {i}: first difference at {_first_difference(out, ref)}"


def test_a_draft_model_of_another_size_is_accepted_and_rejected(tiny_qwen, tiny_llm, tiny_greedy):
    """The 2-layer draft (49152 logits against the target's 49280) gets drafts both kept and refused, so the
    lossless output above went through acceptance, rejection and the draft's cache rollback."""
    draft = tiny_llm.drafts.load(tiny_qwen[1])
    assert draft.vocab_size == len(tiny_llm.tokenizer) < tiny_llm.network.vocab_size
    assert draft.num_layers < tiny_llm.network.num_layers
    stats = [tiny_llm.generate(prompt_ids=ids, method="draft", draft_model=tiny_qwen[1], max_new_tokens=NEW_TOKENS,
                               draft_threshold=0.0).stats for ids, _ in tiny_greedy]
    accepted, drafted = sum(s.accepted for s in stats), sum(s.drafted for s in stats)
    assert 0 < accepted < drafted
    assert sum(s.new_tokens for s in stats) > 1.2 * sum(s.target_forwards for s in stats)


def _first_difference(a: list[int], b: list[int]) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None if len(a) == len(b) else min(len(a), len(b)))
