"""Two replicas behind Ray Serve's proxy, on loopback, driven by the official openai client: both replicas
answer, streaming goes through the proxy, and greedy text equals LLM.generate() with the same dtype and method."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import openai
import pytest
import torch

from leapdecode.api import LLM
from leapdecode.cli import main
from leapdecode.errors import LeapError
from leapdecode.server import ServerConfig

MODEL, METHOD, MAX_TOKENS = "smollm2-135m", "suffix", 32
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")  # Ray's own pydantic v1 idioms
PROMPTS = ["What is the capital of France? Answer in one sentence.", "List five fruits, one per line."]


@pytest.fixture(scope="module")
def replicas():
    try:  # fail, not skip: the extra is part of what CI installs
        from leapdecode.server import replicas
    except LeapError as exc:  # replicas.py turns a missing Ray into this, with the install hint
        pytest.fail(str(exc))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = replicas.ReplicaConfig(ServerConfig(MODEL, method=METHOD, shutdown_grace=5), replicas=2,
                                    threads_per_replica=1)
    try:
        url = replicas.deploy(config, "127.0.0.1", port)
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
    finally:  # also after a failed deploy: no Ray processes outlive the test
        replicas.shutdown()


@pytest.fixture(scope="module")
def reference() -> list[str]:
    """What the engine itself says, at the replicas' dtype ("auto") and thread count."""
    threads = torch.get_num_threads()
    try:
        llm = LLM(MODEL, threads=1)
        return [llm.generate(p, method=METHOD, max_new_tokens=MAX_TOKENS).text for p in PROMPTS]
    finally:
        torch.set_num_threads(threads)  # LLM(threads=) is process-wide; leave other tests as they were


def _chat(client: openai.OpenAI, prompt: str) -> tuple[str, str]:
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=MAX_TOKENS, temperature=0)
    return raw.parse().choices[0].message.content, raw.headers["x-leapdecode-replica"]


def test_replicas_share_the_load_and_answer_like_generate(replicas, reference):
    seen: dict[str, str] = {}
    deadline = time.time() + 60
    # Ray's router picks the less busy of two replicas at random: sequential requests land on both soon.
    while len(set(seen.values())) < 2 and time.time() < deadline:
        for prompt, expected in zip(PROMPTS, reference):
            text, replica = _chat(replicas, prompt)
            assert text == expected
            seen[f"{prompt}@{replica}"] = replica
    assert len(set(seen.values())) == 2, f"one replica answered everything: {set(seen.values())}"


def test_streaming_through_the_proxy(replicas, reference):
    stream = replicas.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": PROMPTS[0]}],
                                              max_tokens=MAX_TOKENS, temperature=0, stream=True)
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len([p for p in pieces if p]) > 1  # server-sent events, one per accepted piece
    assert "".join(pieces) == reference[0]


@pytest.mark.parametrize("argv, message", [(["--replicas", "0"], "--replicas must be >= 1"),
                                           (["--threads-per-replica", "0"], "--threads-per-replica must be >= 1"),
                                           (["--threads", "2"], "--threads-per-replica, not --threads")])
def test_bad_options_are_a_clear_error(capsys, argv, message):
    assert main(["serve-replicas", *argv]) == 2
    assert message in capsys.readouterr().err


def test_without_ray_the_error_says_how_to_install_it():
    hide_ray = "import sys; sys.modules['ray'] = None; from leapdecode.cli import main; sys.exit(main(['serve-replicas']))"
    proc = subprocess.run([sys.executable, "-c", hide_ray], check=False, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert "pip install -e '.[ray]'" in proc.stderr
