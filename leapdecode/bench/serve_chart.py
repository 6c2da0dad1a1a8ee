"""The bench-serve plot: throughput and latency against concurrency, speculation on and off."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: benchmarks run on headless machines
import matplotlib.pyplot as plt


def plot_serve(rows: list[dict[str, Any]], path: Path) -> None:
    fig, (thr, lat) = plt.subplots(1, 2, figsize=(11, 4))
    for spec, style in ((True, "o-"), (False, "s--")):
        mine = sorted((r for r in rows if r["speculation"] == spec), key=lambda r: r["concurrency"])
        label = "speculation on" if spec else "speculation off"
        xs = [r["concurrency"] for r in mine]
        thr.plot(xs, [r["throughput"] for r in mine], style, label=label)
        lat.plot(xs, [r["latency_p50"] for r in mine], style, label=f"{label}, p50")
        lat.plot(xs, [r["latency_p99"] for r in mine], style, alpha=0.4, label=f"{label}, p99")
    for ax in (thr, lat):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.legend()
    thr.set_ylabel("tokens / s (all clients)")
    thr.set_title("aggregate throughput")
    lat.set_ylabel("seconds per request")
    lat.set_title("request latency")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
