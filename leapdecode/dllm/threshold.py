"""Confidence-threshold parallel decoding (Fast-dLLM, Wu et al. 2025): every forward fills each masked position
whose most likely token has at least `threshold` probability, and always at least the most confident one. When
the model is sure of many positions at once it fills them together; when it is unsure it goes stepwise."""

from __future__ import annotations

from torch import Tensor

from leapdecode.dllm.unmasking import Fill, Unmasker, confidence


class ConfidenceThreshold(Unmasker):
    lossless = False

    def __init__(self, threshold: float = 0.9) -> None:
        self.threshold = threshold

    def propose(self, logits: Tensor, state: Tensor, mask_id: int, room: int) -> list[Fill]:
        c = confidence(logits, state, mask_id)
        sure = [p for p in c.order[1:] if float(c.probs[p]) >= self.threshold]
        return [(p, int(c.tokens[p])) for p in [c.order[0], *sure]]
