"""The machine a benchmark ran on: numbers mean little without the CPU, library versions and thread count."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch


def machine_info() -> dict[str, Any]:
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        # 1/5/15-minute load at the end of the run: above the thread count, other work competed for the cores
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }  # the baselines' runtimes (llama.cpp's) are added by the harness, as their own processes report them

