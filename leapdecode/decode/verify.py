"""Verification as pure functions: which drafted tokens the target keeps, and the one it yields anyway.

Vocabulary: *accepted* draft tokens, the *recovered* token after a rejection, the *bonus* token after a
full acceptance. p is the target's distribution, q the drafter's. A token tree (Draft.parents) is verified
by the same rules, walked from the root: see verify_tree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from leapdecode.decode.sampling import sample
from leapdecode.decode.tree import TokenTree
from leapdecode.types import Draft, Verdict


def accept_greedy(draft: Draft, target: list[int]) -> Verdict:
    """draft [k], target: the target's argmax at each fed row (row 0 the pending token, row i+1 draft
    token or node i; rows past k are ignored): keep the drafts equal to it, then its next argmax."""
    if draft.is_tree:
        return verify_tree(draft, lambda row, depth: target[row])
    drafted = draft.tokens.tolist()
    accepted = 0
    while accepted < len(drafted) and drafted[accepted] == target[accepted]:
        accepted += 1
    return Verdict(accepted=accepted, tokens=drafted[:accepted] + [target[accepted]])


def verify_sampling(draft: Draft, p: Tensor, gens: Sequence[torch.Generator]) -> Verdict:
    """Speculative sampling. draft [k] (probs [k, V], or None for a deterministic drafter), p [k+1, V],
    gens: one generator per row (row i's randomness is its own; the same one k+1 times is fine too).
    The output is distributed exactly as sampling from p token by token. A tree: gens[d] for depth d."""
    if draft.is_tree:  # trees are deterministic (Draft refuses probs with parents)
        return verify_tree(draft, lambda row, depth: int(sample(p[row : row + 1], gens[depth])))
    if draft.probs is None:
        return _verify_deterministic(draft, p, gens)
    k = len(draft)
    idx = torch.arange(k)
    p_x, q_x = p[idx, draft.tokens], draft.probs[idx, draft.tokens]  # [k], [k]
    u = torch.stack([torch.rand((), generator=g) for g in gens[:k]]) if k else torch.empty(0)
    rejected = (u * q_x >= p_x).tolist()  # accept x_i with min(1, p/q): u < p/q, without dividing by q
    accepted = rejected.index(True) if True in rejected else k
    kept = draft.tokens[:accepted].tolist()
    if accepted == k:
        return Verdict(accepted=k, tokens=kept + [int(sample(p[k : k + 1], gens[k]))])  # bonus
    return Verdict(accepted=accepted, tokens=kept + [_recover(draft, p, accepted, gens[accepted])])


def _verify_deterministic(draft: Draft, p: Tensor, gens: Sequence[torch.Generator]) -> Verdict:
    """q is one-hot, so min(1, p/q) accepts x_i with probability p(x_i), and the residual (p - q)+ is p
    without x_i. Drawing the target's own token t_i ~ p_i and accepting while t_i == x_i does exactly
    that, and every emitted token is then a plain draw from p: with per-position randomness the text is
    the one plain sampling gives, whatever was drafted."""
    drafted = draft.tokens.tolist()
    out: list[int] = []
    for i in range(len(drafted) + 1):
        out.append(int(sample(p[i : i + 1], gens[i])))
        if i == len(drafted) or out[-1] != drafted[i]:
            return Verdict(accepted=i, tokens=out)
    raise AssertionError("unreachable")


def verify_tree(draft: Draft, target: Callable[[int, int], int]) -> Verdict:
    """A deterministic token tree: from the root, take the target's token t at the current row (target(row,
    depth): the argmax, or a draw from p with the generator of that output position); if a child of the
    current node carries t, accept it and go on from its row, else stop. Yields the path's tokens + t.

    Greedy, this keeps the longest path the target's argmax agrees with. Sampling, it is multi-candidate
    speculative sampling (SpecInfer's recursive rejection) for one-hot drafts: with candidates x_1..x_m
    at a node, x_1 is accepted with min(1, p(x_1)/1) = p(x_1), else the residual (p - q)+ is p without
    x_1, renormalised, from which x_2 is accepted with p(x_2) / (1 - p(x_1)), and so on; after rejecting
    all, the recovered token is drawn from p without the candidates. Altogether each x_i is kept with
    probability p(x_i) and any other token t is yielded with p(t): exactly one draw t ~ p, then a move to
    the child carrying t if there is one. Every emitted token is therefore a plain draw from p at its row,
    and a row's p is the target's distribution after the committed text plus the path to it (tree mask).
    Drawn with the generator of its output position, a seed gives the text plain sampling gives, whatever
    the tree."""
    tree = TokenTree.of(draft.parents)
    children = tree.children(draft.tokens.tolist())
    row, path, out = 0, [], []
    while True:
        t = target(row, len(path))
        out.append(t)
        node = children[row].get(t)
        if node is None:
            return Verdict(accepted=len(path), tokens=out, path=tuple(path))
        path.append(node)
        row = node + 1


def _recover(draft: Draft, p: Tensor, i: int, gen: torch.Generator) -> int:
    """The recovered token after rejecting draft i: a draw from the normalised residual (p - q)+."""
    residual = (p[i] - draft.probs[i]).clamp_min(0.0)
    total = residual.sum()
    if total <= 0:  # p == q up to rounding: any draw from p is exact
        residual, total = p[i], p[i].sum()
    return int(sample((residual / total)[None], gen))
