"""The baselines every speedup is measured against, run for real: transformers' generate() plain (hf), with
its prompt lookup (hf-pld) and with an assistant model (hf-assist), each in the bench's own worker process,
started and closed by the bench's own code. All three are greedy and lossless, so each answer must equal
transformers' greedy generate() here, token for token, and the runner's records must be sane."""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

import pytest
import torch

from leapdecode.bench import BenchConfig
from leapdecode.bench.baselines import start_baselines
from leapdecode.bench.contenders import build_contenders
from leapdecode.bench.prompts import BenchPrompt
from leapdecode.bench.runner import EncodedPrompt, run_interleaved
from leapdecode.models.loader import resolve_checkpoint
from tests.conftest import PROMPTS
from tests.test_draft_model import truncated_checkpoint

NEW_TOKENS = 12
HF = ("hf", "hf-pld", "hf-assist")


@pytest.fixture(scope="module")
def assistant(llm, tmp_path_factory) -> Path:
    """hf-assist's draft: the default model's first 8 of 30 layers, often wrong, so assisted decoding both
    keeps and discards drafts."""
    return truncated_checkpoint(llm.checkpoint_dir, tmp_path_factory.mktemp("assistant") / "short", 8)


def test_hf_baselines_equal_transformers_greedy_with_sane_records(llm, hf_model, assistant):
    cfg = BenchConfig(methods=(*HF, "none"), draft_model=str(assistant), max_new_tokens=NEW_TOKENS, dtype="float32",
                      threads=torch.get_num_threads())
    prompts = [EncodedPrompt(BenchPrompt(f"p{i}", "test", PROMPTS[i]), llm.encode(PROMPTS[i])) for i in (2, 7)]
    with ExitStack() as stack:
        baselines = start_baselines(cfg, stack, sorted(llm.eos_ids), (resolve_checkpoint(cfg.model), torch.float32))
        worker = baselines.hf.pid
        assert worker != os.getpid()
        records = run_interleaved(prompts, build_contenders(llm, baselines.hf, cfg.methods, cfg.max_new_tokens))
    assert not Path(f"/proc/{worker}").exists()  # the bench closed its worker

    with torch.inference_mode():
        refs = {p.prompt.id: hf_model.generate(torch.tensor([p.ids]), max_new_tokens=NEW_TOKENS, do_sample=False)
                [0, len(p.ids):].tolist() for p in prompts}
    assert sorted((r.method, r.prompt_id) for r in records) == sorted((m, p.prompt.id) for m in cfg.methods
                                                                      for p in prompts)
    for r in records:
        ref = refs[r.prompt_id]
        assert r.token_ids == ref, f"{r.method} on {r.prompt_id}"
        assert r.finish_reason == ("stop" if ref[-1] in llm.eos_ids else "length")
        assert r.prompt_tokens == len(next(p.ids for p in prompts if p.prompt.id == r.prompt_id))
        assert r.new_tokens == len(ref) and 0.01 < r.seconds < 120 and r.tokens_per_s > 0
        if r.method in HF:
            assert r.pid == worker and r.peak_rss_mb > 300  # the worker's own memory: it holds the models
            assert r.mean_accepted == (1.0 if r.method == "hf" else None)  # transformers reports no acceptance
        else:
            assert r.pid == os.getpid() and r.mean_accepted >= 1.0
