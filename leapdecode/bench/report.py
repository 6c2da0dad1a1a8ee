"""The benchmark's outputs: results.json (everything), report.md (the tables), speedup.png, acceptance.png and
time_split.png (engine methods), and a terminal table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from leapdecode.bench.accuracy import accuracy_section, plot_accuracy
from leapdecode.bench.breakdown import STEP_PARTS
from leapdecode.bench.breakdown_chart import (
    engine_methods,
    plot_acceptance,
    plot_time_split,
)
from leapdecode.bench.cells import md_table as _md_table
from leapdecode.bench.cells import num as _num
from leapdecode.bench.cells import pct as _pct
from leapdecode.bench.cells import times as _x
from leapdecode.bench.chart import plot_speedup
from leapdecode.bench.config import HF_METHODS, LLAMA_SERVER_METHODS, LLAMACPP_METHODS, OUTSIDE_METHODS
from leapdecode.bench.divergence import Divergence
from leapdecode.bench.record import RunRecord
from leapdecode.bench.structured import STRUCTURED_HEADER, structured_rows, structured_section
from leapdecode.bench.summary import SPEED_BASES, summarise
from leapdecode.models.precision import QUANTIZED

TPS_NOTE = "tokens_per_s = total new tokens / total wall seconds over prompts (prefill included)"
RSS_NOTE = ("peak RSS is the high-water mark of the process that ran the method: the engine's own process (its "
            "methods share it), or the baseline's own process (hf's worker, llama.cpp's worker or llama-server)")
MODELS_RSS_NOTE = ("peak RSS with models: the process's high-water mark once the engine's target (and, for methods "
                   "that draft with one, the draft model) was loaded, before any baseline's model")
SPLIT_NOTE = ("time per step: the engine's own clocks per target forward; draft = the drafter's propose and commit, "
              "verify = the target's forward and verification, overhead = the rest of the step loop")
POSITIONS_SHOWN = 8  # draft positions in the report's acceptance table (results.json has all)
LLAMACPP_NOTE = (
    "llamacpp, llamacpp-pld: llama-cpp-python on the same GGUF file, prompt ids, stop ids and thread count. "
    "llama.cpp computes on the quantized weights as stored (with 8-bit-quantized activations) where hf and the "
    "engine use them dequantized to the run's dtype, so its output may differ from hf's without a bug: "
    "its methods are compared by exact match only, not in the divergence check. llamacpp-pld's "
    "'exact match vs own plain' is its agreement with llamacpp; llama.cpp's batched (draft-verifying) forward "
    "rounds differently from its one-token forward, so near-ties can flip there too"
)
SERVER_NOTE = (
    "llamacpp-server, llamacpp-draft, llamacpp-lookup: llama.cpp's own llama-server (built by "
    "scripts/build-llamacpp) on the same GGUF file, prompt ids and thread count: plain greedy, draft-model "
    "speculation on --draft-model's GGUF, n-gram cache lookup; compared by exact match only, as llamacpp. "
    "Seconds are the client's around each HTTP request (loopback), prefill included; mean accepted is tokens "
    "per target forward from the server's draft_n_accepted"
)
OUTSIDE_NOTE = "every baseline ran in a process of its own, one side computing at a time, on the same threads"


def assemble(
    config: dict[str, Any], machine: dict[str, Any], records: list[RunRecord], divergences: list[Divergence],
    models_rss: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Everything a reader needs to check the numbers, as plain JSON-able data. models_rss: method -> peak RSS
    with its models loaded."""
    with_llamacpp = any(r.method in LLAMACPP_METHODS for r in records)
    with_server = any(r.method in LLAMA_SERVER_METHODS for r in records)
    with_engine = any(r.engine_stats for r in records)
    notes = [RSS_NOTE, TPS_NOTE] + ([MODELS_RSS_NOTE] if models_rss else []) + ([SPLIT_NOTE] if with_engine else [])
    notes += [LLAMACPP_NOTE] if with_llamacpp else []
    notes += [SERVER_NOTE] if with_server else []
    return {
        "config": config,
        "machine": machine,
        "methods": summarise(records, models_rss),
        "notes": notes + ([OUTSIDE_NOTE] if any(r.method in OUTSIDE_METHODS for r in records) else []),
        "divergences": [d.as_dict() for d in divergences],
        "records": [r.as_dict() for r in records],
    }


