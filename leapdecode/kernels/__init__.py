"""Our own CPU kernels, compiled on first use for this machine's CPU and kept in the cache.

fused.cpp holds the decode step's glue (residual add + RMSNorm, SiLU x up, RoPE and the KV write, attention
over short segments) for reduced precisions; int4_matmul.cpp the int4 linear layers. Building needs a C++
compiler and ninja; where that fails, callers fall back to PyTorch's ops and say so once.
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

_HERE = Path(__file__).parent


@cache
def fused_kernels() -> Any | None:
    """The decode step's glue (add_rms_norm, silu_mul, rope_store, attend_packed), or None when it cannot be
    built here."""
    return _compiled("fused", ["-O3", "-march=native", "-fopenmp"])


@cache
def int4_kernels() -> Any | None:
    """int4_matmul: 4-bit weights against 8-bit activations (int4_matmul.cpp), or None when it cannot be built
    here. -ffp-contract=off: every row's float steps must stay the ones written, whatever the row count."""
    return _compiled("int4_matmul", ["-O3", "-march=native", "-fopenmp", "-ffp-contract=off"])


def int4_matmul_source() -> Path:
    return _HERE / "int4_matmul.cpp"


def _compiled(stem: str, cflags: list[str]) -> Any | None:
    """Build kernels/<stem>.cpp for this CPU once (cached per source, torch version and CPU flags) and load it."""
    if os.environ.get("LEAPDECODE_NO_KERNELS"):
        return None
    from torch.utils.cpp_extension import load

    source = _HERE / f"{stem}.cpp"
    key = hashlib.sha256(source.read_bytes() + " ".join(cflags).encode() + torch.__version__.encode()
                         + _cpu_flags().encode())
    build = cache_dir() / "kernels" / f"{stem}-{key.hexdigest()[:12]}"
    build.mkdir(parents=True, exist_ok=True)
    _put_ninja_on_path()
    name = f"leapdecode_{stem}"
    if not (build / f"{name}.so").exists():
        print(f"leapdecode: compiling {stem} CPU kernels for this machine (once, ~20 s)...", file=sys.stderr)
    try:
        return load(name=name, sources=[str(source)], build_directory=str(build), extra_cflags=cflags,
                    extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as exc:  # noqa: BLE001 - no compiler, no ninja, an odd CPU: PyTorch's ops still work
        print(f"leapdecode: cannot build the {stem} kernels ({str(exc).splitlines()[0][:200]}); "
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
