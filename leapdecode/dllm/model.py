"""A dLLM loaded for decoding: leapdecode's own llama forward (row-invariant bfloat16 and integer kernels),
the diffusion conventions from the config, and the tokenizer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leapdecode.dllm.checkpoint import is_diffusion_checkpoint, load_tokenizer, read_config, read_weights
from leapdecode.dllm.config import DiffusionConfig
from leapdecode.errors import ModelLoadError
from leapdecode.models.llama import LlamaModel, LlamaShape
from leapdecode.models.precision import choose_precision

KNOWN_DLLMS = {"smollm2-135m-dllm": "smollm2-135m"}  # name -> the AR model `train-dllm` starts from
ROW_INVARIANT = ("bfloat16", "int8")  # a row's numbers do not depend on what it is batched with


@dataclass(frozen=True, slots=True)
class DiffusionModel:
    network: LlamaModel
    config: DiffusionConfig
    tokenizer: Any
    path: Path
    precision: str

    @property
    def row_invariant(self) -> bool:
        return self.precision in ROW_INVARIANT


def resolve_dllm(spec: str) -> Path:
    """A known dLLM name (trained by `leapdecode train-dllm`) or a checkpoint directory."""
    from leapdecode.dllm.training import default_dllm_dir

    if spec in KNOWN_DLLMS:
        path = default_dllm_dir(KNOWN_DLLMS[spec])
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{spec} is not trained yet: run `leapdecode train-dllm` (about an hour on 2 cores)")
        return path
    return Path(spec).expanduser()


def is_dllm(spec: str) -> bool:
    return spec in KNOWN_DLLMS or is_diffusion_checkpoint(spec)


def require_autoregressive(model: str, why: str) -> None:
    """For commands that take AR models only: a diffusion LM is one clear error, before any load."""
    if is_dllm(model):
        raise ModelLoadError(f"{model} is a diffusion LM: {why}")


def load_dllm(spec: str, dtype: str = "auto") -> DiffusionModel:
    path = resolve_dllm(spec)
    raw = read_config(path)
    if raw is None:
        raise ModelLoadError(f"{spec}: not a model directory (no config.json)")
    cfg = DiffusionConfig.from_json(raw)
    precision = choose_precision(dtype, from_gguf=False)
    if precision == "gguf":
        raise ModelLoadError("dtype gguf needs a GGUF file; a dLLM checkpoint loads as float32, bfloat16 or int8")
    if precision == "int4":  # measured: 0% on parallel-tasks against 43% at bfloat16, same model
        raise ModelLoadError("dtype int4 is not offered for diffusion LMs: 4-bit weights broke the trained dLLM's "
                             "answers; use bfloat16 (the default) or int8")
    network = LlamaModel(read_weights(path), LlamaShape.from_hf(_as_llama(cfg)), precision)
    return DiffusionModel(network, cfg, load_tokenizer(path), path, precision)


def _as_llama(cfg: DiffusionConfig) -> dict[str, Any]:
    return {"model_type": "qwen2" if cfg.qkv_bias else "llama", "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_layers,
            "num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.num_kv_heads,
            "rms_norm_eps": cfg.rms_norm_eps, "rope_theta": cfg.rope_theta, "max_position_embeddings": cfg.max_position,
            "attention_bias": cfg.qkv_bias, "tie_word_embeddings": cfg.tie_word_embeddings}
