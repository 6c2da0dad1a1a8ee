"""The draft networks one target has loaded: each once, at the target's precision, with the target's tokenizer."""

from __future__ import annotations

from typing import Any

from leapdecode.errors import InvalidRequest, ModelLoadError
from leapdecode.models.loader import load_model


class DraftModels:
    """Name or path -> loaded draft network, cached for the life of the target (an LLM)."""

    def __init__(self, target: str, tokenizer: Any, precision: str, backend: str) -> None:
        self.target, self.tokenizer, self.precision, self.backend = target, tokenizer, precision, backend
        self._loaded: dict[str, Any] = {}

    def load(self, spec: str) -> Any:
        if spec not in self._loaded:
            try:
                loaded = load_model(spec, dtype=self.precision, backend=self.backend)
            except ModelLoadError as exc:
                raise ModelLoadError(f"draft model: {exc}") from exc
            problem = tokenizer_difference(self.tokenizer, loaded.tokenizer)
            if problem:
                raise InvalidRequest(f"draft model {spec!r} does not share the tokenizer of the target model "
                                     f"{self.target!r} ({problem}): draft-model speculation compares token ids")
            self._loaded[spec] = loaded.network
        return self._loaded[spec]


def tokenizer_difference(target: Any, draft: Any) -> str:
    """'' when both tokenizers map the same strings to the same ids, else what differs, in a few words."""
    a, b = target.get_vocab(), draft.get_vocab()
    if len(a) != len(b):
        return f"{len(a)} tokens against {len(b)}"
    differing = sum(1 for tok, i in a.items() if b.get(tok) != i)
    return f"{differing} of {len(a)} tokens map to other ids" if differing else ""
