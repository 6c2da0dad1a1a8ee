"""End-of-text prediction (Learn2PD's EoTP), for lossy methods: once the model is sure the answer ends at a
masked position, fill it and every masked position after it with that end token in the same step, instead of
spending a forward on each padding position (stepwise decoding often fills them first, being surest of them).
The text ends there either way; what can differ is what the positions before it see meanwhile."""

from __future__ import annotations

from torch import Tensor

from leapdecode.dllm.unmasking import Fill, Unmasker, confidence


class EndOfText(Unmasker):
    lossless = False

    def __init__(self, inner: Unmasker, eos_ids: frozenset[int], threshold: float = 0.9) -> None:
        self.inner, self.eos_ids, self.threshold = inner, eos_ids, threshold

    def propose(self, logits: Tensor, state: Tensor, mask_id: int, room: int) -> list[Fill]:
        fills = self.inner.propose(logits, state, mask_id, room)
        end = self._sure_end(logits, state, mask_id, fills)
        if end is None:
            return fills
        at, token = end
        taken = {p for p, _ in fills}
        masked = (state == mask_id).nonzero().flatten().tolist()
        return fills + [(p, token) for p in masked if p >= at and p not in taken]

    def _sure_end(self, logits: Tensor, state: Tensor, mask_id: int, fills: list[Fill]) -> Fill | None:
        """(position, end token): the first this step fills with an end token or the model is this sure of."""
        c = confidence(logits, state, mask_id)
        sure = [(p, int(c.tokens[p])) for p in c.order if float(c.probs[p]) >= self.threshold]
        ends = [(p, t) for p, t in fills + sure if t in self.eos_ids]
        return min(ends) if ends else None

    def verified(self, proposed: int, accepted: int) -> None:
        self.inner.verified(proposed, accepted)
