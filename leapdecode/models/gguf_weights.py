"""A GGUF file's tensors as they are stored: 4- and 8-bit blocks stay integers, under Hugging Face names."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from leapdecode.errors import ModelLoadError, one_line
from leapdecode.models.blocks import Blocks

_LAYER_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def read_gguf_weights(path: Path) -> GGUFWeights:
    """HF name -> float tensor, or Blocks for Q4_0, Q4_1, Q4_K and Q8_0 (other types are dequantized)."""
    try:
        return GGUFWeights(path)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"cannot read GGUF {path}: {one_line(exc)}") from exc


class GGUFWeights(Mapping[str, "Tensor | Blocks"]):
    """The file's tensors, each unpacked when it is asked for: the model packs one weight before the next is
    unpacked, so loading a 1.5B model never holds all of it unpacked at once."""

    def __init__(self, path: Path) -> None:
        from gguf import GGUFReader

        self.path = path
        reader = GGUFReader(path)  # memory-mapped: nothing is read until a tensor is
        arch = _field(reader, "general.architecture")
        heads = int(_field(reader, f"{arch}.attention.head_count"))
        kv_heads = int(_field(reader, f"{arch}.attention.head_count_kv", heads))
        # llama.cpp's converter interleaves llama's q/k rows for its RoPE; those get the rows put back.
        self._heads = {"q_proj": heads, "k_proj": kv_heads} if arch == "llama" else {}
        self._tensors = {_hf_name(t.name): t for t in reader.tensors}

    def __getitem__(self, name: str) -> Tensor | Blocks:
        if name not in self._tensors:
            raise ModelLoadError(f"GGUF {self.path} has no tensor for {name}")
        try:
            w = _tensor(self._tensors[name])
        except Exception as exc:
            raise ModelLoadError(f"cannot read {name} from GGUF {self.path}: {one_line(exc)}") from exc
        kind = name.rsplit(".", 2)[-2] if name.endswith(".weight") else ""
        return _unpermute(w, self._heads[kind]) if kind in self._heads else w

    def __contains__(self, name: object) -> bool:
        return name in self._tensors

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)


def _field(reader, key: str, default=None):
    field = reader.fields.get(key)
    if field is None:
        if default is None:
            raise ModelLoadError(f"GGUF metadata lacks {key}")
        return default
    value = field.parts[field.data[0]]
    return bytes(value).decode() if value.dtype == np.uint8 else value[0]


def _hf_name(name: str) -> str:
    stem, _, kind = name.rpartition(".")
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)", stem)
    if m and m.group(2) in _LAYER_NAMES:
        return f"model.layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}.{kind}"
    if stem in _TOP_NAMES:
        return f"{_TOP_NAMES[stem]}.{kind}"
    return name  # kept as is: unknown tensors are ignored by the llama code


def _tensor(t) -> Tensor | Blocks:
    kind = t.tensor_type.name
    if kind in _UNPACK:
        return _UNPACK[kind](np.asarray(t.data))
    from gguf.quants import dequantize

    data = t.data
    first = np.asarray(dequantize(data[:1], t.tensor_type), dtype=np.float32)
    out = np.empty((data.shape[0], *first.shape[1:]), dtype=np.float32)
    for r in range(0, data.shape[0], _CHUNK_ROWS):  # row chunks: gguf's own temporaries stay small
        out[r : r + _CHUNK_ROWS] = dequantize(data[r : r + _CHUNK_ROWS], t.tensor_type)
    return torch.from_numpy(out)


def _unpermute(w: Tensor | Blocks, heads: int) -> Tensor | Blocks:
    n = w.shape[0]
    index = torch.arange(n).view(heads, n // heads // 2, 2).transpose(1, 2).reshape(n)
    return w.rows(index) if isinstance(w, Blocks) else w[index]


def _f16(raw: np.ndarray) -> Tensor:  # [..., 2] uint8 -> [...] float32
    return torch.from_numpy(np.ascontiguousarray(raw).view(np.float16)[..., 0].astype(np.float32))


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """[..., 16] bytes -> [..., 32] values: low nibbles are elements 0..15, high nibbles 16..31."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def _q4_0(data: np.ndarray) -> Blocks:  # block: d f16, 16 bytes of nibbles; w = d * (q - 8)
    rows = data.shape[0]
    b = data.reshape(rows, -1, 18)
    d = _f16(b[..., 0:2])
    q = torch.from_numpy(_nibbles(b[..., 2:]).reshape(rows, -1))
    return Blocks(q, d, -8 * d, bits=4, group=32)


def _q4_1(data: np.ndarray) -> Blocks:  # block: d f16, m f16, 16 bytes of nibbles; w = d * q + m
    rows = data.shape[0]
    b = data.reshape(rows, -1, 20)
    q = torch.from_numpy(_nibbles(b[..., 4:]).reshape(rows, -1))
    return Blocks(q, _f16(b[..., 0:2]), _f16(b[..., 2:4]), bits=4, group=32)


def _q8_0(data: np.ndarray) -> Blocks:  # block: d f16, 32 int8; w = d * q
    rows = data.shape[0]
    b = data.reshape(rows, -1, 34)
    q = torch.from_numpy(np.ascontiguousarray(b[..., 2:]).view(np.int8).reshape(rows, -1))
    return Blocks(q, _f16(b[..., 0:2]), None, bits=8, group=32)


def _q4_k(data: np.ndarray) -> Blocks:
    """Super-blocks of 256: d, dmin f16, twelve bytes of 6-bit scales/mins for 8 sub-blocks of 32, then
    128 bytes of nibbles (each 32-byte run holds sub-block 2c in low and 2c+1 in high nibbles)."""
    rows = data.shape[0]
    b = data.reshape(rows, -1, 144)
    d, dmin = _f16(b[..., 0:2]), _f16(b[..., 2:4])
    sc, mn = _k_scales(b[..., 4:16])  # [rows, S, 8] each
    qs = b[..., 16:].reshape(rows, -1, 4, 32)
    q = np.stack([qs & 0x0F, qs >> 4], axis=3).reshape(rows, -1)  # [rows, S, 4 chunks, 2 halves, 32]
    scale = (d[..., None] * torch.from_numpy(sc)).reshape(rows, -1)
    offset = (-dmin[..., None] * torch.from_numpy(mn)).reshape(rows, -1)
    return Blocks(torch.from_numpy(np.ascontiguousarray(q)), scale, offset, bits=4, group=32)


def _k_scales(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ggml's get_scale_min_k4 for all 8 sub-blocks at once: 6-bit scale and min per sub-block."""
    s = np.asarray(s, dtype=np.uint8)
    lo_sc, lo_mn = s[..., 0:4] & 63, s[..., 4:8] & 63
    hi_sc = (s[..., 8:12] & 0x0F) | ((s[..., 0:4] >> 6) << 4)
    hi_mn = (s[..., 8:12] >> 4) | ((s[..., 4:8] >> 6) << 4)
    sc = np.concatenate([lo_sc, hi_sc], axis=-1).astype(np.float32)
    mn = np.concatenate([lo_mn, hi_mn], axis=-1).astype(np.float32)
    return sc, mn


_CHUNK_ROWS = 8192
_UNPACK = {"Q4_0": _q4_0, "Q4_1": _q4_1, "Q8_0": _q8_0, "Q4_K": _q4_k}
