"""Fixed parallelism, the naive lossy baseline: every forward fills the k most confident masked positions
(LLaDA's rule with k tokens per step instead of one). Fewer forwards by k, whatever the text; tokens that
depend on each other are filled from the same forward, which is where the quality goes."""

from __future__ import annotations

from torch import Tensor

from leapdecode.dllm.unmasking import Fill, Unmasker, confidence


class FixedParallel(Unmasker):
    lossless = False

    def __init__(self, k: int = 2) -> None:
        self.k = k

    def propose(self, logits: Tensor, state: Tensor, mask_id: int, room: int) -> list[Fill]:
        c = confidence(logits, state, mask_id)
        return [(p, int(c.tokens[p])) for p in c.order[: self.k]]
