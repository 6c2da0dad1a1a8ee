"""Automatic method choice: each step, the arm and draft length with the best expected tokens per second.

An arm is a drafter (suffix, ngram, a draft model...) or plain decoding. A step that verifies n draft
tokens costs t(1 + n) for the target's forward (a line fitted to measured forwards, step_cost.py), plus
the arm's own propose time when it is costly, plus the loop's overhead; it yields 1 + sum_i c_i tokens
on average, c_i being the chance that draft tokens 0..i are all accepted, from the arm's measured
acceptance per draft position. Auto drafts what maximises yield / cost, which is plain decoding whenever
no draft pays for its rows: that is how it backs off.

Cheap (model-free) arms propose every step, which also keeps their indexes current, and every proposal is
scored against the text the target then commits, whether it was verified or not: their estimates are
always fresh and cost nothing to learn. Costly arms (a draft model) run only when chosen, or as a probe
after a gap that doubles each time the probe does not win. An arm may draft a token tree (Lookahead's pool
candidates, with its window as extra rows, which every step it runs pays for): its proposal is scored as
deep as the text follows one of its paths, and the arm that drafted sees the target's predictions at its
rows. Auto only chooses drafts, and its arms draft deterministically, so output is exactly what plain
decoding gives (for a seed, the same text).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import torch

from leapdecode.decode.tree import TokenTree
from leapdecode.drafters.auto.memory import ROW_SHARE, AutoMemory
from leapdecode.drafters.auto.position_acceptance import POSITIONS, PositionAcceptance, match_key
from leapdecode.drafters.base import Drafter
from leapdecode.errors import InvalidRequest
from leapdecode.policy.step_cost import StepCost
from leapdecode.types import Draft, SeqView

PLAIN = "none"  # the arm that drafts nothing
PRIOR = (1.0, 1.0)  # accepted, rejected pseudo-counts before anything is known: a coin flip, worth a try
PRIOR_WEIGHT = 2.0  # observations a prior counts for, at most
REQUEST_DECAY = 0.9  # a request's own estimates follow its last ten or so observations per cell
PROBE_GAPS = (4, 64)  # steps between probes of a costly arm that is not winning: first gap, largest
ROW_PROBE_EVERY = 32  # steps of plain decoding after which one draft token may be verified to time a row
ROWS_KNOWN = 8  # forwards over several rows, among those the step cost is fitted to, that make probing needless


@dataclass(frozen=True, slots=True)
class ArmDrafter:
    name: str
    drafter: Drafter
    cheap: bool  # proposing costs next to nothing: done every step and scored for free

    @property
    def extra_rows(self) -> int:
        """Rows its drafts add to a forward besides their tokens (Lookahead's window): paid, never accepted."""
        return self.drafter.extra_rows


@dataclass(slots=True)
class _Proposal:
    """A proposal waiting for the committed text to say how much of it was right."""

    arm: str
    key: int
    start: int  # committed tokens when proposed: draft token i (a tree: at depth i) guessed the token at start + i
    tokens: list[int]
    kids: list[dict[int, int]] | None = None  # a tree's children by token, per row (row 0: the root); None: a chain
    checked: int = 0  # leading tokens already found right

    @staticmethod
    def of(arm: str, key: int, start: int, draft: Draft) -> _Proposal:
        tokens = draft.tokens.tolist()
        kids = TokenTree.of(draft.parents).children(tokens) if draft.is_tree else None
        return _Proposal(arm, key, start, tokens, kids)

    def match(self, text: list[int]) -> tuple[int, bool, bool]:
        """Against the committed text: (leading tokens right, whether the text then parts from every guess,
        whether the proposal is settled: wrong, or right to its end)."""
        if self.kids is None:
            end = min(len(self.tokens), len(text) - self.start)
            i = self.checked
            while i < end and self.tokens[i] == text[self.start + i]:
                i += 1
            return i, i < end, i < end or i == len(self.tokens)
        row, depth = 0, 0  # walk the tree along the text, as greedy verification does
        while self.start + depth < len(text) and (node := self.kids[row].get(text[self.start + depth])) is not None:
            row, depth = node + 1, depth + 1
        leaf = not self.kids[row]
        rejected = self.start + depth < len(text) and not leaf
        return depth, rejected, rejected or leaf


@dataclass(frozen=True, slots=True)
class _Choice:
    arm: str
    n: int  # draft tokens to verify
    rate: float  # expected tokens per second
    chances: list[float]  # [n'] n' >= n: chance that draft tokens 0..i are all accepted
    probe: bool = False  # chosen to learn, not on merit


class AutoDrafter(Drafter):
    """A drafter over drafters; see the module's docstring."""

    picks_length = True  # its per-position estimates set the draft length: the engine gives it the cap

    def __init__(self, arms: Sequence[ArmDrafter], memory: AutoMemory | None = None) -> None:
        names = [a.name for a in arms]
        if PLAIN in names or len(set(names)) != len(names):
            raise InvalidRequest(f"auto's arms need distinct names other than {PLAIN!r}, got {names}")
        self.arms = {a.name: a for a in arms}
        self.memory = memory if memory is not None else AutoMemory()
        self.tables = {a.name: PositionAcceptance(POSITIONS, REQUEST_DECAY) for a in arms}
        self.pending: list[_Proposal] = []
        self.gaps = {a.name: PROBE_GAPS[0] for a in arms if not a.cheap}
        self.idle = dict.fromkeys(self.gaps, 0)  # steps since each costly arm last ran
        self.since_rows = 0  # steps since one verified a draft token
        self._started: float | None = None  # when this step's propose began
        self._proposed = False  # this step drafted, and its forward is yet to be committed
        self._timed = False  # the last step was proposed and committed: its overhead can be read off the clock
        self._accounted = 0.0  # seconds of the last step that were the forward or a costly propose
        self._costs = (1.0, 0.0)  # this step's (plain step seconds, seconds per draft token): AutoMemory.step_costs
        self._drafted_by: ArmDrafter | None = None  # the arm whose draft this step verifies, until commit
        self._readers = [a.drafter for a in arms if a.drafter.reads_features]
        self.reads_features = bool(self._readers)  # only then does the engine ask the target for its features
        self.observes = any(a.drafter.observes for a in arms)  # likewise: observing costs a host sync a step

    def see_features(self, ctx: SeqView, start: int, feats: torch.Tensor) -> None:
        """Every arm that reads the target's features sees all of them, whichever arm drafted."""
        for reader in self._readers:
            reader.see_features(ctx, start, feats)

    def propose(self, ctx: SeqView, k: int) -> Draft:
        self._clock_overhead()
        self._costs = self.memory.step_costs()
        made = {a.name: self._run(a, ctx, k) for a in self.arms.values() if a.cheap}  # arm -> (key, draft)
        choice = self._probe(self._best(made, k), made, k)
        costly = 0.0
        if choice.arm in self.gaps:
            start = time.perf_counter()
            made[choice.arm] = self._run(self.arms[choice.arm], ctx, self._asked(choice, k))
            costly = time.perf_counter() - start
        self.pending += [_Proposal.of(arm, key, len(ctx.tokens), d) for arm, (key, d) in made.items() if len(d)]
        draft = made[choice.arm][1].prefix(choice.n) if choice.arm in made else Draft.empty()
        self._note_choice(choice, draft.rows - 1)
        self._accounted, self._proposed = costly, True
        self._drafted_by = self.arms[choice.arm] if draft.rows > 1 else None
        if draft.rows == 1:  # nothing to verify (Lookahead's window rows alone are worth feeding: they learn)
            return Draft.empty(arm=PLAIN)
        # a tree's chances are by depth, not by node: the planner must not read them per node
        return replace(draft, arm=choice.arm, chances=None if draft.is_tree else tuple(choice.chances[: len(draft)]))

    def observe(self, ctx: SeqView, draft: Draft, predicted: list[int]) -> None:
        """The arm that drafted sees what the target predicted at its rows (Lookahead advances its window)."""
        arm = self._drafted_by
        if arm is not None and arm.drafter.observes:
            arm.drafter.observe(ctx, draft, predicted)

    def commit(self, ctx: SeqView, accepted: int) -> None:
        # A step the engine took without asking for a draft (a batch not speculating, no room left) is not
        # timed: neither its forward nor, on the next propose, the overhead around it.
        self._timed = self._proposed
        if self._proposed:  # the forward this request waited for, as timed by whoever ran it (its own, a batch's)
            self._accounted += self.memory.step.last
            self._proposed = False
        if self._drafted_by is not None:  # only it had a draft verified; the others ingest text on propose
            self._drafted_by.drafter.commit(ctx, accepted)
            self._drafted_by = None
        self._score(ctx.tokens)

    # --- choosing -------------------------------------------------------------------------------------

    def _best(self, cheap: dict[str, tuple[int, Draft]], k: int) -> _Choice:
        """The best expected tokens per second over plain decoding, each cheap arm's proposal as made, and
        each costly arm at its best length (proposing is paid for only if it is chosen)."""
        best = _Choice(PLAIN, 0, 1.0 / self._seconds(0, None), [])
        for name, (key, draft) in cheap.items():
            best = max(best, self._length(name, key, len(draft), None), key=lambda c: c.rate)
        for name in self.gaps:
            best = max(best, self._length(name, 0, k, self.memory.propose_cost(name)), key=lambda c: c.rate)
        return best

    def _length(self, arm: str, key: int, limit: int, propose: StepCost | None) -> _Choice:
        """The arm's best draft length up to limit: stop where the next token no longer pays its row. Chances
        only fall, so once a token does not raise the rate no later one does (its chance is below
        per_row * rate, and the rate only drops). An arm whose drafts bring extra rows pays them on every
        length. A tree's nodes are priced as a chain's tokens, by depth: a stand-in, since the tree's shape
        is not known before it is drafted."""
        chances: list[float] = []
        extra = self.arms[arm].extra_rows
        best, expected = _Choice(arm, 0, 0.0, chances), 1.0
        for chance in self._chances(arm, key, limit):
            chances.append(chance)
            expected += chance
            rate = expected / self._seconds(len(chances) + extra, propose, len(chances))
            if rate <= best.rate:
                break
            best = _Choice(arm, len(chances), rate, chances)
        return best

    def _seconds(self, rows: int, propose: StepCost | None, drafted: int = 0) -> float:
        """Expected seconds of a step verifying `rows` rows besides the pending token, drafted by an arm
        that costs `propose` to make `drafted` tokens."""
        plain, per_row = self._costs
        return plain + per_row * rows + (propose.seconds(drafted) if propose is not None else 0.0)

    def _chances(self, arm: str, key: int, limit: int) -> Iterator[float]:
        """Up to limit: the chance that draft tokens 0..i are all accepted, a product of per-position
        estimates. Each is the request's own counts, shrunk towards what earlier requests saw under this key,
        shrunk towards a coin flip (an unseen key's own: pooling keys would start a long match as doubtful
        as a short one). A prior never weighs more than the evidence behind it, so a first request
        unlearns a bad arm in a few steps."""
        own, past = self.tables[arm], self.memory.arm_acceptance(arm)
        chance = 1.0
        for i in range(limit):
            earlier = _shrink(past.counts(key, i), PRIOR[0] / sum(PRIOR), sum(PRIOR))
            chance *= _shrink(own.counts(key, i), *earlier)[0]
            yield chance

    def _probe(self, best: _Choice, cheap: dict[str, tuple[int, Draft]], k: int) -> _Choice:
        """Cheap exploration. A costly arm is learned only by running it: rerun it after a gap that doubles
        while it keeps losing. Cheap arms are scored for free, but a row's cost is learned only by verifying
        one: after a long plain stretch, with few multi-row forwards left to fit the cost to, verify one
        token of the likeliest cheap proposal, if it could pay were rows as cheap as they come."""
        due = [name for name in self.gaps if name != best.arm and self.idle[name] >= self.gaps[name]]
        if due and k > 0:
            self.gaps[due[0]] = min(2 * self.gaps[due[0]], PROBE_GAPS[1])
            probe = self._length(due[0], 0, k, self.memory.propose_cost(due[0]))
            return replace(probe, n=max(probe.n, 1), probe=True)
        if best.n or self.since_rows < ROW_PROBE_EVERY or self.memory.rows_measured() >= ROWS_KNOWN:
            return best
        offers = [self._length(name, key, len(d), None) for name, (key, d) in cheap.items() if len(d)]
        likeliest = max(offers, key=lambda c: c.chances[0], default=None)
        if likeliest is None or likeliest.chances[0] <= ROW_SHARE[0]:
            return best
        return replace(likeliest, n=1, probe=True)

    def _asked(self, choice: _Choice, k: int) -> int:
        """Tokens to ask a costly arm for: on a probe one more than it will verify, so that the text can
        score a position it would not have reached (the planner and the engine verify choice.n only)."""
        return min(k, choice.n + 1) if choice.probe else choice.n

    def _note_choice(self, choice: _Choice, drafted: int) -> None:
        for name in self.idle:
            self.idle[name] = 0 if name == choice.arm else self.idle[name] + 1
        if choice.arm in self.gaps and not choice.probe:  # winning on merit: probe it soon again if it stops
            self.gaps[choice.arm] = PROBE_GAPS[0]
        self.since_rows = 0 if drafted else self.since_rows + 1

    # --- measuring ------------------------------------------------------------------------------------

    def _run(self, arm: ArmDrafter, ctx: SeqView, k: int) -> tuple[int, Draft]:
        """Propose from one arm: (key its estimates are kept under, its draft). A model-free drafter's
        match_len, the length of the match its draft copies, says how far to trust it most."""
        start = time.perf_counter()
        draft = arm.drafter.propose(ctx, k)
        if not arm.cheap:  # keyed 0 like the estimate it was chosen by
            self.memory.propose_cost(arm.name).observe(len(draft), time.perf_counter() - start)
            return 0, draft
        return (match_key(arm.drafter.match_len) if len(draft) else 0), draft

    def _clock_overhead(self) -> None:
        """The last step's time outside its forward and costly propose: the loop's overhead, paid whatever
        is chosen (cheap arms' proposing, bookkeeping, streaming)."""
        now = time.perf_counter()
        if self._started is not None and self._timed:
            self.memory.observe_overhead(now - self._started - self._accounted)
        self._started = now

    def _score(self, tokens: list[int]) -> None:
        """Check every waiting proposal against the committed text as far as it goes, and record what it
        decided: each token found right as soon as it is (so a long right draft teaches at once), the
        first wrong one when it shows. A proposal leaves once wrong or right to its end."""
        waiting = []
        for p in self.pending:
            if len(tokens) - p.start < p.checked:  # the text is shorter than what was checked: another sequence now
                continue
            right, rejected, settled = p.match(tokens)
            self._record(p, right, rejected)
            p.checked = right
            if not settled:
                waiting.append(p)
        self.pending = waiting

    def _record(self, p: _Proposal, matched: int, rejected: bool) -> None:
        for table in (self.tables[p.arm], self.memory.arm_acceptance(p.arm)):
            table.observe(p.key, matched, rejected, start=p.checked)


def _shrink(counts: tuple[float, float], prior: float, prior_weight: float) -> tuple[float, float]:
    """(accepted, seen) counts, shrunk towards a prior worth prior_weight observations -> (estimate, the
    weight it may carry as the next level's prior: its evidence, at most PRIOR_WEIGHT)."""
    accepted, seen = counts
    return (accepted + prior_weight * prior) / (seen + prior_weight), min(PRIOR_WEIGHT, seen + prior_weight)
