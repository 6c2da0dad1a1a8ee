"""Adaptive block size (AdaBlock-dLLM, 2025): a block ends where the text's next semantic step ends, not at a
fixed size. When a block opens, its predictions over a window of masks (twice the block size) are read: the
block runs up to and including the first position whose likeliest token closes a step (a newline, or a
sentence or clause mark) with at least `threshold` probability; with none, it keeps the default size. Lossy:
stepwise decoding with adaptive blocks is its own reference (the bench's `+ada` variants)."""

from __future__ import annotations

from torch import Tensor

from leapdecode.dllm.unmasking import confidence

CLOSERS = ("\n", ".", "!", "?", ";", ":", ",")


def closing_tokens(tokenizer) -> frozenset[int]:  # noqa: ANN001 - any Hugging Face tokenizer
    """Ids of the tokens that close a step: they contain a newline or end with a sentence or clause mark."""
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    texts = [tokenizer.convert_tokens_to_string([t]) if t is not None else "" for t in vocab]
    return frozenset(i for i, s in enumerate(texts) if "\n" in s or s.rstrip().endswith(CLOSERS[1:]) and s.strip())


class BlockSizer:
    def __init__(self, closers: frozenset[int], default: int, threshold: float = 0.5, smallest: int = 2) -> None:
        self.closers, self.default, self.threshold, self.smallest = closers, default, threshold, smallest
        self.window = 2 * default

    def size(self, logits: Tensor, mask_id: int, room: int) -> int:
        """logits [W, V] for a window of masks -> this block's size (at most room)."""
        state = logits.new_full((logits.shape[0],), mask_id, dtype=int)
        c = confidence(logits, state, mask_id)
        for j in range(min(logits.shape[0], room)):
            if int(c.tokens[j]) in self.closers and float(c.probs[j]) >= self.threshold and j + 1 >= self.smallest:
                return j + 1
        return min(self.default, room)
