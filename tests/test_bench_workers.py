"""The bench's outside baselines run in processes of their own: the worker protocol, the hf worker on the
default model, and llama-server's client against a fake server speaking its /health and /completion."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from leapdecode.bench import BenchConfig
from leapdecode.bench.llama_server import LlamaServer, ServerOptions, completion_generation, llamacpp_tool
from leapdecode.bench.record import Generation, peak_rss_mb
from leapdecode.bench.worker import Worker, WorkerError
from leapdecode.errors import LeapError, ModelLoadError

# --- the worker protocol, on a stand-in baseline (built in the worker: it must be importable from there) -----


class Echo:
    """A baseline stand-in: answers with its prompt, fails the ways a real one can."""

    def __init__(self, fail_load: bool = False) -> None:
        if fail_load:
            raise ModelLoadError("llama.cpp could not load m.gguf: ValueError: bad magic")
        self.threads = torch.get_num_threads()

    def generate(self, prompt_ids: list[int], max_new_tokens: int) -> Generation:
        return Generation(prompt_ids[:max_new_tokens], 0.25, 1.0, "length")

    def thread_count(self) -> int:
        return self.threads

    def too_long(self) -> None:
        raise LeapError("llamacpp: a 5000-token prompt plus 256 new tokens does not fit its 4096-token context")

    def crash(self) -> None:
        raise ValueError("a bug")

    def die(self) -> None:
        os._exit(3)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def _assert_outlived_by_none(code: str, run_timeout: float, gone_within: float) -> None:
    """Run `code` in a child that prints the pid of what it started and exits without clean-up; that pid
    must be gone within `gone_within` seconds."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=run_timeout,
                         check=True)
    pid = int(out.stdout.split()[0])
    deadline = time.monotonic() + gone_within
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(pid)


