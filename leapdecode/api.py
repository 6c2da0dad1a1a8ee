"""The Python API: load once, then generate (or stream) with any method."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from leapdecode.decode.logprobs import MAX_TOP
from leapdecode.decode.run import Run
from leapdecode.drafters import AutoMemory, DrafterResources
from leapdecode.errors import InvalidRequest
from leapdecode.grammar.spec import GrammarSpec, spec_of
from leapdecode.grammar.vocab import GrammarVocab
from leapdecode.heads.head_store import HeadStore
from leapdecode.models.draft_models import DraftModels
from leapdecode.models.loader import load_model
from leapdecode.policy.speculation import SpeculationPolicy
from leapdecode.types import GenerationResult, SamplingParams

Prompt = str | list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class GenerateOptions:
    """One request's settings beyond the prompt, validated on construction."""

    method: str = "none"
    max_new_tokens: int = 128
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    draft_length: int = 6
    max_draft_length: int = 12
    drafter_options: dict[str, Any] = field(default_factory=dict)
    constraint: GrammarSpec | None = None  # structured output: what the text must match
    logprobs: int | None = None  # each token's log-probability and this many alternatives (0-20); None: off

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise InvalidRequest(f"max_new_tokens must be a positive integer, got {self.max_new_tokens}")
        if any(not s for s in self.stop):
            raise InvalidRequest("stop strings must not be empty")
        if self.logprobs is not None and not (isinstance(self.logprobs, int) and 0 <= self.logprobs <= MAX_TOP):
            raise InvalidRequest(f"logprobs must be an integer from 0 to {MAX_TOP} (alternatives per token), "
                                 f"got {self.logprobs!r}")


class LLM:
    """A loaded model. `generate` returns text, token ids and speed stats; `stream` yields text pieces."""

    def __new__(cls, model: str = "smollm2-135m", dtype: str = "auto", threads: int | None = None,
                backend: str = "auto") -> Any:
        """A diffusion LM's checkpoint (or known name) gives a DiffusionLLM, with the same generate()."""
        from leapdecode.dllm.model import is_dllm

        if cls is LLM and is_dllm(model):
            from leapdecode.dllm.llm import DiffusionLLM

            return DiffusionLLM(model, dtype=dtype, threads=threads)
        return super().__new__(cls)

    is_diffusion = False

    def __init__(self, model: str = "smollm2-135m", dtype: str = "auto", threads: int | None = None,
                 backend: str = "auto") -> None:
        if threads:
            torch.set_num_threads(threads)
        loaded = load_model(model, dtype=dtype, backend=backend)
        self.network, self.tokenizer = loaded.network, loaded.tokenizer
        self.checkpoint_dir: Path = loaded.checkpoint_dir
        self.backend = loaded.backend
        self.precision = loaded.precision  # what dtype="auto" chose; int precisions compute in bfloat16
        self.dtype: torch.dtype = self.network.dtype
        self.eos_ids = _eos_ids(loaded.checkpoint_dir, self.tokenizer)
        self.drafts = DraftModels(model, self.tokenizer, self.precision, backend)  # method "draft": loaded on first use
        self.heads = HeadStore(self.network, self.checkpoint_dir, model)  # method "eagle": a trained head
        self.policy = SpeculationPolicy()  # forward costs and the gate, shared by every request of this model
        self.drafter_resources = DrafterResources(
            network=self.network, tokenizer=self.tokenizer, load_model=self.drafts.load, load_self=self.drafts.load_self,
            load_head=self.heads.load, model_id=f"{self.checkpoint_dir.resolve()}@{self.precision}",
            auto_memory=AutoMemory(step=self.policy.forward))  # what auto measured on earlier requests
        self._grammar_vocab: GrammarVocab | None = None

    @property
    def grammar_vocab(self) -> GrammarVocab:
        """The vocabulary as structured output's matcher reads it, built on first use (about a second)."""
        if self._grammar_vocab is None:
            self._grammar_vocab = GrammarVocab(self.tokenizer, self.eos_ids, self.network.vocab_size)
        return self._grammar_vocab

    def encode(self, prompt: Prompt, raw: bool = False, tools: list[dict[str, Any]] | None = None) -> list[int]:
        """Token ids of a prompt: the chat template is applied unless raw (messages always get it), with the
        tools where given (OpenAI's format, for a template that carries them)."""
        return encode_prompt(self.tokenizer, prompt, raw, tools)

    @property
    def template_has_tools(self) -> bool:
        """Whether the chat template carries tools itself (Qwen2.5's does, SmolLM2's does not)."""
        return "tools" in (getattr(self.tokenizer, "chat_template", None) or "")

    def generate(self, prompt: Prompt | None = None, *, prompt_ids: list[int] | None = None, raw: bool = False,
                 **options: Any) -> GenerationResult:
        """options: method, max_new_tokens, temperature, top_k, top_p, seed, stop, draft_length, ...; one of
        json_schema (a dict or its JSON text), regex, grammar (Lark or GBNF text) or response_format (the
        OpenAI API's) constrains the output."""
        run = self._start(prompt, prompt_ids, raw, options)
        for _ in run.steps():
            pass
        return run.result()

    def stream(self, prompt: Prompt | None = None, *, prompt_ids: list[int] | None = None, raw: bool = False,
               **options: Any) -> Iterator[str]:
        """Text pieces as they are accepted. The final stats are on the iterator's `.result()` afterwards."""
        return self._start(prompt, prompt_ids, raw, options)

    def _start(self, prompt: Prompt | None, prompt_ids: list[int] | None, raw: bool, options: dict[str, Any]) -> Run:
        ids = list(prompt_ids) if prompt_ids is not None else self.encode(_required(prompt), raw)
        opts = parse_options(options)
        self._check_fits(len(ids), opts.max_new_tokens)
        return Run(self, ids, opts)

    def _check_fits(self, prompt_len: int, max_new_tokens: int) -> None:
        ctx = self.network.max_context
        if prompt_len == 0:
            raise InvalidRequest("the prompt has no tokens")
        if prompt_len >= ctx:
            raise InvalidRequest(f"the prompt has {prompt_len} tokens; the model's context window is {ctx}")
        if prompt_len + max_new_tokens > ctx:
            raise InvalidRequest(f"prompt ({prompt_len} tokens) + max_new_tokens ({max_new_tokens}) "
                                 f"exceeds the context window of {ctx}")


