"""Plain data passed between the engine's parts. Tensor fields carry their shape in a comment."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from leapdecode.errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How to pick the next token. temperature == 0 means greedy."""

    temperature: float = 0.0
    top_k: int = 0  # 0: no top-k cut
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not (0.0 <= self.temperature <= 100.0):
            raise InvalidRequest(f"temperature must be between 0 and 100, got {self.temperature}")
        if self.top_k < 0:
            raise InvalidRequest(f"top_k must be >= 0, got {self.top_k}")
        if not (0.0 < self.top_p <= 1.0):
            raise InvalidRequest(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True, slots=True)
class SeqView:
    """What a drafter may read of a sequence: every committed token, prompt first, and the target's KV cache.

    The cache holds slots [0, cache.length) for every committed token but the last, which the engine feeds
    with the draft at slot cache.length. A self-speculative drafter may write slots from cache.length on
    (the verify forward overwrites them) but must leave cache.length as it found it.
    """

    tokens: list[int]  # prompt + generated, committed only
    prompt_len: int
    cache: Any = None  # the target's KV cache (kv.KVCache or the adapter's); None outside an engine


@dataclass(frozen=True, slots=True)
class ExtraRows:
    """Rows fed after a draft's own that are never accepted: Lookahead's window of Jacobi guesses, which
    the target iterates in the same forward that verifies the draft.

    The target's argmax at these rows reaches the drafter (Drafter.observe); their KV lies past every
    draft row's, so the roll-back after verification discards it. An extra row sees every committed slot,
    the pending token (row 0) and the extra rows `sees` marks, at rope position pending + offset. No draft
    row sees an extra row and no extra row sees a draft row, so a draft cut short keeps them valid.
    """

    tokens: Tensor  # [E] int64
    offsets: Tensor  # [E] int64, >= 1: rope position minus the pending token's
    sees: Tensor  # [E, E] bool: extra row i may attend to extra row j (itself included)

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


