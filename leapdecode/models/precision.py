"""The precisions a model can run at, and the choice `--dtype auto` makes for this CPU."""

from __future__ import annotations

from typing import TYPE_CHECKING

from leapdecode.errors import ModelLoadError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("float32", "bfloat16", "int8", "int4", "gguf")
DTYPE_CHOICES = ("auto", *PRECISIONS)


def activation_dtype(precision: str) -> torch.dtype:
    """float32 runs in float32; every other precision computes in bfloat16 around its weights."""
    import torch

    return torch.float32 if precision == "float32" else torch.bfloat16


def choose_precision(dtype: str, from_gguf: bool) -> str:
    """"auto": a GGUF runs at its stored precision where this CPU has native bfloat16 (AVX512-BF16 or AMX)
    for the integer kernels' activations; a float checkpoint runs in bfloat16 there; float32 elsewhere."""
    import torch

    if dtype not in DTYPE_CHOICES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPE_CHOICES)}")
    if dtype != "auto":
        return dtype
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return "float32"
    return "gguf" if from_gguf else "bfloat16"
