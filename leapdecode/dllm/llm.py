"""The Python API for diffusion LMs: `LLM(model=<dLLM>)` returns one of these; generate() as for AR models."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from leapdecode.dllm.adaptive_block import BlockSizer, closing_tokens
from leapdecode.dllm.canvas import BlockCanvas, FullCanvas
from leapdecode.dllm.config import DLLM_CACHES
from leapdecode.dllm.decoder import Decoding
from leapdecode.dllm.filter_training import TrainedFilter
from leapdecode.dllm.methods import DllmOptions, is_lossless, make_unmasker
from leapdecode.dllm.model import load_dllm
from leapdecode.dllm.unmasking import Unmasker
from leapdecode.errors import InvalidRequest
from leapdecode.types import GenerationResult, GenerationStats


@dataclass(frozen=True, slots=True)
class _Plan:
    block: int
    max_new: int
    unmasker: Unmasker
    cache: str
    eos: frozenset[int]  # the tokens that end the answer (none with ignore_eos)
    adaptive: bool  # block sizes that follow the text, block the default size


class DiffusionLLM:
    """A loaded masked-diffusion LM. generate(method=stepwise|ssd|fixed|threshold|prophet|auto, max_new_tokens,
    block_size, and the methods' options: draft_length, parallel, confidence, commit_gap, filter_threshold,
    quality, end_of_text, adaptive_blocks; cache;
    on_block(tokens) -> bool, called with each finished block, False to stop there: the server streams and
    cancels with it)."""

    is_diffusion = True
    template_has_tools = False  # tools are refused for a diffusion LM: its answer is not left to right

    def __init__(self, model: str, dtype: str = "auto", threads: int | None = None) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.model = load_dllm(model, dtype)
        self.network, self.tokenizer, self.config = self.model.network, self.model.tokenizer, self.model.config
        self.precision = self.model.precision
        self.checkpoint_dir = self.model.path
        self.eos_ids = set(self.config.eos_token_ids) or {self.tokenizer.eos_token_id}
        self.learned = TrainedFilter(self.checkpoint_dir, frozenset(self.eos_ids))  # for methods filter and auto
        self._closers: frozenset[int] | None = None  # the tokens that end an adaptive block, found on first use

    def encode(self, prompt: str | list[dict[str, str]], raw: bool = False, tools: Any = None) -> list[int]:
        from leapdecode.api import encode_prompt

        return encode_prompt(self.tokenizer, prompt, raw, tools)

    def generate(self, prompt: str | list[dict[str, str]] | None = None, *, prompt_ids: list[int] | None = None,
                 raw: bool = False, on_block: Callable[[list[int]], bool] | None = None,
                 **request: Any) -> GenerationResult:
        t0 = time.perf_counter()
        if prompt_ids is None and prompt is None:
            raise InvalidRequest("give a prompt or prompt_ids")
        ids = list(prompt_ids) if prompt_ids is not None else self.encode(prompt, raw)  # type: ignore[arg-type]
        plan = self._plan(ids, **request)
        stats = GenerationStats()
        sizer = BlockSizer(self._closing_tokens(), plan.block) if plan.adaptive else None
        canvas = self.canvas_type(self.network, self.config, ids, sizer.window if sizer else plan.block, plan.max_new,
                                  plan.cache)
        stats.setup_seconds = time.perf_counter() - t0
        decoding = Decoding(canvas, plan.unmasker, self.config.mask_token_id, plan.eos, stats, on_block, sizer)
        answer = decoding.run(plan.max_new)
        stats.new_tokens, stats.seconds = len(answer), time.perf_counter() - t0
        ended = len(answer) < plan.max_new
        return GenerationResult(self.tokenizer.decode(answer, skip_special_tokens=True), answer,
                                "stop" if ended else "length", stats)

    def validate(self, prompt_ids: list[int], **request: Any) -> None:
        """Every check generate() makes before decoding, without decoding (the server's 400s)."""
        self._plan(list(prompt_ids), **request)

    def _plan(self, ids: list[int], method: str = "auto", max_new_tokens: int = 128, block_size: int | None = None,
              temperature: float = 0.0, draft_length: int = 4, parallel: int = 2, confidence: float = 0.9,
              commit_gap: float = 5.0, filter_threshold: float = 0.9, quality: float = 1.0, end_of_text: float = 0.9,
              adaptive_blocks: bool = False, cache: str | None = None, unmasker: Unmasker | None = None,
              ignore_eos: bool = False, **unknown: Any) -> _Plan:
        """unmasker: decode with this one instead of the method's (the filter's training records with it);
        ignore_eos: decode every position, past the end token too (speed measurements, as vLLM's)."""
        block = block_size or self.config.block_size
        options = DllmOptions(draft_length, parallel, confidence, commit_gap, filter_threshold, quality, end_of_text,
                              adaptive_blocks)
        eos = frozenset() if ignore_eos else frozenset(self.eos_ids)
        unmasker = unmasker or make_unmasker(method, options, eos, self.learned)
        self._check(method, options, ids, max_new_tokens, block, temperature, unknown)
        if cache is not None and cache not in DLLM_CACHES:
            raise InvalidRequest(f"cache {cache!r}: choose from {', '.join(DLLM_CACHES)}")
        if adaptive_blocks and self.config.attention != "block_causal":
            raise InvalidRequest("adaptive blocks need a block-causal diffusion LM; this one attends both ways")
        return _Plan(block, max_new_tokens, unmasker, cache or self.canvas_type.exact_caches[-1], eos, adaptive_blocks)

    def _closing_tokens(self) -> frozenset[int]:
        if self._closers is None:
            self._closers = closing_tokens(self.tokenizer)
        return self._closers

    @property
    def canvas_type(self) -> type[BlockCanvas] | type[FullCanvas]:
        return BlockCanvas if self.config.attention == "block_causal" else FullCanvas

    def lossless(self, method: str, options: DllmOptions, cache: str | None = None) -> bool:
        """Whether this method and cache give stepwise decoding's output (with its exact cache)."""
        return is_lossless(method, options) and (cache is None or cache in self.canvas_type.exact_caches)

    def _check(self, method: str, options: DllmOptions, ids: list[int], max_new: int, block: int,
               temperature: float, unknown: dict[str, Any]) -> None:
        options.check()
        if unknown:
            raise InvalidRequest(f"option(s) {', '.join(sorted(unknown))} do not apply to a diffusion LM")
        if temperature:
            raise InvalidRequest("a diffusion LM decodes greedily here (temperature 0); sampling is not offered")
        if not isinstance(max_new, int) or max_new < 1 or not isinstance(block, int) or block < 1:
            raise InvalidRequest("max_new_tokens and block_size must be positive integers")
        if max_new % block and not options.adaptive_blocks:
            raise InvalidRequest(f"block_size {block} does not divide max_new_tokens {max_new}: "
                                 f"use a multiple, e.g. {max_new + (-max_new % block)}")
        verifies = method in ("ssd", "auto") and is_lossless(method, options)
        if verifies and not self.model.row_invariant:
            raise InvalidRequest(f"method {method} verifies several states in one forward, which is exact only at "
                                 f"a row-invariant precision (bfloat16, int8); this model runs {self.precision}")
        if not ids:
            raise InvalidRequest("the prompt has no tokens")
        if len(ids) + max_new > self.config.max_position:
            raise InvalidRequest(f"prompt ({len(ids)} tokens) + max_new_tokens ({max_new}) exceeds the context "
                                 f"window of {self.config.max_position}")
