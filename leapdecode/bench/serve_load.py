"""leapdecode bench-serve: many concurrent streaming clients against a running server, on loopback.

For each concurrency level it sends the same requests twice, with speculation on (the server's method)
and off (`"method": "none"` per request), so both are measured on one server in one run. Every loop is
bounded: a fixed number of requests per level, each with a timeout.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import httpx
from httpx_sse import SSEError, aconnect_sse

from leapdecode.errors import InvalidRequest

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True, slots=True)
class LoadConfig:
    url: str  # the server's base URL, e.g. http://127.0.0.1:8000
    prompts: tuple[dict[str, Any], ...]  # request bodies' own parts: messages, and a structured prompt's
    # response_format or tools (bench.structured.structured_request)
    concurrency: tuple[int, ...] = (1, 2, 4, 8, 16)
    requests: int = 16  # per concurrency level and mode (at least the concurrency itself)
    max_tokens: int = 128
    modes: tuple[str | None, ...] = (None, "none")  # None: the server's own method; "none": no speculation
    timeout: float = 600.0  # seconds per request

    def __post_init__(self) -> None:
        host = urlparse(self.url).hostname
        if host not in LOOPBACK:
            raise InvalidRequest(f"bench-serve only targets loopback servers, not {host!r}")
        if not self.prompts or min(self.concurrency, default=0) < 1 or self.requests < 1:
            raise InvalidRequest("need prompts, concurrency levels >= 1 and requests >= 1")


@dataclass(slots=True)
class RequestTiming:
    tokens: int = 0
    ttft: float | None = None
    latency: float = 0.0
    accepted_per_forward: float | None = None
    error: str | None = None


async def run_load(cfg: LoadConfig, model: str, progress: Any = None) -> list[dict[str, Any]]:
    """One row per (concurrency, mode): throughput, latency and time-to-first-token percentiles."""
    rows = []
    async with httpx.AsyncClient(base_url=cfg.url, timeout=cfg.timeout) as client:
        await _one(client, model, cfg.prompts[0], cfg.max_tokens, None)  # warm-up, untimed
        for c in cfg.concurrency:
            for mode in cfg.modes:
                rows.append(await _level(client, cfg, model, c, mode))
                if progress is not None:
                    progress()
    return rows


async def _level(client: httpx.AsyncClient, cfg: LoadConfig, model: str, c: int, mode: str | None) -> dict[str, Any]:
    n = max(cfg.requests, c)
    todo = iter(range(n))
    timings: list[RequestTiming] = []

    async def worker() -> None:
        for i in todo:  # one shared iterator: each worker takes the next request when it is free
            timings.append(await _one(client, model, cfg.prompts[i % len(cfg.prompts)], cfg.max_tokens, mode))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(c)))
    wall = time.perf_counter() - start
    return _summarise(c, mode, timings, wall)


async def _one(client: httpx.AsyncClient, model: str, request: dict[str, Any], max_tokens: int,
               mode: str | None) -> RequestTiming:
    body: dict[str, Any] = request | {"model": model, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    if mode is not None:
        body["method"] = mode
    t = RequestTiming()
    start = last = time.perf_counter()
    try:
        async with aconnect_sse(client, "POST", "/v1/chat/completions", json=body) as source:
            if source.response.status_code != 200:
                t.error = f"HTTP {source.response.status_code}: {(await source.response.aread())[:200]!r}"
                return t
            async for event in source.aiter_sse():
                if event.data != "[DONE]":
                    last = _take(event.json(), t, start, last)
    except (httpx.HTTPError, SSEError) as exc:
        t.error = f"{type(exc).__name__}: {exc}"
    t.latency = time.perf_counter() - start
    return t


def _take(chunk: dict[str, Any], t: RequestTiming, start: float, last: float) -> float:
    """Read one streamed chunk into t; returns the time of the latest content chunk."""
    now = time.perf_counter()
    if usage := chunk.get("usage"):
        t.tokens = usage["completion_tokens"]
        t.accepted_per_forward = usage.get("speculation", {}).get("accepted_per_forward")
    choices = chunk.get("choices") or []
    delta = choices[0].get("delta", {}) if choices else {}
    if delta.get("content") or delta.get("tool_calls"):
        if t.ttft is None:
            t.ttft = now - start
        return now
    return last


def _summarise(c: int, mode: str | None, timings: list[RequestTiming], wall: float) -> dict[str, Any]:
    ok = [t for t in timings if t.error is None]
    tokens = sum(t.tokens for t in ok)
    lat = sorted(t.latency for t in ok) or [0.0]
    ttft = sorted(t.ttft for t in ok if t.ttft is not None) or [0.0]
    # inter-token latency: each request's mean time per token after its first (chunks carry several)
    gaps = sorted((t.latency - t.ttft) / (t.tokens - 1) for t in ok if t.ttft is not None and t.tokens > 1) or [0.0]
    apf = [t.accepted_per_forward for t in ok if t.accepted_per_forward is not None]
    return {
        "concurrency": c, "speculation": mode is None, "requests": len(timings), "errors": len(timings) - len(ok),
        "tokens": tokens, "seconds": round(wall, 3), "throughput": round(tokens / wall, 2) if wall else 0.0,
        "latency_p50": round(_pct(lat, 50), 3), "latency_p99": round(_pct(lat, 99), 3),
        "ttft_p50": round(_pct(ttft, 50), 4), "ttft_p99": round(_pct(ttft, 99), 4),
        "itl_p50": round(_pct(gaps, 50), 4), "itl_p99": round(_pct(gaps, 99), 4),
        "accepted_per_forward": round(statistics.fmean(apf), 3) if apf else None,
        "first_error": next((t.error for t in timings if t.error), None),
    }


def _pct(sorted_values: list[float], q: float) -> float:
    i = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[i]
