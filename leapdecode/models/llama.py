"""Our own forward for the llama family (Llama, SmolLM, Qwen2, Mistral): fused projections, static cache."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from leapdecode.errors import ModelLoadError
from leapdecode.kernels import fused_kernels
from leapdecode.kv import KVCache
from leapdecode.models.attention import (
    ATTENTION_BUCKET,
    attend_grouped,
    row_groups,
)
from leapdecode.models.blocks import Blocks, as_float, cat_rows
from leapdecode.models.linear import make_linear
from leapdecode.models.precision import activation_dtype

SUPPORTED = ("llama", "qwen2", "mistral")
Weights = Mapping[str, Tensor | Blocks]  # HF tensor names -> float tensors or quantized blocks
Link = tuple[int, "LlamaLayer", Tensor]  # (layer index, its weights, the norm applied after it)


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

    def __init__(self, sd: Weights, prefix: str, shape: LlamaShape, precision: str) -> None:
        a, m = f"{prefix}self_attn.", f"{prefix}mlp."
        dtype = activation_dtype(precision)
        bqkv = torch.cat([sd[f"{a}{p}_proj.bias"] for p in "qkv"]).to(dtype) if shape.qkv_bias else None
        self.qkv = make_linear(cat_rows([sd[f"{a}{p}_proj.weight"] for p in "qkv"]), precision, bqkv)
        self.o = make_linear(sd[f"{a}o_proj.weight"], precision)
        self.gate_up = make_linear(cat_rows([sd[f"{m}gate_proj.weight"], sd[f"{m}up_proj.weight"]]), precision)
        self.down = make_linear(sd[f"{m}down_proj.weight"], precision)
        self.norm_attn = as_float(sd[f"{prefix}input_layernorm.weight"])  # float32, like the residual stream
        self.norm_mlp = as_float(sd[f"{prefix}post_attention_layernorm.weight"])


class LlamaModel:
    """forward(tokens, start, cache) over any number of new tokens; rollback is the cache's length."""

    def __init__(self, sd: Weights, shape: LlamaShape, precision: str = "float32") -> None:
        dtype = activation_dtype(precision)
        self.shape, self.precision, self.dtype = shape, precision, dtype
        self.vocab_size, self.max_context = shape.vocab, shape.max_context
        embed = sd["model.embed_tokens.weight"]
        self.embed = as_float(embed).to(dtype)
        self.lm_head = make_linear(embed if shape.tied else sd["lm_head.weight"], precision)
        self.norm = as_float(sd["model.norm.weight"])
        self.layers = [LlamaLayer(sd, f"model.layers.{i}.", shape, precision) for i in range(shape.layers)]
        self._q, self._kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
        # float32 keeps PyTorch's own ops (bit-equal to transformers); reduced precisions fuse the glue.
        self.fused = fused_kernels() if dtype != torch.float32 else None
        self.cos, self.sin = _rope_tables(shape, torch.float32 if self.fused is not None else dtype)  # [C, D]
        self._every_layer = self._chain(range(shape.layers))

    @property
    def num_layers(self) -> int:
        return self.shape.layers

    def _chain(self, layers: Sequence[int]) -> list[Link]:
        """Each layer to run, with the norm that follows it: the next run layer's input norm, or the final
        norm. Built once for the default path; a subset costs a list of a few dozen items per forward."""
        run = [self.layers[i] for i in layers]
        return list(zip(layers, run, [nxt.norm_attn for nxt in run[1:]] + [self.norm]))

    def new_cache(self, max_len: int) -> KVCache:
        s = self.shape
        # Reduced precisions keep K/V in float32: attention reads them without a conversion per layer.
        return KVCache(s.layers, s.kv_heads, _round_up(max_len, ATTENTION_BUCKET), s.head_dim, torch.float32)

    @torch.inference_mode()
    def forward(self, tokens: Tensor, start: int, cache: KVCache, mask: Tensor | None = None,
                logits: bool = True, positions: Tensor | None = None,
                layers: Sequence[int] | None = None) -> Tensor | None:
        """tokens [1, T] -> logits [1, T, V] float32. positions [T] default start..start+T (trees differ).

        layers: run only these decoder layers, ascending, non-empty (self-speculation); a skipped layer
        leaves the residual stream as it is and writes no KV. None: every layer."""
        T = tokens.shape[1]
        pos = positions if positions is not None else torch.arange(start, start + T)
        rows = self._visible(start, T, pos, mask)
        cos, sin = self.cos[pos], self.sin[pos]  # [T, D]
        x = F.embedding(tokens[0], self.embed).float()  # [T, dim]: the residual stream stays float32
        chain = self._every_layer if layers is None else self._chain(layers)
        h = self._add_norm(x, None, chain[0][1].norm_attn)
        for i, layer, after in chain:
            h = self._add_norm(x, self._attention(layer, h, cos, sin, cache, i, start, rows), layer.norm_mlp)
            h = self._add_norm(x, layer.down(self._act(layer.gate_up(h))), after)
        return self.lm_head(h).float()[None] if logits else None

    def _add_norm(self, x: Tensor, delta: Tensor | None, weight: Tensor) -> Tensor:
        """x += delta in place (the residual add), then RMSNorm in float32, in the compute dtype."""
        if self.fused is not None:
            return self.fused.add_rms_norm(x, delta, weight, self.shape.rms_eps)
        if delta is not None:
            x.add_(delta)
        return F.rms_norm(x, (self.shape.dim,), weight, self.shape.rms_eps).to(self.dtype)

    def _act(self, gate_up: Tensor) -> Tensor:
        if self.fused is not None:
            return self.fused.silu_mul(gate_up)
        gate, up = gate_up.chunk(2, dim=-1)
        return F.silu(gate) * up

    def _visible(self, start: int, T: int, pos: Tensor, mask: Tensor | None) -> Any:
        """Which cache slots each row sees, worked out once per forward: an SDPA mask [T, start+T] in
        float32 (None for one row), row groups of fixed key length in reduced precisions (attention.py)."""
        if self.dtype != torch.float32:
            return row_groups(start, T, mask, self.shape.heads // self.shape.kv_heads)
        if mask is None and T > 1:
            mask = torch.arange(start + T)[None, :] <= pos[:, None]  # causal over the cache
        return mask

    def _attention(self, layer: LlamaLayer, h: Tensor, cos: Tensor, sin: Tensor, cache: KVCache,
                   i: int, start: int, rows: Any) -> Tensor:
        s, (T, _), B = self.shape, h.shape, 1
        if self.fused is not None:  # rope, cache write and the grouped q layout in one call
            q = self.fused.rope_store(layer.qkv(h), cos, sin, cache.layer_k[i], cache.layer_v[i], start,
                                      s.heads, s.kv_heads)
        else:
            qkv = layer.qkv(h).view(B, T, s.heads + 2 * s.kv_heads, s.head_dim).transpose(1, 2)  # [B, H+2Hkv, T, D]
            qk = _rope(qkv[:, : s.heads + s.kv_heads], cos, sin)  # q and k rotated in one go: fewer small ops
            q, k, v = qk[:, : s.heads], qk[:, s.heads :], qkv[:, s.heads + s.kv_heads :]
            keys, values = cache.write(i, start, k, v)  # [B, Hkv, start+T, D]
            if self.dtype == torch.float32:  # PyTorch's SDPA: bit-equal to transformers
                o = F.scaled_dot_product_attention(q, keys, values, attn_mask=rows, enable_gqa=s.heads != s.kv_heads)
                return layer.o(o.transpose(1, 2).reshape(T, self._q))
            q = q.reshape(s.kv_heads, -1, s.head_dim).float()  # [Hkv, g*T, D], the layout rope_store writes
        o = attend_grouped(q, cache.layer_k[i], cache.layer_v[i], rows)  # [T, H*D] float32, row-invariant
        return layer.o(o.to(self.dtype))


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


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple
