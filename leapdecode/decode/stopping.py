"""When generation ends and what text it has produced: EOS, stop strings, max tokens."""

from __future__ import annotations

from typing import Any

HALF_CHAR = "\ufffd"  # what a decoder writes for the bytes of a character not complete yet


class Detokenizer:
    """The text of a growing list of token ids, without decoding the whole list again as it grows.

    Each update decodes a window: the tokens since the last commit point and those of the commit before it,
    so that the seam reads as in the whole text (a leading-space marker dropped only at the start, byte
    tokens fused with their neighbours). The window's text past the last commit is committed once it does
    not end in half a character: tokenizers' DecodeStream (and vLLM's way), over the same
    `tokenizer.decode(ids, skip_special_tokens=True)` that read the whole text before. Where a window's start
    reads differently in context, everything is decoded once and the windows start again. A tokenizer that
    asks transformers to clean up spaces (" ," to ",") is read whole every time, as before: that clean-up
    runs over the whole text (one more quote can change how the quotes before it pair up), so no window
    reads alone; BPE tokenizers that set the flag (Llama 3's) too, though transformers ignores it for them.
    """

    def __init__(self, tokenizer: Any, ids: list[int]) -> None:
        self.tokenizer, self.ids = tokenizer, ids  # ids: the caller's list, read as it grows
        self._whole = bool(getattr(tokenizer, "clean_up_tokenization_spaces", False))
        self._pieces: list[str] = []  # the committed text, the decode of ids[: self._read], in pieces
        self._committed = 0  # its length in characters
        self._start = self._read = 0  # the window starts at _start; ids before _read are committed
        self._head: str | None = ""  # the decode of ids[_start:_read]; None: not needed yet
        self._tail = ""  # the decode of ids[_read:], as it reads after the committed text
        self._seen = 0  # len(ids) when last updated

    def __len__(self) -> int:
        self._update()
        return self._committed + len(self._tail)

    def since(self, pos: int) -> str:
        """text[pos:], joining only the pieces it needs."""
        self._update()
        parts, at = [self._tail], self._committed
        for piece in reversed(self._pieces):
            if at <= pos:
                break
            parts.append(piece)
            at -= len(piece)
        return "".join(reversed(parts))[pos - at :]

    def _update(self) -> None:
        if self._seen == len(self.ids):
            return
        self._seen = len(self.ids)
        if self._whole:
            self._tail = self._decode(self.ids)
            return
        if self._head is None:
            self._head = self._decode(self.ids[self._start : self._read])
        window = self._decode(self.ids[self._start :])
        if not window.startswith(self._head):  # the seam reads differently in context: from the start again
            self._pieces, self._committed, self._start, self._read, self._head = [], 0, 0, 0, ""
            window = self._decode(self.ids)
        self._tail = window[len(self._head) :]
        if self._tail and not self._tail.endswith(HALF_CHAR):
            self._pieces.append(self._tail)
            self._committed += len(self._tail)
            self._start, self._read, self._head, self._tail = self._read, len(self.ids), None, ""

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


class Finisher:
    """Takes emitted tokens one at a time, exactly as plain decoding would produce them."""

    def __init__(self, tokenizer: Any, eos_ids: set[int], stop: list[str], max_new_tokens: int) -> None:
        self.eos_ids, self.stop, self.max_new = eos_ids, stop, max_new_tokens
        self.ids: list[int] = []
        self._text = Detokenizer(tokenizer, self.ids)
        self.reason: str | None = None  # "stop" or "length" once finished
        self._cut: int | None = None  # where a stop string begins in the text
        self._checked = 0  # characters already searched for stop strings
        self._sent = 0  # characters already streamed

    def push(self, tokens: list[int]) -> int:
        """Take tokens in order until one finishes generation; returns how many were taken."""
        for n, tok in enumerate(tokens, 1):
            self.ids.append(tok)
            if tok in self.eos_ids or (self.stop and self._hits_stop_string()):
                self.reason = "stop"
            elif len(self.ids) >= self.max_new:
                self.reason = "length"
            if self.reason:
                return n
        return len(tokens)

    def _hits_stop_string(self) -> bool:
        # Only text new since the last check can complete a stop string (+4: a re-decoded partial char).
        start = max(0, self._checked - max(map(len, self.stop)) - 4)
        recent = self._text.since(start)
        hits = [start + i for s in self.stop if (i := recent.find(s)) >= 0]
        self._checked = start + len(recent)
        if hits:
            self._cut = min(hits)
        return bool(hits)

    @property
    def text(self) -> str:
        """The generated text, without the stop string (and what followed it) when one ended it."""
        return self._text.since(0)[: self._cut]

    def delta(self) -> str:
        """New text safe to stream: no half-decoded character, nothing that may turn out to be a stop string."""
        end = len(self._text) if self._cut is None else self._cut
        if not self.reason:
            end -= max((len(s) - 1 for s in self.stop), default=0)
        piece = self._text.since(self._sent)[: max(end - self._sent, 0)]
        if not self.reason:
            piece = piece.rstrip(HALF_CHAR)
        self._sent += len(piece)
        return piece
