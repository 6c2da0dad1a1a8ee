"""A diffusion LM behind the OpenAI-compatible server: answers equal DiffusionLLM.generate, streamed a block at
a time, bad requests refused with 400 and the server serving on."""

from __future__ import annotations

import socket
import threading
import time

import openai
import pytest
import uvicorn

from leapdecode.server import ServerConfig, build_app

MESSAGES = [{"role": "user", "content": "Reverse the words: red blue green"}]


@pytest.fixture(scope="module")
def dllm_server(tiny_dllm):
    app = build_app(ServerConfig(model=str(tiny_dllm.checkpoint_dir), method="auto", served_name="tiny-dllm",
                                 shutdown_grace=2))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
    server.should_exit = True
    thread.join(timeout=30)


def test_chat_equals_generate_whole_and_streamed(dllm_server, tiny_dllm):
    ids = tiny_dllm.encode(MESSAGES)
    block = tiny_dllm.config.block_size
    ref = tiny_dllm.generate(prompt_ids=ids, method="stepwise", max_new_tokens=4 * block)
    whole = dllm_server.chat.completions.create(model="tiny-dllm", messages=MESSAGES, max_tokens=4 * block)
    assert whole.choices[0].message.content == ref.text
    assert whole.usage.completion_tokens == len(ref.token_ids)
    pieces = [c.choices[0].delta.content for c in dllm_server.chat.completions.create(
        model="tiny-dllm", messages=MESSAGES, max_tokens=4 * block, stream=True, extra_body={"method": "ssd"})
        if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == ref.text and 1 <= len(pieces) <= 4  # a block at a time, at most
    lossy = dllm_server.completions.create(model="tiny-dllm", prompt="red blue", max_tokens=8,
                                           extra_body={"method": "threshold"})
    assert lossy.choices[0].finish_reason in ("stop", "length")


def test_max_tokens_need_not_fill_whole_blocks(dllm_server, tiny_dllm):
    ids = tiny_dllm.encode(MESSAGES)
    block = tiny_dllm.config.block_size
    ref = tiny_dllm.generate(prompt_ids=ids, method="stepwise", max_new_tokens=2 * block)
    got = dllm_server.chat.completions.create(model="tiny-dllm", messages=MESSAGES, max_tokens=block + 1)
    assert got.usage.completion_tokens == min(len(ref.token_ids), block + 1)
    assert got.choices[0].finish_reason == ("length" if len(ref.token_ids) > block + 1 else "stop")


@pytest.mark.parametrize("extra, fragment", [
    ({"extra_body": {"method": "suffix"}}, "not for a diffusion LM"),
    ({"temperature": 0.7}, "greedily"),
    ({"stop": ["x"]}, "stop"),
])
def test_bad_requests_are_400_and_the_server_serves_on(dllm_server, extra, fragment):
    with pytest.raises(openai.BadRequestError, match=fragment):
        dllm_server.chat.completions.create(model="tiny-dllm", messages=MESSAGES, max_tokens=4, **extra)
    assert dllm_server.chat.completions.create(model="tiny-dllm", messages=MESSAGES, max_tokens=4).choices


def test_a_client_leaving_mid_stream_does_not_stop_the_server(dllm_server):
    stream = dllm_server.chat.completions.create(model="tiny-dllm", messages=MESSAGES, max_tokens=64, stream=True,
                                                 extra_body={"method": "stepwise"})
    next(iter(stream))
    stream.close()  # gone after the first chunk: the request is cancelled at its next block
    again = dllm_server.chat.completions.create(model="tiny-dllm", messages=MESSAGES, max_tokens=8)
    assert again.choices[0].finish_reason in ("stop", "length")
