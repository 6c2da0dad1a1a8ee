"""Lossless per precision: at every dtype, speculative output equals leapdecode's own plain decoding at
that dtype, token for token (float32 is also held to transformers' output in test_lossless.py).

This holds by construction, not by luck: every kernel on the decode path gives a row the same bits
whether it is computed alone (plain decoding) or among the k+1 rows of a verify forward. The tests below
check the kernels one by one, then the whole engine on real prompts.
"""

from __future__ import annotations

import pytest
import torch

from leapdecode.api import LLM
from leapdecode.models.attention import attend_grouped, row_groups
from leapdecode.models.blocks import quantize_int4
from leapdecode.models.linear import make_linear

REDUCED = ("bfloat16", "int8", "int4", "gguf")


@pytest.fixture(scope="module", params=REDUCED)
def reduced_llm(request):
    return LLM("smollm2-135m", dtype=request.param, threads=2)


@pytest.mark.parametrize("method", ["ngram", "suffix"])
def test_speculation_equals_plain_decoding_at_every_precision(reduced_llm, prompt_ids, method):
    for ids in prompt_ids[:5]:
        plain = reduced_llm.generate(prompt_ids=ids, method="none", max_new_tokens=48)
        spec = reduced_llm.generate(prompt_ids=ids, method=method, max_new_tokens=48)
        assert spec.token_ids == plain.token_ids, f"{reduced_llm.precision} {method} parted from plain"
        assert spec.stats.target_forwards <= plain.stats.target_forwards


def test_reduced_precisions_still_answer_sensibly(reduced_llm):
    """Quantized weights change the numbers, not the model: the answer stays on topic."""
    text = reduced_llm.generate("What is the capital of France? Answer in one sentence.", max_new_tokens=24).text
    assert "Paris" in text


@pytest.mark.parametrize("precision", ["bfloat16", "int8", "int4", "gguf"])
@pytest.mark.parametrize("shape", [(384, 576), (8960, 1536)])  # the second split 1 row from 2+ on AMD Zen 4
def test_linear_rows_do_not_depend_on_their_neighbours(precision, shape):
    torch.manual_seed(0)
    layer = make_linear(torch.randn(*shape) * 0.05, precision)
    x = torch.randn(1, 12, shape[1]).to(torch.bfloat16)
    alone = torch.cat([layer(x[:, i : i + 1]) for i in range(12)], dim=1)
    for rows in (2, 5, 8, 12):
        assert torch.equal(layer(x[:, :rows]), alone[:, :rows])


