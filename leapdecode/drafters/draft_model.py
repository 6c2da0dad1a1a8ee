"""Draft-model speculation: a smaller causal LM with the target's tokenizer guesses the next tokens."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from leapdecode.decode.sampling import sample, target_probs
from leapdecode.decode.tree import tree_width
from leapdecode.drafters.base import Drafter
from leapdecode.drafters.draft_tree import DraftTree
from leapdecode.errors import InvalidRequest
from leapdecode.models.base import CausalLM
from leapdecode.types import Draft, SamplingParams, SeqView

# New committed tokens fed in one logits forward; a longer catch-up (the prompt) first fills the cache
# without logits, so the head does not run over hundreds of rows whose logits nobody reads.
CATCH_UP_ROWS = 4


@dataclass(frozen=True, slots=True)
class DraftModelConfig:
    """What the drafter needs beyond its network: when to stop drafting, and its request's sizes."""

    threshold: float  # stop after a drafted token whose draft confidence (top probability) is below it; 0: always k
    capacity: int  # the request's KV slots: the draft's cache holds at most this many
    vocab: int  # the target's logits width: draft distributions are laid out over the same ids
    tree: int = 0  # first-level branches of a token tree; 0 or 1: a chain

    def __post_init__(self) -> None:
        tree_width(self.tree)
        if not 0.0 <= self.threshold <= 1.0:
            raise InvalidRequest(f"draft_threshold must be between 0 and 1, got {self.threshold}")
        if self.capacity < 1 or self.vocab < 1:
            raise InvalidRequest(f"draft model needs a positive capacity and vocab, got {self.capacity}, {self.vocab}")


class DraftModelDrafter(Drafter):
    """Runs the draft network token by token over its own KV cache, kept in step with the committed tokens.

    The cache holds KV for `self.fed`: committed tokens plus the drafts of the last proposal. On the next
    propose the longest prefix of `fed` that the committed tokens still extend is kept (accepted drafts are
    reused) and the rest rolled back by moving the length; only tokens the draft has not seen are fed.
    Greedy requests draft by argmax; sampled ones sample from the draft's distribution after the request's
    temperature / top-k / top-p and return it as probs, which keeps speculative sampling exact.
    With cfg.tree > 1 it grows a token tree instead (draft_tree.py): deterministic for every request, as
    trees must be, since each node is a ranked guess rather than a draw.
    """

    def __init__(self, network: CausalLM, cfg: DraftModelConfig, params: SamplingParams, gen: torch.Generator) -> None:
        self.net, self.cfg, self.params, self.gen = network, cfg, params, gen
        self.limit = min(cfg.capacity, network.max_context)  # slots this drafter may ever fill
        self.cache = network.new_cache(self.limit)
        self.fed: list[int] = []  # tokens whose KV sits in cache slots [0, len(fed))
        self.base = 0  # committed tokens at the last proposal: fed[:base] is rarely worth re-checking
        self.tree: DraftTree | None = None  # the last proposal's tree, until its accepted path is in place

    def propose(self, ctx: SeqView, k: int) -> Draft:
        toks = ctx.tokens
        self._follow_tree(toks)
        k = min(k, self.limit - len(toks) + 1)  # the last draft is never fed: len(toks) - 1 + k slots
        if k < 1:
            return Draft.empty()
        logits = self._catch_up(toks)  # [V]
        if self.cfg.tree > 1:
            return self._grow_tree(logits, k, len(toks))
        tokens: list[Tensor] = []
        probs: list[Tensor] = []
        for i in range(k):
            q = self._distribution(logits)  # [V]
            token = q.argmax() if self.params.greedy else sample(q[None], self.gen)[0]
            tokens.append(token)
            probs.append(q)
            if i == k - 1 or float(q.max()) < self.cfg.threshold:  # the one host sync per drafted token
                break
            logits = self._feed([int(token)])
        return Draft(tokens=torch.stack(tokens), probs=None if self.params.greedy else torch.stack(probs))

    def commit(self, ctx: SeqView, accepted: int) -> None:
        pass  # propose reconciles the cache with ctx itself, which also covers a sequence it never saw

    def _grow_tree(self, logits: Tensor, k: int, n: int) -> Draft:
        """A token tree of at most k nodes after the n committed tokens, whose KV the cache holds; logits [V']."""
        tree = self.tree = DraftTree(n)
        top = torch.topk(self._distribution(logits), min(self.cfg.tree, k))
        leaves = [tree.add(t, -1, p) for p, t in zip(top.values.tolist(), top.indices.tolist()) if p > 0]
        # every fed node takes a cache slot after the n committed ones: never past the request's capacity
        while leaves := tree.worth_growing(leaves, k, self.cfg.threshold)[: max(0, self.limit - n - tree.fed)]:
            tokens, start, mask, positions = tree.feed(leaves)
            out = self.net.forward(tokens[None], start, self.cache, mask, positions=positions)[0]  # [R, V']
            best = self._distribution(out).max(dim=-1)  # each branch goes on with the draft's argmax
            leaves = [tree.add(t, x, p) for x, p, t in zip(leaves, best.values.tolist(), best.indices.tolist())]
        return tree.draft(k)

    def _follow_tree(self, toks: list[int]) -> None:
        """Move the KV of the last tree's nodes the committed text went through into consecutive slots."""
        tree, self.tree = self.tree, None
        if tree is None or len(toks) <= tree.n or common_prefix(self.fed, toks, tree.n) < tree.n:
            return
        path = tree.followed(toks)
        self.cache.keep_path(tree.n - 1, path)
        self.fed.extend(toks[tree.n : tree.n + len(path)])

    def _catch_up(self, toks: list[int]) -> Tensor:
        """Roll back to the longest still-valid prefix, feed the rest; logits [V] after the last token."""
        keep = min(common_prefix(self.fed, toks, self.base), len(toks) - 1)  # re-feed >= 1 token for its logits
        self.base = len(toks)
        del self.fed[keep:]
        self.cache.rollback(keep)
        new = toks[keep:]
        if len(new) > CATCH_UP_ROWS:
            self._forward(new[:-1], logits=False)
            new = new[-1:]
        return self._feed(new)

    def _feed(self, tokens: list[int]) -> Tensor:
        """Append tokens to the cache; logits [V] after the last of them."""
        return self._forward(tokens, logits=True)[0, -1]  # type: ignore[index]

    def _forward(self, tokens: list[int], logits: bool) -> Tensor | None:
        start = len(self.fed)
        out = self.net.forward(torch.tensor([tokens]), start, self.cache, logits=logits)  # [1, T, V'] or None
        self.fed.extend(tokens)
        self.cache.rollback(len(self.fed))  # forward writes the slots; the length is ours to move
        return out

    def _distribution(self, logits: Tensor) -> Tensor:
        """Draft logits [..., V'] -> the distribution q [..., V] drafts are drawn from, over the target's ids."""
        logits = fit_width(logits.float(), self.cfg.vocab)
        if self.params.greedy:
            return torch.softmax(logits, dim=-1)
        return target_probs(logits[None], self.params)[0]


def fit_width(logits: Tensor, vocab: int) -> Tensor:
    """logits [V'] -> [vocab]: columns past the target's are cut, missing ones are impossible (-inf).

    One tokenizer can come with embedding tables of different padded sizes (Qwen2.5 0.5B and 1.5B); the
    padding rows are no tokenizer's ids, so dropping them loses nothing.
    """
    width = logits.shape[-1]
    if width >= vocab:
        return logits[..., :vocab]
    pad = logits.new_full((*logits.shape[:-1], vocab - width), float("-inf"))
    return torch.cat([logits, pad], dim=-1)


def common_prefix(a: list[int], b: list[int], hint: int) -> int:
    """Length of the common prefix of a and b; `hint` is a length that usually matches (checked in C)."""
    n = min(len(a), len(b))
    i = min(hint, n)
    if a[:i] != b[:i]:
        i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
