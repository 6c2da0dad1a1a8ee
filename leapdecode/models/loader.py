"""Resolve a model name or path to a checkpoint directory, and load the fastest network for it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from leapdecode.errors import ModelLoadError, one_line
from leapdecode.models.base import CausalLM
from leapdecode.models.convert import converted_dir, metadata_dir
from leapdecode.models.gguf_weights import read_gguf_weights
from leapdecode.models.llama import SUPPORTED, LlamaModel, LlamaShape
from leapdecode.models.precision import (
    QUANTIZED,
    activation_dtype,
    choose_precision,
    is_four_bit_gguf,
)
from leapdecode.models.registry import KNOWN_MODELS, fetch_known


@dataclass(frozen=True, slots=True)
class LoadedModel:
    network: CausalLM
    tokenizer: Any
    checkpoint_dir: Path
    backend: str  # "leapdecode" (our llama code) or "transformers"
    precision: str  # one of PRECISIONS: what "auto" resolved to


@dataclass(frozen=True, slots=True)
class Source:
    checkpoint_dir: Path  # config.json and tokenizer; float safetensors too unless it came from a GGUF
    gguf: Path | None  # the GGUF file itself, whose quantized tensors the integer precisions read as stored

    def with_float_weights(self) -> Path:
        """A directory with float safetensors: a GGUF is converted once (minutes for a 1.5B model)."""
        return converted_dir(self.gguf) if self.gguf is not None else self.checkpoint_dir


def resolve_source(spec: str) -> Source:
    """A known name, a .gguf file or a Hugging Face directory -> where its config, tokenizer and weights are."""
    if spec in KNOWN_MODELS:
        gguf = fetch_known(KNOWN_MODELS[spec])
        return Source(metadata_dir(gguf), gguf)
    path = Path(spec).expanduser()
    if not path.exists():
        known = ", ".join(KNOWN_MODELS)
        raise ModelLoadError(f"model {spec!r} not found: not a known name ({known}) nor an existing path")
    if path.is_file() and path.suffix == ".gguf":
        return Source(metadata_dir(path.resolve()), path.resolve())
    if path.is_dir() and (path / "config.json").exists():
        return Source(path, None)
    raise ModelLoadError(f"{spec}: expected a .gguf file or a Hugging Face model directory with config.json")


def resolve_checkpoint(spec: str) -> Path:
    """A directory transformers can load with weights (what the hf baselines read)."""
    return resolve_source(spec).with_float_weights()


def load_model(spec: str, dtype: str = "float32", backend: str = "auto") -> LoadedModel:
    source = resolve_source(spec)
    four_bit = dtype == "auto" and source.gguf is not None and is_four_bit_gguf(source.gguf)
    precision = choose_precision(dtype, source.gguf is not None, four_bit)
    integer = precision in QUANTIZED and source.gguf is not None
    ckpt = source.checkpoint_dir if integer else source.with_float_weights()
    cfg = _read_config(ckpt)
    _check_architecture(cfg, ckpt)
    tokenizer = load_tokenizer(ckpt)
    if backend in ("auto", "leapdecode") and cfg.get("model_type") in SUPPORTED:
        try:
            weights = read_gguf_weights(source.gguf) if integer else read_weights(ckpt)  # type: ignore[arg-type]
            net = LlamaModel(weights, LlamaShape.from_hf(cfg), precision)
            return LoadedModel(net, tokenizer, ckpt, "leapdecode", precision)
        except ModelLoadError:
            if backend == "leapdecode":
                raise
    if precision not in ("float32", "bfloat16"):
        if dtype != "auto":
            raise ModelLoadError(f"{ckpt}: dtype {precision} needs leapdecode's llama code; "
                                 f"this model runs through transformers, at float32 or bfloat16 only")
        precision = choose_precision("auto", from_gguf=False)  # the float precision auto picks here
        ckpt = source.with_float_weights()
    return LoadedModel(_load_adapter(ckpt, activation_dtype(precision)), tokenizer, ckpt, "transformers", precision)


def _read_config(ckpt: Path) -> dict[str, Any]:
    try:
        return json.loads((ckpt / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{ckpt}/config.json is unreadable: {exc}") from exc


def _check_architecture(cfg: dict[str, Any], ckpt: Path) -> None:
    from transformers import CONFIG_MAPPING

    arch = cfg.get("model_type")
    if arch not in SUPPORTED and arch not in CONFIG_MAPPING:
        raise ModelLoadError(f"{ckpt}: unsupported architecture {arch!r} (neither leapdecode nor transformers knows it)")


def read_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(ckpt.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{ckpt}: no .safetensors weights found")
    sd: dict[str, torch.Tensor] = {}
    try:
        for f in files:
            sd.update(load_file(f))
    except Exception as exc:
        raise ModelLoadError(f"{ckpt}: corrupt safetensors weights ({one_line(exc)})") from exc
    return sd


def load_tokenizer(ckpt: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(ckpt)
    except Exception as exc:
        raise ModelLoadError(f"{ckpt}: cannot load its tokenizer ({one_line(exc)})") from exc


def _load_adapter(ckpt: Path, dtype: torch.dtype) -> Any:
    from transformers import AutoModelForCausalLM

    from leapdecode.models.hf_adapter import HFAdapter

    try:
        return HFAdapter(AutoModelForCausalLM.from_pretrained(ckpt, dtype=dtype))
    except Exception as exc:
        raise ModelLoadError(f"{ckpt}: unsupported or corrupt model ({one_line(exc)})") from exc
