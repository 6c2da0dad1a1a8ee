"""The Python API for diffusion LMs: `LLM(model=<dLLM>)` returns one of these; generate() as for AR models."""

from __future__ import annotations

import time
from typing import Any

import torch

from leapdecode.dllm.canvas import BlockCanvas, FullCanvas
from leapdecode.dllm.config import DLLM_METHODS
from leapdecode.dllm.decoder import Decoding
from leapdecode.dllm.model import load_dllm
from leapdecode.dllm.unmasking import SelfSpeculative, Stepwise, Unmasker
from leapdecode.errors import InvalidRequest
from leapdecode.types import GenerationResult, GenerationStats


class DiffusionLLM:
    """A loaded masked-diffusion LM. generate(method=stepwise|ssd|auto, max_new_tokens, block_size, ...)."""

    is_diffusion = True

    def __init__(self, model: str, dtype: str = "auto", threads: int | None = None) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.model = load_dllm(model, dtype)
        self.network, self.tokenizer, self.config = self.model.network, self.model.tokenizer, self.model.config
        self.precision = self.model.precision
        self.checkpoint_dir = self.model.path
        self.eos_ids = set(self.config.eos_token_ids) or {self.tokenizer.eos_token_id}

    def encode(self, prompt: str | list[dict[str, str]], raw: bool = False) -> list[int]:
        from leapdecode.api import encode_prompt

        return encode_prompt(self.tokenizer, prompt, raw)

    def generate(self, prompt: str | list[dict[str, str]] | None = None, *, prompt_ids: list[int] | None = None,
                 raw: bool = False, method: str = "auto", max_new_tokens: int = 128, block_size: int | None = None,
                 draft_length: int = 4, temperature: float = 0.0, **unknown: Any) -> GenerationResult:
        t0 = time.perf_counter()
        if prompt_ids is None and prompt is None:
            raise InvalidRequest("give a prompt or prompt_ids")
        ids = list(prompt_ids) if prompt_ids is not None else self.encode(prompt, raw)  # type: ignore[arg-type]
        block = block_size or self.config.block_size
        self._check(method, ids, max_new_tokens, block, draft_length, temperature, unknown)
        canvas_type = BlockCanvas if self.config.attention == "block_causal" else FullCanvas
        stats = GenerationStats()
        canvas = canvas_type(self.network, self.config, ids, block, max_new_tokens)
        stats.setup_seconds = time.perf_counter() - t0
        decoding = Decoding(canvas, self._unmasker(method, draft_length), self.config.mask_token_id,
                            frozenset(self.eos_ids), stats)
        answer = decoding.run(max_new_tokens // block)
        stats.new_tokens, stats.seconds = len(answer), time.perf_counter() - t0
        ended = len(answer) < max_new_tokens
        return GenerationResult(self.tokenizer.decode(answer, skip_special_tokens=True), answer,
                                "stop" if ended else "length", stats)

    def _unmasker(self, method: str, draft_length: int) -> Unmasker:
        if method == "stepwise":
            return Stepwise()
        if method == "ssd":
            return SelfSpeculative(draft_length)
        return SelfSpeculative(2, adaptive=True, threshold=0.5)

    def _check(self, method: str, ids: list[int], max_new: int, block: int, draft_length: int, temperature: float,
               unknown: dict[str, Any]) -> None:
        if method not in DLLM_METHODS:
            raise InvalidRequest(f"method {method!r} is not for a diffusion LM; choose from {', '.join(DLLM_METHODS)}")
        if unknown:
            raise InvalidRequest(f"option(s) {', '.join(sorted(unknown))} do not apply to a diffusion LM")
        if temperature:
            raise InvalidRequest("a diffusion LM decodes greedily here (temperature 0); sampling is not offered")
        if not isinstance(max_new, int) or max_new < 1 or not isinstance(block, int) or block < 1:
            raise InvalidRequest("max_new_tokens and block_size must be positive integers")
        if max_new % block:
            raise InvalidRequest(f"block_size {block} does not divide max_new_tokens {max_new}: "
                                 f"use a multiple, e.g. {max_new + (-max_new % block)}")
        if draft_length < 1:
            raise InvalidRequest(f"draft_length must be >= 1, got {draft_length}")
        if method != "stepwise" and not self.model.row_invariant:
            raise InvalidRequest(f"method {method} verifies several states in one forward, which is exact only at "
                                 f"a row-invariant precision (bfloat16, int8); this model runs {self.precision}")
        if not ids:
            raise InvalidRequest("the prompt has no tokens")
        if len(ids) + max_new > self.config.max_position:
            raise InvalidRequest(f"prompt ({len(ids)} tokens) + max_new_tokens ({max_new}) exceeds the context "
                                 f"window of {self.config.max_position}")
