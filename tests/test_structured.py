"""Structured output: the grammar masks every verified row, so every method equals constrained plain decoding,
which itself equals transformers' generate() under the same grammar; the grammar drafts its forced tokens."""

from __future__ import annotations

import json
import re

import jsonschema
import numpy as np
import pytest
import torch

from leapdecode.errors import InvalidRequest
from leapdecode.grammar.constraint import Constraint
from leapdecode.grammar.spec import GrammarSpec
from leapdecode.types import Draft

PERSON = {"type": "object", "properties": {
    "name": {"type": "string"}, "age": {"type": "integer"}, "city": {"type": "string"},
    "hobbies": {"type": "array", "items": {"type": "string"}}},
    "required": ["name", "age", "city", "hobbies"], "additionalProperties": False}
PROMPTS = [
    "Extract as JSON: Maria Lopez is 34 years old, lives in Madrid and likes chess, running and old films.",
    "Make up a person who lives in Tokyo and describe them as JSON.",
    "Write a JSON object about a retired sailor.",
]


def _reference(hf_model, llm, ids: list[int], spec: GrammarSpec, max_new: int) -> list[int]:
    """transformers' greedy generate() with the grammar's mask applied by a logits processor written
    against llguidance's own API: an implementation independent of leapdecode's Constraint."""
    from transformers import LogitsProcessor, LogitsProcessorList

    matcher = llm.grammar_vocab.matcher(spec)

    class Masked(LogitsProcessor):
        def __call__(self, input_ids, scores):
            if input_ids.shape[1] > len(ids):
                matcher.consume_token(int(input_ids[0, -1]))
            allowed = np.unpackbits(np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
            allowed = torch.from_numpy(allowed[: scores.shape[-1]].astype(bool))
            if matcher.is_stopped():
                allowed[sorted(llm.eos_ids)] = True
            return scores.masked_fill(~allowed, float("-inf"))

    with torch.inference_mode():
        out = hf_model.generate(torch.tensor([ids]), max_new_tokens=max_new, do_sample=False,
                                logits_processor=LogitsProcessorList([Masked()]))
    new = out[0, len(ids):].tolist()
    return new[: next((i + 1 for i, t in enumerate(new) if t in llm.eos_ids), len(new))]


@pytest.mark.parametrize("method", ["none", "auto"])
def test_constrained_greedy_equals_transformers_under_the_same_grammar(llm, hf_model, method):
    spec = GrammarSpec.json_schema(PERSON)
    for prompt in PROMPTS[:2]:
        ids = llm.encode(prompt)
        res = llm.generate(prompt_ids=ids, method=method, json_schema=PERSON, max_new_tokens=60)
        assert res.token_ids == _reference(hf_model, llm, ids, spec, 60)


@pytest.fixture(scope="module")
def plain_person(llm):
    """Constrained plain decoding of the first two prompts under PERSON: what every method must give."""
    return [llm.generate(p, method="none", json_schema=PERSON, max_new_tokens=64) for p in PROMPTS[:2]]


@pytest.mark.parametrize("method,options", [
    ("ngram", {}), ("suffix", {}), ("auto", {}), ("jacobi", {}), ("lookahead", {}),
    ("suffix", {"tree": 3}), ("ngram", {"tree": 2}), ("layerskip", {"skip_layers": "10-20"}),
])
def test_every_method_equals_constrained_plain_decoding(llm, plain_person, method, options):
    for prompt, plain in zip(PROMPTS[:2], plain_person):
        fast = llm.generate(prompt, method=method, json_schema=PERSON, max_new_tokens=64, **options)
        assert fast.token_ids == plain.token_ids, (method, options, prompt)
        if plain.finish_reason == "stop":
            assert jsonschema.Draft202012Validator(PERSON).is_valid(json.loads(plain.text))


def test_the_grammar_drafts_its_forced_tokens_and_they_are_accepted(llm):
    prompt = PROMPTS[0]
    plain = llm.generate(prompt, method="none", json_schema=PERSON, max_new_tokens=80)
    fast = llm.generate(prompt, method="suffix", json_schema=PERSON, max_new_tokens=80)
    assert fast.stats.grammar_forced >= 8  # the keys, quotes, braces and separators
    assert fast.stats.arm_accepted["grammar"] >= fast.stats.grammar_forced  # and what was copied after them
    assert fast.stats.target_forwards < plain.stats.target_forwards
    assert fast.stats.grammar_seconds > 0


@pytest.mark.parametrize("method", ["suffix", "auto", "lookahead"])
def test_seeded_sampling_under_a_schema_is_the_text_plain_sampling_gives(llm, method):
    for seed in (1, 2):
        opts = dict(json_schema=PERSON, max_new_tokens=80, temperature=0.9, seed=seed)
        plain = llm.generate(PROMPTS[1], method="none", **opts)
        fast = llm.generate(PROMPTS[1], method=method, **opts)
        assert fast.token_ids == plain.token_ids
        if plain.finish_reason == "stop":
            assert jsonschema.Draft202012Validator(PERSON).is_valid(json.loads(plain.text))


def test_sampling_keeps_the_constrained_distribution(llm, hf_model):
    """The first token under the choice Paris|London|Rome is drawn from the model's distribution over the
    tokens the grammar allows there, renormalised: checked against transformers' logits over 160 seeds."""
    from tests.conftest import hf_next_logits

    ids = llm.encode("Name a European capital.")
    matcher = llm.grammar_vocab.matcher(GrammarSpec("regex", "Paris|London|Rome"))
    allowed = np.flatnonzero(np.unpackbits(np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8), bitorder="little"))
    allowed = torch.from_numpy(allowed[allowed < llm.network.vocab_size])
    want = torch.softmax(hf_next_logits(hf_model, ids)[allowed].float(), dim=-1)
    counts = torch.zeros(len(allowed))
    for seed in range(160):
        res = llm.generate(prompt_ids=ids, method="suffix", regex="Paris|London|Rome", max_new_tokens=1,
                           temperature=1.0, seed=seed)
        counts[(allowed == res.token_ids[0]).nonzero()[0, 0]] += 1
    got = counts / 160
    assert (got - want).abs().max() < 4 * float((want * (1 - want) / 160).sqrt().max()) + 0.01, (got, want)


