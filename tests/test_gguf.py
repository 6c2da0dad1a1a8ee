"""Reading a GGUF's quantized tensors as stored: each block format unpacks exactly, under HF names."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize

from leapdecode.errors import ModelLoadError
from leapdecode.models import gguf_weights
from leapdecode.models.blocks import Blocks, as_float
from leapdecode.models.loader import resolve_source
from leapdecode.models.precision import choose_precision, is_four_bit_gguf

# (format, bytes per block, offsets of its float16 fields, elements per block)
FORMATS = [("Q4_0", 18, [0], 32), ("Q4_1", 20, [0, 2], 32), ("Q8_0", 34, [0], 32), ("Q4_K", 144, [0, 2], 256)]


@pytest.mark.parametrize("name,size,halves,per_block", FORMATS)
def test_each_block_format_unpacks_exactly_as_gguf_dequantizes(name, size, halves, per_block):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (5, 3, size), dtype=np.uint8)  # any bytes are valid nibbles and scales
    for at in halves:  # ...but keep the float16 multipliers finite
        data[..., at : at + 2] = (rng.standard_normal((5, 3)) * 0.01).astype(np.float16).view(np.uint8).reshape(5, 3, 2)
    data = data.reshape(5, -1)
    blocks = gguf_weights._UNPACK[name](data)
    assert isinstance(blocks, Blocks) and blocks.shape == (5, 3 * per_block)
    ref = torch.from_numpy(dequantize(data, GGMLQuantizationType[name]).astype(np.float32))
    assert torch.equal(blocks.dequantize(), ref)


def test_default_model_gguf_reads_as_the_weights_transformers_loads():
    from safetensors.torch import load_file

    source = resolve_source("smollm2-135m")
    ours = gguf_weights.read_gguf_weights(source.gguf)
    theirs = load_file(next(source.checkpoint_dir.glob("*.safetensors")))
    assert set(ours) == set(theirs)
    assert isinstance(ours["model.layers.0.mlp.down_proj.weight"], Blocks)  # stored Q4_1, kept 4-bit
    for name, w in theirs.items():  # q/k rows included: llama.cpp's RoPE permutation is undone
        assert torch.equal(as_float(ours[name]), w), name


def test_blocks_fuse_and_reorder_rows():
    a = Blocks(torch.randint(0, 16, (4, 64), dtype=torch.uint8), torch.rand(4, 2), torch.rand(4, 2), 4, 32)
    b = Blocks(torch.randint(0, 16, (2, 64), dtype=torch.uint8), torch.rand(2, 2), torch.rand(2, 2), 4, 32)
    fused = Blocks.cat([a, b])
    assert torch.equal(fused.dequantize(), torch.cat([a.dequantize(), b.dequantize()]))
    order = torch.tensor([3, 1, 0, 2])
    assert torch.equal(a.rows(order).dequantize(), a.dequantize()[order])


@pytest.mark.parametrize("bf16", [True, False], ids=["native-bf16", "no-bf16"])
def test_dtype_choice(monkeypatch, bf16):
    """auto by CPU: with native bfloat16, a 4-bit GGUF as int4, another GGUF as stored, a float checkpoint
    in bfloat16; without, float32 for all. A dtype named is a dtype kept."""
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: bf16)
    assert choose_precision("int4", True) == "int4" and choose_precision("bfloat16", False) == "bfloat16"
    assert choose_precision("auto", True) == ("gguf" if bf16 else "float32")
    assert choose_precision("auto", True, four_bit=True) == ("int4" if bf16 else "float32")
    assert choose_precision("auto", False) == ("bfloat16" if bf16 else "float32")
    assert is_four_bit_gguf(resolve_source("smollm2-135m").gguf)  # SmolLM2 ships as Q4_1
    with pytest.raises(ModelLoadError, match="unknown dtype 'int3'"):
        choose_precision("int3", True)


def test_other_formats_dequantize_in_row_chunks_exactly(monkeypatch):
    """Q6_K and friends go through gguf's own dequantizer, a few rows at a time to bound temporaries."""
    from types import SimpleNamespace

    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, (5, 210), dtype=np.uint8)  # Q6_K: 210 bytes per 256 values, d at the end
    data[:, 208:210] = (rng.standard_normal((5, 1)) * 0.01).astype(np.float16).view(np.uint8)
    tensor = SimpleNamespace(tensor_type=GGMLQuantizationType.Q6_K, data=data)
    monkeypatch.setattr(gguf_weights, "_CHUNK_ROWS", 2)
    ours = gguf_weights._tensor(tensor)
    assert torch.equal(ours, torch.from_numpy(dequantize(data, GGMLQuantizationType.Q6_K).astype(np.float32)))
