"""The draft networks one target has loaded: each once per precision, with the target's tokenizer."""

from __future__ import annotations

from typing import Any

from leapdecode.errors import InvalidRequest, ModelLoadError
from leapdecode.models.loader import load_model, resolve_source
from leapdecode.models.precision import DTYPE_CHOICES


class DraftModels:
    """Name or path -> loaded draft network, cached for the life of the target (an LLM).

    The draft's precision is its own: the target verifies every drafted token, so a draft at int4 under a
    float32 target changes how often drafts are accepted, never the output. "auto" runs a GGUF draft at
    its stored precision (int4 for a 4-bit file: the cheapest draft this CPU can run) and any other draft
    at the target's precision.
    """

    def __init__(self, target: str, tokenizer: Any, precision: str, backend: str) -> None:
        self.target, self.tokenizer, self.precision, self.backend = target, tokenizer, precision, backend
        self._loaded: dict[str, Any] = {}

    def load(self, spec: str, dtype: str = "auto") -> Any:
        if dtype not in DTYPE_CHOICES:
            raise InvalidRequest(f"draft_dtype must be one of {', '.join(DTYPE_CHOICES)}, got {dtype!r}")
        key = f"{spec}@{dtype}"
        if key not in self._loaded:
            try:
                loaded = load_model(spec, dtype=self._precision(spec, dtype), backend=self.backend)
            except ModelLoadError as exc:
                raise ModelLoadError(f"draft model: {exc}") from exc
            problem = tokenizer_difference(self.tokenizer, loaded.tokenizer)
            if problem:
                raise InvalidRequest(f"draft model {spec!r} does not share the tokenizer of the target model "
                                     f"{self.target!r} ({problem}): draft-model speculation compares token ids")
            self._loaded[key] = loaded.network
        return self._loaded[key]

    def load_self(self, dtype: str) -> Any:
        """The target's own weights at another precision (layerskip's skip_dtype): "auto" or "int4" on a GGUF
        target gives them as stored."""
        return self.load(self.target, dtype)

    def _precision(self, spec: str, dtype: str) -> str:
        if dtype != "auto":
            return dtype
        return "auto" if resolve_source(spec).gguf is not None else self.precision  # load() names the draft


def tokenizer_difference(target: Any, draft: Any) -> str:
    """'' when both tokenizers map the same strings to the same ids, else what differs, in a few words."""
    a, b = target.get_vocab(), draft.get_vocab()
    if len(a) != len(b):
        return f"{len(a)} tokens against {len(b)}"
    differing = sum(1 for tok, i in a.items() if b.get(tok) != i)
    return f"{differing} of {len(a)} tokens map to other ids" if differing else ""
