"""What a target forward costs by rows, against what reading its weights must cost on this machine.

Decoding is bound by reading the weights: a step can be no faster than the bytes of weights it reads divided
by the memory's read bandwidth (the bound). Speculation pays when verifying k drafted tokens costs little more
than one step, so the report shows both: a 1-row step against the bound, and an n-row forward against a 1-row
one, timed on the bench's own model, at its own precision and threads, over a cache holding a real context.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

ROWS = (1, 2, 4, 8, 16)
CONTEXT = 256  # cache slots already filled when a forward is timed: a short answer's worth
REPEATS = 15
PROBE_BYTES = 1 << 30  # well past any CPU's last-level cache


def read_bandwidth_gbs(repeats: int = 5) -> float:
    """Best of a few full reads of a 1 GiB buffer at the current thread count, in GB/s (1e9 bytes)."""
    buf = torch.ones(PROBE_BYTES // 4, dtype=torch.float32)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        buf.sum()
        best = min(best, time.perf_counter() - start)
    return PROBE_BYTES / best / 1e9


def weight_bytes(network: Any) -> int | None:
    """Bytes of weights one forward reads: every tensor its linear layers hold (a token's embedding row is
    negligible beside them). None for a network this cannot see into (the transformers adapter)."""
    layers = getattr(network, "layers", None)
    if layers is None or not hasattr(network, "lm_head"):
        return None
    linears = [network.lm_head] + [lin for layer in layers for lin in (layer.qkv, layer.o, layer.gate_up, layer.down)]
    return sum(lin.weight_bytes for lin in linears)


def forward_ms(network: Any, rows: tuple[int, ...] = ROWS) -> dict[int, float]:
    """Median milliseconds of one forward over n new tokens at slot CONTEXT, for each n in rows."""
    cache = network.new_cache(CONTEXT + max(rows) + 1)
    tokens = torch.randint(0, network.vocab_size, (1, CONTEXT + max(rows)))
    network.forward(tokens[:, :CONTEXT], 0, cache, logits=False)
    out = {}
    for n in rows:
        times = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            network.forward(tokens[:, CONTEXT : CONTEXT + n], CONTEXT, cache)
            times.append(time.perf_counter() - start)
        out[n] = 1000 * statistics.median(times)
    return out


def roofline(network: Any) -> dict[str, Any] | None:
    """The report's section: forward ms by rows, n rows against 1, weights, bandwidth and the bound. None for
    a network run through transformers (its weights and cache are not ours to time this way)."""
    size = weight_bytes(network)
    if size is None:
        return None
    ms = forward_ms(network)
    gbs = read_bandwidth_gbs()
    bound = size / gbs / 1e6  # bytes / (GB/s) -> ms
    return {
        "forward_ms": ms,
        "vs_one_row": {n: ms[n] / ms[1] for n in ms},
        "weight_mb": size / 1e6,
        "read_gbs": gbs,
        "bound_ms": bound,
        "one_row_vs_bound": ms[1] / bound,
    }
