"""The bench's diffusion-LM side: which methods go with which kind of model, the AR model benchmarked beside
a dLLM (ar:METHOD), and answers checked against parallel-tasks' expected ones."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from leapdecode.bench.config import AR_PREFIX, BenchConfig, base_method
from leapdecode.bench.contenders import GenerateFn, build_contenders
from leapdecode.bench.prompts import correct
from leapdecode.bench.record import RunRecord
from leapdecode.bench.runner import EncodedPrompt
from leapdecode.bench.structured import judge
from leapdecode.dllm.config import DLLM_METHODS, DLLM_ONLY, is_variant
from leapdecode.errors import LeapError


def check_model_kind(cfg: BenchConfig, diffusion: bool) -> None:
    """A diffusion LM runs its methods (stepwise, ssd, fixed, threshold, prophet, auto; each with a knob:
    threshold@0.8) and ar:METHOD; an AR model none of the dLLM-only ones, variants or ar:."""
    if diffusion:
        wrong = [m for m in cfg.methods if base_method(m) not in DLLM_METHODS and not m.startswith(AR_PREFIX)]
        if wrong:
            raise LeapError(f"{cfg.model} is a diffusion LM: methods {','.join(wrong)} are for autoregressive models "
                            f"(use {', '.join(DLLM_METHODS)}, METHOD@VALUE+CACHE, or ar:METHOD to run an AR model beside it)")
        return
    wrong = [m for m in cfg.methods if base_method(m) in DLLM_ONLY or is_variant(m) or m.startswith(AR_PREFIX)]
    if wrong or cfg.block_size is not None:
        raise LeapError(f"{cfg.model} is autoregressive: {','.join(wrong) or '--block-size'} go with a diffusion LM")


def ar_contenders(cfg: BenchConfig, dllm: Any) -> dict[str, GenerateFn]:
    """ar:METHOD -> METHOD on the AR model, in this process like every engine method."""
    if not cfg.ar_methods:
        return {}
    from leapdecode.api import LLM
    from leapdecode.dllm.model import KNOWN_DLLMS

    ar = LLM(model=cfg.ar_model or KNOWN_DLLMS.get(cfg.model, "smollm2-135m"), dtype=cfg.dtype)
    if ar.is_diffusion:
        raise LeapError(f"--ar-model {cfg.ar_model} is a diffusion LM; ar:METHOD needs an autoregressive one")
    ar_vocab, dllm_vocab = ar.tokenizer.get_vocab(), dllm.tokenizer.get_vocab()
    if any(dllm_vocab.get(k) != v for k, v in ar_vocab.items()):  # the dLLM's adds its mask token, nothing else
        raise LeapError("the AR model's tokenizer differs from the diffusion LM's: prompts would not be the same ids")
    names = tuple(m.removeprefix(AR_PREFIX) for m in cfg.ar_methods)
    built = build_contenders(ar, None, names, cfg.max_new_tokens)
    return {AR_PREFIX + m: fn for m, fn in built.items()}


def score(records: list[RunRecord], prompts: list[EncodedPrompt], tokenizer: Any) -> list[RunRecord]:
    """Each record with `correct` set where its prompt has a checkable answer, and a structured prompt's
    with its JSON and schema checks."""
    by_id = {p.prompt.id: p.prompt for p in prompts}
    out = []
    for r in records:
        prompt = by_id[r.prompt_id]
        checked = prompt.answer is not None or prompt.schema is not None or prompt.tools
        text = tokenizer.decode(r.token_ids, skip_special_tokens=True) if checked else ""
        valid, follows, answer = judge(prompt, text)
        out.append(replace(r, correct=correct(prompt, answer), valid_json=valid, schema_valid=follows))
    return out
