"""Any transformers causal LM behind our forward(): slower than our own code, but lossless."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from transformers import DynamicCache

from leapdecode.decode.tree import TREES_REFUSED
from leapdecode.errors import InvalidRequest
from leapdecode.models.base import Segment


class HFCache:
    """transformers' DynamicCache with our `length` / `rollback` vocabulary."""

    def __init__(self, max_len: int) -> None:
        self.inner = DynamicCache()
        self.length = 0
        self.max_len = max_len

    def rollback(self, length: int) -> None:
        self.length = length


class HFAdapter:
    # Trees would need a 4D mask, which not every architecture honours, and a reordered DynamicCache.
    token_trees = False
    skips_layers = False  # transformers runs every layer
    gives_features = False

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model.eval()
        cfg = model.config
        self.vocab_size = cfg.vocab_size
        self.max_context = getattr(cfg, "max_position_embeddings", None) or 2048
        self.dtype = next(model.parameters()).dtype

    def new_cache(self, max_len: int) -> HFCache:
        return HFCache(max_len)

    @torch.inference_mode()
    def forward(self, tokens: Tensor, start: int, cache: HFCache, mask: Tensor | None = None,
                logits: bool = True) -> Tensor | None:
        if mask is not None:
            raise InvalidRequest(TREES_REFUSED)
        if cache.inner.get_seq_length() > start:
            cache.inner.crop(start - cache.inner.get_seq_length())  # drop the KV of rejected drafts (a negative count)
        pos = torch.arange(start, start + tokens.shape[1])[None]
        out = self.model(input_ids=tokens, past_key_values=cache.inner, position_ids=pos,
                         cache_position=pos[0], use_cache=True)
        return out.logits.float() if logits else None

    def forward_packed(self, segments: Sequence[Segment], logits: bool = True) -> Tensor | None:
        """One forward per segment: transformers' caches do not pack."""
        if any(s.positions is not None for s in segments):
            raise InvalidRequest(TREES_REFUSED)
        outs = [self.forward(s.tokens[None], s.start, s.cache, s.mask, logits) for s in segments]
        return torch.cat([o[0] for o in outs]) if logits else None