def _gone(pid: int) -> bool:
    """The process has exited (a zombie awaiting its parent counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "State:\tZ" in state


def test_worker_runs_the_baseline_in_another_process_and_returns_its_rss() -> None:
    with Worker("echo", Echo, (), threads=1) as w:
        g = w.generate([1, 2, 3], 2)
        assert g.token_ids == [1, 2] and g.seconds == 0.25  # timed inside the worker
        assert g.pid == w.pid != os.getpid() and g.peak_rss_mb == w.peak_rss_mb > 0
        assert w.call("thread_count") == 1  # the bench's thread count, set in the worker
    assert _gone(w.pid)


def test_a_worker_reports_its_own_peak_rss_not_ours() -> None:
    ballast = b"x" * (768 << 20)  # written, so resident: our peak is well above anything the worker holds
    with Worker("echo", Echo, (), threads=1) as w:
        worker_peak = w.generate([1], 1).peak_rss_mb
    assert worker_peak is not None and worker_peak < peak_rss_mb() - 512 and len(ballast) > 0


def test_worker_errors_come_back_as_the_same_one_line_errors() -> None:
    with pytest.raises(ModelLoadError, match="^llama.cpp could not load m.gguf: ValueError: bad magic$"):
        Worker("echo", Echo, (True,), threads=1)
    with Worker("echo", Echo, (), threads=1) as w:
        with pytest.raises(LeapError, match="^llamacpp: a 5000-token prompt .* does not fit its 4096-token context$"):
            w.call("too_long")
        with pytest.raises(WorkerError, match="ValueError: a bug"):
            w.call("crash")
        assert w.generate([7], 1).token_ids == [7]  # still serving after an error
        with pytest.raises(LeapError, match="worker process died \\(exit code 3\\)"):
            w.call("die")


def test_worker_is_stopped_on_an_exception_or_ctrl_c() -> None:
    with pytest.raises(KeyboardInterrupt), Worker("echo", Echo, (), threads=1) as w:
        raise KeyboardInterrupt
    assert _gone(w.pid)


def test_ctrl_c_mid_call_stops_the_worker_at_once() -> None:
    def interrupt(*args: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        with pytest.raises(KeyboardInterrupt), Worker("echo", Echo, (), threads=1) as w:
            signal.setitimer(signal.ITIMER_REAL, 0.5)  # Ctrl-C while the worker is busy for a minute
            start = time.monotonic()
            w.call("sleep", 60.0)
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert _gone(w.pid) and time.monotonic() - start < 5


def test_worker_exits_when_the_main_process_dies() -> None:
    """No orphans: a worker whose main process is killed reads EOF on its pipe and exits."""
    code = textwrap.dedent(f"""
        import os, sys
        sys.path[:0] = {sys.path!r}
        from test_bench_workers import Echo
        from leapdecode.bench.worker import Worker
        w = Worker("echo", Echo, (), threads=1)
        print(w.pid, flush=True)
        os._exit(0)  # no clean-up at all, as after a SIGKILL
    """)
    _assert_outlived_by_none(code, run_timeout=120, gone_within=30)


# --- hf on the default model: built and run in its worker, never in the engine's process ------------------------


def test_hf_baselines_run_in_a_worker_not_in_the_engine_process(llm, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from leapdecode.bench import harness, hf_baseline

    def no_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("transformers' model was loaded in the engine's process")

    monkeypatch.setattr(hf_baseline, "_load", no_load)  # here only: the worker imports the module afresh
    monkeypatch.setattr(harness, "LLM", lambda model, dtype: llm)  # the session's model: no second load
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # run_bench sets it: restored after the test
    threads = torch.get_num_threads()
    try:
        cfg = BenchConfig(methods=("hf", "hf-pld", "none"), limit=2, max_new_tokens=12, warmup=0, out=tmp_path,
                          threads=2)
        results = harness.run_bench(cfg)
    finally:
        torch.set_num_threads(threads)
    records = results["records"]
    hf_pids = {r["pid"] for r in records if r["method"] in ("hf", "hf-pld")}
    assert len(hf_pids) == 1 and os.getpid() not in hf_pids  # one worker, kept alive across prompts and modes
    assert {r["pid"] for r in records if r["method"] == "none"} == {os.getpid()}
    assert all(_gone(pid) for pid in hf_pids)  # shut down with the run
    m = results["methods"]
    assert m["hf"]["prompts"] == 2 and m["hf"]["tokens_per_s"] > 0 and m["hf"]["peak_rss_mb"] > 0
    assert m["none"]["exact_match_rate"] == 1.0 and m["hf-pld"]["exact_match_rate"] == 1.0


def test_divergence_logits_come_from_the_hf_worker(llm, hf_model) -> None:
    from leapdecode.bench.hf_baseline import HFBaseline

    ids = llm.encode("Name three colours.")
    with Worker("hf", HFBaseline, (llm.checkpoint_dir, torch.float32, sorted(llm.eos_ids)), threads=2) as w:
        logits = w.call("next_logits", ids)  # [V]
        g = w.generate(ids, 4)
    with torch.inference_mode():
        expected = hf_model(torch.tensor([ids])).logits[0, -1]
    assert logits.shape == expected.shape and torch.allclose(logits, expected, atol=1e-3)
    assert g.pid == w.pid and len(g.token_ids) == 4 and g.token_ids[0] == int(expected.argmax())


# --- llama-server: the client against a fake server; the real one only where scripts/build-llamacpp ran --------

FAKE_SERVER = '''
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

argv = sys.argv[1:]
log = os.environ["FAKE_LLAMA_LOG"]
with open(log, "a") as f:
    f.write(json.dumps({"argv": argv}) + "\\n")
if "bad" in argv[argv.index("-m") + 1]:
    print("llama_model_load: error loading model: invalid magic", flush=True)
    sys.exit(1)
ANSWER = [5, 6, 7, 2, 9]
health_calls = [0]


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        health_calls[0] += 1  # loading at first, as the real server says
        ok = self.path == "/health" and health_calls[0] > 2
        self.reply(200 if ok else 503, {"status": "ok"} if ok else {"error": {"code": 503, "message": "Loading"}})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with open(log, "a") as f:
            f.write(json.dumps({"body": body}) + "\\n")
        if 0 in body["prompt"]:
            self.reply(400, {"error": {"code": 400, "type": "exceed_context_size_error",
                                       "message": "the request exceeds the available context size"}})
            return
        tokens = ANSWER[: body["n_predict"]]
        tokens = tokens[: tokens.index(2) + 1] if 2 in tokens else tokens
        timings = {"prompt_n": len(body["prompt"]), "prompt_ms": 1.0, "predicted_n": len(tokens), "predicted_ms": 2.0}
        if "-md" in argv:
            timings |= {"draft_n": 4, "draft_n_accepted": 2}
        self.reply(200, {"content": "", "tokens": tokens, "stop_type": "eos" if 2 in tokens else "limit",
                         "timings": timings})


HTTPServer((argv[argv.index("--host") + 1], int(argv[argv.index("--port") + 1])), Handler).serve_forever()
'''


@pytest.fixture
def fake_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An executable that behaves like llama-server: a 503 while loading, /completion as token ids."""
    binary = tmp_path / "bin" / "llama-server"
    binary.parent.mkdir()
    binary.write_text(f"#!{sys.executable}\n{FAKE_SERVER}")
    binary.chmod(0o755)
    monkeypatch.setenv("FAKE_LLAMA_LOG", str(tmp_path / "log.jsonl"))
    return binary


