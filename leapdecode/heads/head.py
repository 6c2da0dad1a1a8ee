"""An EAGLE-style draft head: one decoder layer that extends the target's own features by a token.

Entry j of the head reads (f[j-1], embed(token j)), where f[j-1] is the target's final hidden state (after
its last norm) at position j-1, and predicts f[j]: the feature from which the target's own head reads
token j+1. Drafting feeds each predicted feature back in with the token it drafted, one entry per token,
over a one-layer KV cache. The head shares the target's embeddings and reads its logits from the target's
output embeddings restricted to the tokens the target actually produced in training (`vocab_ids`), so a
draft step costs a few percent of a target forward.

This module is the trainable form (PyTorch modules, float32) and its file format; head_network.py runs it
at inference with the target's kernels.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from leapdecode.errors import InvalidRequest
from leapdecode.models.llama import rope

FORMAT = "leapdecode-draft-head-1"


@dataclass(frozen=True, slots=True)
class HeadShape:
    dim: int
    heads: int
    kv_heads: int
    head_dim: int
    inter: int
    rms_eps: float
    rope_theta: float
    vocab: int  # the target's vocabulary size

    @staticmethod
    def of_target(shape: Any, inter: int) -> HeadShape:
        """The target's layer shape (a LlamaShape), with an MLP `inter` wide (its own layers': the copy)."""
        return HeadShape(shape.dim, shape.heads, shape.kv_heads, shape.head_dim, inter, shape.rms_eps,
                         shape.rope_theta, shape.vocab)

    def fits(self, target_shape: Any) -> bool:
        t = target_shape
        return (self.dim, self.heads, self.kv_heads, self.head_dim, self.vocab) == (
            t.dim, t.heads, t.kv_heads, t.head_dim, t.vocab)


class DraftHead(nn.Module):
    """The trainable head. Its layer starts as a copy of the target's last decoder layer."""

    def __init__(self, shape: HeadShape, vocab_ids: Tensor, lm_rows: Tensor) -> None:
        super().__init__()
        s = self.shape = shape
        self.fc = nn.Linear(2 * s.dim, s.dim, bias=True)  # (feature, embedding) -> the layer's input
        self.norm_in = nn.Parameter(torch.ones(s.dim))
        self.qkv = nn.Linear(s.dim, (s.heads + 2 * s.kv_heads) * s.head_dim, bias=False)
        self.o = nn.Linear(s.heads * s.head_dim, s.dim, bias=False)
        self.norm_mlp = nn.Parameter(torch.ones(s.dim))
        self.gate_up = nn.Linear(s.dim, 2 * s.inter, bias=False)
        self.down = nn.Linear(s.inter, s.dim, bias=False)
        self.norm_out = nn.Parameter(torch.ones(s.dim))
        self.register_buffer("vocab_ids", vocab_ids.long())  # [V'] sorted target ids the head can draft
        self.register_buffer("lm_rows", lm_rows)  # [V', dim] the target's output embeddings of those ids, frozen

    def logits(self, feats: Tensor) -> Tensor:
        """[.., dim] -> [.., V'] over vocab_ids."""
        return feats @ self.lm_rows.to(feats.dtype).T

    def inputs(self, feats: Tensor, embeds: Tensor) -> Tensor:
        """[.., dim] previous features, [.., dim] token embeddings -> the layer's residual input."""
        return self.fc(torch.cat([feats, embeds], dim=-1))

    def qkv_of(self, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [B, L, dim] -> q [B, H, L, D], k and v [B, Hkv, L, D], q and k rotated."""
        s, (B, L, _) = self.shape, x.shape
        h = F.rms_norm(x, (s.dim,), self.norm_in, s.rms_eps)
        qkv = self.qkv(h).view(B, L, s.heads + 2 * s.kv_heads, s.head_dim).transpose(1, 2)
        q, k, v = qkv.split([s.heads, s.kv_heads, s.kv_heads], dim=1)
        return rope(q, cos, sin), rope(k, cos, sin), v

    def finish(self, x: Tensor, attended: Tensor) -> Tensor:
        """Residual x [B, L, dim] and attention [B, L, H*D] -> predicted features [B, L, dim] (normed)."""
        s = self.shape
        x = x + self.o(attended)
        gate, up = self.gate_up(F.rms_norm(x, (s.dim,), self.norm_mlp, s.rms_eps)).chunk(2, dim=-1)
        x = x + self.down(F.silu(gate) * up)
        return F.rms_norm(x, (s.dim,), self.norm_out, s.rms_eps)

    def copy_layer(self, sd: dict[str, Tensor], layer: int, final_norm: Tensor) -> None:
        """Start the layer from the target's layer `layer` (HF names, float tensors)."""
        p = f"model.layers.{layer}."
        with torch.no_grad():
            self.qkv.weight.copy_(torch.cat([sd[f"{p}self_attn.{n}_proj.weight"] for n in "qkv"]))
            self.o.weight.copy_(sd[f"{p}self_attn.o_proj.weight"])
            self.gate_up.weight.copy_(torch.cat([sd[f"{p}mlp.gate_proj.weight"], sd[f"{p}mlp.up_proj.weight"]]))
            self.down.weight.copy_(sd[f"{p}mlp.down_proj.weight"])
            self.norm_in.copy_(sd[f"{p}input_layernorm.weight"])
            self.norm_mlp.copy_(sd[f"{p}post_attention_layernorm.weight"])
            self.norm_out.copy_(final_norm)

    def save(self, path: Path, model_id: str, info: dict[str, Any]) -> None:
        meta = {"format": FORMAT, "shape": json.dumps(asdict(self.shape)), "model_id": model_id,
                "info": json.dumps(info)}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, str(tmp), metadata=meta)
        tmp.replace(path)  # a half-written head is never found

    @staticmethod
    def load(path: Path, target_shape: Any) -> DraftHead:
        """A saved head, checked against the target it will draft for."""
        try:  # one pass over the file: its metadata and its tensors
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
                tensors = {name: f.get_tensor(name) for name in f.keys()}
        except Exception as e:
            raise InvalidRequest(f"cannot read draft head {path}: {e}") from e
        if meta.get("format") != FORMAT:
            raise InvalidRequest(f"{path} is not a leapdecode draft head")
        shape = HeadShape(**json.loads(meta["shape"]))
        if not shape.fits(target_shape):
            raise InvalidRequest(f"draft head {path} was trained for another model: {shape} does not fit {target_shape}")
        head = DraftHead(shape, tensors["vocab_ids"], tensors["lm_rows"])
        head.load_state_dict(tensors)
        return head
