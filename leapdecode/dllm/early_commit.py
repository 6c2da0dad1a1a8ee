"""Early commit (Prophet: "Diffusion Language Models Know the Answer Before Decoding", 2025): keep refining
with an inner rule, and once the answer has settled, commit every masked position of the block at once.

Settled: the mean gap between the top two log-probabilities over the block's masked positions reaches a
threshold that falls as the block fills (Prophet's staged schedule: strict while most of the block is still
masked, lenient near its end). The inner rule is stepwise decoding, or any other Unmasker."""

from __future__ import annotations

import torch
from torch import Tensor

from leapdecode.dllm.unmasking import Fill, Stepwise, Unmasker, confidence

STAGES = ((1 / 3, 1.5), (2 / 3, 1.0), (1.0, 0.5))  # (share of the block filled, at most; factor on the gap)


class EarlyCommit(Unmasker):
    lossless = False

    def __init__(self, gap: float = 5.0, inner: Unmasker | None = None) -> None:
        self.gap, self.inner = gap, inner or Stepwise()

    def propose(self, logits: Tensor, state: Tensor, mask_id: int, room: int) -> list[Fill]:
        masked, self.mask_id = state == mask_id, mask_id
        if self._settled(logits, masked):
            c = confidence(logits, state, mask_id)
            return [(p, int(c.tokens[p])) for p in c.order]
        return self.inner.propose(logits, state, mask_id, room)

    def _settled(self, logits: Tensor, masked: Tensor) -> bool:
        filled = 1.0 - float(masked.float().mean())
        factor = next(f for share, f in STAGES if filled <= share)
        rows = logits[masked].float().index_fill(-1, torch.tensor([self.mask_id]), float("-inf"))
        top2 = torch.log_softmax(rows, dim=-1).topk(2, dim=-1).values
        return float((top2[:, 0] - top2[:, 1]).mean()) >= self.gap * factor
