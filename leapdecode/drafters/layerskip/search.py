"""Which layers to skip, found by a short search (in the spirit of SWIFT and Draft&Verify): greedy layer
elimination that keeps the draft's argmax close to the full model's, scored by expected decode speed.

Teacher-forced: one forward of the calibration text per candidate set, compared position by position with
the full model's argmax, gives the acceptance rate alpha. A draft of k tokens then yields on average
1 + alpha + ... + alpha^k tokens per verify, and costs k draft forwards plus k extra verify rows; both
costs are measured on this machine, in units of one plain decode step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from leapdecode.drafters.layerskip.skip_layers import SkipLayers
from leapdecode.models.base import CausalLM

# Varied on purpose (prose, code, a list, an explanation, dialogue): the set must suit any request.
CALIBRATION_TEXT = """\
The old lighthouse keeper climbed the spiral stairs every evening, counting the steps as his father had \
taught him. From the lamp room he could see the whole bay: the fishing boats coming home, the gulls \
circling the harbour, and the dark line of the storm moving in from the west.

def merge_sorted(a: list[int], b: list[int]) -> list[int]:
    \"\"\"Merge two sorted lists into one sorted list.\"\"\"
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        if a[i] <= b[j]:
            out.append(a[i])
            i += 1
        else:
            out.append(b[j])
            j += 1
    return out + a[i:] + b[j:]

Three tips for a good night's sleep:
1. Go to bed at the same time every day.
2. Keep your bedroom cool, dark and quiet.
3. Avoid screens for an hour before sleeping.

Photosynthesis is the process by which plants use sunlight, water and carbon dioxide to make glucose and \
oxygen. It takes place in the chloroplasts, which contain the green pigment chlorophyll.

