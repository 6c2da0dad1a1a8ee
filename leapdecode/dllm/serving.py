"""Serving a diffusion LM: the server's scheduler interface (submit, cancel, start/run, stop), one request at a
time, each streamed a block at a time as blocks are committed (a dLLM's text before that can still change).

A request's max_tokens need not be a multiple of the block: it decodes whole blocks and the answer is cut
at max_tokens (on a block-causal model the blocks before the cut are the same whatever comes after).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from leapdecode.batching.scheduler import Event, QueueFull, ShuttingDown, send
from leapdecode.errors import one_line
from leapdecode.types import GenerationResult


@dataclass
class DiffusionRun:
    """One request: its prompt, options (for DiffusionLLM.generate), and the text streamed so far."""

    llm: Any
    prompt_ids: list[int]
    options: dict[str, Any]
    limit: int  # max_tokens as asked
    tokens: list[int] = field(default_factory=list)
    sent: str = ""
    outcome: GenerationResult | None = None

    @property
    def method(self) -> str:
        return str(self.options["method"])

    @property
    def text(self) -> str:
        return self.llm.tokenizer.decode(self.tokens[: self.limit], skip_special_tokens=True)

    def take(self, block: list[int]) -> str:
        """A committed block -> the text it adds (held back while it ends inside a multi-byte character)."""
        self.tokens += block
        text = self.text
        if text.endswith("\ufffd"):
            return ""
        piece, self.sent = text[len(self.sent) :], text
        return piece

    def result(self) -> GenerationResult:
        assert self.outcome is not None, "result() before the request finished"
        return self.outcome


@dataclass(eq=False)
class _Ticket:
    run: DiffusionRun
    emit: Callable[[Event], None]
    cancelled: bool = False


class BlockScheduler:
    """Decodes queued requests one after another in one thread; the HTTP side talks to it as to the AR
    scheduler. on_step(requests, rows, seconds) is called once per request with its totals."""

    def __init__(self, max_queue: int = 64) -> None:
        self.max_queue, self.run_in_caller = max_queue, False
        self.on_step: Callable[[int, int, float], None] | None = None
        self._queue: deque[_Ticket] = deque()
        self._current: _Ticket | None = None
        self._wake = threading.Condition()
        self._stopping = self._halt = False
        self._thread: threading.Thread | None = None
        self._threads = torch.get_num_threads()

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def batch_size(self) -> int:
        return 1 if self._current else 0

    def submit(self, run: DiffusionRun, emit: Callable[[Event], None]) -> _Ticket:
        with self._wake:
            if self._stopping:
                raise ShuttingDown("the server is shutting down; retry after it restarts")
            if len(self._queue) >= self.max_queue:
                raise QueueFull(f"{len(self._queue)} requests are already waiting; try again shortly")
            ticket = _Ticket(run, emit)
            self._queue.append(ticket)
            self._wake.notify()
        return ticket

    def cancel(self, ticket: _Ticket) -> None:
        ticket.cancelled = True  # checked at the next block boundary

    def start(self) -> None:
        if self.run_in_caller:
            return
        self._threads = torch.get_num_threads()
        self._thread = threading.Thread(target=self._loop, name="leapdecode-dllm", daemon=True)
        self._thread.start()

    def run(self, keep_going: Callable[[], bool] = lambda: True) -> None:
        self._threads = torch.get_num_threads()
        self._loop(keep_going)

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse new work, let queued and running requests finish for up to timeout seconds, cancel the rest."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        deadline = time.monotonic() + timeout
        while (self._queue or self._current) and time.monotonic() < deadline:
            time.sleep(0.05)
        for t in [*self._queue, *([self._current] if self._current else [])]:
            t.cancelled = True
        with self._wake:
            self._halt = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self, keep_going: Callable[[], bool] = lambda: True) -> None:
        torch.set_num_threads(self._threads)
        with torch.inference_mode():
            while not self._halt and keep_going():
                with self._wake:
                    if not self._queue:
                        self._wake.wait(timeout=0.5)
                        continue
                    self._current = self._queue.popleft()
                self._decode(self._current)
                self._current = None
        for t in self._queue:
            send(t, Event(finish_reason="cancelled"))

    def _decode(self, ticket: _Ticket) -> None:
        run = ticket.run
        if ticket.cancelled:
            return send(ticket, Event(finish_reason="cancelled"))

        def on_block(block: list[int]) -> bool:
            send(ticket, Event(text=run.take(block), tokens=len(block)))
            return not ticket.cancelled and len(run.tokens) < run.limit

        try:
            res = run.llm.generate(prompt_ids=run.prompt_ids, on_block=on_block, **run.options)
        except Exception as exc:  # noqa: BLE001 - one bad request must not stop the others
            return send(ticket, Event(finish_reason="error", error=f"decoding failed: {one_line(exc)}"))
        if ticket.cancelled:
            return send(ticket, Event(finish_reason="cancelled"))
        run.outcome = _cut(res, run)
        last = res.token_ids[len(run.tokens) :]  # the final block, which ended the answer (on_block was not called)
        if self.on_step is not None:
            self.on_step(1, res.stats.target_forwards, res.stats.seconds)
        send(ticket, Event(text=run.take(last) if last else "", tokens=len(last),
                            finish_reason=run.outcome.finish_reason, result=run.outcome))


def _cut(res: GenerationResult, run: DiffusionRun) -> GenerationResult:
    """The answer as the request asked: at most max_tokens tokens ("length" when cut)."""
    ids = res.token_ids[: run.limit]
    finish = "length" if len(res.token_ids) >= run.limit else res.finish_reason
    res.stats.new_tokens = len(ids)
    return GenerationResult(run.llm.tokenizer.decode(ids, skip_special_tokens=True), ids, finish, res.stats)

