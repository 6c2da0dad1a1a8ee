"""Our own forward for the llama family (Llama, SmolLM, Qwen2, Mistral): fused projections, static cache."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from leapdecode.errors import ModelLoadError
from leapdecode.kv import KVCache
from leapdecode.models.linear import Linear

SUPPORTED = ("llama", "qwen2", "mistral")


@dataclass(frozen=True, slots=True)
class LlamaShape:
    vocab: int
    dim: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    rms_eps: float
    rope_theta: float
    max_context: int
    qkv_bias: bool
    tied: bool

    @staticmethod
    def from_hf(cfg: dict[str, Any]) -> LlamaShape:
        rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
        if rope.get("rope_type", "default") not in ("default", None):
            raise ModelLoadError(f"rope type {rope.get('rope_type')!r} is not in our llama code")
        if _uses_sliding_window(cfg):
            raise ModelLoadError("sliding-window attention is not in our llama code")
        heads = cfg["num_attention_heads"]
        return LlamaShape(
            vocab=cfg["vocab_size"], dim=cfg["hidden_size"], layers=cfg["num_hidden_layers"], heads=heads,
            kv_heads=cfg.get("num_key_value_heads") or heads,
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
            rms_eps=cfg["rms_norm_eps"], rope_theta=rope.get("rope_theta", cfg.get("rope_theta", 10000.0)),
            max_context=cfg.get("max_position_embeddings", 4096),
            qkv_bias=cfg["model_type"] == "qwen2" or bool(cfg.get("attention_bias")),
            tied=bool(cfg.get("tie_word_embeddings")),
        )


def _uses_sliding_window(cfg: dict[str, Any]) -> bool:
    """Mistral v0.1 windows attention at 4096; Qwen2 only when use_sliding_window is set."""
    window = cfg.get("sliding_window")
    enabled = cfg.get("use_sliding_window", cfg["model_type"] == "mistral")
    return bool(window and enabled and window < cfg.get("max_position_embeddings", 0))


class LlamaLayer:
    """One decoder block's weights, with q/k/v and gate/up fused into one matmul each."""

    def __init__(self, sd: dict[str, Tensor], prefix: str, shape: LlamaShape, dtype: torch.dtype) -> None:
        a, m = f"{prefix}self_attn.", f"{prefix}mlp."
        bqkv = torch.cat([sd[f"{a}{p}_proj.bias"] for p in "qkv"]).to(dtype) if shape.qkv_bias else None
        self.qkv = Linear(torch.cat([sd[f"{a}{p}_proj.weight"] for p in "qkv"]).to(dtype), bqkv)
        self.o = Linear(sd[f"{a}o_proj.weight"].to(dtype))
        self.gate_up = Linear(torch.cat([sd[f"{m}gate_proj.weight"], sd[f"{m}up_proj.weight"]]).to(dtype))
        self.down = Linear(sd[f"{m}down_proj.weight"].to(dtype))
        self.norm_attn = sd[f"{prefix}input_layernorm.weight"].to(dtype)
        self.norm_mlp = sd[f"{prefix}post_attention_layernorm.weight"].to(dtype)


class LlamaModel:
    """forward(tokens, start, cache) over any number of new tokens; rollback is the cache's length."""

    def __init__(self, sd: dict[str, Tensor], shape: LlamaShape, dtype: torch.dtype = torch.float32) -> None:
        self.shape, self.dtype = shape, dtype
        self.vocab_size, self.max_context = shape.vocab, shape.max_context
        self.embed = sd["model.embed_tokens.weight"].to(dtype)
        self.lm_head = Linear(self.embed if shape.tied else sd["lm_head.weight"].to(dtype))
        self.norm = sd["model.norm.weight"].to(dtype)
        self.layers = [LlamaLayer(sd, f"model.layers.{i}.", shape, dtype) for i in range(shape.layers)]
        self.cos, self.sin = _rope_tables(shape, dtype)  # [C, D] each
        self._q, self._kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim

    def new_cache(self, max_len: int) -> KVCache:
        s = self.shape
        return KVCache(s.layers, s.kv_heads, max_len, s.head_dim, self.dtype)

    @torch.inference_mode()
    def forward(self, tokens: Tensor, start: int, cache: KVCache, mask: Tensor | None = None,
                logits: bool = True, positions: Tensor | None = None) -> Tensor | None:
        """tokens [1, T] -> logits [1, T, V] float32. positions [T] default start..start+T (trees differ)."""
        T = tokens.shape[1]
        pos = positions if positions is not None else torch.arange(start, start + T)
        if mask is None and T > 1:
            mask = torch.arange(start + T)[None, :] <= pos[:, None]  # [T, start+T] causal over the cache
        cos, sin = self.cos[pos], self.sin[pos]  # [T, D]
        x = F.embedding(tokens, self.embed)  # [1, T, dim]
        for i, layer in enumerate(self.layers):
            x = x + self._attention(layer, F.rms_norm(x, (self.shape.dim,), layer.norm_attn, self.shape.rms_eps),
                                    cos, sin, cache, i, start, mask)
            h = F.rms_norm(x, (self.shape.dim,), layer.norm_mlp, self.shape.rms_eps)
            gate, up = layer.gate_up(h).chunk(2, dim=-1)
            x = x + layer.down(F.silu(gate) * up)
        if not logits:
            return None
        x = F.rms_norm(x, (self.shape.dim,), self.norm, self.shape.rms_eps)
        return self.lm_head(x).float()

    def _attention(self, layer: LlamaLayer, h: Tensor, cos: Tensor, sin: Tensor, cache: KVCache,
                   i: int, start: int, mask: Tensor | None) -> Tensor:
        s, (B, T, _) = self.shape, h.shape
        qkv = layer.qkv(h).view(B, T, s.heads + 2 * s.kv_heads, s.head_dim).transpose(1, 2)  # [B, H+2Hkv, T, D]
        qk = _rope(qkv[:, : s.heads + s.kv_heads], cos, sin)  # q and k rotated in one go: fewer small ops
        q, k, v = qk[:, : s.heads], qk[:, s.heads :], qkv[:, s.heads + s.kv_heads :]
        keys, values = cache.write(i, start, k, v)  # [B, Hkv, start+T, D]
        o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=s.heads != s.kv_heads)
        return layer.o(o.transpose(1, 2).reshape(B, T, self._q))


def _rope_tables(shape: LlamaShape, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos/sin [max_context, head_dim] in the rotate-half layout that HF checkpoints use."""
    inv = 1.0 / (shape.rope_theta ** (torch.arange(0, shape.head_dim, 2, dtype=torch.float32) / shape.head_dim))
    freqs = torch.outer(torch.arange(shape.max_context, dtype=torch.float32), inv)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin
