"""Adaptive draft length: grow while drafts are fully accepted, shrink to what was accepted after a miss."""

from __future__ import annotations

from dataclasses import dataclass

from leapdecode.errors import InvalidRequest


@dataclass(slots=True)
class DraftLength:
    """Per-sequence k. On a CPU a verify over k+1 tokens costs visibly more than one token, so a long
    draft is only worth it while the drafter keeps being right; a miss costs nothing next time because a
    drafter with no match proposes nothing."""

    k: int = 6
    k_min: int = 1
    k_max: int = 12

    def __post_init__(self) -> None:
        if not (1 <= self.k_min <= self.k <= self.k_max):
            raise InvalidRequest(f"draft lengths need 1 <= k_min <= k <= k_max, got {self.k_min}, {self.k}, {self.k_max}")

    def update(self, drafted: int, accepted: int) -> None:
        if drafted == 0:
            return
        if accepted == drafted:
            self.k = min(self.k_max, self.k + 2)
        else:
            self.k = max(self.k_min, min(self.k, accepted + 2))
