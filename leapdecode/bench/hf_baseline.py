"""The reference everyone is measured against: Hugging Face transformers `generate()` on the same weights."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from leapdecode.bench.record import Generation

PLD_TOKENS = 10  # transformers' prompt-lookup draft length, as its docs suggest for input-grounded tasks


class HFBaseline:
    """A transformers model loaded from the engine's own checkpoint dir, so both read identical weights."""

    def __init__(self, checkpoint_dir: Path, dtype: torch.dtype, eos_ids: list[int],
                 assistant_dir: Path | None = None) -> None:
        self.model = _load(checkpoint_dir, dtype)
        self.assistant = _load(assistant_dir, dtype) if assistant_dir is not None else None  # for hf-assist
        self.eos_ids = eos_ids

    def generate(self, prompt_ids: list[int], max_new_tokens: int, prompt_lookup: bool = False,
                 assisted: bool = False) -> Generation:
        """Greedy decoding; with prompt_lookup, transformers' own n-gram speculation, with assisted its
        assistant_model speculation on the draft (both still exact greedy)."""
        x = torch.tensor([prompt_ids], dtype=torch.long)  # [1, L]
        extra = self._speculation(prompt_lookup, assisted)
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(
                x,
                attention_mask=torch.ones_like(x),
                do_sample=False,
                max_new_tokens=max_new_tokens,
                eos_token_id=self.eos_ids,
                pad_token_id=self.eos_ids[0],  # batch of one: padding never appears, this only silences a warning
                **extra,
            )
        seconds = time.perf_counter() - start
        ids = out[0, len(prompt_ids) :].tolist()
        finish = "stop" if ids and ids[-1] in self.eos_ids else "length"
        # Plain generate runs one forward per token; PLD's and assisted acceptance are not exposed by transformers.
        return Generation(ids, seconds, None if extra else 1.0, finish)

    def _speculation(self, prompt_lookup: bool, assisted: bool) -> dict[str, Any]:
        if assisted:
            assert self.assistant is not None, "hf-assist needs the baseline loaded with assistant_dir"
            return {"assistant_model": self.assistant}  # transformers' defaults: up to 20 drafts, confidence 0.4
        return {"prompt_lookup_num_tokens": PLD_TOKENS} if prompt_lookup else {}

    def next_logits(self, ids: list[int]) -> Tensor:
        """Logits for the token after `ids`, from one uncached forward, in the model's dtype (its rounding
        step tells a near-tie from a real difference).  # [V]"""
        with torch.inference_mode():
            logits = self.model(torch.tensor([ids], dtype=torch.long), logits_to_keep=1).logits  # [1, 1, V]
        return logits[0, -1]


def _load(checkpoint_dir: Path, dtype: torch.dtype) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(checkpoint_dir, dtype=dtype, local_files_only=True).eval()
