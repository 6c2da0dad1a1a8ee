"""Self-speculation by layer skipping (Draft&Verify, SWIFT): the target drafts with a subset of its own layers.

No second model and no training: the draft runs the kept layers over the target's own KV cache. Slots
[0, cache.length) of a kept layer were written by the full model, which is what the kept layer would see
in the full model too; the draft's own tokens go to slots from cache.length on, which the verify forward
overwrites before anything reads them, so the cache needs no copy and no rollback beyond its length.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

from leapdecode.drafters.skip_layers import SkipLayers
from leapdecode.errors import InvalidRequest
from leapdecode.types import Draft, SeqView


class LayeredLM(Protocol):
    """What layer skipping needs of a network beyond models/base.py's CausalLM."""

    num_layers: int

    def forward(self, tokens: Tensor, start: int, cache: Any, *, layers: Sequence[int] | None = None) -> Tensor: ...


class LayerSkipDrafter:
    """Greedy chain from the kept layers, one token per forward, cut short when the draft is unsure.

    Sampled requests get the same greedy chain with probs=None: verification treats it as a one-hot
    draft distribution, which keeps the output distributed as the target's (rejection sampling stays exact).
    """

    def __init__(self, network: LayeredLM, skip: SkipLayers, threshold: float = 0.6,
                 max_draft: int | None = None) -> None:
        if not 0.0 <= threshold < 1.0:
            raise InvalidRequest(f"layerskip threshold must be in [0, 1), got {threshold}")
        # A draft token at the target's precision costs most of a plain step when few layers are skipped: a
        # wrong guess is dear, so draft only when fairly sure, and no further than the search found worth it
        # (max_draft). A draft reading the weights at int4 costs a fraction of a step and may guess freely.
        self.network, self.skip, self.threshold, self.max_draft = network, skip, threshold, max_draft
        self.kept = skip.kept

    def propose(self, ctx: SeqView, k: int) -> Draft:
        cache = ctx.cache
        if cache is None:  # outside an engine there is no cache to draft over
            return Draft.empty()
        start = cache.length
        k = min(k, cache.max_len - start, self.max_draft or k)  # the n-th forward writes slot start + n, n < k
        token, out = ctx.tokens[-1], []
        try:
            for n in range(k):
                token, sure = self._next(token, start + n, cache)
                if not sure:
                    break
                out.append(token)
        finally:
            cache.rollback(start)  # the forward never moves it; say so for any cache that might
        return Draft(tokens=torch.tensor(out, dtype=torch.long))

    def _next(self, token: int, slot: int, cache: Any) -> tuple[int, bool]:
        """Feed one token through the kept layers at `slot`: the argmax that follows, and whether its
        probability reaches the threshold (one host sync per drafted token)."""
        logits = self.network.forward(torch.tensor([[token]]), slot, cache, layers=self.kept)[0, -1]  # [V]
        top = logits.max()
        best, p_best = torch.stack([logits.argmax().float(), 1.0 / (logits - top).exp().sum()]).tolist()
        return int(best), p_best >= self.threshold

    def commit(self, ctx: SeqView, accepted: int) -> None:
        pass  # stateless: the cache and the tokens carry everything
