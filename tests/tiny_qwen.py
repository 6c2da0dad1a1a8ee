"""Tiny random qwen2 checkpoints, built at test time, for what only the opt-in Qwen2.5 tests run otherwise:
the qwen2 architecture (biases on q, k and v), an untied lm head, and embedding tables padded past the
tokenizer to a width of their own (Qwen2.5's hold 151936 rows for 151665 tokens; its 0.5B and 1.5B drafts
and targets share the tokenizer).

The tokenizer is SmolLM2's (49152 tokens), which every test run has offline. Two models share it:

- the draft: 2 layers, exactly the tokenizer's 49152 rows;
- the target: 4 layers, 49152 + 128 rows (the padding rows of its untied head are zero, so their logit is
  0 and never the argmax: a random network's largest logit over 49152 tokens is far above 0). Its first
  two layers, embedding rows, final norm and head rows are the draft's; its last two layers add a scaled
  down random update to the residual stream. So the draft agrees with the target often but not always,
  and draft-model speculation on the pair both accepts and rejects.

Weights are drawn with a fixed seed at scales that keep the logits well apart (standard deviation about 3,
top-2 gap about 0.5 on average), so float32 rounding never flips a greedy choice between implementations;
the q/k/v biases are large enough that leaving them out would change every output.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
PAD_ROWS = 128  # target's embedding rows past the tokenizer's
DRAFT_LAYERS, TARGET_LAYERS = 2, 4
UPDATE_SCALE = 0.35  # the target's own layers' output projections, relative to the draft's


def qwen2_config(vocab: int, layers: int):  # -> transformers.Qwen2Config
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2,  # grouped-query attention, 2 query heads per kv head
        max_position_embeddings=512, rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2, pad_token_id=2, use_sliding_window=False,
    )


def _random_layer_weights(model: torch.nn.Module, prefix: str, out_scale: float) -> None:
    """Layers' weights in place: q/k/v/gate/up ~ N(0, 1/fan_in), o/down likewise times out_scale, biases
    ~ N(0, 0.5), norms ~ 1 + N(0, 0.1)."""
    for name, p in model.named_parameters():
        if not name.startswith(prefix):
            continue
        with torch.no_grad():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.5 * torch.randn_like(p))
            else:
                scale = out_scale if ("o_proj" in name or "down_proj" in name) else 1.0
                p.copy_(torch.randn_like(p) * scale / p.shape[1] ** 0.5)


def _save(model: torch.nn.Module, dest: Path, tokenizer_dir: Path) -> Path:
    model.save_pretrained(dest, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, dest / name)
    return dest


def build_pair(root: Path, tokenizer_dir: Path, seed: int = 0) -> tuple[Path, Path]:
    """(target dir, draft dir): Hugging Face qwen2 checkpoints (safetensors, float32) under root."""
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    vocab = len(AutoTokenizer.from_pretrained(tokenizer_dir))
    torch.manual_seed(seed)
    draft = Qwen2ForCausalLM(qwen2_config(vocab, DRAFT_LAYERS)).float().eval()
    _random_layer_weights(draft, "model.layers.", 1.0)
    with torch.no_grad():
        draft.model.embed_tokens.weight.normal_(0.0, 1.0)
        draft.model.norm.weight.copy_(1 + 0.1 * torch.randn(draft.model.norm.weight.shape))
        draft.lm_head.weight.normal_(0.0, 3.0 / 64**0.5)  # logits ~ N(0, 3^2) after the final norm

    target = Qwen2ForCausalLM(qwen2_config(vocab + PAD_ROWS, TARGET_LAYERS)).float().eval()
    _random_layer_weights(target, "model.layers.", UPDATE_SCALE)
    own = draft.state_dict()
    with torch.no_grad():
        for name, p in target.named_parameters():
            if name.startswith("model.layers.") and int(name.split(".")[2]) >= DRAFT_LAYERS:
                continue  # the target's own layers
            if name == "model.embed_tokens.weight":
                p.copy_(torch.cat([own[name], torch.randn(PAD_ROWS, p.shape[1])]))
            elif name == "lm_head.weight":
                p.copy_(torch.cat([own[name], torch.zeros(PAD_ROWS, p.shape[1])]))
            else:
                p.copy_(own[name])
    return _save(target, root / "tiny-qwen2-target", tokenizer_dir), _save(draft, root / "tiny-qwen2-draft", tokenizer_dir)
