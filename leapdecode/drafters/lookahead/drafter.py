"""Lookahead decoding (Fu et al. 2024): Jacobi trajectories feed an n-gram pool whose candidates are verified,
both in the target's one forward per step."""

from __future__ import annotations

import random
from dataclasses import replace

from leapdecode.decode.tree import from_branches
from leapdecode.drafters.base import Drafter
from leapdecode.drafters.lookahead.ngram_pool import NgramPool
from leapdecode.drafters.lookahead.window import LookaheadWindow
from leapdecode.errors import InvalidRequest
from leapdecode.models.llama import PACKED_MAX_ROWS
from leapdecode.types import Draft, ExtraRows, SeqView


class LookaheadDrafter(Drafter):
    """Every verify forward carries two branches besides the pending token.

    Verification branch: up to `guesses` n-grams from the pool that start with the last committed token;
    their (ngram - 1)-token continuations are the draft, a token tree (shared prefixes merged, the most
    recently seen first) within the engine's node budget. Lookahead branch: the window (window.py)
    as extra rows, `window` columns by ngram - 1 levels of Jacobi guesses that the same forward iterates;
    its trajectories yield new n-grams for the pool. The pool also starts with the prompt's own n-grams and
    takes the committed text's, which on a small model is where most accepted drafts come from.

    Every row costs compute on a CPU, so the defaults are small (4 x 3 window, 4-grams, 3 guesses: at most
    1 + 9 + 11 rows a step). A wider window or more levels finds more and longer n-grams per step, more
    guesses give each step more chances; all of them make every step slower.
    """

    observes = True  # the target's predictions at the window rows advance the window

    def __init__(self, window: int = 4, ngram: int = 4, guesses: int = 3) -> None:
        for name, value, least in (("window", window, 1), ("ngram", ngram, 2), ("guesses", guesses, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise InvalidRequest(f"lookahead: {name} must be an integer >= {least}, got {value!r}")
        rows = 1 + guesses * (ngram - 1) + LookaheadWindow.max_rows(window, ngram - 1)
        if rows > PACKED_MAX_ROWS:
            raise InvalidRequest(f"lookahead: window={window}, ngram={ngram}, guesses={guesses} feed up to {rows} "
                                 f"rows a step, more than {PACKED_MAX_ROWS}; lower one of them")
        self.width, self.ngram, self.guesses = window, ngram, guesses
        self.pool = NgramPool(ngram, per_key=guesses)
        self._window: LookaheadWindow | None = None
        self._fed: ExtraRows | None = None  # the window rows of the last proposal
        self._seen = 0  # committed tokens whose n-grams are in the pool
        self._branches: list[tuple[int, ...]] = []  # the candidates of the last proposal, full length
        self.accepted_from_window = 0  # accepted draft tokens of n-grams the window found before the text had them

    @property
    def extra_rows(self) -> int:
        """Rows the window adds to a forward beside the draft (at most: fewer while it fills up)."""
        return LookaheadWindow.max_rows(self.width, self.ngram - 1)

    def propose(self, ctx: SeqView, k: int) -> Draft:
        self._ingest(ctx)
        if k <= 0:
            return Draft.empty()
        self._branches = self.pool.continuations(ctx.tokens[-1])  # most recent first
        self._fed = self._window.rows()
        return replace(from_branches(self._branches, k), extra=self._fed)  # shared prefixes merged

    def _ingest(self, ctx: SeqView) -> None:
        """Start from the prompt on the first call; afterwards add the n-grams the committed text gained."""
        if self._window is None or len(ctx.tokens) < self._seen:
            self.pool = NgramPool(self.ngram, per_key=self.guesses)
            self._seen = 0
            self._window = self._start_window(ctx.tokens[: ctx.prompt_len] or ctx.tokens)
        self.pool.add_text(ctx.tokens, self._seen)
        self._seen = len(ctx.tokens)

    def _start_window(self, prompt: list[int]) -> LookaheadWindow:
        """Level 0 starts as tokens drawn from the prompt (as the paper's code does), the same for every
        run of a prompt."""
        rng = random.Random(0)
        levels = self.ngram - 1
        return LookaheadWindow(self.width, levels, [rng.choice(prompt) for _ in range(self.width + levels - 2)])

    def observe(self, ctx: SeqView, draft: Draft, predicted: list[int]) -> None:
        if draft.extra is None or draft.extra is not self._fed:  # left out this step: no room, or a busy batch
            return
        window_rows = [predicted[0]] + predicted[len(draft) + 1 :]
        for gram in self._window.advance(ctx.tokens[-1], window_rows):
            self.pool.add(gram, found_by="window")

    def commit(self, ctx: SeqView, accepted: int) -> None:
        """The committed tokens' n-grams are added on the next propose; here the accepted ones are credited."""
        if accepted == 0:
            return
        key, kept = ctx.tokens[-accepted - 2], tuple(ctx.tokens[-accepted - 1 : -1])
        branch = next((b for b in self._branches if b[:accepted] == kept), ())
        if self.pool.found_by(key, branch) == "window":
            self.accepted_from_window += accepted
