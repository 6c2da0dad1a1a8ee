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
from leapdecode.models.attention import (
    ATTENTION_BUCKET,
    attend_grouped,
    row_groups,
)
from leapdecode.models.base import Segment
from leapdecode.models.blocks import Blocks, as_float, cat_rows
from leapdecode.models.kv import KVCache
from leapdecode.models.linear import make_linear
from leapdecode.models.precision import activation_dtype

SUPPORTED = ("llama", "qwen2", "mistral")
# Segments up to this many rows (every decode and verify step) go through the fused attend_packed kernel in
# reduced precision; longer ones (prompts) through attend_grouped. The choice depends on a segment alone,
# so a row gets the same numbers whatever it is batched with. Token trees must stay within it.
PACKED_MAX_ROWS = 64
_NO_MASK = torch.empty(0, dtype=torch.bool)
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


@dataclass(frozen=True, slots=True)
class SegmentView:
    """What every layer needs of a segment, worked out once per forward."""

    seg: Segment
    T: int
    cos: Tensor  # [T, D]
    sin: Tensor  # [T, D]
    rows: Any  # which cache slots each row sees (see LlamaModel._visible); None where attend_packed runs
    packed_mask: Tensor  # [T, start+T] bool for attend_packed; empty = causal
    packs: bool  # attention through the fused attend_packed kernel (reduced precision, a short segment)


