"""Prometheus metrics of one server, in a registry of its own (several servers may share a process)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6, 1.2, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self, queue_depth: Callable[[], int], batch_size: Callable[[], int]) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("leapdecode_requests", "Requests by endpoint and outcome", ["endpoint", "outcome"],
                                registry=r)
        self.prompt_tokens = Counter("leapdecode_prompt_tokens", "Prompt tokens of admitted requests", registry=r)
        self.completion_tokens = Counter("leapdecode_completion_tokens", "Tokens generated", registry=r)
        self.drafted = Counter("leapdecode_draft_tokens", "Draft tokens verified by the target", registry=r)
        self.accepted = Counter("leapdecode_accepted_tokens", "Draft tokens accepted", registry=r)
        self.forwards = Counter("leapdecode_request_steps", "Per-request target forward steps", registry=r)
        Gauge("leapdecode_acceptance_rate", "Accepted / verified draft tokens since start", registry=r
              ).set_function(self._acceptance)
        self.ttft = Histogram("leapdecode_time_to_first_token_seconds", "Time to first token",
                              buckets=_LATENCY_BUCKETS, registry=r)
        self.itl = Histogram("leapdecode_inter_token_latency_seconds", "Time between streamed tokens",
                             buckets=_LATENCY_BUCKETS, registry=r)
        self.latency = Histogram("leapdecode_request_latency_seconds", "Whole request time",
                                 buckets=_LATENCY_BUCKETS, registry=r)
        Gauge("leapdecode_queue_depth", "Requests waiting to be admitted", registry=r).set_function(queue_depth)
        Gauge("leapdecode_running_batch_size", "Requests decoding together", registry=r).set_function(batch_size)

        self.batch = Histogram("leapdecode_step_batch_size", "Requests in each batched target forward",
                               buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.rows = Histogram("leapdecode_step_rows", "Rows (pending tokens + verified drafts) per forward",
                              buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self._totals = [0, 0]  # drafted, accepted: the gauge's own running sums

    def step(self, tokens: int, drafted: int, accepted: int) -> None:
        """One request's share of one batched step."""
        self.completion_tokens.inc(tokens)
        self.drafted.inc(drafted)
        self.accepted.inc(accepted)
        self.forwards.inc()
        self._totals[0] += drafted
        self._totals[1] += accepted

    def forward(self, requests: int, rows: int, seconds: float) -> None:
        """One batched forward (called from the decode thread; prometheus metrics are thread-safe)."""
        self.batch.observe(requests)
        self.rows.observe(rows)

    def _acceptance(self) -> float:
        drafted, accepted = self._totals
        return accepted / drafted if drafted else 0.0

    def render(self) -> bytes:
        return generate_latest(self.registry)
