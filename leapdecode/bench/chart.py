"""The speedup plot: each method's tok/s over hf's, overall and per prompt category."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: benchmarks run on headless machines
import matplotlib.pyplot as plt


def plot_speedup(methods: dict[str, dict[str, Any]], path: Path) -> None:
    """Bars of speedup_vs_hf; a second panel groups them by category when there is more than one."""
    names = [m for m, s in methods.items() if s.get("speedup_vs_hf") is not None]
    categories = sorted({c for m in names for c in methods[m]["by_category"]})
    panels = 2 if len(categories) > 1 else 1
    fig, axes = plt.subplots(panels, 1, figsize=(max(6.0, 1.2 * len(names) + 2), 3.5 * panels), squeeze=False)
    _overall(axes[0][0], names, methods)
    if panels == 2:
        _by_category(axes[1][0], names, categories, methods)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _overall(ax: Any, names: list[str], methods: dict[str, dict[str, Any]]) -> None:
    values = [methods[m]["speedup_vs_hf"] for m in names]
    bars = ax.bar(names, values, color="tab:blue")
    ax.bar_label(bars, labels=[f"{v:.2f}x" for v in values])
    ax.axhline(1.0, color="gray", linewidth=0.8, linestyle="--")
    ax.margins(y=0.15)  # room for the bar labels
    ax.set_ylabel("speedup vs hf generate()")
    ax.set_title("throughput relative to transformers greedy (all prompts)")


def _by_category(ax: Any, names: list[str], categories: list[str], methods: dict[str, dict[str, Any]]) -> None:
    width = 0.8 / len(names)
    for i, m in enumerate(names):
        by_cat = methods[m]["by_category"]
        values = [(by_cat.get(c) or {}).get("speedup_vs_hf") or 0.0 for c in categories]
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(categories))]
        ax.bar(xs, values, width, label=m)
    ax.set_xticks(range(len(categories)), categories, rotation=30, ha="right")
    ax.axhline(1.0, color="gray", linewidth=0.8, linestyle="--")
    ax.set_ylabel("speedup vs hf")
    ax.set_title("per category")
    ax.legend(fontsize="small", ncols=min(len(names), 5))
