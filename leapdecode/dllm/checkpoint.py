"""Load and save dLLM checkpoints: a directory with config.json, *.safetensors and a tokenizer, in Dream's
layout (ours) or LLaDA's; and make a new one from an autoregressive Llama/Qwen2 checkpoint (AR initialisation,
as Dream and DiffuLLaMA do)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from leapdecode.dllm.config import DiffusionConfig, is_diffusion_config
from leapdecode.dllm.network import DiffusionNet
from leapdecode.models import loader
from leapdecode.models.llama import LlamaShape

MASK_TOKEN = "<|mask|>"
_LLADA_NAMES = (  # LLaDA's parameter names -> Dream's
    (r"^model\.transformer\.wte\.", "model.embed_tokens."),
    (r"^model\.transformer\.ln_f\.", "model.norm."),
    (r"^model\.transformer\.ff_out\.", "lm_head."),
    (r"^model\.transformer\.blocks\.(\d+)\.attn_norm\.", r"model.layers.\1.input_layernorm."),
    (r"^model\.transformer\.blocks\.(\d+)\.ff_norm\.", r"model.layers.\1.post_attention_layernorm."),
    (r"^model\.transformer\.blocks\.(\d+)\.(q|k|v)_proj\.", r"model.layers.\1.self_attn.\2_proj."),
    (r"^model\.transformer\.blocks\.(\d+)\.attn_out\.", r"model.layers.\1.self_attn.o_proj."),
    (r"^model\.transformer\.blocks\.(\d+)\.ff_proj\.", r"model.layers.\1.mlp.gate_proj."),
    (r"^model\.transformer\.blocks\.(\d+)\.up_proj\.", r"model.layers.\1.mlp.up_proj."),
    (r"^model\.transformer\.blocks\.(\d+)\.ff_out\.", r"model.layers.\1.mlp.down_proj."),
)


def read_config(path: Path) -> dict[str, Any] | None:
    """The directory's config.json, or None when there is none."""
    f = path / "config.json"
    return json.loads(f.read_text()) if path.is_dir() and f.is_file() else None


def is_diffusion_checkpoint(spec: str | Path) -> bool:
    cfg = read_config(Path(spec).expanduser())
    return cfg is not None and is_diffusion_config(cfg)


def load_tokenizer(path: Path) -> Any:
    """The checkpoint's tokenizer (loader's reader); transformers does not know a dLLM's config class and says
    so, harmlessly, which is silenced here."""
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        return loader.load_tokenizer(path)
    finally:
        logging.set_verbosity(verbosity)


def save(net: DiffusionNet, tokenizer: Any, path: Path, extra: dict[str, Any] | None = None) -> None:
    """config.json (Dream's keys), model.safetensors and the tokenizer, written to a temporary directory first."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().float() for k, v in net.state_dict().items()}
    save_file(state, str(tmp / "model.safetensors"))
    (tmp / "config.json").write_text(json.dumps(net.config.to_json() | (extra or {}), indent=2))
    tokenizer.save_pretrained(str(tmp))
    if path.exists():
        import shutil
        shutil.rmtree(path)
    tmp.rename(path)


def from_autoregressive(ar_dir: Path, tokenizer: Any, block_size: int) -> DiffusionNet:
    """A block-causal, shifted dLLM with the AR model's weights and one new token, the mask, whose embedding
    starts as the mean of the others. The tokenizer gets MASK_TOKEN added."""
    cfg = json.loads((ar_dir / "config.json").read_text())
    shape = LlamaShape.from_hf(cfg)  # the engine's own reading of a Llama/Qwen2 config
    tokenizer.add_special_tokens({"additional_special_tokens": [MASK_TOKEN]})
    mask_id = tokenizer.convert_tokens_to_ids(MASK_TOKEN)
    dc = DiffusionConfig(
        vocab_size=max(shape.vocab, mask_id + 1), hidden_size=shape.dim, num_layers=shape.layers,
        num_heads=shape.heads, num_kv_heads=shape.kv_heads, intermediate_size=cfg["intermediate_size"],
        mask_token_id=mask_id, rope_theta=shape.rope_theta, rms_norm_eps=shape.rms_eps,
        tie_word_embeddings=shape.tied, qkv_bias=shape.qkv_bias, shifted=True, attention="block_causal",
        block_size=block_size, max_position=shape.max_context, eos_token_ids=tuple(_eos_ids(cfg, tokenizer)),
    )
    net = DiffusionNet(dc)
    state = read_weights(ar_dir)
    embed = state["model.embed_tokens.weight"]
    grown = torch.cat([embed, embed.mean(0, keepdim=True).expand(dc.vocab_size - embed.shape[0], -1)])
    state["model.embed_tokens.weight"] = grown
    if "lm_head.weight" in state and not dc.tie_word_embeddings:
        head = state["lm_head.weight"]
        state["lm_head.weight"] = torch.cat([head, head.new_zeros(dc.vocab_size - head.shape[0], head.shape[1])])
    state.pop("lm_head.weight", None) if dc.tie_word_embeddings else None
    net.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return net


def _eos_ids(cfg: dict[str, Any], tokenizer: Any) -> list[int]:
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    eos = cfg.get("eos_token_id")
    ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids.update([im_end] if isinstance(im_end, int) and im_end != tokenizer.unk_token_id else [])
    return sorted(ids)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors (loader's reader, which names a missing or corrupt file) under Dream's names."""
    return {_dream_name(k): v for k, v in loader.read_weights(path).items()}


def _dream_name(name: str) -> str:
    for pattern, repl in _LLADA_NAMES:
        if re.match(pattern, name):
            return re.sub(pattern, repl, name)
    return name
