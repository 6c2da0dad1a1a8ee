"""A trained draft head at inference: the target's linear kernels and precision, a one-layer KV cache."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from leapdecode.heads.head import DraftHead
from leapdecode.models.kv import KVCache
from leapdecode.models.linear import make_linear
from leapdecode.models.llama import rope, rope_tables


class HeadNetwork:
    """forward(prev_feats, tokens, start, cache) -> predicted features; logits(feats) -> [.., V'].

    The residual stream and attention run in float32 (a draft only needs to be a good guess, so none of
    the target's bit-exactness applies); the linears run in the target's precision, so a draft step reads
    the head's weights as fast as the target reads its own."""

    def __init__(self, head: DraftHead, target: Any) -> None:
        s, p, sd = head.shape, target.precision, head.state_dict()
        self.shape, self.dtype = s, target.dtype
        self.embed = target.embed  # [V, dim] in the target's compute dtype
        self.fc = make_linear(sd["fc.weight"], p, sd["fc.bias"])
        self.qkv = make_linear(sd["qkv.weight"], p)
        self.o = make_linear(sd["o.weight"], p)
        self.gate_up = make_linear(sd["gate_up.weight"], p)
        self.down = make_linear(sd["down.weight"], p)
        self.lm = make_linear(sd["lm_rows"].float(), p)
        self.norm_in, self.norm_mlp, self.norm_out = sd["norm_in"], sd["norm_mlp"], sd["norm_out"]
        self.vocab_ids = sd["vocab_ids"]
        self.cos, self.sin = rope_tables(s.head_dim, s.rope_theta, target.max_context, torch.float32)

    def new_cache(self, max_len: int) -> KVCache:
        return KVCache(1, self.shape.kv_heads, max_len, self.shape.head_dim, torch.float32)

    @torch.inference_mode()
    def forward(self, prev: Tensor, tokens: Tensor, start: int, cache: KVCache, mask: Tensor | None = None,
                positions: Tensor | None = None) -> Tensor:
        """prev [T, dim] the features before each token, tokens [T] at slots start..start+T -> [T, dim].
        A token tree's rows give their mask [T, start+T] (True: may attend) and rope positions [T]."""
        s, T = self.shape, tokens.shape[0]
        x = self.fc(torch.cat([prev.to(self.dtype), F.embedding(tokens, self.embed)], dim=-1)).float()
        h = F.rms_norm(x, (s.dim,), self.norm_in, s.rms_eps).to(self.dtype)
        qkv = self.qkv(h).float().view(T, s.heads + 2 * s.kv_heads, s.head_dim).transpose(0, 1)[None]
        q, k, v = qkv.split([s.heads, s.kv_heads, s.kv_heads], dim=1)  # [1, H|Hkv, T, D]
        pos = positions if positions is not None else torch.arange(start, start + T)
        cos, sin = self.cos[pos], self.sin[pos]
        keys, values = cache.write(0, start, rope(k, cos, sin), v)
        if mask is None and T > 1:
            mask = torch.arange(start + T)[None, :] <= torch.arange(start, start + T)[:, None]
        a = F.scaled_dot_product_attention(rope(q, cos, sin), keys, values, attn_mask=mask,
                                           enable_gqa=s.heads != s.kv_heads)
        x = x + self.o(a[0].transpose(0, 1).reshape(T, -1).to(self.dtype)).float()
        gate, up = self.gate_up(F.rms_norm(x, (s.dim,), self.norm_mlp, s.rms_eps).to(self.dtype)).chunk(2, dim=-1)
        x = x + self.down(F.silu(gate) * up).float()
        return F.rms_norm(x, (s.dim,), self.norm_out, s.rms_eps)

    @torch.inference_mode()
    def logits(self, feats: Tensor) -> Tensor:
        """[.., dim] -> [.., V'] float32 over vocab_ids."""
        return self.lm(feats.to(self.dtype)).float()
