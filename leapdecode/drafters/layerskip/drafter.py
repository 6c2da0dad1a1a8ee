"""Self-speculation by layer skipping (Draft&Verify, SWIFT): the target drafts with a subset of its own layers.

No second model and no training: the draft runs the kept layers over the target's own KV cache. Slots
[0, cache.length) of a kept layer were written by the full model, which is what the kept layer would see
in the full model too; the draft's own tokens go to slots from cache.length on, which the verify forward
overwrites before anything reads them, so the cache needs no copy and no rollback beyond its length.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor

from leapdecode.drafters.base import Drafter
from leapdecode.drafters.layerskip.skip_layers import SkipLayers
from leapdecode.errors import InvalidRequest
from leapdecode.models.base import Segment
from leapdecode.types import Draft, SeqView


class LayeredLM(Protocol):
    """What layer skipping needs of a network beyond models/base.py's CausalLM."""

    num_layers: int

    def forward_packed(self, segments: Sequence[Segment], logits: bool = True,
                       layers: Sequence[int] | None = None) -> Tensor: ...


class LayerSkipDrafter(Drafter):
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

    @property
    def batch_key(self) -> tuple[int, tuple[int, ...], float, int | None]:
        """Drafters with equal keys draft the same way, so one of them can draft for all (propose_many)."""
        return id(self.network), self.kept, self.threshold, self.max_draft

    def propose(self, ctx: SeqView, k: int) -> Draft:
        return self.propose_many([ctx], [k])[0]

    def propose_many(self, views: Sequence[SeqView], ks: Sequence[int]) -> list[Draft]:
        """A chain for each sequence (up to ks[i] tokens), every sequence's n-th draft token from one packed
        forward: in a batch the kept layers' weights are read once per draft depth, not once per request."""
        caches = [v.cache for v in views]
        if any(c is None for c in caches):  # outside an engine there is no cache to draft over
            return [Draft.empty() for _ in views]
        starts = [c.length for c in caches]
        # The n-th forward writes slot start + n, n < k.
        ks = [min(k, c.max_len - s, self.max_draft or k) for k, c, s in zip(ks, caches, starts)]
        tokens, out = [v.tokens[-1] for v in views], [[] for _ in views]
        live, depth = [i for i, k in enumerate(ks) if k > 0], 0
        try:
            while live:
                segments = [Segment(torch.tensor([tokens[i]]), starts[i] + depth, caches[i]) for i in live]
                still = []
                for i, token, sure in zip(live, *self._next(segments)):
                    if sure:
                        out[i].append(token)
                        tokens[i] = token
                        if len(out[i]) < ks[i]:
                            still.append(i)
                live, depth = still, depth + 1
        finally:
            for c, s in zip(caches, starts):
                c.rollback(s)  # the forward never moves it; say so for any cache that might
        return [Draft(tokens=torch.tensor(o, dtype=torch.long)) for o in out]

    def _next(self, segments: list[Segment]) -> tuple[list[int], list[bool]]:
        """Feed each segment's one token through the kept layers: the argmax that follows each, and whether
        its probability reaches the threshold (one host sync per draft depth)."""
        logits = self.network.forward_packed(segments, layers=self.kept)  # [B, V]
        top = logits.max(dim=-1, keepdim=True).values
        best, p_best = torch.stack([logits.argmax(dim=-1).float(), 1.0 / (logits - top).exp().sum(dim=-1)]).tolist()
        return [int(b) for b in best], [p >= self.threshold for p in p_best]

    def commit(self, ctx: SeqView, accepted: int) -> None:
        pass  # stateless: the cache and the tokens carry everything
