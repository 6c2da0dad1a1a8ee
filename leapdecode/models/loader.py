"""Resolve a model name or path to a checkpoint directory, and load the fastest network for it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from leapdecode.errors import ModelLoadError, one_line
from leapdecode.models.convert import converted_dir
from leapdecode.models.llama import SUPPORTED, LlamaModel, LlamaShape
from leapdecode.models.registry import KNOWN_MODELS, fetch_known

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True, slots=True)
class LoadedModel:
    network: Any  # a CausalLM (models/base.py)
    tokenizer: Any
    checkpoint_dir: Path
    backend: str  # "leapdecode" (our llama code) or "transformers"


def resolve_checkpoint(spec: str) -> Path:
    """A known name, a .gguf file or a Hugging Face directory -> a directory with config.json + safetensors."""
    if spec in KNOWN_MODELS:
        return converted_dir(fetch_known(KNOWN_MODELS[spec]))
    path = Path(spec).expanduser()
    if not path.exists():
        known = ", ".join(KNOWN_MODELS)
        raise ModelLoadError(f"model {spec!r} not found: not a known name ({known}) nor an existing path")
    if path.is_file() and path.suffix == ".gguf":
        return converted_dir(path.resolve())
    if path.is_dir() and (path / "config.json").exists():
        return path
    raise ModelLoadError(f"{spec}: expected a .gguf file or a Hugging Face model directory with config.json")


def load_model(spec: str, dtype: str = "float32", backend: str = "auto") -> LoadedModel:
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    ckpt = resolve_checkpoint(spec)
    cfg = _read_config(ckpt)
    _check_architecture(cfg, ckpt)
    tokenizer = _load_tokenizer(ckpt)
    if backend in ("auto", "leapdecode") and cfg.get("model_type") in SUPPORTED:
        try:
            net = LlamaModel(_read_weights(ckpt), LlamaShape.from_hf(cfg), DTYPES[dtype])
            return LoadedModel(net, tokenizer, ckpt, "leapdecode")
        except ModelLoadError:
            if backend == "leapdecode":
                raise
    return LoadedModel(_load_adapter(ckpt, DTYPES[dtype]), tokenizer, ckpt, "transformers")


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


def _read_weights(ckpt: Path) -> dict[str, torch.Tensor]:
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


def _load_tokenizer(ckpt: Path) -> Any:
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
