"""Log-probabilities of emitted tokens: the target's own distribution at the row that yielded each one.

They are the model's: before temperature, top-k/top-p and any grammar mask (vLLM's "raw" logprobs), and the
same whatever was drafted, since a token's row sees exactly the text before it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from leapdecode.types import Draft, Verdict

MAX_TOP = 20  # OpenAI's limit on top_logprobs


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()  # the likeliest tokens at that position, best first


def emitted_rows(draft: Draft, verdict: Verdict) -> list[int]:
    """The fed rows whose predictions are the verdict's tokens: row 0 yields the first, then each accepted
    draft token's row yields the next."""
    if draft.is_tree:
        return [0, *(1 + node for node in verdict.path)]
    return list(range(len(verdict.tokens)))


def token_logprobs(logits: Tensor, rows: list[int], tokens: list[int], top: int) -> list[TokenLogprob]:
    """logits [rows, V] (raw) -> each token's log-probability at its row, with the top `top` alternatives."""
    logp = torch.log_softmax(logits[rows].float(), dim=-1)
    chosen = logp[torch.arange(len(rows)), torch.tensor(tokens)].tolist()
    if top <= 0:
        return [TokenLogprob(t, lp) for t, lp in zip(tokens, chosen)]
    values, ids = torch.topk(logp, min(top, logp.shape[-1]), dim=-1)
    tops = [tuple(zip(i, v)) for i, v in zip(ids.tolist(), values.tolist())]
    return [TokenLogprob(t, lp, tp) for t, lp, tp in zip(tokens, chosen, tops)]
