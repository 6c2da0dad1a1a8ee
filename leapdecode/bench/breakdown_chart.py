"""Two plots of the engine methods' breakdown: acceptance by draft position, and time per step by part."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: benchmarks run on headless machines
import matplotlib.pyplot as plt

from leapdecode.bench.breakdown import STEP_PARTS

COLORS = {"draft": "tab:orange", "verify": "tab:blue", "overhead": "tab:gray"}


def engine_methods(methods: dict[str, dict[str, Any]]) -> list[str]:
    """The methods with a breakdown (those the engine ran), in the report's order."""
    return [m for m, s in methods.items() if s.get("step_ms")]


def plot_acceptance(methods: dict[str, dict[str, Any]], path: Path) -> None:
    """One line per drafting method: how often draft token i was accepted, among steps that drafted it."""
    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    for m in engine_methods(methods):
        points = [(i + 1, r) for i, r in enumerate(methods[m]["acceptance_at"]) if r is not None]
        if points:
            ax.plot(*zip(*points), marker="o", label=m)
    ax.set_xlabel("draft position")
    ax.set_ylabel("accepted, of drafted there")
    ax.set_ylim(0.0, 1.05)
    ax.set_title("acceptance by draft position")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_time_split(methods: dict[str, dict[str, Any]], path: Path) -> None:
    """Stacked bars: milliseconds per step (target forward) drafting, verifying, and the rest."""
    names = engine_methods(methods)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(names) + 2), 4.0))
    bottom = [0.0] * len(names)
    for part in STEP_PARTS:
        values = [methods[m]["step_ms"][part] for m in names]
        ax.bar(names, values, bottom=bottom, label=part, color=COLORS[part])
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylabel("ms per step")
    ax.set_title("time per step: draft / verify / overhead")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
