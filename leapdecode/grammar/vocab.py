"""A model's vocabulary as the grammar matcher reads it: built once per model (about a second)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from leapdecode.errors import InvalidRequest
from leapdecode.grammar.spec import GrammarSpec


class GrammarVocab:
    """The tokenizer llguidance walks to find which tokens a grammar allows. eos_ids: the model's end tokens,
    allowed wherever the grammar may end. vocab_size: the model's logits width (may exceed the tokenizer's)."""

    def __init__(self, tokenizer: Any, eos_ids: Iterable[int], vocab_size: int) -> None:
        import llguidance.hf

        if not hasattr(tokenizer, "backend_tokenizer"):
            raise InvalidRequest("structured output needs a fast (Rust) tokenizer, which this model does not have")
        self.vocab_size, self.tokenizer = vocab_size, tokenizer
        self.eos_ids = sorted(eos_ids)
        self.lltok = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=self.eos_ids or None)

    def lark_literal(self, text: str) -> str:
        """text as a Lark grammar spells it for this vocabulary: a special token by name where the tokenizer
        has text as one (Qwen2.5's <tool_call>: the model emits that token, not the characters), else quoted."""
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if len(ids) == 1 and self.lltok.is_special_token(ids[0]):
            return f"<[{ids[0]}]>"
        return json.dumps(text)

    def matcher(self, spec: GrammarSpec) -> Any:
        """A fresh matcher for spec; a grammar llguidance cannot build is the request's error."""
        import llguidance

        matcher = llguidance.LLMatcher(self.lltok, spec.compiled(), log_level=0)
        if matcher.is_error():
            raise InvalidRequest(f"invalid {spec.kind.replace('_', ' ')}: {matcher.get_error()}")
        return matcher
