"""llama.cpp's own `llama-server` as a baseline: plain greedy, draft-model speculation (-md), n-gram lookup.

llama-cpp-python exposes no draft-model speculation, so `scripts/build-llamacpp` builds llama.cpp's tools from
the sources vendored in its sdist. The server runs as a process of its own on 127.0.0.1, one slot, on the
bench's thread count (-t/-tb, and -td/-tbd for a draft); each prompt goes to /completion as token ids, greedy,
with cache_prompt off so it pays its prefill like every other method. The client times the HTTP call: that
includes a loopback round trip (well under a millisecond) but nothing of ours.
"""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from leapdecode.bench.record import Generation, process_peak_rss_mb
from leapdecode.errors import LeapError, ModelLoadError
from leapdecode.paths import cache_dir

LLAMACPP_VERSION = "0.3.36"  # the llama-cpp-python sdist whose vendored llama.cpp scripts/build-llamacpp builds
BUILD_HINT = "run scripts/build-llamacpp (optional, about 10 minutes on 2 cores)"
PR_SET_PDEATHSIG = 1  # linux/prctl.h
N_CTX = 4096  # as the llama-cpp-python baseline: prompt + answer + a draft must fit
START_SECONDS = 600.0  # loading a 1.5B GGUF (and its draft) from a cold disk takes a while
# Greedy: top_k 1 is argmax whatever else runs; penalties and the other samplers neutral, as for llamacpp.
GREEDY = {
    "temperature": 0.0, "top_k": 1, "top_p": 1.0, "min_p": 0.0, "typical_p": 1.0, "repeat_penalty": 1.0,
    "presence_penalty": 0.0, "frequency_penalty": 0.0, "dry_multiplier": 0.0, "xtc_probability": 0.0,
    "mirostat": 0,
}  # fmt: skip


def tools_dir() -> Path:
    return cache_dir() / f"llamacpp-{LLAMACPP_VERSION}" / "bin"


def llamacpp_tool(name: str) -> Path:
    """A built llama.cpp tool, or a one-line error saying how to build it."""
    path = tools_dir() / name
    if not path.is_file():
        raise LeapError(f"the llamacpp-server/-draft/-lookup methods need llama.cpp's {name} ({path} is missing): "
                        f"{BUILD_HINT}")
    return path


@dataclass(frozen=True, slots=True)
class ServerOptions:
    threads: int
    draft: Path | None = None  # a draft model's GGUF: llama.cpp's draft-model speculation
    draft_max: int | None = None  # None: llama.cpp's default
    draft_min: int | None = None
    spec_type: str | None = None  # e.g. "ngram-cache": llama.cpp's model-free speculation (no draft model)
    n_ctx: int = N_CTX
    # llama.cpp's extra CPU buffer types (repacked weights, AMX tiles); off on an AMX CPU, where its AMX matmul
    # crashes on the first batched forward (see llamacpp_baseline.extra_buffers_enabled)
    extra_buffers: bool = field(default_factory=lambda: not cpu_has_amx())

    @property
    def speculation(self) -> str | None:
        """llama-server's --spec-type: this llama.cpp loads -md's model but drafts with it only when asked for
        draft-simple (it infers a type from the draft's GGUF only for MTP/DFlash heads)."""
        return self.spec_type or ("draft-simple" if self.draft is not None else None)

    def arguments(self) -> list[str]:
        """llama-server's flags for these options (model, host and port aside)."""
        t = str(self.threads)
        args = ["-t", t, "-tb", t, "-c", str(self.n_ctx), "-np", "1", "--no-webui"]
        if self.draft is not None:
            args += ["-md", str(self.draft), "-td", t, "-tbd", t]
        args += ["--spec-type", self.speculation] if self.speculation else []
        args += ["--spec-draft-n-max", str(self.draft_max)] if self.draft_max is not None else []
        args += ["--spec-draft-n-min", str(self.draft_min)] if self.draft_min is not None else []
        return args + ([] if self.extra_buffers else ["--no-repack"])


