"""Tool calling's pieces without a server: validation, the prompt (the template's own tools, or the Hermes
form in the system message), the grammar, and reading calls back out of text, whole and streamed."""

from __future__ import annotations

import copy
import json

import pytest

from leapdecode.errors import InvalidRequest
from leapdecode.grammar.tools import OPEN, Tools, ToolStream

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
HISTORY = [{"role": "user", "content": "Weather in Oslo?"},
           {"role": "assistant", "content": "", "tool_calls": [
               {"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
           {"role": "tool", "tool_call_id": "call_1", "content": '{"celsius": 4}'}]


def test_calls_are_read_out_of_the_answer():
    tools = Tools([WEATHER], "auto")
    content, calls = tools.parse("Let me check.\n" + CALL)
    assert content == "Let me check."
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Oslo"})]
    assert tools.parse("It is sunny.") == ("It is sunny.", [])
    assert tools.parse('<tool_call>\n{"name": "other", "arguments": {}}\n</tool_call>')[1] == []  # not one of ours
    assert Tools([WEATHER], "none").parse(CALL) == (CALL, [])


def test_a_stream_holds_back_what_may_open_a_call():
    stream = ToolStream(Tools([WEATHER], "auto"))
    sent = "".join(stream.push(piece) for piece in ["Sure. ", "<tool", "_call>\n{", '"name": "get_weather", ',
                                                    '"arguments": {"city": "Oslo"}}\n</tool_call>'])
    rest, calls = stream.finish()
    assert sent == "Sure. " and rest == "" and calls[0].name == "get_weather"
    plain = ToolStream(Tools([WEATHER], "auto"))
    sent = plain.push("a < b and <tool") + plain.push(" is not a tag")
    rest, calls = plain.finish()
    assert sent + rest == "a < b and <tool is not a tag" and not calls


def test_a_template_without_tools_gets_them_in_the_system_message():
    messages, listed = Tools([WEATHER], "auto").messages(copy.deepcopy(HISTORY), template_has_tools=False)
    assert listed is None and messages[0]["role"] == "system" and '"name": "get_weather"' in messages[0]["content"]
    assert OPEN in messages[2]["content"] and '"city": "Oslo"' in messages[2]["content"]  # the earlier call, as text
    assert messages[3] == {"role": "user", "content": '<tool_response>\n{"celsius": 4}\n</tool_response>'}


def test_a_template_with_tools_gets_them_and_the_arguments_as_objects(llm):
    tokenizer = copy.copy(llm.tokenizer)
    tokenizer.chat_template = ("{% if tools %}TOOLS {{ tools | map(attribute='function.name') | join(',') }}\n"
                               "{% endif %}"
                               "{% for m in messages %}{{ m.role }}: {{ m.content }}"
                               "{% for c in m.tool_calls or [] %}CALL {{ c.function.arguments | tojson }}{% endfor %}\n"
                               "{% endfor %}")
    from leapdecode.api import encode_prompt

    messages, listed = Tools([WEATHER], "required").messages(copy.deepcopy(HISTORY), template_has_tools=True)
    text = tokenizer.decode(encode_prompt(tokenizer, messages, tools=listed))
    assert text.startswith("TOOLS get_weather\n") and 'CALL {"city": "Oslo"}' in text  # an object, not a string


@pytest.mark.parametrize("tools, choice, fragment", [
    ([{"type": "function", "function": {"description": "x"}}], None, "name"),
    ([{"type": "function", "function": {"name": "has space"}}], None, "name"),
    ([{"type": "retrieval"}], None, r"tools\[0\] must be"),
    ([WEATHER, WEATHER], None, "unique"),
    ([WEATHER], {"type": "function", "function": {"name": "nope"}}, "not among the tools"),
    ([WEATHER], "always", "tool_choice"),
    (None, "required", "needs tools"),
    ([{"type": "function", "function": {"name": "f", "parameters": "a string"}}], None, "parameters"),
])
def test_bad_tools_are_the_requests_error(tools, choice, fragment):
    with pytest.raises(InvalidRequest, match=fragment):
        Tools(tools, choice)


def test_the_grammar_forces_a_named_call_and_frees_auto(llm):
    from leapdecode.grammar.constraint import Constraint

    choice = {"type": "function", "function": {"name": "get_weather"}}
    named = Constraint(llm.grammar_vocab, Tools([WEATHER], choice).constraint(llm.grammar_vocab.lark_literal))
    forced = llm.tokenizer.decode(named.forced(64))
    assert forced.startswith('<tool_call>\n{"name": "get_weather", "arguments": {')
    auto = Constraint(llm.grammar_vocab, Tools([WEATHER], "auto").constraint())
    assert auto.forced(8) == [] and auto.matcher.validate_tokens(llm.tokenizer.encode("Hello there")) == 2
    bad = llm.tokenizer.encode('<tool_call>\n{"name": "get_time"', add_special_tokens=False)
    assert auto.matcher.validate_tokens(bad) < len(bad)  # a call must name one of the tools
