"""The benchmark's outputs: results.json (everything), report.md (the table), speedup.png, and a terminal table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from leapdecode.bench.chart import plot_speedup
from leapdecode.bench.divergence import Divergence
from leapdecode.bench.record import RunRecord
from leapdecode.bench.summary import summarise

TPS_NOTE = "tokens_per_s = total new tokens / total wall seconds over prompts (prefill included)"
RSS_NOTE = "peak RSS is the whole process's high-water mark (all methods and both model copies share it)"


def assemble(
    config: dict[str, Any], machine: dict[str, Any], records: list[RunRecord], divergences: list[Divergence]
) -> dict[str, Any]:
    """Everything a reader needs to check the numbers, as plain JSON-able data."""
    return {
        "config": config,
        "machine": machine,
        "methods": summarise(records),
        "notes": [RSS_NOTE, TPS_NOTE],
        "divergences": [d.as_dict() for d in divergences],
        "records": [r.as_dict() for r in records],
    }


def write_report(results: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json", "markdown": out_dir / "report.md", "chart": out_dir / "speedup.png"}
    paths["json"].write_text(json.dumps(results, indent=2) + "\n")
    paths["markdown"].write_text(markdown(results))
    plot_speedup(results["methods"], paths["chart"])
    return paths


def table_rows(methods: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the summary table, shared by the markdown file and the terminal."""
    with_pld = "hf-pld" in methods
    header = ["method", "tok/s", "speedup vs hf"] + (["speedup vs hf-pld"] if with_pld else [])
    header += ["mean accepted", "exact match", "peak RSS MB"]
    rows = []
    for name, s in methods.items():
        row = [name, f"{s['tokens_per_s']:.2f}", _x(s["speedup_vs_hf"])]
        row += [_x(s["speedup_vs_hf_pld"])] if with_pld else []
        row += [_num(s["mean_accepted"]), _pct(s["exact_match_rate"]), f"{s['peak_rss_mb']:.0f}"]
        rows.append(row)
    return header, rows


def markdown(results: dict[str, Any]) -> str:
    cfg, machine = results["config"], results["machine"]
    lines = [
        f"# leapdecode bench: {cfg.get('model')} on {cfg.get('prompts')}",
        "",
        f"{cfg.get('prompt_count', '?')} prompts, max_new_tokens={cfg.get('max_new_tokens')}, "
        f"dtype={cfg.get('dtype')}, threads={machine.get('threads')}, cpu={machine.get('cpu_capability')}, "
        f"torch {machine.get('torch')}, transformers {machine.get('transformers')}",
        "",
        *_md_table(*table_rows(results["methods"])),
        "",
        *[f"- {note}" for note in results.get("notes", [])],
        "",
        *_category_section(results["methods"]),
        *_divergence_section(results["divergences"]),
    ]
    return "\n".join(lines) + "\n"


def _category_section(methods: dict[str, dict[str, Any]]) -> list[str]:
    categories = sorted({c for s in methods.values() for c in s["by_category"]})
    if len(categories) < 2:
        return []
    header = ["category"] + list(methods)
    rows = [[c] + [_x(_category_speedup(s, c)) for s in methods.values()] for c in categories]
    return ["## Speedup vs hf by category", "", *_md_table(header, rows), ""]


def _category_speedup(stats: dict[str, Any], category: str) -> float | None:
    return stats["by_category"].get(category, {}).get("speedup_vs_hf")


def _divergence_section(divergences: list[dict[str, Any]]) -> list[str]:
    lines = ["## Divergences from hf", ""]
    if not divergences:
        return lines + ["None: every method reproduced hf's greedy output token for token.", ""]
    lines += [
        "The first generated token where a method's output differs from hf's, scored by the reference model's",
        "logits at that position.",
        "A gap within the dtype's rounding noise (tolerance) is a near-tie: batched and one-token forwards round",
        "differently. A larger gap points to a bug.",
        "",
    ]
    header = ["method", "prompt", "token index", "hf token", "method token", "top-2 gap", "hf - method logit"]
    header += ["tolerance", "verdict"]
    rows = [
        [d["method"], d["prompt_id"], str(d["index"]), str(d["reference_token"]), str(d["method_token"]),
         f"{d['top2_gap']:.4g}", _num(d["chosen_gap"], "{:.4g}"), f"{d['tolerance']:.3g}",
         "near-tie" if d["near_tie"] else "SUSPECT"]
        for d in divergences
    ]  # fmt: skip
    return lines + _md_table(header, rows) + [""]


def print_table(results: dict[str, Any], console: Console | None = None) -> None:
    header, rows = table_rows(results["methods"])
    table = Table(*header, title="leapdecode bench")
    for row in rows:
        table.add_row(*row)
    console = console or Console()
    console.print(table)
    suspects = [d for d in results["divergences"] if not d["near_tie"]]
    if results["divergences"]:
        console.print(f"{len(results['divergences'])} divergence(s) from hf, {len(suspects)} not a near-tie")


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def _num(v: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)
