"""The outside baselines one bench run needs, each started in a process of its own and closed with the run.

transformers (hf, hf-pld, hf-assist: one worker holds the model and the assistant) and llama-cpp-python
(llamacpp, llamacpp-pld: one worker each, as each is its own llama.cpp context) run in spawned workers
(`worker.py`); llama.cpp's own llama-server (llamacpp-server, llamacpp-draft) is a process by itself
(`llama_server.py`). None of them shares a thread pool with the engine.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from leapdecode.bench.config import HF_METHODS, LLAMA_SERVER_METHODS, LLAMACPP_METHODS, BenchConfig
from leapdecode.bench.hf_baseline import HFBaseline
from leapdecode.bench.llama_server import LlamaServer, ServerOptions
from leapdecode.bench.llamacpp_baseline import LlamaCppBaseline, gguf_file
from leapdecode.bench.worker import Worker

# llamacpp-lookup: llama.cpp's n-gram cache speculation (what its llama-lookup example runs), in llama-server
LOOKUP_SPEC = "ngram-cache"


@dataclass(slots=True)
class Baselines:
    hf: Worker | None = None  # an HFBaseline, in its worker
    llamacpp: dict[str, Any] = field(default_factory=dict)  # method -> a Worker (LlamaCppBaseline) or LlamaServer
    info: dict[str, Any] = field(default_factory=dict)  # what the report records about the runtimes that ran


def start_baselines(
    cfg: BenchConfig, stack: ExitStack, eos_ids: list[int], hf_weights: tuple[Path, torch.dtype] | None
) -> Baselines:
    """Every baseline cfg.methods names, started (models loaded) and registered on `stack` to be closed.
    hf_weights: the checkpoint dir and dtype transformers loads, when an hf method runs."""
    out = Baselines()
    if hf_weights is not None:
        assistant = _assistant(cfg)
        args = (*hf_weights, eos_ids, assistant)
        out.hf = stack.enter_context(Worker("hf", HFBaseline, args, cfg.threads))
    gguf = gguf_file(cfg.model) if any(m in LLAMACPP_METHODS + LLAMA_SERVER_METHODS for m in cfg.methods) else None
    for m in (m for m in cfg.methods if m in LLAMACPP_METHODS):
        args = (gguf, cfg.threads, eos_ids, m == "llamacpp-pld")
        out.llamacpp[m] = stack.enter_context(Worker(m, LlamaCppBaseline, args, cfg.threads))
        out.info |= out.llamacpp[m].call("runtime_info")
    for m in (m for m in cfg.methods if m in LLAMA_SERVER_METHODS):
        out.llamacpp[m] = stack.enter_context(LlamaServer(gguf, eos_ids, _server_options(cfg, m)))
        out.info |= out.llamacpp[m].runtime_info()
    return out


def _assistant(cfg: BenchConfig) -> Path | None:
    from leapdecode.models.loader import resolve_checkpoint

    return resolve_checkpoint(cfg.draft_model) if "hf-assist" in cfg.methods and cfg.draft_model else None


def _server_options(cfg: BenchConfig, method: str) -> ServerOptions:
    if method == "llamacpp-lookup":
        return ServerOptions(threads=cfg.threads, spec_type=LOOKUP_SPEC)
    if method != "llamacpp-draft":
        return ServerOptions(threads=cfg.threads)
    assert cfg.draft_model is not None, "BenchConfig checks llamacpp-draft has --draft-model"
    return ServerOptions(
        threads=cfg.threads,
        draft=gguf_file(cfg.draft_model),
        draft_max=cfg.llamacpp_draft_max,
        draft_min=cfg.llamacpp_draft_min,
    )


def needs_hf(cfg: BenchConfig) -> bool:
    return any(m in HF_METHODS for m in cfg.methods)
