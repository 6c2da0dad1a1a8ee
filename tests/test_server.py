"""The OpenAI-compatible server, driven by the official openai client and by raw HTTP for what a client
library would refuse to send. Greedy answers through the server equal transformers' greedy output."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import uvicorn
from conftest import NEW_TOKENS, PROMPTS

from leapdecode.batching.scheduler import Scheduler, SchedulerConfig
from leapdecode.policy.speculation import SpeculationPolicy
from leapdecode.server.app import create_app
from leapdecode.server.service import Service

MODEL = "smollm2-135m"


class LiveServer:
    """A real uvicorn server on a free loopback port, in a thread, over the session's loaded model."""

    def __init__(self, llm, method_options=None, **config) -> None:
        # the model's forward cost, a gate of its own: each test's server judges speculation afresh
        policy = SpeculationPolicy(forward=llm.policy.forward)
        scheduler = Scheduler(llm.network, SchedulerConfig(**config), policy=policy)
        self.service = Service(llm, scheduler, MODEL, "suffix", method_options)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        cfg = uvicorn.Config(create_app(self.service, shutdown_grace=5), host="127.0.0.1", port=port,
                             log_level="warning")
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started and time.time() < deadline:
            time.sleep(0.05)
        self.client = openai.OpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0)

    def metric(self, name: str, labels: str = "") -> float:
        text = httpx.get(f"{self.url}/metrics").text
        m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def server(llm):
    srv = LiveServer(llm, max_batch=16, max_queue=64)
    yield srv
    srv.close()


def _hf_text(llm, ids: list[int]) -> str:
    """transformers' greedy ids as the text a client sees: cut after the first end-of-sequence token."""
    for i, tok in enumerate(ids):
        if tok in llm.eos_ids:
            ids = ids[: i + 1]
            break
    return llm.tokenizer.decode(ids, skip_special_tokens=True)


def _chat(client, prompt: str, **kw) -> str:
    out = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": prompt}],
                                         max_tokens=NEW_TOKENS, temperature=0, **kw)
    return out.choices[0].message.content


def test_greedy_chat_equals_transformers_and_generate(server, llm, hf_greedy):
    out = server.client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": PROMPTS[0]}],
                                                max_tokens=NEW_TOKENS, temperature=0)
    assert out.choices[0].message.content == _hf_text(llm, hf_greedy[0])
    assert out.choices[0].message.content == llm.generate(PROMPTS[0], max_new_tokens=NEW_TOKENS).text
    spec = out.usage.model_extra["speculation"]
    assert out.usage.completion_tokens == len(llm.generate(PROMPTS[0], max_new_tokens=NEW_TOKENS).token_ids)
    assert spec["method"] == "suffix" and spec["target_forwards"] <= out.usage.completion_tokens


def test_eight_requests_in_one_batch_each_equal_transformers(server, llm, hf_greedy):
    before = server.metric("leapdecode_step_batch_size_bucket", '{le="1.0"}')
    count_before = server.metric("leapdecode_step_batch_size_count")
    methods = ["suffix", "ngram", "none", "suffix", "ngram", "none", "suffix", "ngram"]
    with ThreadPoolExecutor(8) as pool:
        texts = list(pool.map(lambda i: _chat(server.client, PROMPTS[i], extra_body={"method": methods[i]}),
                              range(8)))
    for i, text in enumerate(texts):
        assert text == _hf_text(llm, hf_greedy[i]), f"prompt {i} ({methods[i]}) differs"
    single = server.metric("leapdecode_step_batch_size_bucket", '{le="1.0"}') - before
    steps = server.metric("leapdecode_step_batch_size_count") - count_before
    assert steps - single > 0.5 * steps, "most steps should have batched several requests"


def test_streaming_chat_and_completion(server, llm):
    stream = server.client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": PROMPTS[4]}], max_tokens=48, temperature=0, stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == llm.generate(PROMPTS[4], max_new_tokens=48).text
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason in ("stop", "length") and chunks[-1].usage.completion_tokens > 0
    pieces = [c.choices[0].text for c in server.client.completions.create(
        model=MODEL, prompt=PROMPTS[7], max_tokens=40, temperature=0, stream=True)]
    whole = server.client.completions.create(model=MODEL, prompt=PROMPTS[7], max_tokens=40, temperature=0)
    assert "".join(pieces) == whole.choices[0].text == llm.generate(PROMPTS[7], raw=True, max_new_tokens=40).text
    ids = llm.tokenizer.encode(PROMPTS[7])
    by_ids = server.client.completions.create(model=MODEL, prompt=ids, max_tokens=40, temperature=0)
    assert by_ids.choices[0].text == whole.choices[0].text


def test_include_usage_ends_the_stream_with_a_usage_chunk(server, llm):
    kw = dict(model=MODEL, max_tokens=12, temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = list(server.client.chat.completions.create(messages=[{"role": "user", "content": PROMPTS[2]}], **kw))
    *answer, last = chunks
    assert last.choices == [] and all(c.choices and c.usage is None for c in answer)
    expected = llm.generate(PROMPTS[2], max_new_tokens=12)
    assert "".join(c.choices[0].delta.content or "" for c in answer) == expected.text
    assert answer[-1].choices[0].finish_reason in ("stop", "length")
    prompt = len(llm.encode(PROMPTS[2]))
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (prompt, len(expected.token_ids))
    assert last.usage.total_tokens == prompt + len(expected.token_ids)
    *pieces, last = server.client.completions.create(prompt=PROMPTS[2], **kw)
    raw = llm.generate(PROMPTS[2], raw=True, max_new_tokens=12)
    assert "".join(p.choices[0].text for p in pieces) == raw.text
    assert last.choices == [] and last.usage.completion_tokens == len(raw.token_ids)


def test_stop_strings_models_and_health(server):
    out = server.client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=40, temperature=0,
                                           stop=[" 7"])
    assert out.choices[0].finish_reason == "stop" and " 7" not in out.choices[0].text and "6" in out.choices[0].text
    assert [m.id for m in server.client.models.list()] == [MODEL]
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"


def test_seeded_sampling_is_per_request_and_reproducible(server, llm):
    kw = dict(max_tokens=32, temperature=0.9, top_p=0.95)

    def ask(seed: int) -> str:
        return server.client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": PROMPTS[1]}], seed=seed, **kw).choices[0].message.content

    with ThreadPoolExecutor(4) as pool:  # the same seeds alone and among other requests
        batch = list(pool.map(ask, [1, 2, 1, 2]))
    assert batch[0] == batch[2] == ask(1) and batch[1] == batch[3]
    assert batch[0] != batch[1]
    alone = llm.generate(PROMPTS[1], method="none", max_new_tokens=32, temperature=0.9, top_p=0.95, seed=1)
    assert batch[0] == alone.text  # a seed names one text, whatever the batch and the drafts


@pytest.mark.parametrize("body, status, fragment", [
    (b"{not json", 400, "not valid JSON"),
    (b'{"model": "smollm2-135m"}', 400, "messages"),
    (b'{"model": "nope", "messages": [{"role": "user", "content": "hi"}]}', 404, "does not exist"),
    (b'{"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -5}', 400, "max_tokens"),
    (b'{"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 99999999}', 400, "context window"),
    (b'{"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}], "n": 3}', 400, "n"),
    (b'{"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}', 400, "temperature"),
    (b'{"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}], "method": "magic"}', 400, "unknown method"),
    (b'{"model": "smollm2-135m", "messages": []}', 400, "messages"),
    (b'[1, 2]', 400, ""),
    (b'{"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}], "method": "draft"}', 400, "draft_model"),
])
def test_malformed_requests_get_openai_errors(server, body, status, fragment):
    r = httpx.post(f"{server.url}/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status
    err = r.json()["error"]
    assert fragment in err["message"] and err["type"] == "invalid_request_error"


def test_eagle_without_a_trained_head_is_a_400(server, monkeypatch, tmp_path):
    monkeypatch.setenv("LEAPDECODE_CACHE", str(tmp_path))  # where no head was ever trained
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "method": "eagle"}
    r = httpx.post(f"{server.url}/v1/chat/completions", json=body)
    assert r.status_code == 400 and "leapdecode train-head" in r.json()["error"]["message"]


def test_prompt_past_the_context_window_is_refused(server, llm):
    too_long = [1] * (llm.network.max_context + 5)
    r = httpx.post(f"{server.url}/v1/completions", json={"model": MODEL, "prompt": too_long, "max_tokens": 4})
    assert r.status_code == 400 and "context window" in r.json()["error"]["message"]
    assert _chat(server.client, "Say hi.") != ""  # and the server goes on


def test_client_disconnect_frees_the_slot_and_others_flow(server, llm):
    cancelled = server.metric("leapdecode_requests_total", '{endpoint="/v1/completions",outcome="cancelled"}')
    with ThreadPoolExecutor(1) as pool:
        other = pool.submit(_chat, server.client, PROMPTS[2])
        with httpx.stream("POST", f"{server.url}/v1/completions",
                          json={"model": MODEL, "prompt": "Count: 1, 2, 3,", "max_tokens": 2000, "stream": True,
                                "temperature": 0}) as r:
            for i, _ in enumerate(r.iter_lines()):
                if i > 4:
                    break  # leave mid-stream
        assert other.result(timeout=120) == llm.generate(PROMPTS[2], max_new_tokens=NEW_TOKENS).text
    deadline = time.time() + 10
    while server.service.scheduler.batch_size and time.time() < deadline:
        time.sleep(0.05)
    assert server.service.scheduler.batch_size == 0
    assert server.metric("leapdecode_requests_total", '{endpoint="/v1/completions",outcome="cancelled"}') == cancelled + 1


def test_a_stopping_server_answers_503_with_retry_after(llm):
    srv = LiveServer(llm)
    try:
        srv.service.scheduler.stop(timeout=1)
        reply = httpx.post(f"{srv.url}/v1/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 4},
                           timeout=30)
        assert reply.status_code == 503 and reply.headers["retry-after"]
        assert reply.json()["error"]["code"] == "shutting_down"
        assert srv.metric("leapdecode_requests_total", '{endpoint="/v1/completions",outcome="rejected"}') == 1
    finally:
        srv.close()


def test_full_queue_answers_429_and_the_rest_complete(llm):
    srv = LiveServer(llm, max_batch=1, max_queue=1)
    try:
        body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 48, "temperature": 0}
        with ThreadPoolExecutor(6) as pool:
            replies = list(pool.map(lambda _: httpx.post(f"{srv.url}/v1/completions", json=body, timeout=120),
                                    range(6)))
        codes = sorted(r.status_code for r in replies)
        assert codes.count(429) >= 1 and codes.count(200) >= 2
        refused = next(r for r in replies if r.status_code == 429)
        assert refused.headers["retry-after"] and refused.json()["error"]["code"] == "queue_full"
        texts = {r.json()["choices"][0]["text"] for r in replies if r.status_code == 200}
        assert texts == {llm.generate("Once upon a time", raw=True, method="suffix", max_new_tokens=48).text}
        assert srv.metric("leapdecode_requests_total", '{endpoint="/v1/completions",outcome="rejected"}') >= 1
        assert srv.metric("leapdecode_requests_total", '{endpoint="/v1/completions",outcome="ok"}') >= 2
    finally:
        srv.close()


def test_draft_model_method_through_the_server(llm, hf_greedy):
    """A server started with a draft model serves method "draft" in the same batches as the others."""
    # adaptive off: the gate may rightly find a draft as costly as the target not worth it, and draft nothing
    srv = LiveServer(llm, method_options={"draft": {"draft_model": MODEL}}, adaptive=False)
    try:
        with ThreadPoolExecutor(2) as pool:
            texts = list(pool.map(lambda i: _chat(srv.client, PROMPTS[i], extra_body={"method": "draft"}), (0, 3)))
        assert texts == [_hf_text(llm, hf_greedy[0]), _hf_text(llm, hf_greedy[3])]
        assert srv.metric("leapdecode_acceptance_rate") > 0.8  # the model drafting for itself
    finally:
        srv.close()


