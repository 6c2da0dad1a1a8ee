"""Function calling: a request's tools in the prompt (as the model's chat template carries them, else in the
Hermes form Qwen2.5's template uses), a grammar that constrains each call's arguments by its function's
JSON schema, and the calls read back out of the answer, whole or streamed."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from leapdecode.errors import InvalidRequest
from leapdecode.grammar.spec import JSON_LAYOUT, GrammarSpec

OPEN, CLOSE = "<tool_call>", "</tool_call>"
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CALL = re.compile(re.escape(OPEN) + r"\s*(.*?)\s*" + re.escape(CLOSE), re.S)
HERMES_SYSTEM = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with "
    "function signatures within <tools></tools> XML tags:\n<tools>{tools}\n</tools>\n\nFor each function call, "
    "return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n"
    '<tool_call>\n{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>')


@dataclass(frozen=True, slots=True)
class Function:
    name: str
    parameters: dict[str, Any]
    tool: dict[str, Any]  # as the request gave it, for the chat template


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: str  # JSON text
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


class Tools:
    """A request's tools and tool_choice, validated. choice: auto, none, required, or a function's name."""

    def __init__(self, tools: list[dict[str, Any]] | None, choice: str | dict[str, Any] | None,
                 parallel: bool = True) -> None:
        self.functions = [_function(t, i) for i, t in enumerate(tools or [])]
        names = [f.name for f in self.functions]
        if len(set(names)) != len(names):
            raise InvalidRequest(f"tools: function names must be unique, got {names}")
        self.choice = _choice(choice, names)
        self.parallel = parallel

    @property
    def active(self) -> bool:
        """Whether the answer may hold calls (tools given and tool_choice is not none)."""
        return bool(self.functions) and self.choice != "none"

    def constraint(self, literal: Callable[[str], str] = json.dumps) -> GrammarSpec | None:
        """auto: free text, or calls whose arguments follow their schema; required: one or more calls; a
        named function: calls to it. None without tools or with tool_choice none. literal: how the grammar
        spells the tags for the model's vocabulary (GrammarVocab.lark_literal: a special token where it is one)."""
        if not self.active:
            return None
        called = [f for f in self.functions if self.choice in ("auto", "required") or f.name == self.choice]
        schema = {"anyOf": [_call_schema(f) for f in called]} | {"x-guidance": JSON_LAYOUT}
        calls = 'call ("\\n" call)*' if self.parallel else "call"
        start = f"TEXT | {calls}" if self.choice == "auto" else calls
        lark = (f"start: {start}\ncall: {literal(OPEN)} \"\\n\" args \"\\n\" {literal(CLOSE)}\n"
                f"args: %json {json.dumps(schema)}\n"
                f"TEXT: /(?s:.+)/ & ~/{re.escape(OPEN)}(?s:.*)/\n")
        return GrammarSpec("grammar", lark)

    def messages(self, messages: list[dict[str, Any]], template_has_tools: bool) -> tuple[list[dict[str, Any]], Any]:
        """The messages and the tools argument for the chat template. A template that does not carry tools
        gets them in its system message, calls and results as text, in the Hermes form."""
        messages = [_arguments_as_objects(m) for m in messages]
        if template_has_tools:
            return messages, [f.tool for f in self.functions] if self.active else None
        out = [_as_text(m) for m in messages]
        if self.active:
            listing = "".join("\n" + json.dumps(f.tool) for f in self.functions)
            tools_text = HERMES_SYSTEM.format(tools=listing)
            if out and out[0]["role"] == "system":
                out[0] = out[0] | {"content": out[0]["content"] + tools_text}
            else:
                out.insert(0, {"role": "system", "content": "You are a helpful assistant." + tools_text})
        return out, None

    def parse(self, text: str) -> tuple[str | None, list[ToolCall]]:
        """An answer -> (its text before any call, or None when there is none; the calls). A block that is
        not a call to one of the tools stays text."""
        if not self.active:
            return text, []
        calls = []
        for block in CALL.findall(text):
            try:
                obj = json.loads(block)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict) and obj.get("name") in {f.name for f in self.functions}:
                calls.append(ToolCall(obj["name"], json.dumps(obj.get("arguments", {}), ensure_ascii=False)))
        if not calls:
            return text, []
        content = text[: text.find(OPEN)].strip()
        return content or None, calls


