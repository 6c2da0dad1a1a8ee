"""Export a dLLM checkpoint to GGUF under llama.cpp's "dream" architecture (Qwen2's tensors, attention over the
whole sequence, shifted logits), so llama.cpp's diffusion runner can decode it; float32 or float16 tensors.

llama.cpp decodes a dream model bidirectionally: a block-causal checkpoint (ours) runs there as a plain dream
model, which is what a cross-check compares (scripts/check-dllm-llamacpp: logits of one forward and stepwise
output against leapdecode's bidirectional path)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from leapdecode.dllm.checkpoint import load_tokenizer, read_config, read_weights
from leapdecode.dllm.config import DiffusionConfig
from leapdecode.errors import ModelLoadError

_NAMES = {  # Dream's names (ours) -> llama.cpp's, per layer
    "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.bias": "attn_k.bias", "self_attn.v_proj.bias": "attn_v.bias",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight",
}
CONTROL, NORMAL = 3, 1  # llama.cpp's token types


def export_gguf(checkpoint: Path, out: Path, dtype: str = "float32", pre: str = "smollm") -> Path:
    """Write `out`; pre: llama.cpp's name for the tokenizer's pre-tokenizer (SmolLM2's: smollm)."""
    from gguf import GGUFWriter

    raw = read_config(checkpoint)
    if raw is None:
        raise ModelLoadError(f"{checkpoint}: no config.json")
    cfg = DiffusionConfig.from_json(raw)
    writer = GGUFWriter(str(out), "dream")
    _hyperparameters(writer, cfg)
    _tokenizer(writer, checkpoint, cfg, pre)
    np_dtype = np.float16 if dtype == "float16" else np.float32
    for name, tensor in _tensors(read_weights(checkpoint), cfg):
        norm = tensor.dim() == 1  # norms and biases stay float32, as llama.cpp's converter keeps them
        writer.add_tensor(name, tensor.float().numpy().astype(np.float32 if norm else np_dtype))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def _hyperparameters(w: Any, cfg: DiffusionConfig) -> None:
    w.add_name("leapdecode dLLM")
    w.add_context_length(cfg.max_position)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_heads)
    w.add_head_count_kv(cfg.num_kv_heads)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_file_type(0)
    w.add_bool("diffusion.shift_logits", cfg.shifted)


def _tokenizer(w: Any, checkpoint: Path, cfg: DiffusionConfig, pre: str) -> None:
    tok = load_tokenizer(checkpoint)
    tokens = tok.convert_ids_to_tokens(list(range(cfg.vocab_size)))
    special = set(tok.all_special_ids) | {cfg.mask_token_id}
    merges = json.loads((checkpoint / "tokenizer.json").read_text())["model"]["merges"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types([CONTROL if i in special else NORMAL for i in range(cfg.vocab_size)])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    w.add_bos_token_id(tok.bos_token_id if tok.bos_token_id is not None else cfg.eos_token_ids[0])
    w.add_eos_token_id(cfg.eos_token_ids[0])
    w.add_mask_token_id(cfg.mask_token_id)
    w.add_add_bos_token(False)
    if tok.chat_template:
        w.add_chat_template(tok.chat_template)


def _tensors(state: dict[str, Any], cfg: DiffusionConfig) -> list[tuple[str, Any]]:
    out = [("token_embd.weight", state["model.embed_tokens.weight"]), ("output_norm.weight", state["model.norm.weight"])]
    if not cfg.tie_word_embeddings:
        out.append(("output.weight", state["lm_head.weight"]))
    for i in range(cfg.num_layers):
        prefix = f"model.layers.{i}."
        out += [(f"blk.{i}.{gg}", state[prefix + hf]) for hf, gg in _NAMES.items() if prefix + hf in state]
    return out
