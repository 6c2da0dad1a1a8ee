"""Where each row of a verify forward sits and what it sees, when that is not the plain causal chain.

Rows: 0 = the pending last token, 1..k = the draft, then the draft's extra rows (types.ExtraRows). Draft
rows see the committed cache and the draft rows before them; extra rows see the committed cache, the
pending token and the extra rows their `sees` marks, never a draft row (and no draft row sees them).
"""

from __future__ import annotations

import torch
from torch import Tensor

from leapdecode.types import ExtraRows


def chain_visibility(n: int) -> Tensor:
    """[n, n] bool: the pending token and a chain of n - 1 drafts, each row seeing itself and those before."""
    return torch.ones(n, n, dtype=torch.bool).tril()


def with_extra(draft_sees: Tensor, draft_offsets: Tensor, extra: ExtraRows, start: int) -> tuple[Tensor, Tensor]:
    """draft_sees [n, n] bool and draft_offsets [n] int64 (the pending token and the draft's rows: what they
    see among themselves, their rope positions minus start) + extra rows -> the Segment's mask
    [T, start+T] bool and positions [T] int64, T = n + E."""
    n, e = draft_sees.shape[0], len(extra)
    sees = torch.zeros(n + e, n + e, dtype=torch.bool)
    sees[:n, :n] = draft_sees
    sees[n:, 0] = True  # every extra row follows the pending token
    sees[n:, n:] = extra.sees
    mask = torch.ones(n + e, start + n + e, dtype=torch.bool)  # every committed slot is visible
    mask[:, start:] = sees
    return mask, start + torch.cat([draft_offsets, extra.offsets])
