"""One request's grammar state: which draft tokens it allows, the mask at every verified row, and its advance
as tokens commit. Masking the target's logits before verification keeps every method lossless with respect
to constrained plain decoding: each verified row sees exactly the mask plain decoding would apply there."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch
from torch import Tensor

from leapdecode.decode.tree import subtree
from leapdecode.errors import InvalidRequest
from leapdecode.grammar.spec import GrammarSpec
from leapdecode.grammar.vocab import GrammarVocab
from leapdecode.types import Draft

_NEG_INF = torch.tensor(float("-inf"))


class Constraint:
    """A grammar matcher that follows the committed text. seconds: time spent computing masks and forced
    tokens, for the mask's share of a step."""

    def __init__(self, vocab: GrammarVocab, spec: GrammarSpec) -> None:
        self.vocab, self.spec = vocab, spec
        self.matcher = vocab.matcher(spec)
        self.words = (vocab.vocab_size + 31) // 32
        self.seconds = 0.0
        self.forced_accepted = 0  # tokens the grammar forced, drafted and the target accepted (GrammarDrafter)

    def allowed(self, draft: Draft) -> Draft:
        """The part of a draft the grammar allows: a chain's longest valid prefix, a tree's nodes whose whole
        path is valid. Nothing else could be accepted, so nothing else is worth a row."""
        if not len(draft):
            return draft
        start = time.perf_counter()
        kept = self._tree_nodes(draft) if draft.is_tree else self.matcher.validate_tokens(draft.tokens.tolist())
        self.seconds += time.perf_counter() - start
        if draft.is_tree:
            return _subtree(draft, kept)
        return draft.prefix(kept)

    def mask(self, draft: Draft, logits: Tensor) -> Tensor:
        """logits [rows, V] of a forward that fed the pending token and `draft`: the verified rows (the pending
        token's and one per draft token) with every token the grammar forbids there at -inf; extra rows as is."""
        start = time.perf_counter()
        n = len(draft) + 1
        head = self._masked(self._bits(draft), logits[:n])
        self.seconds += time.perf_counter() - start
        return head if n == logits.shape[0] else torch.cat([head, logits[n:]])

    def argmax(self, draft: Draft, logits: Tensor) -> list[int]:
        """Greedy's masked argmax at every fed row, as mask(draft, logits).argmax(-1) gives at the rows that
        decide the verdict. A chain's rows are masked one by one up to its first miss (rows past it keep the
        raw argmax: only an observing drafter reads them, as hints), and a row whose raw argmax the mask
        allows keeps it without masking its logits. A tree takes the full masks."""
        if draft.is_tree:
            return self.mask(draft, logits).argmax(dim=-1).tolist()
        start = time.perf_counter()
        out, tokens, walked = logits.argmax(dim=-1).tolist(), draft.tokens.tolist(), 0
        for row in range(len(tokens) + 1):
            bits = self._bits(Draft.empty())
            if not self._bit(bits[0], out[row]):
                out[row] = int(self._masked(bits, logits[row : row + 1]).argmax())
            if row == len(tokens) or out[row] != tokens[row]:
                break
            walked += self._step(tokens[row])
        self.matcher.rollback(walked)
        self.seconds += time.perf_counter() - start
        return out

    def advance(self, tokens: list[int]) -> None:
        """Commit tokens verification yielded (each one the masks allowed; an end token once the grammar has
        ended, which the matcher no longer takes)."""
        for token in tokens:
            self._step(token)

    def forced(self, k: int) -> list[int]:
        """Up to k tokens the grammar allows alone from here: a free draft (braces, keys, separators)."""
        start = time.perf_counter()
        tokens = self.matcher.compute_ff_tokens()[:k] if k > 0 and not self.matcher.is_stopped() else []
        self.seconds += time.perf_counter() - start
        return tokens

    def _bit(self, row: np.ndarray, token: int) -> bool:
        """Whether a mask row allows token (an ended grammar's empty row allows the end tokens)."""
        if token < self.words * 32 and (int(row[token >> 5]) >> (token & 31)) & 1:
            return True
        return token in self.vocab.eos_ids and not row.any()

    def _masked(self, bits: np.ndarray, logits: Tensor) -> Tensor:
        """logits [n, V] with what bits [n, words] forbids at -inf."""
        unpacked = np.unpackbits(bits.view(np.uint8), axis=-1, bitorder="little")[:, : logits.shape[-1]]
        allowed = torch.from_numpy(unpacked.view(bool))
        self._never_stuck(allowed)
        return torch.where(allowed, logits, _NEG_INF)

    def _bits(self, draft: Draft) -> np.ndarray:
        """The grammar's bitmask [rows, words] int32 at the pending row and at every draft row."""
        bits = np.zeros((len(draft) + 1, self.words), dtype=np.int32)
        if draft.is_tree:
            tokens, parents = draft.tokens.tolist(), draft.parents.tolist()
            self._fill(bits, 0)
            for node in range(len(tokens)):
                walked = sum(self._step(t) for t in _path(parents, tokens, node))
                self._fill(bits, node + 1)
                self.matcher.rollback(walked)
            return bits
        tokens, walked = draft.tokens.tolist(), 0
        for row in range(len(tokens) + 1):
            self._fill(bits, row)
            if row < len(tokens):
                walked += self._step(tokens[row])
        self.matcher.rollback(walked)
        return bits

    def _step(self, token: int) -> int:
        """Walk one allowed token ahead (rolled back by the caller): 1, or 0 for an end token after the grammar
        has ended, which the matcher does not take."""
        if self.matcher.is_stopped() and token in self.vocab.eos_ids:
            return 0
        if not self.matcher.consume_token(token):
            raise RuntimeError(f"the grammar refused token {token} it allowed: {self.matcher.get_error()}")
        return 1

    def _fill(self, bits: np.ndarray, row: int) -> None:
        self.matcher.unsafe_compute_mask_ptr(bits[row].ctypes.data, self.words * 4)

    def _never_stuck(self, allowed: Tensor) -> None:
        """A row the grammar allows nothing at (it has ended) may still end the text."""
        stuck = ~allowed.any(dim=-1)
        if not bool(stuck.any()):
            return
        if not self.vocab.eos_ids:
            raise InvalidRequest("the grammar allows nothing more and the model has no end-of-text token")
        allowed[stuck.nonzero().squeeze(-1)[:, None], torch.tensor(self.vocab.eos_ids)] = True

    def _tree_nodes(self, draft: Draft) -> list[int]:
        """The tree's nodes whose path from the root the grammar allows, in order."""
        tokens, parents = draft.tokens.tolist(), draft.parents.tolist()
        ok: list[bool] = []
        for node in range(len(tokens)):
            parent = parents[node]
            if parent >= 0 and not ok[parent]:
                ok.append(False)
                continue
            path = _path(parents, tokens, node)
            ok.append(self.matcher.validate_tokens(path) == len(path))
        return [node for node in range(len(tokens)) if ok[node]]


def _path(parents: list[int], tokens: list[int], node: int) -> list[int]:
    """The tokens from the root to node, node's own last."""
    path = []
    while node >= 0:
        path.append(tokens[node])
        node = parents[node]
    return path[::-1]


def _subtree(draft: Draft, nodes: list[int]) -> Draft:
    """The tree of the given nodes (each one's parent among them or the root), with the draft's arm and extra
    rows; cut to nothing, the extra rows go too (as Draft.prefix does)."""
    if len(nodes) == len(draft):
        return draft
    if not nodes:
        return Draft.empty(arm=draft.arm)
    return replace(subtree(draft.tokens.tolist(), draft.parents.tolist(), nodes), arm=draft.arm, extra=draft.extra)


