"""Structured output, tool calls and logprobs through the server, with the official openai client:
its Pydantic parse helper, its tool-calling loop (whole and streamed), and OpenAI's logprobs shapes."""

from __future__ import annotations

import json

import httpx
import jsonschema
import pytest
import torch
from conftest import hf_next_logits
from pydantic import BaseModel
from test_server import MODEL, LiveServer

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Get the local time in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False}}}
ASK = [{"role": "user", "content": "What's the weather in Paris, in celsius?"}]


class Person(BaseModel):
    name: str
    age: int
    city: str


@pytest.fixture(scope="module")
def server(llm):
    srv = LiveServer(llm, max_batch=8, max_queue=32)
    yield srv
    srv.close()


def test_the_clients_parse_helper_gets_a_pydantic_object(server, llm):
    messages = [{"role": "user", "content": "Maria Lopez is 34 and lives in Madrid. Extract her details."}]
    out = server.client.chat.completions.parse(model=MODEL, messages=messages, response_format=Person,
                                               temperature=0, max_tokens=60)
    person = out.choices[0].message.parsed
    assert isinstance(person, Person) and person.age == 34 and "Madrid" in person.city
    plain = llm.generate(messages, method="none", json_schema=Person.model_json_schema(), max_new_tokens=60)
    assert out.choices[0].message.content == plain.text  # the server's method is lossless under the schema


def test_json_object_mode_answers_a_json_object(server):
    out = server.client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Describe a cat."}],
                                                response_format={"type": "json_object"}, temperature=0,
                                                max_tokens=80)
    if out.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(out.choices[0].message.content), dict)
    else:
        assert out.choices[0].message.content.startswith("{")


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_forced_tool_calls_follow_the_functions_schema(server, choice):
    out = server.client.chat.completions.create(model=MODEL, messages=ASK, tools=[TIME, WEATHER], tool_choice=choice,
                                                temperature=0, max_tokens=60)
    calls = out.choices[0].message.tool_calls
    assert out.choices[0].finish_reason == "tool_calls" and calls
    for call in calls:
        schema = {"get_weather": WEATHER, "get_time": TIME}[call.function.name]["function"]["parameters"]
        assert jsonschema.Draft202012Validator(schema).is_valid(json.loads(call.function.arguments))
        assert call.id.startswith("call_") and call.type == "function"
    if isinstance(choice, dict):
        assert {c.function.name for c in calls} == {"get_weather"}


def test_the_tool_calling_loop_streamed_and_whole(server):
    client = server.client
    stream = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required",
                                            temperature=0, max_tokens=60, stream=True)
    deltas, finish = [], None
    for chunk in stream:
        if chunk.choices:
            deltas += chunk.choices[0].delta.tool_calls or []
            finish = chunk.choices[0].finish_reason or finish
    whole = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required",
                                           temperature=0, max_tokens=60)
    call = whole.choices[0].message.tool_calls[0]
    assert finish == "tool_calls" and deltas[0].function.name == call.function.name
    assert deltas[0].function.arguments == call.function.arguments
    followup = ASK + [whole.choices[0].message.model_dump(exclude_none=True),
                      {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 18})}]
    answer = client.chat.completions.create(model=MODEL, messages=followup, tools=[WEATHER], tool_choice="none",
                                            temperature=0, max_tokens=40)
    assert answer.choices[0].message.content and not answer.choices[0].message.tool_calls


def test_tool_choice_none_and_auto_may_answer_in_text(server):
    out = server.client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="none",
                                                temperature=0, max_tokens=30)
    assert out.choices[0].message.content and out.choices[0].finish_reason in ("stop", "length")
    auto = server.client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], temperature=0,
                                                 max_tokens=30, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in auto if c.choices)
    assert "<tool_call>" not in text


def test_chat_logprobs_are_the_models_own(server, llm, hf_model):
    out = server.client.chat.completions.create(model=MODEL, messages=ASK, temperature=0, max_tokens=6,
                                                logprobs=True, top_logprobs=3)
    entries = out.choices[0].logprobs.content
    ids = llm.encode(ASK)
    assert len(entries) == out.usage.completion_tokens
    for entry in entries[:3]:
        want = torch.log_softmax(hf_next_logits(hf_model, ids).float(), dim=-1)
        token = int(want.argmax())
        assert entry.token == llm.tokenizer.decode([token]) and abs(entry.logprob - float(want[token])) < 1e-3
        assert len(entry.top_logprobs) == 3 and entry.top_logprobs[0].token == entry.token
        ids = ids + [token]


def test_streamed_completion_logprobs_cover_every_token(server):
    stream = server.client.completions.create(model=MODEL, prompt="The capital of France is", temperature=0,
                                              max_tokens=12, logprobs=2, stream=True,
                                              stream_options={"include_usage": True})
    tokens, usage = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].logprobs:
            lp = chunk.choices[0].logprobs
            tokens += lp.tokens
            assert all(len(top) <= 2 for top in lp.top_logprobs)
        usage = chunk.usage or usage
    assert len(tokens) == usage.completion_tokens


@pytest.mark.parametrize("extra, fragment", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "bogus"}}}},
     "invalid json schema"),
    ({"response_format": {"type": "yaml"}}, "response_format"),
    ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "name"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "missing"}}}, "not among the tools"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tool_choice": "required"}, "needs tools"),
    ({"tools": [WEATHER], "response_format": {"type": "json_object"}}, "together"),
    ({"logprobs": True, "top_logprobs": 50}, "top_logprobs"),
    ({"top_logprobs": 2}, "logprobs"),
    ({"logit_bias": {"15": 5}}, "logit_bias: not supported"),
    ({"functions": [{"name": "f"}]}, "use tools"),
])
def test_bad_structured_requests_are_400_and_the_server_goes_on(server, extra, fragment):
    body = {"model": MODEL, "messages": ASK, "max_tokens": 8} | extra
    r = httpx.post(f"{server.url}/v1/chat/completions", json=body)
    assert r.status_code == 400 and fragment in r.json()["error"]["message"], r.text
    ok = httpx.post(f"{server.url}/v1/chat/completions", json={"model": MODEL, "messages": ASK, "max_tokens": 4})
    assert ok.status_code == 200


@pytest.mark.parametrize("prompts", ["json-extract", "tool-calls"])
def test_bench_serve_sends_each_prompts_constraint(server, tmp_path, prompts):
    import argparse

    from leapdecode.bench.serve_bench import add_bench_serve_arguments, run_bench_serve

    p = argparse.ArgumentParser()
    add_bench_serve_arguments(p)
    args = p.parse_args(["--url", server.url, "--prompts", prompts, "--concurrency", "1", "--requests", "2",
                         "--max-tokens", "24", "--out", str(tmp_path)])
    rows = run_bench_serve(args)["rows"]
    assert all(r["errors"] == 0 and r["tokens"] > 0 and r["ttft_p50"] > 0 for r in rows), rows
    from leapdecode.bench.prompts import load_prompts
    from leapdecode.bench.structured import structured_request

    asked = structured_request(load_prompts(prompts, 1)[0])
    assert asked["response_format"]["json_schema"]["schema"] if prompts == "json-extract" else asked["tools"]
