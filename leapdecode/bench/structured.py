"""Structured prompts in the bench: a prompt with a schema is decoded under it, a prompt with tools under
the tools' grammar (tool_choice required); each answer is then checked for valid JSON and for its schema."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from leapdecode.bench.cells import md_table, num, pct, times
from leapdecode.bench.config import HF_METHODS, LLAMA_SERVER_METHODS, LLAMACPP_METHODS
from leapdecode.bench.prompts import BenchPrompt
from leapdecode.bench.structured_sets import parse_json, schema_valid
from leapdecode.errors import LeapError
from leapdecode.grammar.tools import Tools

TOOL_CHOICE = "required"  # the bench measures constrained decoding: every answer is one call (no parallel calls)


def encode_structured(llm: Any, prompt: BenchPrompt) -> tuple[list[int], dict[str, Any]]:
    """A prompt's ids (tools in the chat template) and generate()'s constraint options for it."""
    if prompt.tools:
        tools = _tools(prompt)
        messages, listed = tools.messages(_messages(prompt), llm.template_has_tools)
        constraint = tools.constraint(llm.grammar_vocab.lark_literal)
        return list(llm.encode(messages, tools=listed)), {"constraint": constraint}
    ids = list(llm.encode(prompt.prompt, raw=prompt.raw))
    return ids, ({"json_schema": prompt.schema} if prompt.schema is not None else {})


def structured_request(prompt: BenchPrompt) -> dict[str, Any]:
    """The OpenAI request fields that ask the server for a prompt's constraint (bench-serve)."""
    if prompt.tools:
        return {"tools": list(prompt.tools), "tool_choice": TOOL_CHOICE, "parallel_tool_calls": False}
    if prompt.schema is not None:
        return {"response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": prompt.schema}}}
    return {}


def check_methods(methods: Sequence[str], prompts: Sequence[BenchPrompt]) -> None:
    """Refuse, before any model loads, a baseline that cannot decode under the prompts' constraints."""
    if not any(p.schema is not None or p.tools for p in prompts):
        return
    unconstrained = [m for m in methods if m in HF_METHODS + LLAMACPP_METHODS]
    if unconstrained:
        raise LeapError(f"{', '.join(unconstrained)} cannot decode under a JSON schema here; on a structured prompt "
                        "set compare with none (constrained plain decoding) and llamacpp-server")
    if any(p.tools for p in prompts) and any(m in LLAMA_SERVER_METHODS for m in methods):
        raise LeapError("llama-server takes a JSON schema, not the tools' grammar: use it on json-extract")


def judge(prompt: BenchPrompt, text: str) -> tuple[bool | None, bool | None, str]:
    """(valid JSON, follows its schema, the text its answer is checked as) for a structured prompt's answer;
    (None, None, text) for another prompt. A tool prompt's answer is judged by its first call, the arguments
    against the called function's schema, and checked as {"name", "arguments"}."""
    if prompt.tools:
        tools = _tools(prompt)
        _, calls = tools.parse(text)
        if not calls:
            return False, False, ""
        arguments = json.loads(calls[0].arguments)
        params = next(f.parameters for f in tools.functions if f.name == calls[0].name)
        return True, schema_valid(arguments, params), json.dumps({"name": calls[0].name, "arguments": arguments})
    if prompt.schema is None:
        return None, None, text
    obj = parse_json(text)
    return obj is not None, obj is not None and schema_valid(obj, prompt.schema), text


def _tools(prompt: BenchPrompt) -> Tools:
    """A tool prompt's tools as the bench asks for them: one call (tool_choice required, no parallel calls)."""
    return Tools(list(prompt.tools or ()), TOOL_CHOICE, parallel=False)


def _messages(prompt: BenchPrompt) -> list[dict[str, Any]]:
    return [{"role": "user", "content": prompt.prompt}] if isinstance(prompt.prompt, str) else list(prompt.prompt)


def structured_section(methods: dict[str, dict[str, Any]]) -> list[str]:
    """The structured-output table: validity, speed against constrained plain decoding (none), and what the
    grammar contributed (tokens it drafted and the model accepted) and cost (its share of the time)."""
    rows = structured_rows(methods)
    if not rows:
        return []
    return ["## Structured output", "", *md_table(STRUCTURED_HEADER, rows), "",
            "Every method decodes under the prompt's schema (a tool prompt: the tools' grammar, one or more "
            "calls); `none` is constrained plain decoding. Finished: answers that ended before max_new_tokens; "
            "valid JSON and schema-valid count those (an answer cut short is a prefix of valid JSON). "
            "Grammar-forced: emitted tokens the grammar forced, drafted for free and the target accepted. "
            "Grammar time: its masks and forced tokens, as a share of the run.", ""]


STRUCTURED_HEADER = ["method", "finished", "valid JSON", "schema-valid", "tok/s", "speedup vs none",
                     "tokens per forward", "grammar-forced", "grammar time"]


def structured_rows(methods: dict[str, dict[str, Any]]) -> list[list[str]]:
    plain = (methods.get("none") or {}).get("tokens_per_s")
    return [[m, pct(s["finished_rate"]), pct(s["valid_json_rate"]), pct(s["schema_valid_rate"]),
             f"{s['tokens_per_s']:.2f}", times(s["tokens_per_s"] / plain if plain else None), num(s["mean_accepted"]),
             pct(s.get("grammar_token_share")), pct(s.get("grammar_time_share"))]
            for m, s in methods.items() if s.get("finished_rate") is not None]
