"""bench-serve end to end: find or start a server, drive it at each concurrency, write table and plot."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from leapdecode.bench.prompts import load_prompts, prompt_set_name
from leapdecode.bench.serve_load import LoadConfig, run_load
from leapdecode.bench.structured import structured_request
from leapdecode.errors import LeapError

COLUMNS = ["concurrency", "speculation", "throughput", "latency_p50", "latency_p99", "ttft_p50", "ttft_p99",
           "itl_p50", "itl_p99", "accepted_per_forward", "errors"]


def add_bench_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="a running leapdecode server on loopback (default: start one for the run)")
    p.add_argument("--model", default="smollm2-135m", help="model to serve when starting a server")
    p.add_argument("--dtype", default="auto", help="dtype of a started server")
    p.add_argument("--method", default="suffix", help="speculative method of a started server")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of a started server")
    p.add_argument("--draft-model", help="a started server's draft model (methods draft and auto)")
    p.add_argument("--draft-dtype", default=None, help="a started server's draft precision (e.g. int4)")
    p.add_argument("--skip-layers", help="a started server's layerskip set (methods layerskip and auto)")
    p.add_argument("--skip-dtype", default=None, help="a started server's layerskip draft precision (e.g. int4)")
    p.add_argument("--tree", type=int, default=None, help="a started server's token-tree width")
    p.add_argument("--prompts", default="mt-bench", help="mt-bench, humaneval, json-extract (each request with its "
                   "response_format), tool-calls (with its tools) or a .jsonl file")
    p.add_argument("--concurrency", default="1,2,4,8,16", help="comma-separated concurrency levels")
    p.add_argument("--requests", type=int, default=16, help="requests per level and mode (at least the concurrency)")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--out", type=Path, default=None, help="output folder (default bench-out/serve-<prompts>)")


def run_bench_serve(args: argparse.Namespace) -> dict[str, Any]:
    prompts = [{"messages": p.prompt if isinstance(p.prompt, list) else [{"role": "user", "content": p.prompt}]}
               | structured_request(p) for p in load_prompts(args.prompts)]
    levels = tuple(int(c) for c in str(args.concurrency).split(",") if c.strip())
    out = args.out or Path("bench-out") / f"serve-{prompt_set_name(args.prompts)}"
    started = "leapdecode " + " ".join(_server_command(args, 0)[3:-2])  # refuses drafting options with --url
    server = "given by --url" if args.url else started
    with _server(args) as url:
        cfg = LoadConfig(url=url, prompts=tuple(prompts), concurrency=levels, requests=args.requests,
                         max_tokens=args.max_tokens)
        model = httpx.get(f"{url}/v1/models", timeout=10).json()["data"][0]["id"]
        rows = asyncio.run(_with_progress(cfg, model))
    result = {"url": url, "model": model, "server": server,
              "prompts": args.prompts, "max_tokens": args.max_tokens, "requests_per_level": args.requests, "rows": rows}
    _write(result, out)
    return result


async def _with_progress(cfg: LoadConfig, model: str) -> list[dict[str, Any]]:
    from tqdm import tqdm

    with tqdm(total=len(cfg.concurrency) * len(cfg.modes), desc="bench-serve levels", unit="level") as bar:
        return await run_load(cfg, model, progress=lambda: bar.update(1))


@contextmanager
def _server(args: argparse.Namespace) -> Iterator[str]:
    if args.url:
        yield args.url.rstrip("/")
        return
    port = _free_port()
    proc = subprocess.Popen(_server_command(args, port), env=dict(os.environ, HF_HUB_OFFLINE="1"),
                            stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _server_command(args: argparse.Namespace, port: int) -> list[str]:
    """The `leapdecode serve` command line of a started server; the port comes last."""
    drafting = {"--draft-model": args.draft_model, "--draft-dtype": args.draft_dtype, "--skip-layers": args.skip_layers,
                "--skip-dtype": args.skip_dtype, "--tree": args.tree}
    if args.url and any(v is not None for v in drafting.values()):
        raise LeapError(f"{', '.join(drafting)} configure a server bench-serve starts; with --url, give them to "
                        "that server's `leapdecode serve`")
    cmd = [sys.executable, "-m", "leapdecode.cli", "serve", "--model", args.model, "--dtype", args.dtype,
           "--method", args.method]
    for flag, value in (drafting | {"--threads": args.threads}).items():
        cmd += [flag, str(value)] if value is not None else []
    return cmd + ["--port", str(port)]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 600.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise LeapError(f"the server exited with code {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise LeapError(f"the server at {url} was not ready within {timeout:.0f} s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write(result: dict[str, Any], out: Path) -> None:
    from leapdecode.bench.serve_chart import plot_serve

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in result["rows"]:
        lines.append("| " + " | ".join(_cell(row[c]) for c in COLUMNS) + " |")
    table = "\n".join(lines)
    (out / "report.md").write_text(f"# bench-serve: {result['model']}, {result['prompts']}, "
                                   f"{result['max_tokens']} tokens\n\nserver: {result['server']}\n\n{table}\n")
    plot_serve(result["rows"], out / "serve.png")
    print(table)
    print(f"\nwrote {out / 'report.md'}, {out / 'results.json'}, {out / 'serve.png'}")


def _cell(v: Any) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    return "-" if v is None else str(v)
