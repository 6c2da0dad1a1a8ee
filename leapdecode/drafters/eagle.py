"""Drafting with a trained EAGLE-style head over the target's own features (heads/head.py)."""

from __future__ import annotations

import torch
from torch import Tensor

from leapdecode.decode.tree import tree_width
from leapdecode.drafters.base import Drafter
from leapdecode.drafters.draft_tree import DraftTree
from leapdecode.heads.head_network import HeadNetwork
from leapdecode.types import Draft, SeqView


class EagleDrafter(Drafter):
    """Extends the target's last feature token by token with the head.

    The engine shows it the target's features after every forward (see_features), so it knows f[j] for
    every committed position but the newest token's. Before drafting it adds head entries for the tokens
    committed since its last proposal, each from the true feature before it; a draft step then feeds the
    head's own predicted feature with the token it drafted, in cache slots the next catch-up overwrites.
    With tree > 1 the head's likeliest first tokens become branches, each continued by its argmax, one head
    forward per level over all branches (draft_tree.py). Drafts are deterministic for every request, so
    verification stays exact (a sampled request accepts a deterministic draft with the target's own
    probability).
    """

    reads_features = True  # drafts from the target's own features

    def __init__(self, network: HeadNetwork, capacity: int, threshold: float, tree: int = 0) -> None:
        self.net, self.threshold, self.capacity, self.tree = network, threshold, capacity, tree_width(tree)
        self.cache = network.new_cache(capacity)
        self.feats = torch.zeros(capacity, network.shape.dim)  # the target's features by position
        self.entries = 0  # head cache slots [0, entries) were computed from true features

    def see_features(self, ctx: SeqView, start: int, feats: Tensor) -> None:
        """The target's final hidden states [T, dim] at positions start..start+T (a verified tree's: the
        pending token's and its accepted path's, in order)."""
        end = start + feats.shape[0]
        if end > self.feats.shape[0]:  # the target's cache rounds its capacity up: so may its rows
            self.feats = torch.cat([self.feats, self.feats.new_zeros(end - self.feats.shape[0], self.feats.shape[1])])
        self.feats[start:end] = feats

    def propose(self, ctx: SeqView, k: int) -> Draft:
        n = len(ctx.tokens)
        k = min(k, self.capacity - n)  # a draft token's entry takes a slot of its own
        if k < 1:
            return Draft.empty()
        feat = self._catch_up(ctx.tokens)
        if self.tree > 1:
            return self._grow_tree(feat, k, n)
        tokens: list[int] = []
        chances: list[float] = []
        chance = 1.0
        for i in range(k):
            top, index = torch.softmax(self.net.logits(feat), dim=-1).max(dim=-1)
            token = int(self.net.vocab_ids[index])
            chance *= float(top)
            tokens.append(token)
            chances.append(chance)
            if i == k - 1 or float(top) < self.threshold:
                break
            feat = self.net.forward(feat[None], torch.tensor([token]), n + i, self.cache)[0]
        return Draft(tokens=torch.tensor(tokens), chances=tuple(chances))

    def commit(self, ctx: SeqView, accepted: int) -> None:
        pass  # propose adds the committed tokens' entries, from the features see_features kept

    def _catch_up(self, toks: list[int]) -> Tensor:
        """Head entries for every committed token without one; the newest one's predicted feature [dim]."""
        n, e = len(toks), min(self.entries, len(toks) - 1)  # re-run >= 1 entry for the feature it predicts
        prev = self.feats[max(e - 1, 0) : n - 1]
        if e == 0:  # the first token has no feature before it
            prev = torch.cat([torch.zeros(1, self.net.shape.dim), prev])
        out = self.net.forward(prev, torch.tensor(toks[e:n]), e, self.cache)
        self.entries = n
        return out[-1]

    def _grow_tree(self, feat: Tensor, k: int, n: int) -> Draft:
        """A tree of at most k nodes after n committed tokens; feat [dim]: the head's feature after them."""
        tree = DraftTree(n)
        top = torch.topk(torch.softmax(self.net.logits(feat), dim=-1), min(self.tree, k))
        leaves = [tree.add(int(self.net.vocab_ids[i]), -1, p) for p, i in zip(top.values.tolist(), top.indices.tolist())]
        predicted: dict[int, Tensor] = {-1: feat}  # node -> the feature the head predicts after it
        while leaves := tree.worth_growing(leaves, k, self.threshold)[: max(0, self.capacity - n - tree.fed)]:
            tokens, start, mask, positions = tree.feed(leaves)
            prev = torch.stack([predicted[tree.parents[x]] for x in leaves])
            out = self.net.forward(prev, tokens, start, self.cache, mask, positions)  # [R, dim]
            predicted.update(zip(leaves, out))
            best = torch.softmax(self.net.logits(out), dim=-1).max(dim=-1)
            leaves = [tree.add(int(self.net.vocab_ids[i]), x, p)
                      for x, p, i in zip(leaves, best.values.tolist(), best.indices.tolist())]
        return tree.draft(k)
