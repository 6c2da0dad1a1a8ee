"""Model-free drafters against brute-force references on random token sequences."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from leapdecode.drafters import (
    DRAFTER_METHODS,
    Drafter,
    DrafterResources,
    NgramDrafter,
    NoDrafter,
    SuffixDrafter,
    make_drafter,
)
from leapdecode.errors import InvalidRequest
from leapdecode.types import SeqView

SEEDS = range(6)


def random_text(seed: int, size: int = 120, vocab: int = 4) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(vocab) for _ in range(size)]


def view(tokens: list[int], prompt_len: int = 10) -> SeqView:
    return SeqView(tokens=tokens, prompt_len=min(prompt_len, len(tokens)))


def ends_of(source: list[int], pattern: list[int], before: int) -> list[int]:
    """End positions e < before at which `pattern` occurs in source, by naive search."""
    m = len(pattern)
    return [e for e in range(m - 1, min(before, len(source))) if source[e - m + 1 : e + 1] == pattern]


def longest_match(text: list[int], source: list[int], before: int) -> int:
    """Longest suffix of text occurring in source ending before `before` (occurrence is monotone in length)."""
    m = 0
    while m < len(text) and ends_of(source, text[len(text) - m - 1 :], before):
        m += 1
    return m


def copy_after(text: list[int], end: int, k: int) -> list[int]:
    """Brute force: extend text by copying from just after `end`, one token at a time (it may copy its copy)."""
    grown = list(text)
    while len(grown) < len(text) + k:
        grown.append(grown[end + 1 + len(grown) - len(text)])
    return grown[len(text) :]


def ngram_reference(text: list[int], k: int, max_n: int, min_n: int) -> list[int]:
    """Longest n first, latest occurrence; the one before it when the latest has fewer than k followers."""
    size = len(text)
    for n in range(min(max_n, size - 1), min_n - 1, -1):
        ends = ends_of(text, text[size - n :], size - 1)
        if ends:
            end = ends[-2] if size - 1 - ends[-1] < k and len(ends) > 1 else ends[-1]
            return copy_after(text, end, k)
    return []


def follows(draft: list[int], source: list[int], pattern: list[int], before: int, k: int) -> bool:
    """draft is k tokens copied on from some occurrence of pattern in source ending before `before`."""
    return any(copy_after(source, e, k) == draft for e in ends_of(source, pattern, before))


def follows_in_corpus(draft: list[int], corpus: list[int], pattern: list[int], k: int) -> bool:
    """A corpus does not loop: draft is all (up to k) of what followed an occurrence of pattern there."""
    return any(corpus[e + 1 : e + 1 + k] == draft for e in ends_of(corpus, pattern, len(corpus)))


# --- n-gram -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("max_n", "min_n"), [(4, 1), (3, 2), (1, 1)])
def test_ngram_matches_reference_every_prefix(seed: int, max_n: int, min_n: int) -> None:
    text, rng = random_text(seed), random.Random(seed)
    drafter = NgramDrafter(max_n=max_n, min_n=min_n)
    for size in range(1, len(text) + 1):
        k = rng.randrange(1, 9)
        draft = drafter.propose(view(text[:size]), k)
        got = draft.tokens.tolist()
        assert draft.tokens.dtype == torch.long and draft.probs is None
        assert got == ngram_reference(text[:size], k, max_n, min_n)
        assert len(got) <= k
        tails = [text[size - n : size] for n in range(min(max_n, size - 1), min_n - 1, -1)]
        longest = next((t for t in tails if ends_of(text, t, size - 1)), None)
        if longest is None:
            assert got == []
        else:  # independently of the reference: all that followed an occurrence of the longest matching tail
            assert follows(got, text[:size], longest, size - 1, k)


def test_ngram_prefers_latest_and_longest() -> None:
    # tail "1 2": its latest earlier occurrence is followed by 8, an older one by 7
    text = [0, 1, 2, 7, 5, 1, 2, 8, 3, 0, 1, 2]
    assert NgramDrafter(max_n=2).propose(view(text), 2).tokens.tolist() == [8, 3]
    # the longer tail "0 1 2", seen only before 7, wins over the more recent "1 2"
    assert NgramDrafter(max_n=3).propose(view(text), 2).tokens.tolist() == [7, 5]


def test_ngram_falls_back_to_older_occurrence_for_a_longer_draft() -> None:
    text = [5, 6, 1, 2, 3, 4, 1, 2, 1, 2]  # latest "1 2" ends 2 before the tail: only [1, 2] follow it
    assert NgramDrafter(max_n=2, min_n=2).propose(view(text), 4).tokens.tolist() == [3, 4, 1, 2]
    assert NgramDrafter(max_n=2, min_n=2).propose(view(text), 2).tokens.tolist() == [1, 2]


def test_ngram_empty_when_nothing_matches() -> None:
    drafter = NgramDrafter()
    assert len(drafter.propose(view([1, 2, 3, 4]), 5)) == 0
    assert len(drafter.propose(view([7]), 5)) == 0
    assert len(drafter.propose(view([7, 7]), 0)) == 0
    assert drafter.propose(view([7, 7]), 5).tokens.tolist() == [7] * 5  # copies the earlier 7, never the tail itself


# --- suffix automaton -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("min_match", [1, 2, 3])
def test_suffix_matches_reference_every_prefix(seed: int, min_match: int) -> None:
    text, rng = random_text(seed, vocab=3 + seed % 3), random.Random(seed)
    drafter = SuffixDrafter(min_match=min_match)
    for size in range(1, len(text) + 1):
        prefix, k = text[:size], rng.randrange(1, 9)
        got = drafter.propose(view(prefix), k).tokens.tolist()
        m = longest_match(prefix, prefix, size - 1)
        assert drafter.match_len == m
        assert len(got) <= k
        if m < min_match:
            assert got == []
        else:  # all (up to k) that followed an earlier occurrence of the longest match: never nothing
            assert got and follows(got, prefix, prefix[size - m :], size - 1, k)


def test_suffix_continues_from_most_recent_occurrence() -> None:
    text = [5, 1, 2, 9, 1, 2, 7, 1, 2]
    drafter = SuffixDrafter()
    assert drafter.propose(view(text), 3).tokens.tolist() == [7, 1, 2]
    assert drafter.match_len == 2
    # first sighting of a repeat copies from the first occurrence
    assert SuffixDrafter().propose(view(text[:6]), 2).tokens.tolist() == [9, 1]


@pytest.mark.parametrize("seed", SEEDS)
def test_suffix_with_corpus_uses_longer_match(seed: int) -> None:
    rng = random.Random(seed + 100)
    corpus = random_text(seed + 50, size=80, vocab=3)
    # text drifts in and out of corpus snippets so both matches happen
    text: list[int] = []
    while len(text) < 100:
        start = rng.randrange(len(corpus))
        text += corpus[start : start + rng.randrange(1, 12)] + [rng.randrange(3)]
    drafter = SuffixDrafter(min_match=2, corpus=corpus)
    for size in range(1, len(text) + 1):
        prefix, k = text[:size], rng.randrange(1, 6)
        got = drafter.propose(view(prefix), k).tokens.tolist()
        live, in_corpus = longest_match(prefix, prefix, size - 1), longest_match(prefix, corpus, len(corpus))
        assert drafter.match_len == max(live, in_corpus)
        assert len(got) <= k
        # a corpus match is usable when something follows it in the corpus; it wins only when strictly longer
        corpus_tail = prefix[size - in_corpus :]
        if in_corpus >= 2 and in_corpus > live and ends_of(corpus, corpus_tail, len(corpus) - 1):
            assert follows_in_corpus(got, corpus, corpus_tail, k)
        elif live >= 2:
            assert follows(got, prefix, prefix[size - live :], size - 1, k)
        else:
            assert got == []


def test_suffix_corpus_file(tmp_path: Path) -> None:
    class WordTokenizer:
        def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
            assert add_special_tokens is False
            return [hash(w) % 1000 for w in text.split()]

    path = tmp_path / "corpus.txt"
    path.write_text("def add ( a , b ) : return a + b\n", encoding="utf-8")
    tok = WordTokenizer()
    drafter = SuffixDrafter.from_corpus_file(path, tok)
    prompt = tok.encode("please write def add ( a", add_special_tokens=False)
    assert drafter.propose(view(prompt, prompt_len=len(prompt)), 4).tokens.tolist() == tok.encode(
        ", b ) :", add_special_tokens=False
    )
    assert drafter.match_len == 4
    with pytest.raises(InvalidRequest, match="corpus"):
        SuffixDrafter.from_corpus_file(tmp_path / "missing.txt", tok)


# --- both ---------------------------------------------------------------------------------------------

DRAFTERS: list[Callable[[], Drafter]] = [
    lambda: NgramDrafter(),
    lambda: NgramDrafter(max_n=2, min_n=2),
    lambda: SuffixDrafter(min_match=1),
    lambda: SuffixDrafter(corpus=random_text(99, size=50)),
]


@pytest.mark.parametrize("make", DRAFTERS)
@pytest.mark.parametrize("seed", SEEDS)
def test_incremental_equals_rebuild(make: Callable[[], Drafter], seed: int) -> None:
    text, rng = random_text(seed, size=150), random.Random(seed)
    stepwise, skipping = make(), make()
    for size in range(1, len(text) + 1):
        k = rng.randrange(1, 8)
        fresh = make().propose(view(text[:size]), k).tokens.tolist()
        assert stepwise.propose(view(text[:size]), k).tokens.tolist() == fresh
        if rng.random() < 0.3:  # several new tokens at once
            assert skipping.propose(view(text[:size]), k).tokens.tolist() == fresh


@pytest.mark.parametrize("make", DRAFTERS)
def test_reset_on_rollback_or_new_prompt(make: Callable[[], Drafter]) -> None:
    a, b = random_text(1, size=80), random_text(2, size=80)
    drafter = make()
    drafter.propose(view(a), 4)
    edited = [b[0] + 1] + b[1:] + [0]  # longer, same last ingested token, other first token
    for tokens, prompt_len in [(a[:40], 10), (a[:50], 10), (b, 10), (edited, 10), (a[:30] + b[30:60], 30)]:
        got = drafter.propose(view(tokens, prompt_len), 5).tokens.tolist()
        assert got == make().propose(view(tokens, prompt_len), 5).tokens.tolist()
    # a new prompt differing only in its first tokens: stale state would copy what followed the old "5 6"
    drafter = make()
    drafter.propose(view([5, 6, 7, 8, 0, 1, 2, 3], 8), 4)
    assert len(drafter.propose(view([4, 4, 4, 4, 0, 1, 2, 3, 5, 6], 8), 4)) == 0


class CountingList(list):
    """Counts the elements read, to show propose never walks the whole context."""

    reads = 0

    def __getitem__(self, index):
        item = super().__getitem__(index)
        CountingList.reads += len(item) if isinstance(index, slice) else 1
        return item

    def __iter__(self):
        CountingList.reads += len(self)
        return super().__iter__()


@pytest.mark.parametrize("make", DRAFTERS)
def test_work_per_step_does_not_grow_with_context(make: Callable[[], Drafter]) -> None:
    """Speed sanity without a clock: reads per step stay bounded while the context grows to 3000 tokens."""
    text = random_text(7, size=3000, vocab=50)
    drafter, tokens = make(), CountingList(text[:2000])
    drafter.propose(view(tokens), 8)
    for token in text[2000:]:
        tokens.append(token)
        CountingList.reads = 0
        drafter.propose(view(tokens), 8)
        assert CountingList.reads <= 64


def test_suffix_automaton_stays_linear() -> None:
    text = random_text(3, size=5000, vocab=3) + [0, 1] * 500  # a long periodic tail stresses cloning
    drafter = SuffixDrafter()
    drafter.propose(view(text), 8)
    states = len(drafter._live.length)
    assert states <= 2 * len(text) - 1
    assert sum(len(t) for t in drafter._live.next) <= 3 * len(text) - 4
    assert drafter.match_len >= 998  # the tail shifted by one period
    # its only earlier occurrence ends two tokens back: the copy reads on into its own draft, period 2
    assert drafter.propose(view(text), 6).tokens.tolist() == [0, 1, 0, 1, 0, 1]


# --- registry -----------------------------------------------------------------------------------------


def _documented_methods() -> list[str]:
    """The methods README.md's option table lists for --method."""
    readme = Path(__file__).resolve().parents[1] / "README.md"
    row = next(line for line in readme.read_text(encoding="utf-8").splitlines() if line.startswith("| `--method` |"))
    return re.findall(r"`([a-z]+)`", row.split("|")[2])


