"""A dLLM method name and its options -> the Unmasker that decodes with it.

Lossless (output identical to stepwise decoding): stepwise, ssd, and auto at quality 1 (the default).
Lossy (say so; the bench measures the cost): fixed, threshold, prophet, filter, and auto below quality 1
(early commit over the learned filter where the model has one, else over confidence-threshold filling).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from leapdecode.dllm.config import DLLM_LOSSY, DLLM_METHODS
from leapdecode.dllm.early_commit import EarlyCommit
from leapdecode.dllm.end_of_text import EndOfText
from leapdecode.dllm.fixed import FixedParallel
from leapdecode.dllm.learned_filter import LearnedFilter
from leapdecode.dllm.threshold import ConfidenceThreshold
from leapdecode.dllm.unmasking import SelfSpeculative, Stepwise, Unmasker
from leapdecode.errors import InvalidRequest


class Learned(Protocol):
    """A model's learned filter, trained or not (DiffusionLLM provides it)."""

    def ready(self) -> bool: ...

    def unmasker(self, threshold: float) -> LearnedFilter: ...


@dataclass(frozen=True, slots=True)
class DllmOptions:
    draft_length: int = 4  # ssd: fills guessed per step
    parallel: int = 2  # fixed: fills per forward
    confidence: float = 0.9  # threshold: fill every position at least this sure
    commit_gap: float = 5.0  # prophet: mean top-2 log-probability gap that commits the rest of the block
    filter_threshold: float = 0.9  # filter: fill where the learned filter calls the prediction final this surely
    quality: float = 1.0  # auto: 1 = lossless; below, faster and possibly different (see make_unmasker)
    end_of_text: float = 0.9  # lossy methods: pad the rest once an end token is this sure (0: off)
    adaptive_blocks: bool = False  # block sizes that follow the text (adaptive_block.py); lossy

    def check(self) -> None:
        if self.draft_length < 1 or self.parallel < 1:
            raise InvalidRequest("draft_length and parallel must be >= 1")
        if not 0.0 <= self.end_of_text <= 1.0:
            raise InvalidRequest(f"end_of_text must be in [0, 1], got {self.end_of_text}")
        for name in ("confidence", "filter_threshold"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise InvalidRequest(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if self.commit_gap <= 0:
            raise InvalidRequest(f"commit_gap must be > 0, got {self.commit_gap}")
        if not 0.0 < self.quality <= 1.0:
            raise InvalidRequest(f"quality must be in (0, 1], got {self.quality}")


def is_lossless(method: str, options: DllmOptions) -> bool:
    lossy_auto = method == "auto" and options.quality < 1.0
    return method not in DLLM_LOSSY and not lossy_auto and not options.adaptive_blocks


def make_unmasker(method: str, o: DllmOptions, eos_ids: frozenset[int] = frozenset(),
                  learned: Learned | None = None) -> Unmasker:
    """learned: the model's trained filter, if it has one (the filter method needs it; auto below quality 1
    fills by it when there is one, by confidence otherwise). A lossy method also fills the
    padding after a sure end of text at once (end_of_text > 0 and end tokens known)."""
    if method not in DLLM_METHODS:
        raise InvalidRequest(f"method {method!r} is not for a diffusion LM; choose from {', '.join(DLLM_METHODS)}")
    unmasker = _base(method, o, learned)
    if unmasker.lossless or not o.end_of_text or not eos_ids:
        return unmasker
    return EndOfText(unmasker, eos_ids, o.end_of_text)


def _base(method: str, o: DllmOptions, learned: Learned | None) -> Unmasker:
    if method == "stepwise":
        return Stepwise()
    if method == "ssd":
        return SelfSpeculative(o.draft_length)
    if method == "fixed":
        return FixedParallel(o.parallel)
    if method == "threshold":
        return ConfidenceThreshold(o.confidence)
    if method == "prophet":
        return EarlyCommit(o.commit_gap)
    if method == "filter":
        if learned is None or not learned.ready():
            raise InvalidRequest("method filter needs the filter trained for this model: run `leapdecode "
                                 "train-filter --model MODEL` (a few minutes)")
        return learned.unmasker(o.filter_threshold)
    if o.quality >= 1.0:  # auto, lossless: self-speculation whose draft length follows acceptance
        return SelfSpeculative(2, adaptive=True, threshold=0.5)
    ready = learned is not None and learned.ready()
    inner = learned.unmasker(o.quality) if ready else ConfidenceThreshold(o.quality)  # type: ignore[union-attr]
    return EarlyCommit(o.commit_gap, inner=inner)
