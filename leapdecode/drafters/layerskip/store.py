"""Skip sets found by the search, one per model and precision, in a small JSON file under the cache dir,
so the search runs once per model rather than once per request."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from leapdecode.drafters.layerskip.search import calibration_ids, search_skip_layers
from leapdecode.drafters.layerskip.skip_layers import SkipLayers
from leapdecode.errors import InvalidRequest
from leapdecode.models.base import CausalLM
from leapdecode.paths import cache_dir

VERSION = 3  # bump when the search changes, so old answers are searched again


def store_path() -> Path:
    return cache_dir() / "layerskip.json"


def found_skip_layers(network: CausalLM, tokenizer: Any, model_id: str, drafting: CausalLM | None = None,
                      draft_dtype: str | None = None) -> tuple[SkipLayers, int, float]:
    """The stored set for model_id, the draft length it is best at and the confidence below which a draft
    token does not pay, else a search now (announced on stderr, then stored). drafting: the target's own
    weights at draft_dtype, when they draft instead."""
    key = f"v{VERSION}|{model_id}" + (f"|draft@{draft_dtype}" if drafting is not None else "")
    try:
        entry = _read()[key]
        return SkipLayers.parse(entry["skip"], network.num_layers), int(entry["draft_length"]), float(entry["threshold"])
    except (KeyError, TypeError, ValueError, InvalidRequest):  # not searched yet, or a damaged entry: search again
        pass
    print(f"leapdecode: layerskip: searching which of {network.num_layers} layers to skip "
          f"(once for this model)...", end="", file=sys.stderr, flush=True)
    found = search_skip_layers(network, calibration_ids(tokenizer), drafting)
    print(f" skip {found.skip} (agreement {found.agreement:.2f}, expected {found.speedup:.2f}x at "
          f"k={found.draft_length}, confidence >= {found.threshold:.2f}; {found.evaluated} sets in {found.seconds:.0f} s)", file=sys.stderr)
    _write(key, {"skip": str(found.skip), "agreement": found.agreement, "expected_speedup": found.speedup,
                 "draft_length": found.draft_length, "threshold": found.threshold})
    return found.skip, found.draft_length, found.threshold


def _read() -> dict[str, Any]:
    try:
        data = json.loads(store_path().read_text())
    except (OSError, ValueError):  # none yet, or unreadable: search again and overwrite it
        return {}
    return data if isinstance(data, dict) else {}


def _write(key: str, entry: dict[str, Any]) -> None:
    data = _read() | {key: entry}
    path = store_path()
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the new one