def test_every_documented_method_builds_or_names_what_it_needs() -> None:
    """The registry holds exactly the methods the README documents, and the CLI offers them all. Each one
    builds without a model and drafts a continuation of a periodic text, or (draft, layerskip, eagle: a
    second network, the target's layers, a trained head) refuses with an InvalidRequest saying what it needs,
    never a TypeError from deep inside."""
    from leapdecode.cli import _parser

    assert sorted(DRAFTER_METHODS) == sorted(_documented_methods()) and len(DRAFTER_METHODS) >= 9
    for method in DRAFTER_METHODS:
        assert _parser().parse_args(["generate", "hi", "--method", method]).method == method
    text = [5, 6, 7] * 5
    needs = {"draft": "draft_model", "layerskip": "llama code", "eagle": "head"}
    for method in DRAFTER_METHODS:
        if method in needs:
            with pytest.raises(InvalidRequest, match=needs[method]):
                make_drafter(method)
            continue
        drafter = make_drafter(method)
        draft = drafter.propose(view(text, prompt_len=3), 4)
        assert draft.tokens.dtype == torch.int64 and len(draft) <= 4
        expected = [] if method == "none" else [5, 6, 7, 5][: len(draft)]
        assert draft.tokens.tolist() == expected and (method == "none" or len(draft) >= 2), method
        accepted = min(1, len(draft))  # the first draft token kept, then the target's own
        drafter.commit(view(text + [5, 6, 7][: accepted + 1], prompt_len=3), accepted)
    with pytest.raises(SystemExit):
        _parser().parse_args(["generate", "hi", "--method", "medusa"])


