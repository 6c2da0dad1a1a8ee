"""Where leapdecode keeps what it fetches and converts."""

import os
from pathlib import Path


def cache_dir() -> Path:
    """$LEAPDECODE_CACHE, else ~/.cache/leapdecode; created on first use."""
    root = Path(os.environ.get("LEAPDECODE_CACHE") or Path.home() / ".cache" / "leapdecode")
    root.mkdir(parents=True, exist_ok=True)
    return root
