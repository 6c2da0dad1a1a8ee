"""What one method produced on one prompt: the unit every later stage (summary, divergence, report) reads."""

from __future__ import annotations

import os
import resource
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Generation:
    """A contender's raw answer, before the runner labels it with method and prompt."""

    token_ids: list[int]  # generated ids only
    seconds: float  # wall time the harness measured around the call, prefill included
    mean_accepted: float | None  # tokens per target forward; None when the method does not say
    finish_reason: str = ""
    engine_stats: dict[str, Any] = field(default_factory=dict)  # the engine's own stats, kept for reference
    # The process that generated it (a baseline's worker, or the engine's), and that process's peak RSS when it
    # is not ours (None: the runner reads our own).
    pid: int = field(default_factory=os.getpid)
    peak_rss_mb: float | None = None


@dataclass(frozen=True, slots=True)
class RunRecord:
    method: str
    prompt_id: str
    category: str
    prompt_tokens: int
    token_ids: list[int]
    seconds: float
    mean_accepted: float | None
    finish_reason: str
    peak_rss_mb: float  # high-water mark so far of the process that ran it: the engine's, or a baseline's worker
    engine_stats: dict[str, Any] = field(default_factory=dict)
    pid: int = 0  # that process
    level: str = ""  # the prompt's task size, where it has one (parallel-tasks)
    correct: bool | None = None  # the answer checked against the prompt's, where it has one
    valid_json: bool | None = None  # structured prompts: the answer (a tool prompt's first call) parses as JSON
    schema_valid: bool | None = None  # ... and follows its schema

    @property
    def new_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"new_tokens": self.new_tokens, "tokens_per_s": round(self.tokens_per_s, 3)}


def peak_rss_mb() -> float:
    """Peak resident memory of this process: Linux's VmHWM where there is one, else ru_maxrss (KiB on Linux,
    bytes on macOS). Not ru_maxrss first: a forked child starts from its parent's high-water mark and keeps it
    through exec, so a baseline's spawned worker would report the engine's memory as its own."""
    hwm = process_peak_rss_mb("self")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / (1 << 10)


def process_peak_rss_mb(pid: int | str) -> float | None:
    """A process's peak RSS from /proc/<pid>/status (VmHWM, of its current program only); None without /proc."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None
