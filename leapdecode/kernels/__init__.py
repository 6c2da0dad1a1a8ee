"""Our own CPU kernels, compiled on first use for this machine's CPU and kept in the cache.

fused.cpp holds the decode step's glue (residual add + RMSNorm, SiLU x up) for reduced precisions. Building
needs a C++ compiler and ninja; where that fails, callers fall back to PyTorch's ops and say so once.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from functools import cache
from pathlib import Path
from typing import Any

import torch

from leapdecode.paths import cache_dir

_SOURCE = Path(__file__).with_name("fused.cpp")


@cache
def fused_kernels() -> Any | None:
    """The compiled module (add_rms_norm, silu_mul), or None when it cannot be built here."""
    if os.environ.get("LEAPDECODE_NO_KERNELS"):
        return None
    from torch.utils.cpp_extension import load

    key = hashlib.sha256(_SOURCE.read_bytes() + torch.__version__.encode() + _cpu_flags().encode())
    build = cache_dir() / "kernels" / f"fused-{key.hexdigest()[:12]}"
    build.mkdir(parents=True, exist_ok=True)
    _put_ninja_on_path()
    if not (build / "leapdecode_fused.so").exists():
        print("leapdecode: compiling fused CPU kernels for this machine (once, ~20 s)...", file=sys.stderr)
    try:
        return load(name="leapdecode_fused", sources=[str(_SOURCE)], build_directory=str(build),
                    extra_cflags=["-O3", "-march=native", "-fopenmp"], extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as exc:  # noqa: BLE001 - no compiler, no ninja, an odd CPU: PyTorch's ops still work
        print(f"leapdecode: cannot build the fused kernels ({str(exc).splitlines()[0][:200]}); "
              "using PyTorch's ops instead", file=sys.stderr)
        return None


def _put_ninja_on_path() -> None:
    """The ninja wheel installs next to this interpreter, which need not be on PATH (.venv/bin/leapdecode
    run without activating the venv); torch's builder looks for ninja on PATH."""
    here = str(Path(sys.executable).parent)
    if here not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = here + os.pathsep + os.environ.get("PATH", "")


def _cpu_flags() -> str:
    """What -march=native compiles for: a cache shared between machines must not mix their builds."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()
