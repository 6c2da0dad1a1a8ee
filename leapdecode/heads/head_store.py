"""Where a model's trained draft head lives, and loading it once per loaded model."""

from __future__ import annotations

from pathlib import Path

from leapdecode.errors import InvalidRequest
from leapdecode.heads.head import DraftHead
from leapdecode.heads.head_network import HeadNetwork
from leapdecode.models.base import CausalLM
from leapdecode.paths import cache_dir


def default_head_path(checkpoint_dir: Path) -> Path:
    """One head per converted checkpoint, whatever precision it is served at."""
    return cache_dir() / "heads" / f"{checkpoint_dir.name}.safetensors"


class HeadStore:
    """load(path) -> the head's inference network for this target, built once per path."""

    def __init__(self, network: CausalLM, checkpoint_dir: Path, model_name: str) -> None:
        self.network, self.checkpoint_dir, self.model_name = network, checkpoint_dir, model_name
        self._loaded: dict[Path, HeadNetwork] = {}

    def check(self, path: str | Path | None = None) -> Path:
        """The head's file, or the reason eagle cannot run here. Runs no torch op, so any thread may ask
        (a thread that computes starts an OpenMP team of its own, which slows the decoding thread's)."""
        if not self.network.gives_features:
            raise InvalidRequest("eagle drafts from the target's features: it needs leapdecode's llama code "
                                 "(not the transformers fallback)")
        where = Path(path) if path is not None else default_head_path(self.checkpoint_dir)
        if where not in self._loaded and not where.is_file():
            hint = "" if path is not None else f"; train one with `leapdecode train-head --model {self.model_name}`"
            raise InvalidRequest(f"no trained draft head at {where}{hint}")
        return where

    def load(self, path: str | Path | None = None) -> HeadNetwork:
        """The head's network, built on first use; call it from the decoding thread."""
        where = self.check(path)
        if where not in self._loaded:
            self._loaded[where] = HeadNetwork(DraftHead.load(where, self.network.shape), self.network)
        return self._loaded[where]