class LlamaServer:
    """One llama-server process on a GGUF file, for one bench method; closed with the run."""

    def __init__(self, gguf: Path, eos_ids: Sequence[int], options: ServerOptions, binary: Path | None = None) -> None:
        self.binary = binary if binary is not None else llamacpp_tool("llama-server")
        self.eos_ids = frozenset(eos_ids)
        self.options = options
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._log = tempfile.NamedTemporaryFile("w+", prefix="llama-server-", suffix=".log")  # noqa: SIM115
        command = [str(self.binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), *options.arguments()]
        # Its own session: Ctrl-C reaches only us, and we stop it (close); should we die without a word, the
        # kernel stops it (_die_with_parent).
        self._process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, preexec_fn=_die_with_parent)
        self.pid = self._process.pid
        # timeout None: a long answer on a slow CPU takes minutes; trust_env off: no proxy between us and loopback
        self._client = httpx.Client(base_url=self.url, timeout=None, trust_env=False)
        try:
            self._wait_ready(gguf)
        except BaseException:
            self.close()
            raise

    def generate(self, prompt_ids: list[int], max_new_tokens: int, json_schema: dict[str, Any] | None = None) -> Generation:
        """Greedy decoding of one prompt from a fresh prefill, with the server's speculation if it has one;
        json_schema: llama.cpp turns it into its GBNF grammar and decodes under it."""
        if len(prompt_ids) + max_new_tokens + 1 > self.options.n_ctx:
            raise LeapError(f"llama-server: a {len(prompt_ids)}-token prompt plus {max_new_tokens} new tokens does not "
                            f"fit its {self.options.n_ctx}-token context")
        body = GREEDY | {"prompt": prompt_ids, "n_predict": max_new_tokens, "cache_prompt": False,
                         "return_tokens": True, "stream": False}  # fmt: skip
        body |= {"json_schema": json_schema} if json_schema is not None else {}
        start = time.perf_counter()
        try:
            response = self._client.post("/completion", json=body)
        except httpx.TransportError as exc:
            raise LeapError(f"llama-server stopped answering (exit code {self._process.poll()}): "
                            f"{self._last_log_line()}") from exc
        seconds = time.perf_counter() - start
        answer = self._checked(response)
        return completion_generation(answer, self.eos_ids, seconds, self.pid)

    def runtime_info(self) -> dict[str, Any]:
        """What the report records: which binary ran (the llama-cpp-python sdist's vendored llama.cpp)."""
        off = "" if self.options.extra_buffers else ", extra CPU buffers off: AMX bug"
        return {"llama_server": f"llama.cpp from llama-cpp-python {LLAMACPP_VERSION} sources ({self.binary}{off})"}

    def close(self) -> None:
        """Stop the server and wait for it; safe to call twice."""
        self._client.close()
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.close()

    def __enter__(self) -> LlamaServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wait_ready(self, gguf: Path) -> None:
        """Poll /health until the model is loaded (503 while loading); the process ending first is a load error."""
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ModelLoadError(f"llama-server could not load {gguf} (exit code {self._process.returncode}): "
                                     f"{self._last_log_line()}")
            try:
                if self._client.get("/health", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(0.1)
        raise ModelLoadError(f"llama-server did not become ready within {START_SECONDS:.0f} s: {self._last_log_line()}")

    def _checked(self, response: httpx.Response) -> dict[str, Any]:
        """The response's JSON, or the server's own error message as one line."""
        if response.status_code != 200:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:300]
            raise LeapError(f"llama-server answered {response.status_code}: {message}")
        return response.json()

    def _last_log_line(self) -> str:
        self._log.flush()
        lines = [line.strip() for line in Path(self._log.name).read_text(errors="replace").splitlines() if line.strip()]
        errors = [line for line in lines if "error" in line.lower()]
        return (errors or lines or ["no output"])[-1][:300]


def completion_generation(answer: dict[str, Any], eos_ids: frozenset[int], seconds: float, pid: int) -> Generation:
    """A /completion answer as a Generation: its tokens cut after the first of the engine's stop ids (the server
    stops on its own end-of-generation set, which the EOS it keeps ends, as hf's does), and draft statistics."""
    tokens = [int(t) for t in answer["tokens"]]
    stop = next((i for i, t in enumerate(tokens) if t in eos_ids), None)
    tokens = tokens[: stop + 1] if stop is not None else tokens
    finish = "stop" if stop is not None or answer.get("stop_type") == "eos" else "length"
    timings = answer.get("timings", {})
    drafted, accepted = timings.get("draft_n", 0), timings.get("draft_n_accepted", 0)
    # One target forward per token, less one per accepted draft token: the prefill yields the first token and
    # each later forward yields its accepted draft plus one (so a plain server runs 1.0 tokens per forward).
    forwards = len(tokens) - accepted
    # prompt_n: the prompt tokens it computed (all of them: cache_prompt is off, cache_n 0), as a check
    stats = {"forwards": forwards, "draft_n": drafted, "draft_n_accepted": accepted,
             "server_prompt_n": timings.get("prompt_n"), "server_cache_n": timings.get("cache_n"),
             "server_prompt_ms": timings.get("prompt_ms"), "server_predicted_ms": timings.get("predicted_ms")}
    return Generation(tokens, seconds, len(tokens) / forwards if forwards > 0 else None, finish, stats, pid,
                      process_peak_rss_mb(pid))


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (Linux's cpuinfo flags; False where there is no /proc)."""
    try:
        return " amx_int8" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def _die_with_parent() -> None:
    """In the server's process before exec, Linux only: SIGTERM it when the process that started it dies."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port() -> int:
    """A port nothing listens on now (the OS's pick); the server binds it a moment later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
