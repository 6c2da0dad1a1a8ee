"""The precisions a model can run at, and the choice `--dtype auto` makes for this CPU."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from leapdecode.errors import ModelLoadError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("float32", "bfloat16", "int8", "int4", "gguf")
QUANTIZED = ("int8", "int4", "gguf")  # integer weights: a GGUF's tensors are read as stored
DTYPE_CHOICES = ("auto", *PRECISIONS)


def activation_dtype(precision: str) -> torch.dtype:
    """float32 runs in float32; every other precision computes in bfloat16 around its weights."""
    import torch

    return torch.float32 if precision == "float32" else torch.bfloat16


def choose_precision(dtype: str, from_gguf: bool, four_bit: bool = False) -> str:
    """"auto", where this CPU has native bfloat16 (AVX512-BF16 or AMX) for the integer kernels' activations:
    a mostly-4-bit GGUF runs as int4 (its 4-bit blocks as stored, the rest re-quantized to 4 bits: the
    fastest, ~20% over gguf on SmolLM2), any other GGUF at its stored precision (gguf), a float checkpoint
    in bfloat16. float32 on CPUs without native bfloat16."""
    import torch

    if dtype not in DTYPE_CHOICES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPE_CHOICES)}")
    if dtype != "auto":
        return dtype
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return "float32"
    if not from_gguf:
        return "bfloat16"
    return "int4" if four_bit else "gguf"


def is_four_bit_gguf(path: Path) -> bool:
    """Whether a GGUF's file type is one of the 4-bit families (Q4_0, Q4_1, Q4_K_S/M...)."""
    from gguf import GGUFReader, LlamaFileType

    field = GGUFReader(path).fields.get("general.file_type")
    if field is None:
        return False
    try:
        return LlamaFileType(int(field.parts[field.data[0]][0])).name.startswith("MOSTLY_Q4")
    except ValueError:
        return False