class ToolStream:
    """Streams an answer's text while it may turn into calls: text is held back while it could be the start
    of a call, and everything from a call's opening tag on is kept for the calls at the end."""

    def __init__(self, tools: Tools) -> None:
        self.tools, self.text, self.sent = tools, "", 0

    def push(self, piece: str) -> str:
        """The part of the text so far that is surely not a call, beyond what was already sent."""
        self.text += piece
        if not self.tools.active:
            safe = len(self.text)
        elif (at := self.text.find(OPEN)) >= 0:
            safe = at
        else:
            safe = len(self.text) - _partial_tag(self.text)
        out, self.sent = self.text[self.sent : max(safe, self.sent)], max(safe, self.sent)
        return out

    def finish(self) -> tuple[str, list[ToolCall]]:
        """What is left to send as text, and the calls (text held back that made no call is sent)."""
        _, calls = self.tools.parse(self.text)
        if calls:
            return "", calls
        rest, self.sent = self.text[self.sent :], len(self.text)
        return rest, []


def _partial_tag(text: str) -> int:
    """How many of the text's last characters could begin the opening tag."""
    for n in range(min(len(OPEN) - 1, len(text)), 0, -1):
        if OPEN.startswith(text[-n:]):
            return n
    return 0


def _function(tool: Any, i: int) -> Function:
    fn = tool.get("function") if isinstance(tool, dict) and tool.get("type", "function") == "function" else None
    if not isinstance(fn, dict):
        raise InvalidRequest(f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ..., "
                             "'parameters': ...}}")
    name = fn.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidRequest(f"tools[{i}].function.name must be 1-64 letters, digits, _ or -, got {name!r}")
    params = fn.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(params, dict):
        raise InvalidRequest(f"tools[{i}].function.parameters must be a JSON schema object")
    return Function(name, params, {"type": "function", "function": fn})


def _choice(choice: str | dict[str, Any] | None, names: list[str]) -> str:
    if choice is None:
        return "auto" if names else "none"
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise InvalidRequest(f"tool_choice must be auto, none, required or a function, got {choice!r}")
        if choice != "none" and not names:
            raise InvalidRequest(f"tool_choice {choice!r} needs tools")
        return choice
    name = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
    if name not in names:
        raise InvalidRequest(f"tool_choice names function {name!r}, which is not among the tools ({', '.join(names)})")
    return name


def _call_schema(f: Function) -> dict[str, Any]:
    return {"type": "object", "properties": {"name": {"const": f.name}, "arguments": f.parameters},
            "required": ["name", "arguments"], "additionalProperties": False}


def _arguments_as_objects(message: dict[str, Any]) -> dict[str, Any]:
    """An assistant's earlier calls with their arguments as objects (the OpenAI API sends JSON text)."""
    if not message.get("tool_calls"):
        return message
    calls = []
    for call in message["tool_calls"]:
        fn = dict(call.get("function") or {})
        if isinstance(fn.get("arguments"), str):
            try:
                fn["arguments"] = json.loads(fn["arguments"])
            except json.JSONDecodeError as e:
                raise InvalidRequest(f"a tool call's arguments are not valid JSON: {e}") from e
        calls.append(call | {"function": fn})
    return message | {"tool_calls": calls}


def _as_text(message: dict[str, Any]) -> dict[str, Any]:
    """A call or a tool's result as plain chat text, for a template that knows neither."""
    if message["role"] == "tool":
        return {"role": "user", "content": f"<tool_response>\n{message.get('content') or ''}\n</tool_response>"}
    if message.get("tool_calls"):
        blocks = [OPEN + "\n" + json.dumps({"name": c["function"]["name"], "arguments": c["function"]["arguments"]})
                  + "\n" + CLOSE for c in message["tool_calls"]]
        return {"role": "assistant", "content": "\n".join(filter(None, [message.get("content") or "", *blocks]))}
    return {"role": message["role"], "content": message.get("content") or ""}
