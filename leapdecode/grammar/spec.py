"""What a request's output must match, as the user gave it, compiled to a grammar the matcher runs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from leapdecode.errors import InvalidRequest

KINDS = ("json_object", "json_schema", "regex", "grammar")
# JSON the way json.dumps writes it: one space after ':' and ',' and none elsewhere. Fixed whitespace keeps
# the model from padding forever and makes every brace, quote and separator a forced token the grammar drafts.
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


@dataclass(frozen=True, slots=True)
class GrammarSpec:
    """A constraint on the output. kind: json_object (any JSON object), json_schema (source: the schema as
    JSON text), regex, or grammar (Lark, or llama.cpp's GBNF, told apart by its syntax)."""

    kind: str
    source: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidRequest(f"unknown constraint {self.kind!r}; known: {', '.join(KINDS)}")
        if self.kind != "json_object" and not self.source.strip():
            raise InvalidRequest(f"the {self.kind} constraint is empty")

    @staticmethod
    def json_schema(schema: dict[str, Any] | str) -> GrammarSpec:
        text = schema if isinstance(schema, str) else json.dumps(schema)
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as e:
            raise InvalidRequest(f"the JSON schema is not valid JSON: {e}") from e
        if not isinstance(parsed, dict):
            raise InvalidRequest("a JSON schema must be a JSON object")
        return GrammarSpec("json_schema", text)

    def compiled(self) -> str:
        """The grammar in llguidance's own form; a bad schema, regex or grammar is the request's error."""
        import llguidance
        from llguidance.gbnf_to_lark import any_to_lark

        try:
            if self.kind == "json_object":
                return llguidance.LLMatcher.grammar_from_json_schema({"type": "object"}, defaults=JSON_LAYOUT)
            if self.kind == "json_schema":
                return llguidance.LLMatcher.grammar_from_json_schema(self.source, defaults=JSON_LAYOUT)
            if self.kind == "regex":
                return llguidance.LLMatcher.grammar_from_regex(self.source)
            return llguidance.LLMatcher.grammar_from_lark(any_to_lark(self.source))
        except Exception as e:  # the converters raise ValueError and friends on malformed input
            raise InvalidRequest(f"invalid {self.kind.replace('_', ' ')}: {e}") from e


def spec_of(json_schema: dict[str, Any] | str | None = None, regex: str | None = None, grammar: str | None = None,
            response_format: dict[str, Any] | None = None) -> GrammarSpec | None:
    """The one constraint a request's options name, or None. response_format: the OpenAI API's
    ({"type": "text" | "json_object" | "json_schema", "json_schema": {"schema": ...}})."""
    given = {"json_schema": json_schema, "regex": regex, "grammar": grammar, "response_format": response_format}
    named = [k for k, v in given.items() if v is not None]
    if len(named) > 1:
        raise InvalidRequest(f"give one output constraint, not {' and '.join(named)}")
    if json_schema is not None:
        return GrammarSpec.json_schema(json_schema)
    if regex is not None:
        return GrammarSpec("regex", regex)
    if grammar is not None:
        return GrammarSpec("grammar", grammar)
    return _response_format(response_format) if response_format is not None else None


def _response_format(fmt: Any) -> GrammarSpec | None:
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return GrammarSpec("json_object")
    if kind == "json_schema":
        inner = fmt.get("json_schema")
        if not isinstance(inner, dict) or not isinstance(inner.get("schema"), dict):
            raise InvalidRequest("response_format json_schema needs {'json_schema': {'name': ..., 'schema': {...}}}")
        return GrammarSpec.json_schema(inner["schema"])
    raise InvalidRequest(f"response_format type must be text, json_object or json_schema, got {kind!r}")
