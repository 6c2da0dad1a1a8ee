"""The dLLM transformer: a Llama/Qwen2 stack whose attention follows a mask the caller gives (bidirectional,
block-causal or causal), with keys and values of committed text that rows of a batch share.

Parameter names are Dream's (Qwen2's), so a Dream checkpoint loads as it is; LLaDA's are renamed on load
(checkpoint.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leapdecode.dllm.config import DiffusionConfig
from leapdecode.models.llama import rope, rope_tables

KV = list[tuple[Tensor, Tensor]]  # per layer: keys, values [1, kv_heads, length, head_dim]


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(size)), eps

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


class Attention(nn.Module):
    def __init__(self, cfg: DiffusionConfig) -> None:
        super().__init__()
        hd, bias = cfg.head_dim, cfg.qkv_bias
        self.heads, self.kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, hd
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.num_heads * hd, bias=bias)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * hd, bias=bias)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * hd, bias=bias)
        self.o_proj = nn.Linear(cfg.num_heads * hd, cfg.hidden_size, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, allowed: Tensor,
                past: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        R, T, _ = x.shape
        q = rope(self.q_proj(x).view(R, T, self.heads, self.head_dim).transpose(1, 2), cos, sin)
        k = rope(self.k_proj(x).view(R, T, self.kv_heads, self.head_dim).transpose(1, 2), cos, sin)
        v = self.v_proj(x).view(R, T, self.kv_heads, self.head_dim).transpose(1, 2)
        keys, values = k, v
        if past is not None and past[0].shape[2]:
            pk, pv = (p.expand(R, -1, -1, -1) for p in past)
            keys, values = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=allowed, enable_gqa=self.heads != self.kv_heads)
        return self.o_proj(out.transpose(1, 2).reshape(R, T, -1)), (k, v)


class MLP(nn.Module):
    def __init__(self, cfg: DiffusionConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, cfg: DiffusionConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, allowed: Tensor,
                past: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        a, kv = self.self_attn(self.input_layernorm(x), cos, sin, allowed, past)
        x = x + a
        return x + self.mlp(self.post_attention_layernorm(x)), kv


class Body(nn.Module):
    def __init__(self, cfg: DiffusionConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class DiffusionNet(nn.Module):
    """forward(tokens, positions, allowed, past) -> final hidden states and the new keys/values;
    logits(hidden) -> vocabulary logits, the mask token never predicted."""

    def __init__(self, cfg: DiffusionConfig) -> None:
        super().__init__()
        self.config = cfg
        self.model = Body(cfg)
        self.lm_head = None if cfg.tie_word_embeddings else nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self._rope: tuple[Tensor, Tensor] | None = None
        for m in self.modules():  # a fresh model's scale (a checkpoint's weights replace these)
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)

    def forward(self, tokens: Tensor, positions: Tensor, allowed: Tensor, past: KV | None = None) -> tuple[Tensor, KV]:
        """tokens [R, T]; positions [T] or [R, T] (rope positions); allowed [T, P + T] or [R, 1, T, P + T]
        bool (True: may attend), P the cached length; past: the cache rows share. Returns hidden [R, T, D]
        and each layer's keys and values of these T tokens [R, kv_heads, T, head_dim]."""
        cos, sin = self._rope_at(positions)
        x = self.model.embed_tokens(tokens)
        new: KV = []
        for i, layer in enumerate(self.model.layers):
            x, kv = layer(x, cos, sin, allowed, past[i] if past else None)
            new.append(kv)
        return self.model.norm(x), new

    def logits(self, hidden: Tensor) -> Tensor:
        weight = self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        out = F.linear(hidden, weight).float()
        out[..., self.config.mask_token_id] = float("-inf")
        return out

    def _rope_at(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        need = int(positions.max()) + 1
        if self._rope is None or self._rope[0].shape[0] < need:
            self._rope = rope_tables(self.config.head_dim, self.config.rope_theta, max(need, 1024), torch.float32)
        cos, sin = self._rope
        dtype = self.model.embed_tokens.weight.dtype
        cos, sin = cos[positions].to(dtype), sin[positions].to(dtype)
        return (cos.unsqueeze(1), sin.unsqueeze(1)) if positions.dim() == 2 else (cos, sin)