def test_regex_and_grammars_in_lark_and_gbnf_are_matched(llm):
    res = llm.generate("What is 12 times 7?", method="auto", regex=r"The answer is [0-9]{1,4}\.", max_new_tokens=20)
    assert re.fullmatch(r"The answer is [0-9]{1,4}\.", res.text) and res.finish_reason == "stop"
    gbnf = 'root ::= answer "."\nanswer ::= "yes" | "no"\n'
    assert llm.generate("Is water wet?", method="suffix", grammar=gbnf, max_new_tokens=8).text in ("yes.", "no.")
    lark = 'start: "Colour: " COLOUR\nCOLOUR: "red" | "green" | "blue"\n'
    colour = llm.generate("Pick a colour.", grammar=lark, max_new_tokens=8).text
    assert re.fullmatch(r"Colour: (red|green|blue)", colour)
    obj = llm.generate("Describe a cat.", response_format={"type": "json_object"}, max_new_tokens=60)
    assert obj.finish_reason != "stop" or isinstance(json.loads(obj.text), dict)


@pytest.mark.parametrize("options,message", [
    ({"json_schema": "{not json"}, "not valid JSON"),
    ({"json_schema": {"type": "object", "properties": {"a": {"type": "nonsense"}}}}, "invalid json schema"),
    ({"regex": "[a-"}, "invalid regex"),
    ({"grammar": "start: undefined_rule"}, "invalid grammar"),
    ({"regex": "a", "grammar": 'root ::= "a"'}, "one output constraint"),
    ({"response_format": {"type": "xml"}}, "response_format type"),
    ({"response_format": {"type": "json_schema"}}, "json_schema"),
])
def test_bad_constraints_are_the_requests_error(llm, options, message):
    with pytest.raises(InvalidRequest, match=message):
        llm.generate("Hello", max_new_tokens=4, **options)


