"""GGUF -> safetensors, once: transformers dequantizes, we keep the result in the cache."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

from leapdecode.errors import ModelLoadError, one_line
from leapdecode.paths import cache_dir


def metadata_dir(gguf: Path) -> Path:
    """config.json, tokenizer and generation config of this GGUF, without weights: all the integer
    precisions need, since they read the GGUF's tensors themselves. Seconds, where converting the
    weights to float32 takes minutes and gigabytes for a 1.5B model."""
    full = cache_dir() / "checkpoints" / f"{gguf.stem}-{_fingerprint(gguf)}"
    if (full / "config.json").exists():
        return full
    out = full.with_name(full.name + "-meta")
    if not (out / "config.json").exists():
        _build(out, lambda tmp: _write_metadata(gguf, tmp), gguf)
    return out


def converted_dir(gguf: Path) -> Path:
    """A safetensors checkpoint of this GGUF file, converting it on first use."""
    out = cache_dir() / "checkpoints" / f"{gguf.stem}-{_fingerprint(gguf)}"
    if (out / "config.json").exists():
        return out
    print(f"leapdecode: converting {gguf.name} to safetensors (once, under {out.parent})...", file=sys.stderr)
    _build(out, lambda tmp: _convert(gguf, tmp), gguf)
    return out


def _build(out: Path, write, gguf: Path) -> None:
    """Run write(tmp) into a temporary folder, then move it into place: a failure leaves nothing behind."""
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
    except ModelLoadError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as exc:  # transformers' GGUF reader fails in many ways on a bad file
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelLoadError(f"cannot read GGUF {gguf}: {one_line(exc)}") from exc
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def _write_metadata(gguf: Path, out: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config.quantization_config = None
    config.save_pretrained(out)
    GenerationConfig.from_model_config(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)


def _convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    config.quantization_config = None
    if hasattr(config, "_name_or_path"):
        config._name_or_path = gguf.stem
    # save_pretrained refuses a GGUF-loaded model; a fresh one from the config takes its weights.
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config = loaded.generation_config
    fresh.save_pretrained(out)
    tok.save_pretrained(out)


def _fingerprint(path: Path) -> str:
    """Size plus a hash of the first 8 MiB: cheap, and changes when the file does."""
    h = hashlib.sha256(str(path.stat().st_size).encode())
    with open(path, "rb") as f:
        h.update(f.read(8 << 20))
    return h.hexdigest()[:12]
