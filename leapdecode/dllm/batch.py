"""Training batches for a block-causal, shifted dLLM, every block's denoising loss in one forward.

Each example is laid out as [prompt, clean answer, noised answer] (the two-copy layout of block diffusion,
BD3-LM): the clean copy is causal, as the committed text is when decoding; a noised block sees the clean text
before its block and its own block, as the block being decoded does. The answer is padded with end tokens to
whole blocks. Position i predicts token i+1: a block's first token is predicted by the clean text before it
(the AR loss on the clean copy), each other by the noised position before it (the denoising loss).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True, slots=True)
class Batch:
    tokens: Tensor  # [N, T]
    positions: Tensor  # [N, T] rope positions
    allowed: Tensor  # [N, 1, T, T] bool
    rows: Tensor  # [M, 2] (example, position) whose output is scored
    targets: Tensor  # [M] the token each scored row predicts
    denoising: Tensor  # [M] bool: a noised row (else a clean, AR one)


@dataclass(frozen=True, slots=True)
class _Laid:
    tokens: list[int]
    positions: list[int]
    allowed: Tensor
    rows: list[int]
    targets: list[int]
    denoising: list[bool]


def make_batch(examples: list[tuple[list[int], list[int]]], mask_id: int, eos_id: int,
               rng: random.Random, block_sizes: tuple[int, ...]) -> Batch:
    """examples: (prompt ids, answer ids without the end token)."""
    laid = [_lay(p, a, mask_id, eos_id, rng, rng.choice(block_sizes)) for p, a in examples]
    T = max(len(x.tokens) for x in laid)
    N = len(laid)
    tokens = torch.full((N, T), eos_id, dtype=torch.long)
    positions = torch.zeros(N, T, dtype=torch.long)
    allowed = torch.eye(T, dtype=torch.bool).repeat(N, 1, 1, 1)  # padding rows see themselves (no NaN)
    rows, targets, denoising = [], [], []
    for n, x in enumerate(laid):
        L = len(x.tokens)
        tokens[n, :L], positions[n, :L] = torch.tensor(x.tokens), torch.tensor(x.positions)
        allowed[n, 0, :L, :L] = x.allowed
        rows += [(n, r) for r in x.rows]
        targets += x.targets
        denoising += x.denoising
    return Batch(tokens, positions, allowed, torch.tensor(rows), torch.tensor(targets), torch.tensor(denoising))


def _lay(prompt: list[int], answer: list[int], mask_id: int, eos_id: int, rng: random.Random, B: int) -> _Laid:
    ans = answer + [eos_id]
    ans += [eos_id] * (-len(ans) % B)
    P, A = len(prompt), len(ans)
    noised = list(ans)
    for s in range(0, A, B):
        t = rng.uniform(0.05, 1.0)
        picked = [j for j in range(s, s + B) if rng.random() < t] or [rng.randrange(s, s + B)]
        for j in picked:
            noised[j] = mask_id
    L = P + A
    allowed = torch.zeros(L + A, L + A, dtype=torch.bool)
    allowed[:L, :L] = torch.ones(L, L, dtype=torch.bool).tril()
    for s in range(0, A, B):
        allowed[L + s : L + s + B, : P + s] = True
        allowed[L + s : L + s + B, L + s : L + s + B] = True
    rows = list(range(P - 1, L - 1))  # clean: AR next-token over the answer
    targets = list(ans)
    denoising = [False] * A
    for j in range(A):
        if noised[j] == mask_id and j % B:
            rows.append(L + j - 1)
            targets.append(ans[j])
            denoising.append(True)
    return _Laid(prompt + ans + noised, list(range(L)) + list(range(P, L)), allowed, rows, targets, denoising)
