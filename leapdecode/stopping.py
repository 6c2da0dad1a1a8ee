"""When generation ends and what text it has produced: EOS, stop strings, max tokens."""

from __future__ import annotations

from typing import Any


class Finisher:
    """Takes emitted tokens one at a time, exactly as plain decoding would produce them."""

    def __init__(self, tokenizer: Any, eos_ids: set[int], stop: list[str], max_new_tokens: int) -> None:
        self.tokenizer, self.eos_ids, self.stop, self.max_new = tokenizer, eos_ids, stop, max_new_tokens
        self.ids: list[int] = []
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
        text = self._decode()
        # Only text new since the last check can complete a stop string (+4: a re-decoded partial char).
        start = max(0, self._checked - max(map(len, self.stop)) - 4)
        hits = [i for s in self.stop if (i := text.find(s, start)) >= 0]
        self._checked = len(text)
        if hits:
            self._cut = min(hits)
        return bool(hits)

    def _decode(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True)

    @property
    def text(self) -> str:
        """The generated text, without the stop string (and what followed it) when one ended it."""
        return self._decode()[: self._cut]

    def delta(self) -> str:
        """New text safe to stream: no half-decoded character, nothing that may turn out to be a stop string."""
        text = self.text
        end = len(text)
        if not self.reason:
            end -= max((len(s) - 1 for s in self.stop), default=0)
            while end > self._sent and text[end - 1] == "\ufffd":
                end -= 1
        piece = text[self._sent : max(end, self._sent)]
        self._sent += len(piece)
        return piece
