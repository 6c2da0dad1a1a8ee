"""A diffusion language model's shape and decoding conventions, read from LLaDA's or Dream's config keys."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from leapdecode.errors import InvalidRequest, ModelLoadError

LLADA_MASK_ID = 126336  # LLaDA's [MASK] when its config does not say
ATTENTIONS = ("bidirectional", "block_causal")
DLLM_LOSSY = ("fixed", "threshold", "prophet", "filter")  # output may differ from stepwise decoding
DLLM_ONLY = ("stepwise", "ssd") + DLLM_LOSSY  # methods for diffusion LMs alone
DLLM_METHODS = DLLM_ONLY + ("auto",)  # auto is a name AR models share
# each method's one knob, which a variant name sets: "threshold@0.8" is threshold with confidence 0.8
KNOBS = {"ssd": ("draft_length", int), "fixed": ("parallel", int), "threshold": ("confidence", float),
         "prophet": ("commit_gap", float), "filter": ("filter_threshold", float), "auto": ("quality", float)}
# the dLLM methods' options, as DiffusionLLM.generate takes them (and generate's flags, dashed)
DLLM_KNOBS = ("parallel", "confidence", "commit_gap", "filter_threshold", "end_of_text", "quality", "adaptive_blocks")
VARIANT, WITH_CACHE, ADAPTIVE = "@", "+", "ada"  # "threshold@0.8+dual+ada": the dual cache, adaptive blocks
DLLM_CACHES = ("none", "prefix", "dual")


def is_variant(name: str) -> bool:
    return VARIANT in name or WITH_CACHE in name


def split_variant(name: str) -> tuple[str, dict[str, Any]]:
    """"threshold@0.8+dual+ada" -> ("threshold", {"confidence": 0.8, "cache": "dual", "adaptive_blocks": True});
    a plain name -> (name, {})."""
    head, *suffixes = name.split(WITH_CACHE)
    options: dict[str, Any] = {}
    for suffix in suffixes:
        if suffix in DLLM_CACHES:
            options["cache"] = suffix
        elif suffix == ADAPTIVE:
            options["adaptive_blocks"] = True
        else:
            raise InvalidRequest(f"{name}: after {WITH_CACHE} comes a cache ({', '.join(DLLM_CACHES)}) or {ADAPTIVE} "
                                 "(adaptive blocks)")
    method, at, value = head.partition(VARIANT)
    if not at:
        return method, options
    if method not in KNOBS:
        raise InvalidRequest(f"{name}: only {', '.join(m + VARIANT + 'VALUE' for m in KNOBS)} take a value")
    knob, kind = KNOBS[method]
    try:
        return method, options | {knob: kind(value)}
    except ValueError:
        raise InvalidRequest(f"{name}: {knob} must be {'an integer' if kind is int else 'a number'}") from None


@dataclass(frozen=True, slots=True)
class DiffusionConfig:
    """`shifted`: position i predicts token i+1 (Dream, AR-initialised models) instead of token i (LLaDA).
    `attention`: "bidirectional" (LLaDA, Dream: every position sees every other, so each step recomputes the
    whole sequence) or "block_causal" (block diffusion: a committed token sees only what precedes it, a block
    being decoded sees the committed text and itself, so committed keys and values are cached exactly)."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    mask_token_id: int
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = True
    qkv_bias: bool = False
    shifted: bool = True
    attention: str = "bidirectional"
    block_size: int = 32  # the default semi-autoregressive block
    max_position: int = 4096
    eos_token_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.attention not in ATTENTIONS:
            raise ModelLoadError(f"attention must be one of {', '.join(ATTENTIONS)}, got {self.attention!r}")
        if not 0 <= self.mask_token_id < self.vocab_size:
            raise ModelLoadError(f"mask_token_id {self.mask_token_id} lies outside the vocabulary ({self.vocab_size})")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @staticmethod
    def from_json(cfg: dict[str, Any]) -> DiffusionConfig:
        """LLaDA's keys (model_type "llada") or Dream's Qwen2-style ones (model_type "Dream" or ours)."""
        if not is_diffusion_config(cfg):
            raise ModelLoadError(f"not a diffusion language model: model_type {cfg.get('model_type')!r} "
                                 "(an autoregressive model takes methods such as --method auto)")
        return _from_llada(cfg) if cfg.get("model_type") == "llada" else _from_dream(cfg)

    def to_json(self) -> dict[str, Any]:
        """Dream's keys (Qwen2's plus mask_token_id), with this engine's attention and shift conventions."""
        d = asdict(self)
        return {
            "architectures": ["DreamModel"], "model_type": "Dream", "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size, "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads, "num_key_value_heads": self.num_kv_heads,
            "intermediate_size": self.intermediate_size, "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps, "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.qkv_bias, "mask_token_id": self.mask_token_id,
            "max_position_embeddings": self.max_position, "eos_token_id": list(self.eos_token_ids),
            "hidden_act": "silu", "torch_dtype": "float32",
            "dllm_shifted": d["shifted"], "dllm_attention": d["attention"], "dllm_block_size": d["block_size"],
        }


def is_diffusion_config(cfg: dict[str, Any]) -> bool:
    return cfg.get("model_type") in ("llada", "Dream", "dream")


def _eos(cfg: dict[str, Any]) -> tuple[int, ...]:
    eos = cfg.get("eos_token_id")
    return tuple(eos) if isinstance(eos, list) else (eos,) if eos is not None else ()


def _from_llada(cfg: dict[str, Any]) -> DiffusionConfig:
    heads = cfg["n_heads"]
    return DiffusionConfig(
        vocab_size=cfg.get("embedding_size") or cfg["vocab_size"], hidden_size=cfg["d_model"],
        num_layers=cfg["n_layers"], num_heads=heads, num_kv_heads=cfg.get("n_kv_heads") or heads,
        intermediate_size=cfg["mlp_hidden_size"], mask_token_id=cfg.get("mask_token_id", LLADA_MASK_ID),
        rope_theta=cfg.get("rope_theta", 10000.0), rms_norm_eps=cfg.get("rms_norm_eps", 1e-5),
        tie_word_embeddings=bool(cfg.get("weight_tying", False)), qkv_bias=bool(cfg.get("include_qkv_bias", False)),
        shifted=False, attention="bidirectional", block_size=32,
        max_position=cfg.get("max_sequence_length", 4096), eos_token_ids=_eos(cfg),
    )


def _from_dream(cfg: dict[str, Any]) -> DiffusionConfig:
    if "mask_token_id" not in cfg:
        raise ModelLoadError("this diffusion LM's config has no mask_token_id: which token is [MASK] is unknown")
    heads = cfg["num_attention_heads"]
    return DiffusionConfig(
        vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"], num_layers=cfg["num_hidden_layers"],
        num_heads=heads, num_kv_heads=cfg.get("num_key_value_heads") or heads,
        intermediate_size=cfg["intermediate_size"], mask_token_id=cfg["mask_token_id"],
        rope_theta=cfg.get("rope_theta", 10000.0), rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        qkv_bias=bool(cfg.get("attention_bias", True)),  # Dream is Qwen2: biased q, k, v
        shifted=bool(cfg.get("dllm_shifted", True)), attention=cfg.get("dllm_attention", "bidirectional"),
        block_size=int(cfg.get("dllm_block_size", 32)), max_position=cfg.get("max_position_embeddings", 4096),
        eos_token_ids=_eos(cfg),
    )
