"""Shared fixtures: the default model loaded once, and transformers' greedy outputs as the baseline."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Ten varied prompts: code, lists, prose, rewriting, maths, dialogue; 128 new tokens each in the tests.
PROMPTS = [
    "Write a Python function that checks whether a number is prime.",
    "Tell me a short story about a dragon who is afraid of fire.",
    "What is the capital of France? Answer in one sentence.",
    "Rewrite this sentence formally: hey guys whats up, the meeting is moved to 3pm tmrw",
    "List ten fruits, one per line.",
    "Explain recursion to a five year old.",
    "Translate to French: The cat sleeps on the warm windowsill every afternoon.",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Summarize the plot of Romeo and Juliet in three sentences.",
    "Write a JSON object describing a book with title, author, year and genres.",
]
NEW_TOKENS = 128


@pytest.fixture(scope="session")
def llm():
    from leapdecode.api import LLM

    return LLM("smollm2-135m", dtype="float32", threads=2)


@pytest.fixture(scope="session")
def hf_model(llm):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(llm.checkpoint_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def prompt_ids(llm) -> list[list[int]]:
    return [llm.encode(p) for p in PROMPTS]


@pytest.fixture(scope="session")
def hf_greedy(hf_model, prompt_ids) -> list[list[int]]:
    """transformers' own greedy generate(): the reference every method must equal."""
    outs = []
    with torch.inference_mode():
        for ids in prompt_ids:
            out = hf_model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False)
            outs.append(out[0, len(ids):].tolist())
    return outs


def hf_next_logits(hf_model, ids: list[int]) -> torch.Tensor:
    """transformers' logits [V] for the token after ids."""
    with torch.inference_mode():
        return hf_model(torch.tensor([ids])).logits[0, -1]


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory) -> tuple[str, str]:
    """(target, draft): tiny random qwen2 checkpoint directories sharing SmolLM2's tokenizer (tests/tiny_qwen.py)."""
    from tiny_qwen import build_pair

    from leapdecode.models.loader import resolve_source

    target, draft = build_pair(tmp_path_factory.mktemp("tiny-qwen2"), resolve_source("smollm2-135m").checkpoint_dir)
    return str(target), str(draft)


@pytest.fixture(scope="session")
def tiny_dllm(tmp_path_factory):
    """A tiny diffusion LM, block-causal and shifted like the real one, trained 150 steps on easy tasks."""
    from tiny_dllm import make_tiny_dllm

    from leapdecode.dllm.llm import DiffusionLLM

    return DiffusionLLM(str(make_tiny_dllm(tmp_path_factory.mktemp("dllm") / "tiny", steps=150)))
