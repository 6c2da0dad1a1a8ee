"""Where an engine method's drafts and time went: acceptance by draft position, time per step, auto's arms."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from leapdecode.bench.record import RunRecord

STEP_PARTS = ("draft", "verify", "overhead")  # the engine's own clocks; see GenerationStats


def breakdown(recs: list[RunRecord]) -> dict[str, Any]:
    """Summed over a method's prompts; {} for a method the engine did not run (hf, llama.cpp).

    acceptance_at[i]: of the steps whose verified draft reached position i, the share that accepted it.
    step_ms: milliseconds per target forward in drafting, verifying (forward + verification) and the rest."""
    stats = [r.engine_stats for r in recs if "drafted_at" in r.engine_stats]
    if not stats:
        return {}
    drafted = _sum_lists(s["drafted_at"] for s in stats)
    accepted = _sum_lists(s["accepted_at"] for s in stats)
    steps = sum(s["target_forwards"] for s in stats)
    arms: dict[str, int] = {}
    for s in stats:
        for arm, n in s.get("arms", {}).items():
            arms[arm] = arms.get(arm, 0) + n
    return {
        "drafted_at": drafted,
        "accepted_at": accepted,
        "acceptance_at": [a / d if d else None for a, d in zip(accepted, drafted)],
        "steps": steps,
        "step_ms": {part: 1000 * sum(s[f"{part}_seconds"] for s in stats) / steps if steps else 0.0
                    for part in STEP_PARTS},
        "arms": arms,  # auto only: steps per arm it chose
    }


def _sum_lists(lists: Iterable[list[int]]) -> list[int]:
    total: list[int] = []
    for values in lists:
        total.extend([0] * (len(values) - len(total)))
        for i, v in enumerate(values):
            total[i] += v
    return total
