"""`leapdecode bench`: the engine's methods against transformers generate(), on real prompts, in one run."""

from __future__ import annotations

from typing import Any

from leapdecode.bench.config import (
    BenchConfig,
    add_bench_arguments,
    bench_config_from_args,
)

__all__ = ["BenchConfig", "add_bench_arguments", "bench_config_from_args", "run_bench"]


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Run the benchmark and write its report under cfg.out_dir; returns what results.json holds."""
    # Imported on call: building the CLI parser should not load transformers, matplotlib or the engine.
    from leapdecode.bench.harness import run_bench as run

    return run(cfg)