def _log(binary: Path) -> list[dict]:
    return [json.loads(line) for line in (binary.parent.parent / "log.jsonl").read_text().splitlines()]


def test_llama_server_draft_request_and_answer(fake_server: Path, tmp_path: Path) -> None:
    options = ServerOptions(threads=3, draft=tmp_path / "draft.gguf", draft_max=8, extra_buffers=True)
    with LlamaServer(tmp_path / "target.gguf", [2], options, binary=fake_server) as server:
        g = server.generate([1, 1, 4], max_new_tokens=10)
        short = server.generate([1, 1, 4], max_new_tokens=2)
        with pytest.raises(LeapError, match="^llama-server answered 400: the request exceeds the available context"):
            server.generate([0], max_new_tokens=2)
        with pytest.raises(LeapError, match="does not fit its 4096-token context"):
            server.generate([1] * 4090, max_new_tokens=16)
    assert _gone(server.pid)
    argv = _log(fake_server)[0]["argv"]
    flags = {a: b for a, b in zip(argv, argv[1:]) if a.startswith("-")}
    assert flags["--host"] == "127.0.0.1" and flags["-m"] == str(tmp_path / "target.gguf")
    assert flags["-t"] == flags["-tb"] == flags["-td"] == flags["-tbd"] == "3" and flags["-np"] == "1"
    assert flags["-md"] == str(tmp_path / "draft.gguf") and flags["--spec-draft-n-max"] == "8"
    assert flags["--spec-type"] == "draft-simple"  # llama.cpp only drafts with -md's model when told to
    assert "--spec-draft-n-min" not in flags and "--no-repack" not in argv  # llama.cpp's defaults unless asked
    assert ServerOptions(threads=1, extra_buffers=False).arguments()[-1] == "--no-repack"  # on an AMX CPU
    body = _log(fake_server)[1]["body"]
    assert body["prompt"] == [1, 1, 4] and body["n_predict"] == 10 and body["cache_prompt"] is False
    assert body["temperature"] == 0.0 and body["top_k"] == 1 and body["repeat_penalty"] == 1.0
    assert body["return_tokens"] is True and body["stream"] is False
    assert g.token_ids == [5, 6, 7, 2] and g.finish_reason == "stop"  # the EOS kept, as hf keeps it
    assert g.engine_stats["draft_n"] == 4 and g.engine_stats["draft_n_accepted"] == 2
    assert g.mean_accepted == 2.0 and g.pid == server.pid and g.seconds > 0  # 4 tokens from 2 forwards
    assert short.token_ids == [5, 6] and short.finish_reason == "length"


