"""A tiny dLLM for tests: SmolLM2's tokenizer plus a mask token, a 2-layer network, trained for seconds."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from leapdecode.dllm.checkpoint import MASK_TOKEN, save
from leapdecode.dllm.config import DiffusionConfig
from leapdecode.dllm.network import DiffusionNet
from leapdecode.dllm.training import DllmTrainConfig, Trainee, fit, task_pair
from leapdecode.models.loader import resolve_checkpoint


def make_tiny_dllm(out: Path, attention: str = "block_causal", shifted: bool = True, steps: int = 0,
                   seed: int = 0) -> Path:
    """Save a tiny dLLM at `out`; steps > 0 trains it on parallel-tasks problems first."""
    from transformers import AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(resolve_checkpoint("smollm2-135m"))
    tokenizer.add_special_tokens({"additional_special_tokens": [MASK_TOKEN]})
    mask = tokenizer.convert_tokens_to_ids(MASK_TOKEN)
    cfg = DiffusionConfig(vocab_size=mask + 1, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                          intermediate_size=128, mask_token_id=mask, shifted=shifted, attention=attention,
                          block_size=4, max_position=1024, eos_token_ids=(2,))
    net = DiffusionNet(cfg)
    if steps:
        tcfg = DllmTrainConfig(batch=8, lr=3e-3, block_sizes=(4,), seed=seed)
        trainee = Trainee.new(net, tokenizer, out, tcfg)
        rng = random.Random(seed)
        pairs = [task_pair(tokenizer, rng, sizes=("easy",)) for _ in range(64)]
        fit(trainee, pairs, tcfg, steps, task_share=0.0, save_final=False)
    save(net, tokenizer, out)
    return out