def test_a_tree_keeps_only_the_nodes_the_grammar_allows(llm):
    constraint = Constraint(llm.grammar_vocab, GrammarSpec("regex", "ab|ac|b"))
    a, b, c = (llm.tokenizer.encode(x, add_special_tokens=False)[0] for x in "abc")
    tree = Draft(tokens=torch.tensor([a, c, b, c, a]), parents=torch.tensor([-1, -1, 0, 0, 2]))
    kept = constraint.allowed(tree)  # a, c? no; a->b, a->c, a->b->a? no
    assert kept.tokens.tolist() == [a, b, c] and kept.parents.tolist() == [-1, 0, 0]
    chain = constraint.allowed(Draft(tokens=torch.tensor([a, b, a])))
    assert chain.tokens.tolist() == [a, b]


@pytest.mark.parametrize("prompts", ["json-extract", "tool-calls"])
def test_the_bench_decodes_structured_sets_under_their_constraints(llm, tmp_path, monkeypatch, prompts):
    from leapdecode.bench import harness
    from leapdecode.bench.config import BenchConfig

    monkeypatch.setattr(harness, "LLM", lambda model, dtype: llm)  # the session's model: no second load
    threads = torch.get_num_threads()
    try:
        cfg = BenchConfig(methods=("none", "auto"), prompts=prompts, limit=2, max_new_tokens=64, warmup=0,
                          out=tmp_path, threads=threads)
        results = harness.run_bench(cfg)
    finally:
        torch.set_num_threads(threads)
    none, auto = results["methods"]["none"], results["methods"]["auto"]
    assert none["finished_rate"] == auto["finished_rate"] and auto["exact_match_vs_plain"] == 1.0
    assert auto["valid_json_rate"] in (None, 1.0) and auto["schema_valid_rate"] in (None, 1.0)
    assert auto["grammar_token_share"] > 0.1 and none["grammar_token_share"] == 0
    assert "## Structured output" in (tmp_path / "report.md").read_text()
    for record in results["records"]:
        assert record["valid_json"] is not None and record["finish_reason"] == "length" or record["schema_valid"]


def test_the_bench_refuses_a_baseline_that_cannot_follow_the_schema(tmp_path):
    from leapdecode.bench import harness
    from leapdecode.bench.config import BenchConfig
    from leapdecode.errors import LeapError

    with pytest.raises(LeapError, match="cannot decode under a JSON schema"):
        harness.run_bench(BenchConfig(methods=("hf", "none"), prompts="json-extract", limit=1, out=tmp_path))
    with pytest.raises(LeapError, match="not the tools' grammar"):
        harness.run_bench(BenchConfig(methods=("llamacpp-server", "none"), prompts="tool-calls", limit=1, out=tmp_path))


def test_a_draft_past_the_grammars_end_leaves_the_matcher_where_it_was(llm):
    """A draft that closes the grammar and then ends the text: checking it must not roll back a committed
    token (the matcher does not take the end token once the grammar has ended)."""
    constraint = Constraint(llm.grammar_vocab, GrammarSpec("regex", "ab"))
    a, b = (llm.tokenizer.encode(x, add_special_tokens=False)[0] for x in "ab")
    eos = min(llm.eos_ids)
    constraint.advance([a])
    draft = Draft(tokens=torch.tensor([b, eos]))
    logits = torch.zeros(3, llm.network.vocab_size)
    logits[0, b] = logits[1, eos] = logits[2, eos] = 5.0
    assert constraint.argmax(draft, logits) == [b, eos, eos]
    assert constraint.mask(draft, logits).argmax(dim=-1).tolist() == [b, eos, eos]
    constraint.advance([b, eos])
    assert constraint.matcher.is_stopped() and not constraint.matcher.is_error()