@pytest.mark.parametrize("start", [0, 37, 60, 127])  # 60 and 127: the draft crosses a 64-slot bucket
def test_attention_rows_do_not_depend_on_their_neighbours(start):
    torch.manual_seed(1)
    heads, kv_heads, T, S = 9, 3, 7, 256
    keys, values = torch.randn(1, kv_heads, S, 64), torch.randn(1, kv_heads, S, 64)
    q = torch.randn(1, heads, T, 64).to(torch.bfloat16).float()

    def grouped(x: torch.Tensor) -> torch.Tensor:  # [1, H, t, D] -> [Hkv, g*t, D]
        return x.reshape(kv_heads, -1, 64)

    together = attend_grouped(grouped(q), keys, values, row_groups(start, T, None, heads // kv_heads))
    for j in range(T):
        stale = keys.clone()
        stale[:, :, start + j + 1 :] = torch.randn_like(stale[:, :, start + j + 1 :])  # draft slots differ
        alone = attend_grouped(grouped(q[:, :, j : j + 1]), stale, values, row_groups(start + j, 1, None, 3))
        assert torch.equal(alone, together[j : j + 1])


def test_attention_matches_softmax_reference():
    torch.manual_seed(2)
    q, keys, values = torch.randn(1, 4, 3, 32), torch.randn(1, 2, 128, 32), torch.randn(1, 2, 128, 32)
    out = attend_grouped(q.reshape(2, 6, 32), keys, values, row_groups(10, 3, None, 2))  # [3, 4*32]
    k, v = keys[:, :, :13].repeat_interleave(2, 1), values[:, :, :13].repeat_interleave(2, 1)
    causal = torch.arange(13)[None, :] <= torch.arange(10, 13)[:, None]
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=causal).transpose(1, 2).reshape(3, 128)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_int4_layer_computes_its_dequantized_weights():
    torch.manual_seed(3)
    w = torch.randn(256, 512) * 0.05
    blocks = quantize_int4(w)
    assert (blocks.dequantize() - w).abs().max() <= blocks.scale.max() / 2 + 1e-6  # round to nearest level
    x = torch.randn(3, 512).to(torch.bfloat16)
    y = make_linear(blocks, "int4")(x).float()
    ref = x.float() @ blocks.dequantize().t()
    torch.testing.assert_close(y, ref, rtol=2e-2, atol=2e-2)  # bf16 output rounding


def test_fused_kernels_build_here():
    """The product falls back to PyTorch ops without a compiler; this machine has one, so they must build."""
    from leapdecode.kernels import fused_kernels

    assert fused_kernels() is not None


def test_without_fused_kernels_speculation_still_equals_plain(monkeypatch, prompt_ids):
    from leapdecode.models import llama

    monkeypatch.setattr(llama, "fused_kernels", lambda: None)
    llm = LLM("smollm2-135m", dtype="int4", threads=2)
    assert llm.network.fused is None
    for ids in prompt_ids[:3]:
        plain = llm.generate(prompt_ids=ids, method="none", max_new_tokens=32).token_ids
        assert llm.generate(prompt_ids=ids, method="suffix", max_new_tokens=32).token_ids == plain


def _packed_inputs(rows: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    H, Hkv, D, S = 9, 3, 64, 256
    qkv = torch.randn(rows, (H + 2 * Hkv) * D, generator=g).bfloat16()
    cos, sin = torch.randn(rows, D, generator=g), torch.randn(rows, D, generator=g)
    caches = [(torch.randn(1, Hkv, S, D, generator=g), torch.randn(1, Hkv, S, D, generator=g)) for _ in range(2)]
    return qkv, cos, sin, caches, H, Hkv


def test_packed_attention_rows_do_not_depend_on_the_batch():
    """attend_packed (every reduced-precision decode step, one sequence or a server batch): a row's output
    is bit-equal alone and among other sequences' rows; a causal tree mask equals no mask; and it agrees
    with the softmax reference."""
    from leapdecode.kernels import fused_kernels
    from leapdecode.models.attention import attend_grouped, row_groups

    f, none = fused_kernels(), torch.empty(0, dtype=torch.bool)
    qkv, cos, sin, caches, H, Hkv = _packed_inputs(7)
    (k1, v1), (k2, v2) = [(k.clone(), v.clone()) for k, v in caches]
    both = f.attend_packed(qkv, cos, sin, [k1, k2], [v1, v2], [100, 50], [3, 4], [none, none], H, Hkv)
    for row in range(3, 7):  # segment 2's rows, computed with only their own segment
        k, v = caches[1][0].clone(), caches[1][1].clone()
        alone = f.attend_packed(qkv[3 : row + 1], cos[3 : row + 1], sin[3 : row + 1], [k], [v], [50],
                                [row - 2], [none], H, Hkv)
        assert torch.equal(alone[-1], both[row])
    causal = torch.arange(103)[None, :] <= torch.arange(100, 103)[:, None]
    k, v = caches[0][0].clone(), caches[0][1].clone()
    masked = f.attend_packed(qkv[:3], cos[:3], sin[:3], [k], [v], [100], [3], [causal], H, Hkv)
    assert torch.equal(masked, both[:3]) and torch.equal(k, k1)
    k, v = caches[0][0].clone(), caches[0][1].clone()
    q = f.rope_store(qkv[:3], cos[:3], sin[:3], k, v, 100, H, Hkv)
    reference = attend_grouped(q, k, v, row_groups(100, 3, None, H // Hkv))
    assert torch.allclose(reference, both[:3], atol=1e-5)