User: Can you recommend a book for a long train journey?
Assistant: Certainly! If you enjoy adventure, try "Around the World in Eighty Days" by Jules Verne. It is \
light, fast-paced and perfect for travelling.
"""
CALIBRATION_TOKENS = 128  # a stable enough agreement estimate (about +-3%), a search of seconds
AGREEMENT_FLOOR = 0.5  # below this a draft is mostly rejected: stop eliminating
PATIENCE = 3  # rounds without a better expected speed before the search stops
LAZY_TRIES = 4  # after the first round, re-score only this many of the best-scored candidates
K_MAX = 8


@dataclass(frozen=True, slots=True)
class SkipCosts:
    """What layer skipping costs and saves, measured once per model by the skip search, in units of one plain
    decode step (a one-token forward over every layer). Not the live step_cost.StepCost line."""

    per_layer: float  # what skipping one layer saves of a one-token forward
    verify_row: float  # what each draft token adds to the verify forward
    draft_full: float = 1.0  # the drafting network's one-token forward over every layer (less when it reads int4)

    def speedup(self, alpha: float, skipped: int) -> tuple[float, int]:
        """Expected tokens per unit time relative to plain decoding, and the draft length that gets it."""
        price = self.token_price(skipped)
        return max((sum(alpha**i for i in range(k + 1)) / (1.0 + k * price), k) for k in range(1, K_MAX + 1))

    def token_price(self, skipped: int) -> float:
        """What one more draft token costs (its draft forward and its verify row), in plain steps: also the
        confidence below which drafting it does not pay, since it yields at most that chance of a token."""
        return max(self.draft_full - skipped * self.per_layer, 0.0) + self.verify_row


@dataclass(frozen=True, slots=True)
class SearchResult:
    skip: SkipLayers
    agreement: float  # teacher-forced argmax agreement with the full model on the calibration text
    speedup: float  # the expected speed relative to plain decoding
    draft_length: int  # the draft length that expectation assumes
    threshold: float  # the draft confidence below which a token costs more than it is expected to yield
    evaluated: int  # candidate sets scored
    seconds: float


def calibration_ids(tokenizer: Any) -> list[int]:
    return list(tokenizer.encode(CALIBRATION_TEXT))[:CALIBRATION_TOKENS]


def search_skip_layers(network: CausalLM, ids: Sequence[int], drafting: CausalLM | None = None) -> SearchResult:
    """Greedy elimination over the calibration ids; the result with the best expected speed on the way.
    drafting: the network whose layers draft (the target's own weights at another precision); None: network."""
    t0 = time.perf_counter()
    drafting = network if drafting is None else drafting
    tokens = torch.tensor([list(ids)])  # [1, T]
    cache = network.new_cache(len(ids) + K_MAX + 1)
    reference = network.forward(tokens, 0, cache)[0].argmax(-1)  # [T] the full model's choices
    costs = measure_costs(network, tokens, cache, drafting)

    def agreement(skipped: list[int]) -> float:
        kept = SkipLayers(network.num_layers, tuple(sorted(skipped))).kept
        out = drafting.forward(tokens, 0, cache, layers=kept)[0]  # [T, V]; same cache shape as the target's
        return (out.argmax(-1) == reference).float().mean().item()

    steps, evaluated = _eliminate(network.num_layers, agreement, costs)
    if drafting is not network:  # at a lower precision every layer may still be cheap: skipping none competes
        alpha = agreement([])
        steps.append(([], alpha, costs.speedup(alpha, 0)))
        evaluated += 1
    skipped, alpha, (speed, k) = max(steps, key=lambda s: s[2][0])
    skip = SkipLayers(network.num_layers, tuple(sorted(skipped)))
    out = drafting.forward(tokens, 0, cache, layers=skip.kept)[0]  # [T, V]
    threshold = confidence_threshold(out, reference, costs.token_price(len(skipped)))
    return SearchResult(skip, round(alpha, 4), round(speed, 3), k, round(threshold, 3), evaluated,
                        round(time.perf_counter() - t0, 1))


def confidence_threshold(logits: Tensor, reference: Tensor, price: float) -> float:
    """The draft confidence (top probability) below which a draft token does not pay. Leaving out the j
    calibration positions the draft is least sure of saves j token prices and loses the ones of them it got
    right; the cut keeps the j that saves most, and sits just above the surest position it leaves out.
    Confidence understates agreement when the draft is close to the target, so it is read from measured
    agreement rather than taken at its word. logits [T, V]; reference [T] the target's argmax."""
    confidence, guess = torch.softmax(logits.float(), dim=-1).max(dim=-1)
    order = confidence.argsort()
    right = (guess == reference)[order].float().cumsum(0)  # right among the lowest j + 1
    saved = price * torch.arange(1, len(order) + 1) - right
    j = int(saved.argmax())
    if float(saved[j]) <= 0:
        return 0.0
    return round(min(float(confidence[order[j]]) + 1e-3, 0.95), 3)


Step = tuple[list[int], float, tuple[float, int]]  # skipped layers, agreement, (expected speed, k)


def _eliminate(total: int, agreement: Callable[[list[int]], float], costs: SkipCosts) -> tuple[list[Step], int]:
    """Skip one more layer per round: the one whose removal keeps agreement highest. After the first round
    only the best-scored few are re-scored (lazy greedy), so a round costs a handful of forwards."""
    candidates, score = list(range(1, total - 1)), {}
    skipped: list[int] = []
    steps: list[Step] = []
    evaluated, best, stale = 0, 0.0, 0
    while candidates and stale < PATIENCE:
        ranked = sorted(candidates, key=lambda j: -score.get(j, 1.0))
        tried = ranked if not skipped else ranked[:LAZY_TRIES]
        for j in tried:
            score[j] = agreement(skipped + [j])
        evaluated += len(tried)
        pick = max(tried, key=score.__getitem__)
        skipped, alpha = skipped + [pick], score[pick]
        candidates.remove(pick)
        if alpha < AGREEMENT_FLOOR and steps:
            break
        steps.append((skipped, alpha, costs.speedup(alpha, len(skipped))))
        stale = 0 if steps[-1][2][0] > best else stale + 1
        best = max(best, steps[-1][2][0])
    return steps, evaluated


def measure_costs(network: CausalLM, tokens: Tensor, cache: Any, drafting: CausalLM) -> SkipCosts:
    """Time one-token forwards (the target's over every layer; the drafting network's over every layer and
    over half of them) and a five-token verify, after the calibration text: the fastest of a few runs
    each, so background load shows as little as possible. Both networks (maybe one) write the same slots."""
    start, total = tokens.shape[1], network.num_layers
    one, five = tokens[:, -1:], tokens[:, -5:]  # [1, 1], [1, 5]
    half = list(range(0, total, 2)) + ([total - 1] if total % 2 == 0 else [])
    full = _fastest(lambda: network.forward(one, start, cache))
    draft_full = full if drafting is network else _fastest(lambda: drafting.forward(one, start, cache))
    partial = _fastest(lambda: drafting.forward(one, start, cache, layers=half))
    verify = _fastest(lambda: network.forward(five, start, cache))
    per_layer = max(draft_full - partial, 0.0) / (total - len(half)) / full
    return SkipCosts(per_layer=per_layer, verify_row=max(verify - full, 0.0) / 4 / full, draft_full=draft_full / full)


def _fastest(run: Callable[[], object], reps: int = 7) -> float:
    times = []
    for _ in range(reps + 1):  # the first run warms up and is not counted
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return min(times[1:])
