"""Which masked positions a step fills, and with what.

The reference rule (LLaDA's low-confidence remasking, one token per forward): fill the masked position whose
most likely token is likeliest, ties to the leftmost, with that token. A method proposes fills in the order
this rule would make them; the first is always the rule's own choice from the logits at hand. Lossless
methods have every later fill verified (decoder.py); lossy ones commit theirs as they are.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

Fill = tuple[int, int]  # (block position, token)


@dataclass(frozen=True, slots=True)
class Confidence:
    order: list[int]  # masked positions, most confident first, ties to the leftmost
    tokens: Tensor  # [B] most likely token at each position
    probs: Tensor  # [B] its probability (0 at filled positions)


def confidence(logits: Tensor, state: Tensor, mask_id: int) -> Confidence:
    """logits [B, V] float32, state [B] -> the reference rule's view of this block. The mask token itself is
    never a prediction."""
    logits = logits.index_fill(-1, torch.tensor([mask_id]), float("-inf"))
    probs, tokens = torch.softmax(logits, dim=-1).max(dim=-1)
    probs = torch.where(state == mask_id, probs, torch.zeros_like(probs))
    masked = (state == mask_id).nonzero().flatten()
    # stable sort by -prob: equal probabilities keep position order, so ties go to the leftmost
    order = masked[torch.sort(-probs[masked], stable=True).indices].tolist()
    return Confidence(order, tokens, probs)


def reference_fill(logits: Tensor, state: Tensor, mask_id: int) -> Fill:
    c = confidence(logits, state, mask_id)
    return c.order[0], int(c.tokens[c.order[0]])


class Unmasker(ABC):
    """Proposes the fills of one step. `lossless`: the decoder verifies all but the first."""

    lossless = True

    @abstractmethod
    def propose(self, logits: Tensor, state: Tensor, mask_id: int, room: int) -> list[Fill]:
        """room: at most this many fills are worth proposing (states one forward can verify)."""

    def verified(self, proposed: int, accepted: int) -> None:
        """How many of the proposed fills the reference rule agreed with (the first always counts)."""


class Stepwise(Unmasker):
    """The reference: one fill per forward."""

    def propose(self, logits: Tensor, state: Tensor, mask_id: int, room: int) -> list[Fill]:
        return [reference_fill(logits, state, mask_id)]


class SelfSpeculative(Unmasker):
    """Guess the reference rule's next fills from this one forward: the next most confident positions, each
    with its current most likely token (Self Speculative Decoding for dLLMs; FreeDave's draft). The decoder
    verifies them all in one forward of the successive states and keeps the agreeing prefix.

    Fixed: always `length` fills (capped by room). Adaptive (auto): the length follows acceptance, grows when
    every guess held and shrinks on a miss, and guesses below `threshold` confidence are not proposed, so a
    step where the model is unsure costs what a stepwise one does."""

    def __init__(self, length: int = 4, adaptive: bool = False, threshold: float = 0.0, max_length: int = 8) -> None:
        self.length, self.adaptive, self.threshold, self.max_length = length, adaptive, threshold, max_length

    def propose(self, logits: Tensor, state: Tensor, mask_id: int, room: int) -> list[Fill]:
        c = confidence(logits, state, mask_id)
        picks = c.order[: max(1, min(self.length, room))]
        keep = [picks[0]] + [p for p in picks[1:] if float(c.probs[p]) >= self.threshold]  # a prefix: sorted
        return [(p, int(c.tokens[p])) for p in keep]

    def verified(self, proposed: int, accepted: int) -> None:
        if not self.adaptive or proposed < 2:
            return
        if accepted == proposed:
            self.length = min(self.length + 1, self.max_length)
        else:
            self.length = max(2, accepted + 1)
