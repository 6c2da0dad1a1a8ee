"""Where each row of a verify forward sits and what it sees, when that is not the plain causal chain.

Rows: 0 = the pending last token, 1..k = the draft's tokens (a chain) or nodes (a tree, tree.py), then the
draft's extra rows (types.ExtraRows). Draft rows see the committed cache and their ancestors (a chain: the
rows before them). Extra rows see the committed cache, the pending token and the extra rows their `sees`
marks, never a draft row, and no draft row sees them: a chain or a tree plus extra rows is one Segment.
"""

from __future__ import annotations

import torch
from torch import Tensor

from leapdecode.decode.tree import TokenTree
from leapdecode.types import Draft, ExtraRows


def segment_layout(draft: Draft, start: int) -> tuple[Tensor | None, Tensor | None]:
    """A draft fed from cache slot `start` -> the Segment's mask [T, start+T] bool and positions [T] int64;
    (None, None) for a plain chain, which the model runs with its causal default."""
    if not draft.is_tree and draft.extra is None:
        return None, None
    chain = torch.arange(-1, len(draft) - 1)  # a chain is the tree whose node i hangs off node i - 1
    tree = TokenTree.of(draft.parents if draft.is_tree else chain)
    if draft.extra is None:
        return tree.mask(start), tree.positions(start)
    return with_extra(tree, draft.extra, start)


def with_extra(tree: TokenTree, extra: ExtraRows, start: int) -> tuple[Tensor, Tensor]:
    """The rows of `tree` (the pending token and the draft's nodes), then the extra rows -> mask
    [T, start+T] bool and positions [T] int64, T = tree.rows + E."""
    n, e = tree.rows, len(extra)
    sees = torch.zeros(n + e, n + e, dtype=torch.bool)
    sees[:n, :n] = tree.visibility()
    sees[n:, 0] = True  # every extra row follows the pending token
    sees[n:, n:] = extra.sees
    mask = torch.ones(n + e, start + n + e, dtype=torch.bool)  # every committed slot is visible
    mask[:, start:] = sees
    return mask, torch.cat([tree.positions(start), start + extra.offsets])
