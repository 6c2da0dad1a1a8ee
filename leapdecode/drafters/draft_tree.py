"""A draft model's token tree: its likeliest first tokens as branches, each continued by the draft's argmax.

The tree grows level by level, one forward of the draft network per level over every branch at once, in
the draft's own KV cache: grown nodes take the slots after the committed tokens, each row attending to the
committed slots, its ancestors' slots and its own (the same tree mask the target's verify uses). A node is
scored by its path's draft log-probability, its estimated chance of acceptance; the draft keeps the best.
Once the target has verified it, the slots of the path the committed text took are moved into place
(KVCache.keep_path), so the next proposal starts from the draft's cache as a chain would have left it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from leapdecode.decode.tree import best_first, subtree
from leapdecode.types import Draft


@dataclass(slots=True)
class DraftTree:
    """Nodes grown after a committed prefix of n tokens (the draft cache's slots [0, n)), parents first."""

    n: int
    tokens: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)  # -1: a child of the last committed token
    depth: list[int] = field(default_factory=list)  # 1 for a first-level node
    logp: list[float] = field(default_factory=list)  # log draft probability of the path to the node
    slot: list[int] = field(default_factory=list)  # the node's cache slot past n once fed, -1 before
    children: list[dict[int, int]] = field(default_factory=list)  # per node + 1: {token: child node}
    fed: int = 0  # nodes whose KV is in the cache, at slots n .. n + fed

    def __post_init__(self) -> None:
        self.children.append({})  # the root's

    def add(self, token: int, parent: int, p: float) -> int:
        """A child of `parent` drawn with draft probability p; returns the new node."""
        node = len(self.tokens)
        self.tokens.append(token)
        self.parents.append(parent)
        self.depth.append(self.depth[parent] + 1 if parent >= 0 else 1)
        self.logp.append((self.logp[parent] if parent >= 0 else 0.0) + math.log(max(p, 1e-30)))
        self.slot.append(-1)
        self.children.append({})
        self.children[parent + 1][token] = node
        return node

    def worth_growing(self, nodes: list[int], budget: int, threshold: float) -> list[int]:
        """Of new leaves, those whose child could still be kept: fewer than `budget` nodes score at least
        as well (a child never scores above its parent), and the path's geometric-mean draft probability
        is at least threshold (a chain's per-token confidence rule, spread over the path)."""
        floor = math.log(threshold) if threshold > 0 else -math.inf
        return [x for x in nodes if sum(lp >= self.logp[x] for lp in self.logp) < budget
                and self.logp[x] >= self.depth[x] * floor]

    def feed(self, nodes: list[int]) -> tuple[Tensor, int, Tensor, Tensor]:
        """Give `nodes` the next cache slots: (tokens [R], start slot, mask [R, start+R], positions [R])."""
        start, rows = self.n + self.fed, len(nodes)
        mask = torch.zeros(rows, start + rows, dtype=torch.bool)
        mask[:, : self.n] = True
        for r, x in enumerate(nodes):
            self.slot[x] = start + r
            a = x
            while a >= 0:  # the node itself and every ancestor, all fed before it
                mask[r, self.slot[a]] = True
                a = self.parents[a]
        self.fed += rows
        tokens = torch.tensor([self.tokens[x] for x in nodes], dtype=torch.long)
        positions = torch.tensor([self.n + self.depth[x] - 1 for x in nodes], dtype=torch.long)
        return tokens, start, mask, positions

    def draft(self, budget: int) -> Draft:
        """The `budget` likeliest nodes, likeliest first: a tree (or a chain, when one branch is left)."""
        return subtree(self.tokens, self.parents, best_first([-lp for lp in self.logp], budget))

    def followed(self, committed: list[int]) -> list[int]:
        """Cache slots (past n - 1) of the fed nodes the committed text went through, in order: their KV is
        the one a chain of those tokens leaves, whether or not the target's verify kept them as drafts."""
        row, slots = 0, []
        for t in committed[self.n :]:
            node = self.children[row].get(t)
            if node is None or self.slot[node] < 0:
                break
            slots.append(self.slot[node] - self.n)
            row = node + 1
        return slots