def write_report(results: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json", "markdown": out_dir / "report.md", "chart": out_dir / "speedup.png"}
    paths["json"].write_text(json.dumps(results, indent=2) + "\n")
    paths["markdown"].write_text(markdown(results))
    plot_speedup(results["methods"], paths["chart"])
    if any(st.get("accuracy") is not None for st in results["methods"].values()):
        paths["accuracy"] = out_dir / "accuracy_vs_speed.png"
        plot_accuracy(results["methods"], paths["accuracy"])
    if engine_methods(results["methods"]):
        paths["acceptance"], paths["time_split"] = out_dir / "acceptance.png", out_dir / "time_split.png"
        plot_acceptance(results["methods"], paths["acceptance"])
        plot_time_split(results["methods"], paths["time_split"])
    return paths


def table_rows(methods: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the summary table, shared by the markdown file and the terminal."""
    with_hf = "hf" in methods or "stepwise" not in methods  # a diffusion LM's run compares with stepwise
    bases = [b for b in SPEED_BASES[1:] if b in methods]
    with_own_plain = any(s.get("exact_match_vs_plain") is not None for s in methods.values())
    with_accuracy = any(s.get("accuracy") is not None for s in methods.values())
    header = ["method", "tok/s"] + (["speedup vs hf"] if with_hf else []) + [f"speedup vs {b}" for b in bases]
    header += ["mean accepted"] + (["exact match vs hf"] if with_hf else [])
    header += (["exact match vs own plain"] if with_own_plain else []) + (["accuracy"] if with_accuracy else [])
    header += ["peak RSS MB"]
    rows = []
    for name, s in methods.items():
        row = [name, f"{s['tokens_per_s']:.2f}"] + ([_x(s["speedup_vs_hf"])] if with_hf else [])
        row += [_x(s["speedup_vs_" + b.replace("-", "_")]) for b in bases]
        row += [_num(s["mean_accepted"])] + ([_pct(s["exact_match_rate"])] if with_hf else [])
        row += [_pct(s.get("exact_match_vs_plain"))] if with_own_plain else []
        row += [_pct(s.get("accuracy"))] if with_accuracy else []
        row += [f"{s['peak_rss_mb']:.0f}"]
        rows.append(row)
    return header, rows


def markdown(results: dict[str, Any]) -> str:
    cfg, machine = results["config"], results["machine"]
    lines = [
        f"# leapdecode bench: {cfg.get('model')} on {cfg.get('prompts')}",
        "",
        f"{cfg.get('prompt_count', '?')} prompts, max_new_tokens={cfg.get('max_new_tokens')}, "
        f"dtype={cfg.get('dtype')}, threads={machine.get('threads')}, cpu={machine.get('cpu_capability')}, "
        f"torch {machine.get('torch')}, transformers {machine.get('transformers')}"
        + _llama_cpp_versions(machine),
        "",
        *_md_table(*table_rows(results["methods"])),
        "",
        *[f"- {note}" for note in results.get("notes", [])],
        "",
        *_category_section(results["methods"]),
        *accuracy_section(results["methods"]),
        *structured_section(results["methods"]),
        *_breakdown_section(results["methods"]),
        *forward_cost_section(results.get("forward_cost")),
        *_memory_section(results["methods"]),
        *_divergence_section(results["divergences"], _unchecked(results)),
    ]
    return "\n".join(lines) + "\n"


def forward_cost_section(cost: dict[str, Any] | None) -> list[str]:
    """One target forward by rows (a plain step is 1 row, verifying k drafted tokens k+1), and a 1-row step
    against the time reading the weights must take at the measured bandwidth."""
    if not cost:
        return []
    ms = {int(n): v for n, v in cost["forward_ms"].items()}  # JSON keys come back as strings
    header = ["rows"] + [str(n) for n in ms]
    rows = [["ms per forward"] + [f"{v:.2f}" for v in ms.values()],
            ["vs 1 row"] + [f"{v / ms[1]:.2f}x" for v in ms.values()]]
    lines = ["## Target forward by rows", "", *_md_table(header, rows), ""]
    if cost.get("bound_ms"):
        lines += [f"Weights read per forward: {cost['weight_mb']:.1f} MB; measured read bandwidth "
                  f"{cost['read_gbs']:.1f} GB/s; bound {cost['bound_ms']:.2f} ms; a 1-row step takes "
                  f"{cost['one_row_vs_bound']:.2f}x the bound.", ""]
    return lines


def _llama_cpp_versions(machine: dict[str, Any]) -> str:
    """Which llama.cpp ran: llama-cpp-python's library, and/or the llama-server binary."""
    out = f", llama-server: {machine['llama_server']}" if machine.get("llama_server") else ""
    if not machine.get("llama_cpp_python"):
        return out
    off = machine.get("llama_cpp_extra_buffers") is False  # see llamacpp_baseline.extra_buffers_enabled
    amx = " (extra CPU buffers off: AMX bug)" if off else ""
    return f", llama-cpp-python {machine['llama_cpp_python']}{amx}{out}"


def _category_section(methods: dict[str, dict[str, Any]]) -> list[str]:
    categories = sorted({c for s in methods.values() for c in s["by_category"]})
    if len(categories) < 2 or "hf" not in methods and "stepwise" in methods:  # see accuracy_section
        return []
    header = ["category"] + list(methods)
    rows = [[c] + [_x(_category_speedup(s, c)) for s in methods.values()] for c in categories]
    return ["## Speedup vs hf by category", "", *_md_table(header, rows), ""]


def _breakdown_section(methods: dict[str, dict[str, Any]]) -> list[str]:
    """Acceptance by draft position, time per step by part, and auto's choices, for the engine's methods."""
    names = engine_methods(methods)
    if not names:
        return []
    header = ["method", "steps"] + [f"{p} ms" for p in STEP_PARTS] + ["ms per step"]
    rows = [[m, str(methods[m]["steps"])] + [f"{methods[m]['step_ms'][p]:.2f}" for p in STEP_PARTS]
            + [f"{sum(methods[m]['step_ms'].values()):.2f}"] for m in names]
    lines = _acceptance_table(methods, names) + ["## Time per step", "", *_md_table(header, rows), ""]
    for m in names:
        if methods[m]["arms"]:
            lines += [f"{m} chose, per step: {_shares(methods[m]['arms'])}", ""]
    return lines


def _acceptance_table(methods: dict[str, dict[str, Any]], names: list[str]) -> list[str]:
    drafting = [m for m in names if methods[m]["acceptance_at"]]
    if not drafting:
        return []
    shown = min(POSITIONS_SHOWN, max(len(methods[m]["acceptance_at"]) for m in drafting))
    rows = [[m] + [_pct(r) for r in (methods[m]["acceptance_at"] + [None] * shown)[:shown]] for m in drafting]
    return ["## Acceptance by draft position", "",
            "Of the steps whose verified draft reached position i, the share that accepted token i.", "",
            *_md_table(["method"] + [str(i + 1) for i in range(shown)], rows), ""]


def _shares(counts: dict[str, int]) -> str:
    total = sum(counts.values()) or 1
    return ", ".join(f"{arm} {100 * n / total:.0f}%" for arm, n in sorted(counts.items(), key=lambda x: -x[1]))


def _memory_section(methods: dict[str, dict[str, Any]]) -> list[str]:
    rows = [[m, f"{s['peak_rss_models_mb']:.0f}"] for m, s in methods.items() if s.get("peak_rss_models_mb")]
    return ["## Memory", "", *_md_table(["method", "peak RSS with models MB"], rows), ""] if rows else []


def _category_speedup(stats: dict[str, Any], category: str) -> float | None:
    return stats["by_category"].get(category, {}).get("speedup_vs_hf")


def _unchecked(results: dict[str, Any]) -> list[str]:
    """Methods whose splits from hf are not scored: another runtime, or the engine on quantized weights."""
    quantized = results["config"].get("precision") in QUANTIZED
    other_runtime = LLAMACPP_METHODS + LLAMA_SERVER_METHODS
    return [m for m in results["methods"] if m in other_runtime or (quantized and m not in HF_METHODS)]


def _divergence_section(divergences: list[dict[str, Any]], unchecked: list[str]) -> list[str]:
    lines = ["## Divergences from hf", ""]
    if unchecked:
        why = ("another runtime's numerics, or the engine on quantized weights, judged by exact match with its "
               "own plain decoding instead")
        lines += [f"Not checked here: {', '.join(unchecked)} ({why}).", ""]
    if not divergences:
        every = "every method checked" if unchecked else "every method"
        return lines + [f"None: {every} reproduced hf's greedy output token for token.", ""]
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
    table = Table(title="leapdecode bench")
    # A narrow terminal may shorten the headers, never a method's name: llamacpp and llamacpp-pld would both
    # show as "llamac…".
    table.add_column(header[0], no_wrap=True, min_width=max(len(r[0]) for r in rows))
    for name in header[1:]:
        table.add_column(name)
    for row in rows:
        table.add_row(*row)
    console = console or Console()
    console.print(table)
    if structured := structured_rows(results["methods"]):
        shown = Table(title="structured output")
        for name in STRUCTURED_HEADER:
            shown.add_column(name)
        for row in structured:
            shown.add_row(*row)
        console.print(shown)
    suspects = [d for d in results["divergences"] if not d["near_tie"]]
    if results["divergences"]:
        console.print(f"{len(results['divergences'])} divergence(s) from hf, {len(suspects)} not a near-tie")
    cost = results.get("forward_cost")
    if cost:
        ms = {int(n): v for n, v in cost["forward_ms"].items()}
        by_rows = ", ".join(f"{n} rows {v / ms[1]:.2f}x" for n, v in ms.items() if n > 1)
        bound = f"; 1 row {cost['one_row_vs_bound']:.2f}x the bandwidth bound" if cost.get("bound_ms") else ""
        console.print(f"target forward: 1 row {ms[1]:.2f} ms, {by_rows}{bound}")