@dataclass(frozen=True, slots=True)
class _PackedRope:
    """What attend_packed takes of a forward's segments besides their caches, gathered once, not per layer."""

    cos: Tensor  # [R, D]
    sin: Tensor  # [R, D]
    starts: list[int]
    lens: list[int]
    masks: list[Tensor]

    @staticmethod
    def of(views: list[SegmentView]) -> _PackedRope:
        one = len(views) == 1
        return _PackedRope(views[0].cos if one else torch.cat([v.cos for v in views]),
                           views[0].sin if one else torch.cat([v.sin for v in views]),
                           [v.seg.start for v in views], [v.T for v in views], [v.packed_mask for v in views])


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
        self.cos, self.sin = rope_tables(shape.head_dim, shape.rope_theta, shape.max_context,
                                         torch.float32 if self.fused is not None else dtype)  # [C, D]
        self._every_layer = self._chain(range(shape.layers))

    skips_layers = True  # forward_packed's layers=: a subset of the decoder layers (layerskip)
    gives_features = True  # forward_features

    @property
    def num_layers(self) -> int:
        return self.shape.layers

    @property
    def token_trees(self) -> bool:
        """Whether a token tree verifies exactly: float32 SDPA takes its mask; in reduced precision only the
        fused attend_packed kernel computes a masked row bit for bit as its chain would (attend_grouped's
        vectorised reductions would see the tree's zeros at other places than the chain's)."""
        return self.dtype == torch.float32 or self.fused is not None

    def _chain(self, layers: Sequence[int]) -> list[Link]:
        """Each layer to run, with the norm that follows it: the next run layer's input norm, or the final
        norm. Built once for the default path; a subset costs a list of a few dozen items per forward."""
        run = [self.layers[i] for i in layers]
        return list(zip(layers, run, [nxt.norm_attn for nxt in run[1:]] + [self.norm]))

    def new_cache(self, max_len: int) -> KVCache:
        s = self.shape
        # Reduced precisions keep K/V in float32: attention reads them without a conversion per layer.
        return KVCache(s.layers, s.kv_heads, _round_up(max_len, ATTENTION_BUCKET), s.head_dim, torch.float32)

    def forward(self, tokens: Tensor, start: int, cache: KVCache, mask: Tensor | None = None,
                logits: bool = True, positions: Tensor | None = None,
                layers: Sequence[int] | None = None) -> Tensor | None:
        """tokens [1, T] -> logits [1, T, V] float32. positions [T] default start..start+T (trees differ).

        layers: run only these decoder layers, ascending, non-empty (self-speculation); a skipped layer
        leaves the residual stream as it is and writes no KV. None: every layer."""
        out = self.forward_packed([Segment(tokens[0], start, cache, mask, positions)], logits, layers)
        return None if out is None else out[None]

    @torch.inference_mode()
    def forward_packed(self, segments: Sequence[Segment], logits: bool = True,
                       layers: Sequence[int] | None = None) -> Tensor | None:
        """Several sequences' new tokens in one pass -> logits [sum T, V] float32, rows in segment order.

        Every linear runs once over all rows, so the weights are read once for the whole batch; attention
        runs per sequence against its own cache. Each row's numbers are the ones it gets alone."""
        h = self._hidden(segments, layers)
        return self.lm_head(h).float() if logits else None

    @torch.inference_mode()
    def forward_features(self, segments: Sequence[Segment], logits: bool = True) -> tuple[Tensor | None, Tensor]:
        """forward_packed over every layer, also returning the features [sum T, dim] float32: each row's
        final hidden state after the last norm, what the output head reads (a trained draft head's input)."""
        h = self._hidden(segments, None)
        return (self.lm_head(h).float() if logits else None), h.float()

    def _hidden(self, segments: Sequence[Segment], layers: Sequence[int] | None) -> Tensor:
        """The rows' final normed hidden states [sum T, dim] in the compute dtype, their KV written."""
        views = [self._view(seg) for seg in segments]
        packed = _PackedRope.of(views) if all(v.packs for v in views) else None  # every decode step
        tokens = torch.cat([seg.tokens for seg in segments]) if len(segments) > 1 else segments[0].tokens
        x = F.embedding(tokens, self.embed).float()  # [R, dim]: the residual stream stays float32
        chain = self._every_layer if layers is None else self._chain(layers)
        h = self._add_norm(x, None, chain[0][1].norm_attn)
        for i, layer, after in chain:
            h = self._add_norm(x, self._attention(layer, h, i, views, packed), layer.norm_mlp)
            h = self._add_norm(x, layer.down(self._act(layer.gate_up(h))), after)
        return h

    def _view(self, seg: Segment) -> SegmentView:
        T = seg.tokens.shape[0]
        pos = seg.positions if seg.positions is not None else torch.arange(seg.start, seg.start + T)
        mask = seg.mask.contiguous() if seg.mask is not None else _NO_MASK
        packs = self.fused is not None and T <= PACKED_MAX_ROWS
        rows = None if packs else self._visible(seg.start, T, pos, seg.mask)  # attend_packed needs no row plan
        return SegmentView(seg, T, self.cos[pos], self.sin[pos], rows, mask, packs)

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

    def _attention(self, layer: LlamaLayer, h: Tensor, i: int, views: list[SegmentView],
                   packed: _PackedRope | None) -> Tensor:
        """h [R, dim] -> the attention block's output [R, dim], each segment against its own cache."""
        qkv = layer.qkv(h)
        if packed is not None:  # every segment short: one fused call for all of them
            return layer.o(self._attend_packed(qkv, i, views, packed).to(self.dtype))
        row, outs = 0, []
        for v in views:  # prompts: one segment at a time
            rows = qkv[row : row + v.T]
            if v.packs:
                outs.append(self._attend_packed(rows, i, [v], _PackedRope.of([v])).to(self.dtype))
            else:
                outs.append(self._attend(rows, v, i))
            row += v.T
        return layer.o(outs[0] if len(outs) == 1 else torch.cat(outs))

    def _attend_packed(self, qkv: Tensor, i: int, views: list[SegmentView], rope: _PackedRope) -> Tensor:
        """qkv [R, (H+2Hkv)*D] of several short segments -> [R, H*D] float32 in one fused call."""
        s = self.shape
        return self.fused.attend_packed(
            qkv, rope.cos, rope.sin, [v.seg.cache.layer_k[i] for v in views], [v.seg.cache.layer_v[i] for v in views],
            rope.starts, rope.lens, rope.masks, s.heads, s.kv_heads)

    def _attend(self, qkv: Tensor, v: SegmentView, i: int) -> Tensor:
        """qkv [T, (H+2Hkv)*D] of one segment -> attention output [T, H*D] in the compute dtype."""
        s, T, cache, start = self.shape, v.T, v.seg.cache, v.seg.start
        if self.fused is not None:  # rope, cache write and the grouped q layout in one call
            q = self.fused.rope_store(qkv, v.cos, v.sin, cache.layer_k[i], cache.layer_v[i], start,
                                      s.heads, s.kv_heads)
        else:
            qkv = qkv.view(1, T, s.heads + 2 * s.kv_heads, s.head_dim).transpose(1, 2)  # [1, H+2Hkv, T, D]
            qk = rope(qkv[:, : s.heads + s.kv_heads], v.cos, v.sin)  # q and k rotated in one go
            q, k, val = qk[:, : s.heads], qk[:, s.heads :], qkv[:, s.heads + s.kv_heads :]
            keys, values = cache.write(i, start, k, val)  # [1, Hkv, start+T, D]
            if self.dtype == torch.float32:  # PyTorch's SDPA: bit-equal to transformers
                o = F.scaled_dot_product_attention(q, keys, values, attn_mask=v.rows,
                                                   enable_gqa=s.heads != s.kv_heads)
                return o.transpose(1, 2).reshape(T, self._q)
            q = q.reshape(s.kv_heads, -1, s.head_dim).float()  # [Hkv, g*T, D], the layout rope_store writes
        o = attend_grouped(q, cache.layer_k[i], cache.layer_v[i], v.rows)  # [T, H*D] float32, row-invariant
        return o.to(self.dtype)


def rope_tables(head_dim: int, theta: float, length: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos/sin [length, head_dim] in the rotate-half layout that HF checkpoints use."""
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    freqs = torch.outer(torch.arange(length, dtype=torch.float32), inv)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate-half rope over x [..., T, D]; cos/sin [T, D] broadcast."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple
