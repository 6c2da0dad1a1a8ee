"""The server when decoding fails: an exception raised inside the decode thread (here injected into the target
network's forward) becomes a clean error for the requests it hit, a 500 in OpenAI's JSON shape or, streamed,
an error event that ends the stream, and the server goes on serving the next requests correctly."""

from __future__ import annotations

import json
import threading

import httpx
import pytest
from test_server import MODEL, LiveServer

PROMPT = "List ten fruits, one per line."


class Fault:
    """Wraps the target network's forward: raises once, at the `at`-th decode forward (logits wanted) or
    prefill forward (logits=False) after arming, then behaves as before."""

    def __init__(self, forward, prefill: bool = False) -> None:
        self.forward, self.prefill = forward, prefill
        self.lock, self.countdown, self.fired = threading.Lock(), 0, 0

    def arm(self, at: int = 1) -> None:
        with self.lock:
            self.countdown = at

    def __call__(self, *args, **kwargs):
        is_prefill = kwargs.get("logits", True) is False
        with self.lock:
            if self.countdown and is_prefill == self.prefill:
                self.countdown -= 1
                if self.countdown == 0:
                    self.fired += 1
                    raise RuntimeError("injected fault in the forward")
        return self.forward(*args, **kwargs)


@pytest.fixture(scope="module")
def server(llm):
    srv = LiveServer(llm, max_batch=4, max_queue=8)
    yield srv
    srv.close()


@pytest.fixture
def fault(llm, monkeypatch) -> Fault:
    f = Fault(llm.network.forward_packed)
    monkeypatch.setattr(llm.network, "forward_packed", f)
    return f


def _body(stream: bool, max_tokens: int = 16) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens,
            "temperature": 0, "stream": stream}


def _events(server, body: dict) -> list:
    """A streamed request's SSE data payloads, in order: dicts, and the closing "[DONE]" as a string."""
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    return [p if p == "[DONE]" else json.loads(p) for p in (line.removeprefix("data: ") for line in lines)]


def _expected(llm, max_tokens: int = 16) -> str:
    return llm.generate(PROMPT, max_new_tokens=max_tokens).text


def _errors(server) -> float:
    return server.metric("leapdecode_requests_total", '{endpoint="/v1/chat/completions",outcome="error"}')


def test_a_decode_failure_is_a_500_and_the_next_request_is_served(server, llm, fault):
    before = _errors(server)
    fault.arm(2)  # the second decode step of the next request
    r = httpx.post(f"{server.url}/v1/chat/completions", json=_body(stream=False), timeout=60)
    assert fault.fired == 1
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert error["type"] == "server_error" and "injected fault" in error["message"]
    assert _errors(server) == before + 1

    again = httpx.post(f"{server.url}/v1/chat/completions", json=_body(stream=False), timeout=60)
    assert again.status_code == 200
    assert again.json()["choices"][0]["message"]["content"] == _expected(llm)
    assert httpx.get(f"{server.url}/health").json() | {"running": 0, "waiting": 0} == \
        {"status": "ok", "model": MODEL, "running": 0, "waiting": 0}


def test_a_decode_failure_mid_stream_ends_it_with_an_error_event(server, llm, fault):
    fault.arm(3)  # two steps stream their text first
    events = _events(server, _body(stream=True, max_tokens=32))
    assert fault.fired == 1
    *answer, error, done = events
    assert done == "[DONE]" and error["error"]["type"] == "server_error"
    assert "injected fault" in error["error"]["message"]
    assert answer and all(e["choices"][0]["finish_reason"] is None for e in answer)  # no finish was sent
    streamed = "".join(e["choices"][0]["delta"].get("content") or "" for e in answer)
    assert streamed and _expected(llm, 32).startswith(streamed)  # what came before the failure was right

    events = _events(server, _body(stream=True))
    assert events[-1] == "[DONE]" and events[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1]) == _expected(llm)


def test_a_failing_prefill_fails_only_its_request(server, llm, monkeypatch):
    """A request whose admission fails (its prompt's prefill raises) gets the error; a request decoding
    meanwhile finishes unharmed, and the server serves on."""
    f = Fault(llm.network.forward_packed, prefill=True)
    monkeypatch.setattr(llm.network, "forward_packed", f)
    started, events = threading.Event(), []

    def running() -> None:  # a long request, admitted before the fault is armed
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=_body(True, 64), timeout=60) as r:
            for line in r.iter_lines():
                if line:
                    events.append(line.removeprefix("data: "))
                if '"content": "' in line and '"content": ""' not in line:  # decoding (past the opening chunk)
                    started.set()

    other = threading.Thread(target=running)
    other.start()
    assert started.wait(60)
    f.arm(1)
    r = httpx.post(f"{server.url}/v1/chat/completions", json=_body(stream=False), timeout=60)
    other.join(60)
    assert f.fired == 1 and r.status_code == 500 and "injected fault" in r.json()["error"]["message"]
    chunks = [json.loads(e) for e in events[:-1]]
    assert events[-1] == "[DONE]" and chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == _expected(llm, 64)
    again = httpx.post(f"{server.url}/v1/chat/completions", json=_body(stream=False), timeout=60)
    assert again.status_code == 200 and again.json()["choices"][0]["message"]["content"] == _expected(llm)
