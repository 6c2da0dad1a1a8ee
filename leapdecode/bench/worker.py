"""An outside baseline in a process of its own, kept alive across prompts and called over a pipe.

Two runtimes' thread pools in one process slow each other down (measured: llama.cpp fell from 111 to 25 tok/s
beside the engine), so every baseline is built and run in a spawned worker. The protocol is strictly
request/reply: the main process sends one call and blocks until its answer, the worker blocks on the pipe
while idle, so only one side computes at a time. Messages are plain pickles (not multiprocessing's
ForkingPickler, which would hand tensors over as shared memory the worker must outlive).

    main -> worker: (method name, args, kwargs)      or None: shut down
    worker -> main: ("ok", result, peak RSS MB)      or ("error", exception, traceback text)
"""

from __future__ import annotations

import multiprocessing
import pickle
import signal
import sys
import traceback
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

from leapdecode.bench.record import Generation, peak_rss_mb
from leapdecode.errors import LeapError, one_line

STOP_SECONDS = 10.0  # a clean exit takes milliseconds; a worker stuck mid-generation is terminated after this


class WorkerError(RuntimeError):
    """An unexpected exception inside a worker (a bug, not bad input): its type, message and remote traceback."""


class Worker:
    """`factory(*args)` built in a spawned process; `generate` and `call` run its methods there."""

    def __init__(self, label: str, factory: Callable[..., Any], args: tuple[Any, ...], threads: int) -> None:
        self.label = label
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no thread pool inherited from ours
        self._conn, child = ctx.Pipe()
        # daemon: multiprocessing terminates it at our exit should close() never run
        self._process = ctx.Process(target=_serve, args=(child, factory, args, threads), name=label, daemon=True)
        self._process.start()
        child.close()  # ours is the only end left here: the worker's death reads as EOF
        self.pid = self._process.pid
        self.peak_rss_mb = 0.0
        self._busy = True  # a call (here: the build) is in flight and its answer not read
        try:
            self._reply()  # built (or failed to build) before we go on: loading is not overlapped with our work
        except BaseException:
            self.close()
            raise

    def generate(self, *args: Any, **kwargs: Any) -> Generation:
        """The object's generate(), with the worker's own peak RSS in place of ours."""
        g = self.call("generate", *args, **kwargs)
        return replace(g, peak_rss_mb=self.peak_rss_mb)

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Run `name(*args, **kwargs)` on the worker's object and return its result; blocks until it is done."""
        try:
            self._conn.send_bytes(pickle.dumps((name, args, kwargs)))
        except (BrokenPipeError, OSError) as exc:
            raise LeapError(f"{self.label}: its worker process is gone ({self._exit()})") from exc
        self._busy = True
        return self._reply()

    def close(self) -> None:
        """Ask the worker to exit, and make sure it did; safe to call twice. A worker interrupted mid-call
        (Ctrl-C, an error here) is terminated at once rather than waited for."""
        if self._process.is_alive() and not self._busy:
            try:
                self._conn.send_bytes(pickle.dumps(None))
            except OSError:
                pass  # already gone
            self._process.join(STOP_SECONDS)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(STOP_SECONDS)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _reply(self) -> Any:
        try:
            status, payload, extra = pickle.loads(self._conn.recv_bytes())
        except (EOFError, OSError) as exc:
            raise LeapError(f"{self.label}: its worker process died ({self._exit()})") from exc
        self._busy = False
        if status == "ok":
            self.peak_rss_mb = extra
            return payload
        if isinstance(payload, LeapError):
            raise payload  # bad input: the same one-line error the baseline raises in-process
        raise WorkerError(f"{self.label} worker: {one_line(payload)}\n{extra}")

    def _exit(self) -> str:
        self._process.join(1.0)
        return f"exit code {self._process.exitcode}"


def _serve(conn: Connection, factory: Callable[..., Any], args: tuple[Any, ...], threads: int) -> None:
    """The worker's whole life: build the object, then answer calls until told to stop or the pipe closes."""
    # Ctrl-C reaches the whole process group: the main process decides when we stop (see Worker.close).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The bench's thread count for torch's pool, where the baseline's module uses torch (it is imported by now:
    # unpickling `factory` imported it). A llama.cpp worker never imports torch (250 MB of RSS for nothing);
    # llama.cpp gets its thread count as an argument.
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    built, target = _attempt(conn, lambda: factory(*args))
    while built:
        try:
            message = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return  # the main process is gone: nobody to answer
        if message is None:
            return
        name, call_args, kwargs = message
        _attempt(conn, lambda: getattr(target, name)(*call_args, **kwargs))


def _attempt(conn: Connection, fn: Callable[[], Any]) -> tuple[bool, Any]:
    """Run fn and send back its result or its exception; returns whether it succeeded, and its result."""
    try:
        result = fn()
    except Exception as exc:
        conn.send_bytes(_error(exc))
        return False, None
    conn.send_bytes(pickle.dumps(("ok", result, peak_rss_mb())))
    return True, result


def _error(exc: Exception) -> bytes:
    """The exception itself when it survives pickling (LeapError does), else its one line as a WorkerError."""
    trace = "".join(traceback.format_exception(exc))
    try:
        message = pickle.dumps(("error", exc, trace))
        pickle.loads(message)  # some exceptions pickle but cannot be rebuilt from their args
        return message
    except Exception:
        return pickle.dumps(("error", WorkerError(one_line(exc)), trace))

