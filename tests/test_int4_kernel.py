"""kernels/int4_matmul.cpp: 4-bit weights x 8-bit activations in 16-row tiles.

What speculation at int4 needs of it: every row comes out with the same bits whatever the number of rows in
the call, its place among them, and the chunk of rows the kernel processes it in. And what the user needs:
it computes the weights it was given, within the error of quantizing the activations to 8 bits.
"""

from __future__ import annotations

import pytest
import torch

from leapdecode.kernels import int4_kernels
from leapdecode.models.blocks import Blocks, quantize_int4
from leapdecode.models.int4_tiles import pack_tiles
from leapdecode.models.qlinear import TiledInt4Linear, TorchInt4Linear, int4_linear


@pytest.fixture(scope="module")
def kernels():
    found = int4_kernels()
    assert found is not None, "this machine has a compiler: the int4 kernel must build"
    return found


def _layer(kernels, n: int, k: int, seed: int, bias: bool = False, symmetric: bool = False) -> TiledInt4Linear:
    g = torch.Generator().manual_seed(seed)
    blocks = quantize_int4(torch.randn(n, k, generator=g) * 0.05)
    if symmetric:  # Q4_0's form: no offset of its own
        blocks = Blocks(blocks.q, blocks.scale, None, 4, 32)
    b = torch.randn(n, generator=g) if bias else None
    return TiledInt4Linear(blocks, kernels, b)


def _reference(layer_blocks: Blocks, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The kernel's arithmetic in float64: activations quantized per 32 columns to int8 (round half to even),
    weights with float16 scales and offsets."""
    n, k = layer_blocks.shape
    xf = x.float().view(x.shape[0], k // 32, 32)
    dx = xf.abs().amax(-1) / 127
    xq = torch.where(dx[..., None] > 0, torch.round(xf / dx[..., None].clamp(min=1e-30)), torch.zeros_like(xf))
    xhat = (xq * dx[..., None]).double().view(x.shape[0], k)
    scale = layer_blocks.scale.half().double()
    offset = (layer_blocks.offset if layer_blocks.offset is not None else torch.zeros_like(layer_blocks.scale))
    w = layer_blocks.q.double().view(n, k // 32, 32) * scale[..., None] + offset.half().double()[..., None]
    y = xhat @ w.view(n, k).t()
    return y + bias.double() if bias is not None else y


@pytest.mark.parametrize("n,k", [(48, 64), (100, 96), (1000, 576)])
def test_rows_have_the_same_bits_in_any_batch(kernels, n, k):
    layer = _layer(kernels, n, k, seed=n, bias=True)
    x = torch.randn(21, k, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    alone = torch.cat([layer(x[i : i + 1]) for i in range(21)])
    for rows in (2, 3, 7, 8, 9, 16, 17, 21):  # the kernel takes rows 8 at a time, then a tail of 1-7
        assert torch.equal(layer(x[:rows]), alone[:rows]), rows
    shifted = layer(x[5:18])  # a row's place in the batch does not matter either
    assert torch.equal(shifted, alone[5:18])


def test_rows_do_not_depend_on_the_thread_count(kernels):
    layer = _layer(kernels, 4000, 576, seed=7)
    x = torch.randn(5, 576, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = layer(x)
        torch.set_num_threads(2)
        two = layer(x)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


@pytest.mark.parametrize("symmetric", [False, True])
def test_computes_its_weights_within_activation_rounding(kernels, symmetric):
    """Against the same arithmetic in float64: only the float32 accumulation and the bf16 output differ, so a
    wrong nibble, scale or tile would show as a large error."""
    g = torch.Generator().manual_seed(3)
    w = quantize_int4(torch.randn(80, 256, generator=g) * 0.05)
    if symmetric:
        w = Blocks(w.q, w.scale, None, 4, 32)
    bias = torch.randn(80, generator=g)
    layer = TiledInt4Linear(w, kernels, bias)
    x = torch.randn(6, 256, generator=g).to(torch.bfloat16)
    ref = _reference(w, x, bias)
    torch.testing.assert_close(layer(x).double(), ref, rtol=8e-3, atol=8e-3)  # bf16 output: 2^-8 relative
    exact = x.double() @ w.dequantize().double().t() + bias.double()
    rel = (layer(x).double() - exact).norm() / exact.norm()
    assert rel < 0.02, f"8-bit activations cost {rel:.4f} of the output norm"


def test_zero_rows_and_padding(kernels):
    """A zero activation group quantizes to zero (no division by zero); rows past N are never written."""
    layer = _layer(kernels, 33, 64, seed=4, bias=True)
    y = layer(torch.zeros(2, 64, dtype=torch.bfloat16))
    assert y.shape == (2, 33)
    torch.testing.assert_close(y.float(), layer.bias.bfloat16().float().expand(2, 33))


def test_tiles_hold_every_nibble_where_the_kernel_reads_it():
    q = torch.arange(16 * 64, dtype=torch.int64).remainder(16).to(torch.uint8).view(16, 64)
    q = q[torch.randperm(16, generator=torch.Generator().manual_seed(5))]
    w = Blocks(q, torch.ones(16, 2), torch.zeros(16, 2), 4, 32)
    tiles = pack_tiles(w)  # [1, 2, 320]
    assert tiles.shape == (1, 2, 320)
    for n in (0, 7, 15):
        for g in range(2):
            for c in range(32):
                half, v, j = divmod(c, 16)[0], (c % 16) // 4, c % 4
                byte = int(tiles[0, g, 64 * v + 4 * n + j])
                assert (byte >> (4 * half)) & 0x0F == int(q[n, 32 * g + c])


def test_falls_back_to_pytorch_without_the_kernel(monkeypatch):
    from leapdecode.models import qlinear

    blocks = quantize_int4(torch.randn(32, 64) * 0.05)
    monkeypatch.setattr(qlinear, "int4_kernels", lambda: None)
    assert isinstance(int4_linear(blocks), TorchInt4Linear)
    monkeypatch.undo()
    assert isinstance(int4_linear(blocks), TiledInt4Linear)


@pytest.mark.parametrize("isa", ["avx2", "portable"])
def test_every_instruction_set_computes_the_same_bits(kernels, isa, tmp_path):
    """The AVX2 (maddubs) and portable paths, built here with AVX-512 turned off, agree bit for bit with the
    path this machine runs: a model gives the same int4 output on every CPU."""
    from leapdecode.kernels import build_extension, int4_matmul_source

    march = {"avx2": ["-march=native", "-mno-avx512f"], "portable": ["-march=x86-64"]}[isa]
    other = build_extension(f"leapdecode_int4_{isa}", int4_matmul_source(), tmp_path,
                            ["-O3", "-fopenmp", "-ffp-contract=off", *march])
    g = torch.Generator().manual_seed(6)
    w, bias = quantize_int4(torch.randn(100, 576, generator=g) * 0.05), torch.randn(100, generator=g)
    x = torch.randn(13, 576, generator=g).to(torch.bfloat16)
    assert torch.equal(TiledInt4Linear(w, other, bias)(x), TiledInt4Linear(w, kernels, bias)(x))