def test_llama_server_plain_and_lookup_flags(fake_server: Path, tmp_path: Path) -> None:
    with LlamaServer(tmp_path / "t.gguf", [2], ServerOptions(threads=2), binary=fake_server) as server:
        g = server.generate([1], max_new_tokens=3)
    assert g.mean_accepted == 1.0 and g.engine_stats["draft_n"] == 0
    with LlamaServer(tmp_path / "t.gguf", [2], ServerOptions(threads=2, spec_type="ngram-cache"), binary=fake_server):
        pass
    plain, lookup = (entry["argv"] for entry in _log(fake_server) if "argv" in entry)
    assert "-md" not in plain and "--spec-type" not in plain
    assert lookup[lookup.index("--spec-type") + 1] == "ngram-cache" and "-md" not in lookup


def test_llama_server_load_failure_is_one_line(fake_server: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="could not load .*bad.gguf \\(exit code 1\\): llama_model_load: error"):
        LlamaServer(tmp_path / "bad.gguf", [2], ServerOptions(threads=2), binary=fake_server)


def test_llama_server_stops_when_the_bench_dies(fake_server: Path, tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from leapdecode.bench.llama_server import LlamaServer, ServerOptions
        server = LlamaServer(Path("t.gguf"), [2], ServerOptions(threads=1), binary=Path({str(fake_server)!r}))
        print(server.pid, flush=True)
        os._exit(0)  # no clean-up at all, as after a SIGKILL
    """)
    _assert_outlived_by_none(code, run_timeout=60, gone_within=10)


def test_completion_stops_on_the_engine_eos_ids() -> None:
    answer = {"tokens": [5, 3, 7, 8], "stop_type": "limit", "timings": {}}
    g = completion_generation(answer, frozenset({3}), 1.0, 123)
    assert g.token_ids == [5, 3] and g.finish_reason == "stop" and g.mean_accepted == 1.0
    g = completion_generation({"tokens": [5, 6], "stop_type": "limit"}, frozenset({3}), 1.0, 123)
    assert g.token_ids == [5, 6] and g.finish_reason == "length"


def test_llama_server_methods_need_the_build_and_a_draft(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEAPDECODE_CACHE", str(tmp_path))
    with pytest.raises(LeapError, match="llama-server .* missing.*scripts/build-llamacpp"):
        llamacpp_tool("llama-server")
    with pytest.raises(LeapError, match="llamacpp-draft need --draft-model"):
        BenchConfig(methods=("llamacpp-draft", "none"))
    with pytest.raises(LeapError, match="go with the llamacpp-draft method"):
        BenchConfig(methods=("llamacpp-server",), llamacpp_draft_max=4)
    BenchConfig(methods=("llamacpp-server", "llamacpp-draft", "llamacpp-lookup"), draft_model="d",
                llamacpp_draft_max=8, llamacpp_draft_min=1)


def test_bench_runs_llamacpp_draft_through_the_server(llm, fake_server: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from leapdecode.bench import harness, llama_server

    monkeypatch.setattr(llama_server, "tools_dir", lambda: fake_server.parent)
    monkeypatch.setattr(harness, "LLM", lambda model, dtype: llm)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    threads = torch.get_num_threads()
    try:
        cfg = BenchConfig(methods=("llamacpp-server", "llamacpp-draft", "none"), draft_model="smollm2-135m",
                          limit=2, max_new_tokens=4, warmup=0, out=tmp_path / "out", threads=2)
        results = harness.run_bench(cfg)
    finally:
        torch.set_num_threads(threads)
    m = results["methods"]
    assert m["llamacpp-draft"]["mean_accepted"] == 2.0 and m["llamacpp-server"]["mean_accepted"] == 1.0
    assert m["llamacpp-draft"]["exact_match_vs_plain"] == 1.0  # its own plain: llamacpp-server
    assert m["none"]["speedup_vs_llamacpp_draft"] is not None
    assert "llama-server" in results["machine"]["llama_server"]
    server_pids = {r["pid"] for r in results["records"] if r["method"].startswith("llamacpp")}
    assert len(server_pids) == 2 and os.getpid() not in server_pids and all(_gone(p) for p in server_pids)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| speedup vs llamacpp-server | speedup vs llamacpp-draft |" in md and "llama-server:" in md
    argv = [entry["argv"] for entry in _log(fake_server) if "argv" in entry]
    assert sum("-md" in a for a in argv) == 1  # the draft only for llamacpp-draft
