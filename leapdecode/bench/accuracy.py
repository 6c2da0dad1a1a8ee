"""Accuracy on prompts with checkable answers (parallel-tasks): per task and size, and plotted against speed,
the Pareto front marked (no other method both faster and at least as accurate)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from leapdecode.bench.cells import md_table, num, pct


def accuracy_section(methods: dict[str, dict[str, Any]]) -> list[str]:
    judged = {m: s for m, s in methods.items() if s.get("accuracy") is not None}
    if not judged:
        return []
    levels = sorted({lv for s in judged.values() for lv in s["accuracy_by_level"]}, key=_level_order)
    tasks = sorted({c for s in judged.values() for c in s["by_category"]})
    by_method = [[m, pct(s["accuracy"]), *(pct(s["accuracy_by_level"].get(lv)) for lv in levels),
                  num(s["mean_accepted"])] for m, s in judged.items()]
    by_task = [[t, *(pct((s["by_category"].get(t) or {}).get("accuracy")) for s in judged.values())] for t in tasks]
    return ["## Accuracy", "", *md_table(["method", "all", *levels, "tokens per forward"], by_method), "",
            *md_table(["task", *judged], by_task), ""]


def pareto(points: dict[str, tuple[float, float]]) -> set[str]:
    """Names whose (speed, accuracy) no other point beats on one and matches on the other."""
    return {m for m, (v, a) in points.items()
            if not any((v2 > v and a2 >= a) or (v2 >= v and a2 > a) for n, (v2, a2) in points.items() if n != m)}


def plot_accuracy(methods: dict[str, dict[str, Any]], path: Path) -> None:
    points = {m: (s["tokens_per_s"], 100 * s["accuracy"]) for m, s in methods.items() if s.get("accuracy") is not None}
    front = pareto(points)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    seen: list[float] = []
    for m, (v, a) in points.items():
        ax.scatter([v], [a], s=60, color="tab:red" if m in front else "tab:blue", zorder=3)
        stack = sum(abs(a - b) < 2.0 for b in seen)  # methods of one accuracy (lossless ones): labels stacked
        seen.append(a)
        ax.annotate(m, (v, a), textcoords="offset points", xytext=(5, 4 + 11 * stack), fontsize="small")
    line = sorted(points[m] for m in front)
    ax.plot([p[0] for p in line], [p[1] for p in line], color="tab:red", linewidth=0.8, linestyle="--",
            label="Pareto front")
    ax.set_xlabel("tokens/s")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("accuracy against speed")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _level_order(level: str) -> tuple[int, str]:
    return ({"easy": 0, "medium": 1, "hard": 2}.get(level, 3), level)
