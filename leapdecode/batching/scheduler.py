"""Many requests at once: admit between steps, draft per request, verify every draft in one forward.

Each request keeps its own engine (tokens, KV cache, drafter, RNG, draft length), so its output is what it
would be alone; the scheduler only decides who runs, how much of each draft is verified, and packs every
running request's rows into one target forward (ragged drafts packed, attention per request).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from leapdecode.batching.draft_batch import propose_together
from leapdecode.decode.engine import forward_batch
from leapdecode.decode.run import Run
from leapdecode.errors import InvalidRequest, LeapError, one_line
from leapdecode.models.base import CausalLM
from leapdecode.policy.speculation import SpeculationPolicy
from leapdecode.types import Draft, GenerationResult


class QueueFull(LeapError):
    """More requests are waiting than the server is configured to hold."""


class ShuttingDown(QueueFull):
    """The scheduler is stopping: it finishes what runs and takes nothing new."""


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    max_batch: int = 16  # requests decoding together
    max_queue: int = 64  # requests waiting to be admitted
    adaptive: bool = True  # trim drafts by measured step cost, and speculate only where whole steps say it pays

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_queue < 0:
            raise InvalidRequest(f"need max_batch >= 1 and max_queue >= 0, got {self.max_batch}, {self.max_queue}")


@dataclass(frozen=True, slots=True)
class Event:
    """What one step did for one request, sent to whoever submitted it."""

    text: str = ""  # new text, safe to stream
    tokens: int = 0  # tokens taken this step
    drafted: int = 0  # draft tokens verified this step
    accepted: int = 0  # of which accepted
    finish_reason: str | None = None  # "stop" | "length" | "cancelled" | "error" on the last event
    result: GenerationResult | None = None  # on the last event unless it failed
    error: str | None = None


@dataclass(eq=False, slots=True)
class Ticket:
    """One submitted request, from queue to retirement."""

    run: Run
    emit: Callable[[Event], None]
    cancelled: bool = False
    draft: Draft | None = None  # this step's verified draft


class Scheduler:
    """Owns the decode thread. submit() and cancel() may be called from any thread."""

    def __init__(self, network: CausalLM, config: SchedulerConfig = SchedulerConfig(),
                 on_step: Callable[[int, int, float], None] | None = None,
                 policy: SpeculationPolicy | None = None) -> None:
        self.network, self.config = network, config
        self.on_step = on_step  # (requests, rows, seconds) after each batched forward, for metrics
        self.policy = policy if policy is not None else SpeculationPolicy()  # the LLM's: its costs and gate
        self._queue: deque[Ticket] = deque()
        self._running: list[Ticket] = []
        self._wake = threading.Condition()
        self._stopping = False
        self._halt = False
        self._threads = 1
        self._foreground = False
        self.run_in_caller = False  # set by a caller that will decode with run() instead of start()
        self._keep_going: Callable[[], bool] = lambda: True
        self._thread: threading.Thread | None = None

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def batch_size(self) -> int:
        return len(self._running)

    def submit(self, run: Run, emit: Callable[[Event], None]) -> Ticket:
        with self._wake:
            if self._stopping:
                raise ShuttingDown("the server is shutting down; retry on another replica or after it restarts")
            if len(self._queue) >= self.config.max_queue:
                raise QueueFull(f"{len(self._queue)} requests are already waiting; try again shortly")
            ticket = Ticket(run, emit)
            self._queue.append(ticket)
            self._wake.notify()
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        """Stop a request at the next step boundary and free its cache (a client went away)."""
        ticket.cancelled = True
        with self._wake:
            self._wake.notify()

    def start(self) -> None:
        """Decode in a thread of its own (tests, Ray replicas). run() in the thread that loaded the model is
        faster: a second OpenMP team makes libgomp stop spinning, and every parallel region then pays a
        wake-up (a forward measured 17 ms in a new thread against 6.3 ms in the loading thread)."""
        if self.run_in_caller:
            return  # the caller decodes with run()
        self._threads = torch.get_num_threads()  # as set where the model was loaded
        self._thread = threading.Thread(target=self._loop, name="leapdecode-scheduler", daemon=True)
        self._thread.start()

    def run(self, keep_going: Callable[[], bool] = lambda: True) -> None:
        """Decode in the calling thread until stop() (or until keep_going() turns false)."""
        self._foreground, self._threads = True, torch.get_num_threads()
        self._keep_going = keep_going
        try:
            self._loop()
        finally:
            self._foreground = False

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse new work, let running requests finish for up to timeout seconds, cancel the rest."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        deadline = time.monotonic() + timeout
        while (self._running or self._queue) and time.monotonic() < deadline and self._alive():
            time.sleep(0.05)
        for t in list(self._queue) + list(self._running):
            t.cancelled = True
        self._halt = True
        with self._wake:
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _alive(self) -> bool:
        return self._foreground or (self._thread is not None and self._thread.is_alive())

    def _loop(self) -> None:
        # Thread-local torch state: this thread does all the compute, with the threads the model was
        # loaded for, and never records autograd history.
        torch.set_num_threads(self._threads)
        with torch.inference_mode():
            self._serve()
        for t in list(self._queue) + self._running:  # halted: whoever still waits hears it ended
            send(t, Event(finish_reason="cancelled"))

    def _serve(self) -> None:
        while not self._halt and self._keep_going():
            self._admit()
            self._retire()
            if not self._running:
                with self._wake:
                    if not self._queue and not self._halt:
                        self._wake.wait(timeout=0.5)
                continue
            try:
                self.step()
            except Exception as exc:  # noqa: BLE001 - fail this batch's requests, keep serving the next
                for t in self._running:
                    send(t, Event(finish_reason="error", error=f"decoding failed: {one_line(exc)}"))
                self._running.clear()

    def step(self) -> None:
        """One batched step for every running request: propose, plan, forward, settle."""
        start, batch = time.perf_counter(), len(self._running)
        # A batch where nobody drafts says nothing about whether drafting pays.
        gated = self.config.adaptive and any(t.run.speculates for t in self._running)
        speculate = self.policy.gate.speculate(batch) if gated else True
        self._propose(speculate)
        self._plan()
        logits, features, seconds = self._forward()
        tokens = self._settle(logits, features, seconds)
        if gated:
            self.policy.gate.observe(batch, speculate, tokens, time.perf_counter() - start)

    def _admit(self) -> None:
        while len(self._running) < self.config.max_batch:
            with self._wake:
                if not self._queue:
                    return
                ticket = self._queue.popleft()
            if ticket.cancelled:
                send(ticket, Event(finish_reason="cancelled"))
                continue
            try:
                ticket.run.start()  # builds the drafter and cache, prefills the prompt
            except Exception as exc:  # noqa: BLE001 - one bad request must not stop the others
                send(ticket, Event(finish_reason="error", error=str(exc)))
                continue
            self._running.append(ticket)

    def _propose(self, speculate: bool) -> None:
        """Each request's draft, drafters that can draft together doing so (draft_batch.py); none at all
        (drafters not even asked) where speculating does not pay. Where adaptive, each request of a batch is
        first asked for only as many tokens as are worth making and verifying at the batch's measured costs.
        A request alone drafts as it would in `generate`, whose draft length (and layerskip's searched one)
        was tuned for one request: the planner's costs are a line through noisy steps, and at one request
        its optimum is flat enough for that noise to cut drafts that pay (48-50 against 53.6 tok/s)."""
        engines = [t.run.engine for t in self._running]
        budgets = [e.draft_k(t.run.budget()) if speculate else 0 for e, t in zip(engines, self._running)]
        if self.config.adaptive and len(engines) > 1 and any(budgets):
            budgets = self.policy.plan([e.policy for e in engines], budgets, before_drafting=True)
        start = time.perf_counter()
        drafts = propose_together(engines, budgets)
        if any(budgets):
            self.policy.drafting.observe(sum(len(d) for d in drafts), time.perf_counter() - start)
        for t, draft in zip(self._running, drafts):
            t.draft = draft

    def _plan(self) -> None:
        if not self.config.adaptive:
            return
        policies = [t.run.engine.policy for t in self._running]
        chances = [t.draft.chances or p.acceptance.chances(len(t.draft)) for t, p in zip(self._running, policies)]
        keep = self.policy.plan(policies, [len(t.draft) for t in self._running], chances)
        for t, n in zip(self._running, keep):
            t.draft = t.draft.prefix(n)

    def _forward(self) -> tuple[Tensor, Tensor | None, float]:
        """The batch's logits [sum T, V], its features [sum T, dim] where some drafter reads them, and the
        seconds the forward took."""
        segments = [t.run.engine.segment(t.draft) for t in self._running]
        features = any(t.run.engine.wants_features for t in self._running)
        start = time.perf_counter()
        logits, feats = forward_batch(self.network, segments, features)
        rows, seconds = sum(s.tokens.shape[0] for s in segments), time.perf_counter() - start
        self.policy.forward.observe(rows, seconds)
        if self.on_step is not None:
            self.on_step(len(segments), rows, seconds)
        return logits, feats, seconds

    def _settle(self, logits: Tensor, features: Tensor | None, seconds: float) -> int:  # logits [sum T, V]
        """Verify and commit every request's share of the logits; the tokens the step yielded."""
        row = yielded = 0
        for t in self._running:
            # Each request waited for the whole batch's forward: its verify time, as it experienced it.
            rows = slice(row, row + t.draft.rows)
            done = t.run.settle(t.draft, logits[rows], seconds, None if features is None else features[rows])
            row += t.draft.rows
            yielded += done.accepted + 1
            send(t, Event(text=done.text, tokens=done.tokens, drafted=done.drafted, accepted=done.accepted))
        return yielded

    def _retire(self) -> None:
        still = []
        for t in self._running:
            if t.cancelled:
                send(t, Event(finish_reason="cancelled"))
            elif t.run.done:
                send(t, Event(text=t.run.text(), finish_reason=t.run.finish_reason, result=t.run.result()))
            else:
                still.append(t)
        self._running = still  # a retired request's engine, and with it its KV cache, is dropped here


def send(ticket: Any, event: Event) -> None:
    """Deliver an event to a ticket (this scheduler's, or dllm/serving.py's: anything with emit and
    cancelled); a receiver that is gone (its event loop closed) cancels the request instead."""
    try:
        ticket.emit(event)
    except Exception:  # noqa: BLE001 - the decode thread must outlive any one receiver
        ticket.cancelled = True