def test_metrics_count_tokens_and_acceptance(llm):
    """Counters and the acceptance gauge agree. Speculation is kept on (adaptive off): the gate may rightly
    judge from two early steps that drafting does not pay on a prompt, and then nothing is drafted."""
    srv = LiveServer(llm, adaptive=False)
    try:
        _chat(srv.client, PROMPTS[9])
        text = httpx.get(f"{srv.url}/metrics").text
        for name in ("leapdecode_completion_tokens_total", "leapdecode_draft_tokens_total",
                     "leapdecode_accepted_tokens_total", "leapdecode_time_to_first_token_seconds_count",
                     "leapdecode_inter_token_latency_seconds_count", "leapdecode_queue_depth",
                     "leapdecode_running_batch_size", "leapdecode_acceptance_rate"):
            assert re.search(rf"^{name} ", text, re.M), name
        drafted, accepted = srv.metric("leapdecode_draft_tokens_total"), srv.metric("leapdecode_accepted_tokens_total")
        assert drafted > 0 and 0 < accepted <= drafted
        assert srv.metric("leapdecode_acceptance_rate") == pytest.approx(accepted / drafted)
        assert srv.metric("leapdecode_completion_tokens_total") > 0
    finally:
        srv.close()


def test_sigterm_lets_running_requests_finish(tmp_path):
    """`leapdecode serve` as users run it: on SIGTERM a streaming request in flight completes, then the
    process exits."""
    import os
    import signal
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "leapdecode.cli", "serve", "--port", str(port), "--threads", "1",
                             "--shutdown-grace", "60"], env=dict(os.environ, HF_HUB_OFFLINE="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        lines = []
        body = {"model": MODEL, "prompt": "The history of Rome", "max_tokens": 64, "temperature": 0, "stream": True}
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=120) as r:
            for line in r.iter_lines():
                if not lines:
                    proc.send_signal(signal.SIGTERM)  # mid-stream
                if line:  # events are separated by blank lines
                    lines.append(line)
        finals = [json.loads(x[6:]) for x in lines if x.startswith("data: {")]
        # finished, not cut: a cancelled stream would end without a finish reason and usage
        assert lines[-1] == "data: [DONE]" and finals[-1]["choices"][0]["finish_reason"] in ("stop", "length")
        assert finals[-1]["usage"]["completion_tokens"] > 1
        proc.wait(timeout=60)
        assert "Shutting down" in proc.stdout.read()
    finally:
        proc.kill()


def test_bench_serve_drives_a_running_server_both_ways(server, tmp_path):
    """`leapdecode bench-serve --url`: every level measured with speculation on and off, nothing failed, and
    the table, JSON and plot written."""
    import argparse

    from leapdecode.bench.serve_bench import add_bench_serve_arguments, run_bench_serve

    p = argparse.ArgumentParser()
    add_bench_serve_arguments(p)
    args = p.parse_args(["--url", server.url, "--concurrency", "1,2", "--requests", "2", "--max-tokens", "8",
                         "--out", str(tmp_path)])
    rows = run_bench_serve(args)["rows"]
    assert [(r["concurrency"], r["speculation"]) for r in rows] == [(1, True), (1, False), (2, True), (2, False)]
    assert all(r["errors"] == 0 and r["requests"] == 2 and r["throughput"] > 0 for r in rows)
    assert all(r["accepted_per_forward"] == 1.0 for r in rows if not r["speculation"])  # off really drafts nothing
    assert "server: given by --url" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "serve.png").stat().st_size > 0


def test_bench_serve_passes_drafting_options_only_to_a_server_it_starts():
    import argparse

    from leapdecode.bench.serve_bench import _server_command, add_bench_serve_arguments
    from leapdecode.errors import LeapError

    p = argparse.ArgumentParser()
    add_bench_serve_arguments(p)
    cmd = _server_command(p.parse_args(["--method", "draft", "--draft-model", MODEL, "--draft-dtype", "int4",
                                        "--dtype", "float32", "--threads", "2"]), 9)
    assert cmd[3:] == ["serve", "--model", MODEL, "--dtype", "float32", "--method", "draft", "--draft-model", MODEL,
                       "--draft-dtype", "int4", "--threads", "2", "--port", "9"]
    with pytest.raises(LeapError, match="--url"):
        _server_command(p.parse_args(["--url", "http://127.0.0.1:1", "--draft-model", MODEL]), 9)
