"""The structured-output prompt sets (json-extract, tool-calls): seeded, self-consistent, and checked as JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest

from leapdecode.bench.prompts import BenchPrompt, correct, load_prompts, prompt_set_name
from leapdecode.bench.structured_sets import SHAPES, json_extract, parse_json, schema_valid, tool_calls


def _content(prompt: BenchPrompt) -> str:
    assert isinstance(prompt.prompt, list) and len(prompt.prompt) == 1 and prompt.prompt[0]["role"] == "user"
    return prompt.prompt[0]["content"]


def _passage(prompt: BenchPrompt) -> str:
    """The text the facts come from: for json-extract the passage before the instructions, else the message."""
    content = _content(prompt)
    return content.split("\n\n", 1)[0] if prompt.match == "json" else content


def _leaves(value: Any) -> list[Any]:
    """The string and number values inside a parsed answer (booleans are worded, not quoted)."""
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [] if isinstance(value, bool) else [value]


def _tool_schema(prompt: BenchPrompt, name: str) -> dict[str, Any]:
    assert prompt.tools is not None
    return next(t["function"]["parameters"] for t in prompt.tools if t["function"]["name"] == name)


@pytest.fixture(scope="module")
def extract() -> list[BenchPrompt]:
    return json_extract()


@pytest.fixture(scope="module")
def calls() -> list[BenchPrompt]:
    return tool_calls()


def test_sets_are_deterministic_and_seeded(extract: list[BenchPrompt], calls: list[BenchPrompt]) -> None:
    assert len(extract) >= 24 and len(calls) >= 20
    assert json_extract() == extract and tool_calls() == calls
    assert [p.answer for p in json_extract(seed=1)] != [p.answer for p in extract]
    assert [p.answer for p in tool_calls(seed=1)] != [p.answer for p in calls]
    assert len(json_extract(n=30)) == 30 and json_extract(n=30)[:24] == extract
    for prompts in (extract, calls):
        assert len({p.id for p in prompts}) == len(prompts)


def test_json_extract_prompts_are_well_formed(extract: list[BenchPrompt]) -> None:
    for p in extract:
        assert p.match == "json" and p.category in SHAPES and p.id.startswith(f"json-extract/{p.category}-")
        assert p.tools is None and p.schema is not None and p.answer is not None
        assert p.answer == json.dumps(json.loads(p.answer), sort_keys=True)
        assert p.schema["type"] == "object" and p.schema["additionalProperties"] is False
        assert sorted(p.schema["required"]) == sorted(p.schema["properties"])
        assert schema_valid(json.loads(p.answer), p.schema), p.id
        assert 2 <= _passage(p).count(". ") + 1 <= 4, p.id
    assert {p.category for p in extract} == set(SHAPES)
    kinds = json.dumps([p.schema for p in extract])
    for kind in ('"integer"', '"number"', '"boolean"', '"enum"', '"array"'):
        assert kind in kinds


def test_every_answer_value_is_in_the_passage(extract: list[BenchPrompt], calls: list[BenchPrompt]) -> None:
    for p in [*extract, *calls]:
        passage = _passage(p)
        answer = json.loads(p.answer or "")
        for leaf in _leaves(answer["arguments"] if p.match == "tool" else answer):
            assert str(leaf) in passage, (p.id, leaf, passage)


def test_nested_and_list_shapes(extract: list[BenchPrompt]) -> None:
    for p in extract:
        values = json.loads(p.answer or "").values()
        if p.category == "nested":
            assert any(isinstance(v, dict) for v in values), p.id
        if p.category == "list":
            lists = [v for v in values if isinstance(v, list)]
            assert lists and all(2 <= len(v) <= 4 for v in lists), p.id
        if p.category == "record":
            assert 3 <= len(values) <= 6 and not any(isinstance(v, (dict, list)) for v in values), p.id


def test_tool_calls_offer_the_right_tool(calls: list[BenchPrompt]) -> None:
    positions = set()
    for p in calls:
        assert p.match == "tool" and p.schema is None and p.tools is not None
        names = [t["function"]["name"] for t in p.tools]
        assert 3 <= len(names) <= 8 and len(set(names)) == len(names), p.id
        call = json.loads(p.answer or "")
        assert set(call) == {"name", "arguments"} and call["name"] == p.category and call["name"] in names
        assert schema_valid(call["arguments"], _tool_schema(p, call["name"])), p.id
        positions.add(names.index(call["name"]))
        for tool in p.tools:
            fn = tool["function"]
            assert tool["type"] == "function" and fn["description"]
            params = fn["parameters"]
            assert params["additionalProperties"] is False
            assert sorted(params["required"]) == sorted(params["properties"])
    assert len(positions) > 2  # the right tool is not always in the same place
    assert len({p.category for p in calls}) >= 12


def test_load_prompts_registers_the_sets() -> None:
    assert {p.category for p in load_prompts("json-extract", limit=6)} == set(SHAPES)
    assert len(load_prompts("tool-calls", limit=5)) == 5
    assert prompt_set_name("json-extract") == "json-extract" and prompt_set_name("tool-calls") == "tool-calls"


def test_parse_json() -> None:
    assert parse_json(' {"a": 1} \n') == {"a": 1}
    assert parse_json('```json\n{"a": [1, 2]}\n```') == {"a": [1, 2]}
    assert parse_json("```\n[true]\n```") == [True]
    assert parse_json('{"a": 1') is None and parse_json("The answer is {}") is None


def _rewritten(answer: str) -> str:
    """The same object, keys in reverse order and spread over lines."""
    def flip(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: flip(v[k]) for k in reversed(list(v))}
        return [flip(x) for x in v] if isinstance(v, list) else v

    return json.dumps(flip(json.loads(answer)), indent=3)


def _changed(value: Any) -> Any:
    """The object with its first string or number leaf altered."""
    if isinstance(value, dict):
        key = next(k for k, v in value.items() if _leaves(v))
        return {**value, key: _changed(value[key])}
    if isinstance(value, list):
        return [_changed(value[0]), *value[1:]]
    return value + "x" if isinstance(value, str) else value + 1


@pytest.mark.parametrize("which", ["json-extract", "tool-calls"])
def test_correct_compares_parsed_json(which: str) -> None:
    for p in load_prompts(which, limit=8):
        answer = p.answer or ""
        assert correct(p, answer) is True
        assert correct(p, f"```json\n{answer}\n```") is True
        assert correct(p, f"  {_rewritten(answer)}\n") is True
        assert correct(p, json.dumps(_changed(json.loads(answer)))) is False
        assert correct(p, answer[:-1]) is False
        assert correct(p, "not json") is False


def test_correct_is_strict_about_types() -> None:
    p = BenchPrompt("x", "record", "q", answer='{"n": 2, "ok": true, "tags": ["a", "b"]}', match="json")
    assert correct(p, '{"tags": ["a", "b"], "ok": true, "n": 2.0}') is True  # numbers by ==
    assert correct(p, '{"n": 2, "ok": 1, "tags": ["a", "b"]}') is False  # true is not 1
    assert correct(p, '{"n": 2, "ok": true, "tags": ["b", "a"]}') is False  # lists keep their order
    assert correct(p, '{"n": 2, "ok": true, "tags": ["a", "b"], "extra": 0}') is False
    assert correct(p, '{"n": "2", "ok": true, "tags": ["a", "b"]}') is False


def test_tool_call_arguments_may_be_a_json_string(calls: list[BenchPrompt]) -> None:
    p = calls[0]
    call = json.loads(p.answer or "")
    assert correct(p, json.dumps({"name": call["name"], "arguments": json.dumps(call["arguments"])})) is True
    assert correct(p, json.dumps({"name": "other", "arguments": call["arguments"]})) is False


def test_exact_match_unchanged() -> None:
    p = BenchPrompt("t", "copy", "q", answer="1 2 3")
    assert correct(p, " 1 2 3. ") is True and correct(p, "3 2 1") is False
    assert correct(BenchPrompt("t", "shuffle", "q", answer="a b", match="multiset"), "b a") is True
    assert correct(BenchPrompt("t", "c", "q"), "anything") is None
