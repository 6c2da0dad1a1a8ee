"""Which decoder layers a self-speculative draft skips: read from "3,5,7-12", checked against the model's depth."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from leapdecode.errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class SkipLayers:
    """A set of skipped layers of a model with `total` decoder layers. The first and the last layer always
    run: the first turns embeddings into the stream every later layer reads, the last shapes it for the
    head, and skipping either wrecks the draft for every model we tried. The set may be empty ("none"):
    a draft that reads the weights at a lower precision can run every layer and still be cheap."""

    total: int  # the model's decoder layers
    skipped: tuple[int, ...]  # ascending, distinct, each in 1..total-2

    def __post_init__(self) -> None:
        depth = f"the model has {self.total} layers (0-{self.total - 1})"
        missing = [i for i in self.skipped if not 0 <= i < self.total]
        if missing:
            raise InvalidRequest(f"skip_layers: layer {missing[0]} does not exist; {depth}")
        if 0 in self.skipped or self.total - 1 in self.skipped:
            raise InvalidRequest(f"skip_layers: the first (0) and last ({self.total - 1}) layers always run; {depth}")
        if list(self.skipped) != sorted(set(self.skipped)):
            raise InvalidRequest(f"skip_layers must be ascending and distinct, got {self.skipped}")

    @staticmethod
    def parse(spec: str | Sequence[int], total: int) -> SkipLayers:
        """"3,5,7-12" (ranges inclusive), "none", or a sequence of layer numbers."""
        if isinstance(spec, str) and spec.strip().lower() == "none":
            return SkipLayers(total, ())
        layers = _read(spec) if isinstance(spec, str) else [int(i) for i in spec]
        return SkipLayers(total, tuple(sorted(set(layers))))

    @property
    def kept(self) -> tuple[int, ...]:
        """The layers the draft runs, ascending."""
        skipped = set(self.skipped)
        return tuple(i for i in range(self.total) if i not in skipped)

    def __str__(self) -> str:
        """The compact form parse() reads: runs of consecutive layers as ranges."""
        if not self.skipped:
            return "none"
        runs: list[list[int]] = []
        for i in self.skipped:
            if runs and runs[-1][1] == i - 1:
                runs[-1][1] = i
            else:
                runs.append([i, i])
        return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _read(spec: str) -> list[int]:
    layers: list[int] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        try:
            a, _, b = part.partition("-")
            lo, hi = int(a), int(b or a)
        except ValueError:
            raise InvalidRequest(f"skip_layers: cannot read {part!r}; write layer numbers and ranges like 3,5,7-12") from None
        if hi < lo:
            raise InvalidRequest(f"skip_layers: range {part!r} runs backwards")
        layers.extend(range(lo, hi + 1))
    return layers
