"""Our own CPU kernels, compiled once for this machine's CPU and kept in the cache.

fused.cpp holds the decode step's glue for reduced precisions (residual add + RMSNorm, SiLU x up, RoPE and
the KV write, and attention for every sequence of a packed forward in one call); int4_matmul.cpp the int4
linear layers. Building needs a C++ compiler and ninja and runs in a child process; where it fails, the
model falls back to PyTorch's ops and this module says so, once per kernel.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import torch

from leapdecode.paths import cache_dir

_HERE = Path(__file__).parent
_BUILD = """
import sys
from torch.utils.cpp_extension import load
try:
    load(name=sys.argv[1], sources=[sys.argv[2]], build_directory=sys.argv[3], extra_cflags=sys.argv[4:],
         extra_ldflags=["-fopenmp"], verbose=False)
except Exception as exc:
    sys.exit((str(exc).splitlines() or [type(exc).__name__])[0])
"""  # run by _compile as `python -c`: name, source, build folder, cflags...


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
    """kernels/<stem>.cpp built for this CPU once (cached per source, flags, torch version and CPU) and loaded."""
    if os.environ.get("LEAPDECODE_NO_KERNELS"):
        return None
    source = _HERE / f"{stem}.cpp"
    key = hashlib.sha256(source.read_bytes() + " ".join(cflags).encode() + torch.__version__.encode()
                         + _cpu_flags().encode())
    build = cache_dir() / "kernels" / f"{stem}-{key.hexdigest()[:12]}"
    try:
        return build_extension(f"leapdecode_{stem}", source, build, cflags)
    except Exception as exc:  # noqa: BLE001 - no compiler, no ninja, an odd CPU: PyTorch's ops still work
        print(f"leapdecode: cannot build the {stem} kernels ({str(exc).splitlines()[0][:200]}); "
              "using PyTorch's ops instead", file=sys.stderr)
        return None


def build_extension(name: str, source: Path, build: Path, cflags: list[str]) -> Any:
    """The torch extension `name` compiled from `source` into `build` (unless already there), imported."""
    library = build / f"{name}.so"
    if not library.exists():
        print(f"leapdecode: compiling {source.name} for this machine's CPU (once, ~20 s)...", file=sys.stderr)
        _compile(name, source, build, cflags)
    spec = importlib.util.spec_from_file_location(name, library)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _compile(name: str, source: Path, build: Path, cflags: list[str]) -> None:
    """torch's builder, in a child process whose PATH has the ninja that installs next to this interpreter
    (a venv's bin, not on PATH when .venv/bin/leapdecode runs unactivated): this process's PATH is left alone."""
    build.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    done = subprocess.run([sys.executable, "-c", _BUILD, name, str(source), str(build), *cflags], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()] or [f"exit code {done.returncode}"]
        raise RuntimeError(lines[-1])


def _cpu_flags() -> str:
    """What -march=native compiles for: a cache shared between machines must not mix their builds."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()