def encode_prompt(tokenizer: Any, prompt: Prompt, raw: bool = False, tools: list[dict[str, Any]] | None = None) -> list[int]:
    """A prompt's token ids: the chat template applied unless raw (messages always get it)."""
    if isinstance(prompt, str) and not prompt.strip():
        raise InvalidRequest("the prompt is empty")
    if isinstance(prompt, str) and raw:
        return tokenizer.encode(prompt)
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    if not messages:
        raise InvalidRequest("the message list is empty")
    text = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False)
    return tokenizer.encode(text, add_special_tokens=False)


def parse_options(options: dict[str, Any]) -> GenerateOptions:
    """Keyword options of generate() -> validated GenerateOptions (unknown keys go to the drafter)."""
    options = dict(options)
    given = {k: options.pop(k, None) for k in ("temperature", "top_k", "top_p", "seed")}
    sampling = SamplingParams(**{k: v for k, v in given.items() if v is not None})  # None: the default
    stop = options.pop("stop", None) or ()
    stop = (stop,) if isinstance(stop, str) else tuple(stop)
    constraint = options.pop("constraint", None) or spec_of(
        **{k: options.pop(k, None) for k in ("json_schema", "regex", "grammar", "response_format")})
    known = {f for f in GenerateOptions.__dataclass_fields__} - {"sampling", "stop", "drafter_options", "constraint"}
    drafter_options = {k: options.pop(k) for k in list(options) if k not in known}
    return GenerateOptions(sampling=sampling, stop=stop, drafter_options=drafter_options, constraint=constraint,
                           **options)


def _required(prompt: Prompt | None) -> Prompt:
    if prompt is None:
        raise InvalidRequest("give a prompt or prompt_ids")
    return prompt


def _eos_ids(ckpt: Path, tokenizer: Any) -> set[int]:
    """End-of-sequence ids as transformers' generate() sees them: generation_config first."""
    from transformers import GenerationConfig

    ids: set[int] = set()
    try:
        eos = GenerationConfig.from_pretrained(ckpt).eos_token_id
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    except OSError:
        pass
    if not ids and tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids
