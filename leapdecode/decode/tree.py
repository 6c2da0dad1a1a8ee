"""Token trees: one target forward verifies several alternative drafts at once (SpecInfer's tree attention).

A drafter with more than one plausible continuation proposes them as a tree (Draft.parents): shared
prefixes share nodes, siblings are alternatives for the same position. The engine feeds the pending last
token as row 0 and node i as row i + 1, all in one forward. A row attends to the committed cache and to its
own ancestors and itself only, at rope position start + its depth, so its logits are the ones it would get
as the last token of a chain along its path. Verification walks from the root along the target's own
choices (verify.py); the kept path's KV is then moved to consecutive slots (KVCache.keep_path).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from leapdecode.errors import InvalidRequest
from leapdecode.models.llama import PACKED_MAX_ROWS
from leapdecode.types import Draft

# A tree's rows (its nodes + the pending token) must fit the fused attention kernel, which computes every
# masked row with exactly the loops a chain's row gets; larger trees are cut to their best nodes.
MAX_NODES = PACKED_MAX_ROWS - 1
TREES_REFUSED = ("token trees (the tree option) need leapdecode's own llama-family model code (not the transformers "
                 "fallback) and, below float32, its fused CPU kernels")
# An alternative branch's node is worth about as much as the best branch's node this many positions deeper.
RANK_COST = 3


def tree_width(tree: int | None) -> int:
    """A drafter's `tree` option -> how many alternative branches it proposes; 0 (or None, or 1) = a chain."""
    if tree is None:
        return 0
    if isinstance(tree, bool) or not isinstance(tree, int) or tree < 0:
        raise InvalidRequest(f"tree must be a whole number of branches >= 0 (0: a chain), got {tree!r}")
    return tree


@dataclass(frozen=True, slots=True)
class TokenTree:
    """The geometry of a drafted tree as the target reads it: row 0 = the pending token, row i + 1 = node i."""

    parents: tuple[int, ...]  # [k] node i's parent node, -1 = the pending token
    depth: Tensor  # [k+1] int64: row 0 has depth 0, a node one more than its parent
    max_depth: int  # the longest path's length: how many tokens a full acceptance keeps

    @staticmethod
    def of(parents: Tensor) -> TokenTree:
        """parents [k] int64 (a Draft's) -> the tree; parents must come before their children."""
        ps = tuple(parents.tolist())
        depth = [0]
        for i, p in enumerate(ps):
            if not -1 <= p < i:
                raise ValueError(f"token tree node {i} has parent {p}: a parent is -1 or an earlier node")
            depth.append(depth[p + 1] + 1)
        return TokenTree(ps, torch.tensor(depth), max(depth))

    @property
    def rows(self) -> int:
        return len(self.parents) + 1

    def visibility(self) -> Tensor:
        """[T, T] bool, T = rows: row r may attend to row c iff c is r itself or one of its ancestors."""
        vis = torch.eye(self.rows, dtype=torch.bool)
        for i, p in enumerate(self.parents):  # a parent's row is complete before its children's
            vis[i + 1] |= vis[p + 1]
        return vis

    def mask(self, start: int) -> Tensor:
        """[T, start+T] bool, the Segment mask: every committed slot, then the tree's own visibility."""
        mask = torch.ones(self.rows, start + self.rows, dtype=torch.bool)
        mask[:, start:] = self.visibility()
        return mask

    def positions(self, start: int) -> Tensor:
        """[T] int64 rope positions: a node sits where its path would put it in a chain."""
        return start + self.depth

    def children(self, tokens: Sequence[int]) -> list[dict[int, int]]:
        """Per row, its children by token: {token: node}. Of equal siblings the first (the better) wins."""
        kids: list[dict[int, int]] = [{} for _ in range(self.rows)]
        for node, (p, t) in enumerate(zip(self.parents, tokens)):
            kids[p + 1].setdefault(t, node)
        return kids


def from_branches(branches: Sequence[Sequence[int]], budget: int) -> Draft:
    """Alternative continuations, best first -> one draft of at most `budget` (and MAX_NODES) nodes: their
    prefix tree, shared prefixes sharing nodes, or a plain chain when only one distinct branch is left.

    A node is scored depth + RANK_COST * (rank of the first branch through it), a stand-in for its chance
    of acceptance: deeper guesses and lesser branches are likelier wrong. The budget keeps the best scores,
    in score order. A child scores above its parent, so the kept nodes form a tree, parents first, and any
    prefix of them is the best smaller tree (what Draft.prefix hands a busy batch)."""
    score: list[int] = []
    token: list[int] = []
    parent: list[int] = []
    node_of: dict[tuple[int, int], int] = {}  # (parent, token) -> node
    for rank, branch in enumerate(branches):
        at = -1
        for depth, t in enumerate(branch, 1):
            node = node_of.get((at, t))
            if node is None:
                node = node_of[(at, t)] = len(token)
                score.append(depth + RANK_COST * rank)
                token.append(t)
                parent.append(at)
            at = node
    return subtree(token, parent, best_first(score, budget))


def best_first(keys: Sequence[float], budget: int) -> list[int]:
    """The `budget` (at most MAX_NODES) nodes of a grown tree with the lowest keys, in key order; ties keep
    creation order. Keys that never fall from parent to child make this a subtree, parents first."""
    return sorted(range(len(keys)), key=lambda n: (keys[n], n))[: max(0, min(budget, MAX_NODES))]


def subtree(tokens: Sequence[int], parents: Sequence[int], keep: Sequence[int]) -> Draft:
    """The draft of nodes `keep` (a subtree, parents first) of a grown tree given in creation order.
    A single branch comes back as a plain chain, which needs no mask."""
    new = {old: i for i, old in enumerate(keep)}
    kept = torch.tensor([tokens[n] for n in keep], dtype=torch.long)  # [k]
    kept_parents = [new.get(parents[n], -1) for n in keep]
    if kept_parents == list(range(-1, len(keep) - 1)):
        return Draft(tokens=kept)
    return Draft(tokens=kept, parents=torch.tensor(kept_parents, dtype=torch.long))  # [k]