def test_make_drafter(tmp_path: Path) -> None:
    assert isinstance(make_drafter("none"), NoDrafter)
    ngram = make_drafter("ngram", max_n=3)
    assert isinstance(ngram, NgramDrafter) and ngram.max_n == 3
    assert isinstance(make_drafter("suffix", min_match=3), SuffixDrafter)

    class Tok:
        def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
            return [ord(c) for c in text]

    (tmp_path / "c.txt").write_text("abcdef", encoding="utf-8")
    drafter = make_drafter("suffix", DrafterResources(tokenizer=Tok()), corpus_path=tmp_path / "c.txt")
    assert drafter.propose(view([ord("b"), ord("c")]), 2).tokens.tolist() == [ord("d"), ord("e")]


@pytest.mark.parametrize(
    ("method", "options", "message"),
    [
        ("medusa", {}, "none, ngram, suffix"),
        ("ngram", {"max_nn": 3}, "max_nn"),
        ("ngram", {"max_n": 2, "min_n": 3}, "min_n"),
        ("suffix", {"corpus_path": "x.txt"}, "tokenizer"),
        ("suffix", {"min_match": 0}, "min_match"),
        ("draft", {}, "needs the option.s. draft_model"),
    ],
)
def test_make_drafter_rejects_bad_requests(method: str, options: dict, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        make_drafter(method, **options)


def test_continuation_reads_on_into_its_own_draft() -> None:
    from leapdecode.drafters.base import continuation

    text = [5, 7, 8, 9, 7, 8, 9]  # the tail [7, 8, 9] occurred ending at index 3
    assert continuation(text, 3, 7) == [7, 8, 9, 7, 8, 9, 7]
    assert continuation(text, 1, 3) == [8, 9, 7]
    assert continuation(text, 6, 3) == []  # the tail itself is no earlier occurrence
    assert continuation(text, -1, 3) == []
    assert NgramDrafter(max_n=3).propose(view([1, 2, 1, 2]), 5).tokens.tolist() == [1, 2, 1, 2, 1]
