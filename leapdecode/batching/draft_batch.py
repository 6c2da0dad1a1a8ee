"""A batch's drafts: requests whose drafters draft the same way share their drafting forwards (as in BASS).

A drafter that runs a network (layer skipping over the target's own weights, at int4 or not) costs one
forward per draft token. Drafting for each request of a batch in turn reads the drafting weights once per
request and token; drafting for all of them at once reads them once per draft depth. A drafter offers this
with a `batch_key` (equal keys: the same network, layers and rules) and `propose_many(views, ks)`; every
other drafter proposes alone, as before. Each request still gets the draft it would get alone, up to the
float rounding of a packed forward, and verification keeps the output the target's either way.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence

from leapdecode.decode.engine import Engine
from leapdecode.types import Draft


def propose_together(engines: Sequence[Engine], budgets: Sequence[int]) -> list[Draft]:
    """Each engine's draft for this step, at most budgets[i] tokens, in engine order."""
    drafts: list[Draft | None] = [None] * len(engines)
    groups: dict[Hashable, list[int]] = {}
    for i, (engine, budget) in enumerate(zip(engines, budgets)):
        key = engine.drafter.batch_key
        if key is not None and engine.draft_k(budget) > 0:
            groups.setdefault(key, []).append(i)
        else:
            drafts[i] = engine.propose(budget)
    for members in groups.values():
        for i, draft in zip(members, _draft_group([engines[i] for i in members], [budgets[i] for i in members])):
            drafts[i] = draft
    return drafts  # type: ignore[return-value]


def _draft_group(engines: list[Engine], budgets: list[int]) -> list[Draft]:
    """One drafter drafts for the whole group; each engine is charged an equal share of the time."""
    if len(engines) == 1:
        return [engines[0].propose(budgets[0])]
    start = time.perf_counter()
    made = engines[0].drafter.propose_many([e.view for e in engines], [e.draft_k(b) for e, b in zip(engines, budgets)])
    share = (time.perf_counter() - start) / len(engines)
    return [e.took(d, share) for e, d in zip(engines, made)]