@dataclass(frozen=True, slots=True)
class Draft:
    """Guessed continuation of a sequence: a chain of tokens, or a tree of them. Empty when the drafter has
    nothing worth verifying.

    A tree lists its nodes in topological order, parent before child: parents[i] is -1 for a child of the
    pending last token (the first row the engine feeds), else an earlier node's index. Siblings are
    alternative guesses for the same position. Nodes come best-first where the drafter knows (likeliest
    first), so prefix(n) keeps a valid subtree worth verifying. The target verifies every node in one
    forward (see tree.py) and keeps the longest path it agrees with.
    """

    tokens: Tensor  # [k] int64, a chain (parents None) or the nodes of a tree
    probs: Tensor | None = None  # [k, V] the drafter's distribution; None for a deterministic drafter
    # A meta-drafter (auto) says which of its arms drafted this, and how likely it thinks each draft token is
    # to be accepted (the ones before it too), so a batch planner trims by its estimate, not a guess of its own.
    arm: str = ""
    chances: tuple[float, ...] | None = None  # [k] non-increasing; None: the drafter does not say
    parents: Tensor | None = None  # [k] int64 node i's parent: -1 = the pending token, else j < i; None = a chain
    extra: ExtraRows | None = None  # rows fed after the draft's, observed but never accepted

    def __post_init__(self) -> None:
        if self.parents is None:
            return
        if self.parents.shape != self.tokens.shape:
            raise ValueError(f"a token tree needs one parent per node, got {tuple(self.parents.shape)} "
                                 f"parents for {tuple(self.tokens.shape)} tokens")
        if self.probs is not None:  # a drafter's bug, not a request's: stochastic trees are not verified here
            raise ValueError("token trees must be deterministic drafts (probs None); stochastic trees are not supported")

    @staticmethod
    def empty(arm: str = "") -> Draft:
        return Draft(tokens=torch.empty(0, dtype=torch.long), arm=arm)

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def is_tree(self) -> bool:
        return self.parents is not None

    @property
    def rows(self) -> int:
        """Rows this draft adds to a forward: the pending token, the draft tokens (nodes), the extra rows."""
        return 1 + len(self) + (len(self.extra) if self.extra is not None else 0)

    def prefix(self, n: int) -> Draft:
        """The first n drafted tokens, or a tree's first n nodes (a batch under load verifies less than was
        drafted). Parents come before children, so a tree's prefix is a tree. Cut to nothing, speculation
        does not pay for this request in this batch: the extra rows go too."""
        if n >= len(self):
            return self
        return Draft(tokens=self.tokens[:n], probs=None if self.probs is None else self.probs[:n],
                     parents=None if self.parents is None else self.parents[:n], extra=self.extra if n > 0 else None,
                     arm=self.arm, chances=None if self.chances is None else self.chances[:n])

    def without_extra(self) -> Draft:
        return self if self.extra is None else replace(self, extra=None)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What verification decided: the accepted draft tokens, then the one token the target yields anyway."""

    accepted: int  # how many draft tokens were kept
    tokens: list[int]  # accepted draft tokens + the recovered (after a rejection) or bonus token
    path: tuple[int, ...] = ()  # the accepted draft nodes' indices, in order; () for a chain means 0..accepted-1

    def __post_init__(self) -> None:
        if not self.path and self.accepted:
            object.__setattr__(self, "path", tuple(range(self.accepted)))  # a chain keeps its first `accepted`
        if len(self.path) != self.accepted:
            raise ValueError(f"a verdict's path {self.path} must hold its {self.accepted} accepted nodes")


@dataclass(slots=True)
class GenerationStats:
    new_tokens: int = 0
    seconds: float = 0.0  # wall time of the whole request, setup and prefill included
    target_forwards: int = 0  # decode forwards of the target (prefill not counted)
    drafted: int = 0  # draft tokens proposed
    accepted: int = 0  # draft tokens accepted
    drafted_at: list[int] = field(default_factory=list)  # [i]: steps that verified a draft token at position i
    accepted_at: list[int] = field(default_factory=list)  # [i]: steps that accepted draft token i
    setup_seconds: float = 0.0  # drafter, cache and the prompt's prefill
    draft_seconds: float = 0.0  # in the drafter: propose and commit
    verify_seconds: float = 0.0  # the target's forward over the draft, and verification
    arms: dict[str, int] = field(default_factory=dict)  # meta-drafter (auto): steps drafted by each arm
    arm_accepted: dict[str, int] = field(default_factory=dict)  # draft tokens accepted, by the arm that drafted them
    grammar_seconds: float = 0.0  # structured output: the grammar's masks and forced tokens
    grammar_forced: int = 0  # structured output: tokens the grammar forced, drafted for free and accepted

    def count(self, drafted: int, accepted: int, arm: str, depth: int | None = None, forwards: int = 1) -> None:
        """One step's verified draft: `drafted` tokens, of which `accepted` were kept. Per position counts
        go by depth (a chain's is its length; a tree's longest path: position i is "the i-th token ahead")."""
        depth = drafted if depth is None else depth
        self.target_forwards += forwards
        self.drafted += drafted
        self.accepted += accepted
        if len(self.drafted_at) < depth:
            grow = depth - len(self.drafted_at)
            self.drafted_at.extend([0] * grow)
            self.accepted_at.extend([0] * grow)
        for i in range(depth):
            self.drafted_at[i] += 1
        for i in range(accepted):
            self.accepted_at[i] += 1
        if arm:
            self.arms[arm] = self.arms.get(arm, 0) + 1
            self.arm_accepted[arm] = self.arm_accepted.get(arm, 0) + accepted

    @property
    def overhead_seconds(self) -> float:
        """Everything else in the step loop: the engine's bookkeeping, stopping checks, streaming, a batch's
        other requests (the clocks are independent, so rounding may leave a hair below zero: floored)."""
        return max(self.seconds - self.setup_seconds - self.draft_seconds - self.verify_seconds, 0.0)

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def mean_accepted(self) -> float:
        """Tokens emitted per target forward (1.0 for plain decoding)."""
        return self.new_tokens / self.target_forwards if self.target_forwards else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "new_tokens": self.new_tokens,
            "seconds": round(self.seconds, 4),
            "tokens_per_s": round(self.tokens_per_s, 3),
            "target_forwards": self.target_forwards,
            "mean_accepted": round(self.mean_accepted, 4),
            "drafted": self.drafted,
            "accepted": self.accepted,
            "drafted_at": list(self.drafted_at),
            "accepted_at": list(self.accepted_at),
            "setup_seconds": round(self.setup_seconds, 6),
            "draft_seconds": round(self.draft_seconds, 6),
            "verify_seconds": round(self.verify_seconds, 6),
            "overhead_seconds": round(self.overhead_seconds, 6),
            "arms": dict(self.arms),
            "arm_accepted": dict(self.arm_accepted),
            "grammar_seconds": round(self.grammar_seconds, 6),
            "grammar_forced": self.grammar_forced,
        }


@dataclass(slots=True)
class GenerationResult:
    text: str
    token_ids: list[int]  # generated ids only
    finish_reason: str  # "stop" (EOS or stop string) or "length"
    stats: GenerationStats = field(default_factory=GenerationStats)
    logprobs: list[Any] | None = None  # decode.logprobs.TokenLogprob per token, where asked for
