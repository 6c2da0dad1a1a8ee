"""The Python API: prompts, messages, streaming."""

from __future__ import annotations

import pytest

from leapdecode.errors import InvalidRequest


def test_stream_pieces_add_up_to_the_text(llm):
    run = llm.stream("Write two sentences about rain.", method="suffix", max_new_tokens=40, stop=["zzz"])
    pieces = list(run)
    res = run.result()
    assert len(pieces) > 1
    assert "".join(pieces) == res.text
    assert res.stats.new_tokens == len(res.token_ids)


def test_messages_and_string_prompt_agree(llm):
    a = llm.generate("What is 2 + 2?", max_new_tokens=10)
    b = llm.generate([{"role": "user", "content": "What is 2 + 2?"}], max_new_tokens=10)
    assert a.token_ids == b.token_ids


def test_unknown_method_and_option_are_refused(llm):
    with pytest.raises(InvalidRequest, match="unknown draft method"):
        llm.generate("Hi", method="telepathy", max_new_tokens=4)
    with pytest.raises(InvalidRequest, match="bad options"):
        llm.generate("Hi", method="ngram", max_new_tokens=4, max_nn=3)


def test_suffix_corpus_file_helps_drafting(llm, tmp_path):
    """A corpus holding the very answer lets the suffix drafter draft (and be accepted) from the start."""
    ids = llm.encode("Recite the alphabet, separated by commas.")
    plain = llm.generate(prompt_ids=ids, max_new_tokens=48)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(plain.text)
    with_corpus = llm.generate(prompt_ids=ids, method="suffix", corpus_path=str(corpus), max_new_tokens=48)
    assert with_corpus.token_ids == plain.token_ids
    assert with_corpus.stats.mean_accepted > 1.5
