"""The Finisher reads its text incrementally: the text and the streamed pieces are those of decoding the whole
output again after every token (the way it was done before), on multilingual and emoji text whose characters
are split across tokens, with special tokens skipped, stop strings anywhere and tokens pushed in steps."""

from __future__ import annotations

import random

import pytest

from leapdecode.decode.stopping import HALF_CHAR, Finisher

TEXT = ("Héllo wörld! 你好，世界。こんにちは 🦉🦉‍🔥 👩‍👩‍👧‍👦 Ελληνικά — русский текст, العربية, हिन्दी. "
        "Ça va? 🎉 The owl's eyes don't move; it turns its head instead. 数字：一二三四五。 ✅ done.\n")


class WholeTextFinisher:
    """The Finisher as it was: decode every token so far on each check (the reference)."""

    def __init__(self, tokenizer, eos_ids, stop, max_new_tokens):
        self.tokenizer, self.eos_ids, self.stop, self.max_new = tokenizer, eos_ids, stop, max_new_tokens
        self.ids, self.reason, self._cut, self._checked, self._sent = [], None, None, 0, 0

    def push(self, tokens):
        for n, tok in enumerate(tokens, 1):
            self.ids.append(tok)
            if tok in self.eos_ids or (self.stop and self._hits_stop_string()):
                self.reason = "stop"
            elif len(self.ids) >= self.max_new:
                self.reason = "length"
            if self.reason:
                return n
        return len(tokens)

    def _hits_stop_string(self):
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        start = max(0, self._checked - max(map(len, self.stop)) - 4)
        hits = [i for s in self.stop if (i := text.find(s, start)) >= 0]
        self._checked = len(text)
        if hits:
            self._cut = min(hits)
        return bool(hits)

    @property
    def text(self):
        return self.tokenizer.decode(self.ids, skip_special_tokens=True)[: self._cut]

    def delta(self):
        text = self.text
        end = len(text)
        if not self.reason:
            end -= max((len(s) - 1 for s in self.stop), default=0)
            while end > self._sent and text[end - 1] == HALF_CHAR:
                end -= 1
        piece = text[self._sent : max(end, self._sent)]
        self._sent += len(piece)
        return piece


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from leapdecode.models.loader import resolve_checkpoint

    return AutoTokenizer.from_pretrained(resolve_checkpoint("smollm2-135m"))


def _stream(finisher, ids: list[int], step: int) -> tuple[list[str], int]:
    """Push ids `step` at a time (as speculative steps do), reading a delta after each; (pieces, ids taken)."""
    pieces, taken = [], 0
    for i in range(0, len(ids), step):
        taken += finisher.push(ids[i : i + step])
        pieces.append(finisher.delta())
        if finisher.reason:
            break
    return pieces, taken


def test_a_long_multilingual_stream_reads_as_the_whole_decode(tokenizer):
    ids = tokenizer.encode(TEXT * 6)
    assert tokenizer.decode(ids) == TEXT * 6
    assert any(tokenizer.decode(ids[:n]).endswith(HALF_CHAR) for n in range(40))  # characters split across tokens
    finisher = Finisher(tokenizer, set(), [], max_new_tokens=len(ids))
    pieces = []
    for n, tok in enumerate(ids, 1):
        finisher.push([tok])
        pieces.append(finisher.delta())
        assert HALF_CHAR not in pieces[-1]
        assert "".join(pieces) == tokenizer.decode(ids[:n]).rstrip(HALF_CHAR)
    assert finisher.reason == "length" and "".join(pieces) == finisher.text == TEXT * 6


@pytest.mark.parametrize("step", [1, 3, 8])
@pytest.mark.parametrize("stop", [[], ["🦉‍🔥"], ["世界", "zzz"], ["don't move"], ["。 ✅"], ["\n"], ["never"]])
def test_pieces_text_and_stops_equal_decoding_the_whole_output(tokenizer, stop, step):
    special = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    ids = tokenizer.encode(TEXT)
    ids = ids[:10] + special + ids[10:50] + special[:1] + ids[50:] + tokenizer.encode(TEXT)
    new, old = (cls(tokenizer, set(), list(stop), max_new_tokens=len(ids) - 5) for cls in (Finisher, WholeTextFinisher))
    assert _stream(new, ids, step) == _stream(old, ids, step)
    assert (new.text, new.reason, new.ids) == (old.text, old.reason, old.ids)
    assert "<|im_" not in new.text
    assert new.reason == ("stop" if stop and stop[0] in TEXT else "length")


def test_an_end_of_sequence_token_stops_and_is_not_text(tokenizer):
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    before = tokenizer.encode("Bonjour 🦉")
    finisher = Finisher(tokenizer, {eos}, [], max_new_tokens=100)
    assert finisher.push(before + [eos] + tokenizer.encode(" after")) == len(before) + 1
    assert finisher.reason == "stop" and finisher.text == finisher.delta() == "Bonjour 🦉"


def _sentencepiece_style():
    """Llama 2's decoder: "▁" for a space, dropped at the text's start; characters outside the vocabulary
    as byte tokens, fused only where consecutive ones make valid UTF-8 (so a later byte can turn earlier
    text into U+FFFD). Returns the tokenizer and token sequences that make text."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    words = ["▁Hello", "▁wör", "ld", "▁the", "s", "▁", "▁owl", ".", ",", "▁don", "'", "t"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"<0x{b:02X}>": 3 + b for b in range(256)}
    vocab |= {w: len(vocab) + i for i, w in enumerate(words)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    chars = [[vocab[f"<0x{b:02X}>"] for b in c.encode()] for c in "€你🦉é"]
    pool = [[vocab[w]] for w in words] + chars + [c[:1] for c in chars] + [[1], [2]]
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>"), pool


def _wordpiece_style(transformers_cleanup: bool):
    """BERT's decoder: "##" joins a word, other tokens get a space before them, which the decoder takes away
    before punctuation and contractions, token by token; transformers' clean-up does it again over the
    whole text, where one more quote can change how the quotes before it pair up."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    words = ["[UNK]", "[CLS]", "hello", "world", "##s", ".", ",", "'", "s", "don", "n't", "t", "!", "?", "owl", "##é"]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.decoder = decoders.WordPiece(cleanup=True)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]",
                                   clean_up_tokenization_spaces=transformers_cleanup)
    return fast, [[i] for i in range(len(words))]


@pytest.mark.parametrize("make", [_sentencepiece_style, lambda: _wordpiece_style(False),
                                  lambda: _wordpiece_style(True)], ids=["sentencepiece", "wordpiece", "cleanup"])
def test_context_dependent_decoders_read_as_the_whole_decode(make):
    """Random token streams through decoders whose seams depend on the tokens around them."""
    tokenizer, pool = make()
    rng = random.Random(0)
    for _ in range(20):
        ids = [t for _ in range(60) for t in rng.choice(pool)]
        whole = tokenizer.decode(ids, skip_special_tokens=True)
        stop = [whole[i : i + rng.randint(1, 3)] for i in rng.sample(range(len(whole)), 2)] if whole else []
        for stops in ([], stop):
            new, old = (cls(tokenizer, set(), stops, max_new_tokens=len(ids)) for cls in (Finisher, WholeTextFinisher))
            step = rng.randint(1, 4)
            assert _stream(new, ids, step) == _stream(old, ids, step)
            assert (new.text, new.reason) == (old.text, old.reason)
