"""Verification as pure functions: which drafted tokens the target keeps, and the one it yields anyway.

Vocabulary: *accepted* draft tokens, the *recovered* token after a rejection, the *bonus* token after a
full acceptance. p is the target's distribution, q the drafter's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from leapdecode.sampling import sample
from leapdecode.types import Draft, Verdict


def verify_greedy(draft: Draft, logits: Tensor) -> Verdict:
    """draft [k], logits [k+1, V]: keep the drafts equal to the target's argmax, then its next argmax."""
    target = logits.argmax(dim=-1).tolist()  # the one host sync of a greedy step
    drafted = draft.tokens.tolist()
    accepted = 0
    while accepted < len(drafted) and drafted[accepted] == target[accepted]:
        accepted += 1
    return Verdict(accepted=accepted, tokens=drafted[:accepted] + [target[accepted]])


def verify_sampling(draft: Draft, p: Tensor, gen: torch.Generator) -> Verdict:
    """Speculative sampling: accept x_i with min(1, p(x_i) / q(x_i)); on rejection draw from (p - q)+.

    draft [k] (probs [k, V] or None for a deterministic drafter, i.e. q one-hot), p [k+1, V].
    The output is distributed exactly as sampling from p token by token.
    """
    k = len(draft)
    idx = torch.arange(k)
    p_x = p[idx, draft.tokens]  # [k]
    q_x = draft.probs[idx, draft.tokens] if draft.probs is not None else torch.ones(k)
    u = torch.rand(k, generator=gen)
    rejected = (u * q_x >= p_x).tolist()  # u < p/q, without dividing by a zero q
    accepted = rejected.index(True) if True in rejected else k
    kept = draft.tokens[:accepted].tolist()
    if accepted == k:
        return Verdict(accepted=k, tokens=kept + [int(sample(p[k : k + 1], gen))])  # bonus
    return Verdict(accepted=accepted, tokens=kept + [_recover(draft, p, accepted, gen)])


def _recover(draft: Draft, p: Tensor, i: int, gen: torch.Generator) -> int:
    """The recovered token after rejecting draft i: a draw from the normalised residual (p - q)+."""
    if draft.probs is None:
        residual = p[i].clone()
        residual[draft.tokens[i]] = 0.0  # q is one-hot on the drafted token
    else:
        residual = (p[i] - draft.probs[i]).clamp_min(0.0)
    total = residual.sum()
    if total <= 0:  # p == q up to rounding: any draw from p is exact
        residual, total = p[i], p[i].sum()
    return int(sample((residual / total)[None], gen))
