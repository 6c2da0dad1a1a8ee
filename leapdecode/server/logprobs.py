"""Emitted tokens' log-probabilities in the OpenAI API's two shapes: chat's list of entries and the
completions endpoint's parallel lists."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from leapdecode.decode.logprobs import TokenLogprob

Decode = Callable[[int], str]


def chat_logprobs(entries: Sequence[TokenLogprob], decode: Decode) -> dict[str, Any]:
    """{"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}, ...]}"""
    def one(token: int, logprob: float) -> dict[str, Any]:
        text = decode(token)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

    return {"content": [one(e.token, e.logprob) | {"top_logprobs": [one(t, lp) for t, lp in e.top]} for e in entries],
            "refusal": None}


def text_logprobs(entries: Sequence[TokenLogprob], decode: Decode, offset: int = 0) -> dict[str, Any]:
    """{"tokens", "token_logprobs", "top_logprobs", "text_offset"}; offset: where the first token's text starts."""
    tokens = [decode(e.token) for e in entries]
    offsets = []
    for text in tokens:
        offsets.append(offset)
        offset += len(text)
    return {"tokens": tokens, "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [{decode(t): lp for t, lp in e.top} for e in entries], "text_offset": offsets}
