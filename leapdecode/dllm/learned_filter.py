"""Learned parallel decoding (Learn2PD, 2025): a small filter, trained post hoc on the dLLM's own stepwise
runs, reads each masked position's prediction and says whether it is already final, i.e. the token stepwise
decoding will end up putting there. Every forward fills the reference rule's choice plus every position the
filter calls final with at least `threshold` probability. (filter_training.py makes the filter.)

Features of a masked position, from its logits row and the block's state: the top token's probability, the
log-probability gap to the second, the normalised entropy, the position's place in the block, the share of
the block already filled, whether the top token ends the text, and the distance to the nearest filled
position. A two-layer MLP; training takes seconds.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn

from leapdecode.dllm.unmasking import Fill, Unmasker, confidence

FEATURES = 7


def position_features(logits: Tensor, state: Tensor, mask_id: int, eos_ids: frozenset[int]) -> tuple[Tensor, Tensor]:
    """logits [B, V], state [B] -> (masked positions [M], features [M, FEATURES])."""
    B = state.shape[0]
    masked = (state == mask_id).nonzero().flatten()
    rows = logits[masked].float().index_fill(-1, torch.tensor([mask_id]), float("-inf"))
    logp = torch.log_softmax(rows, dim=-1)
    top2, tokens = logp.topk(2, dim=-1)
    p = logp.exp()
    entropy = -(p * logp.clamp_min(-1e4)).sum(-1) / math.log(rows.shape[-1])
    filled = (state != mask_id).nonzero().flatten()
    if filled.numel():
        distance = (masked[:, None] - filled[None, :]).abs().min(dim=1).values.float() / B
    else:
        distance = torch.ones(masked.shape[0])
    ends = torch.tensor([int(t) in eos_ids for t in tokens[:, 0].tolist()], dtype=torch.float32)
    feats = torch.stack([top2[:, 0].exp(), (top2[:, 0] - top2[:, 1]).clamp(max=20) / 20, entropy,
                         masked.float() / B, torch.full_like(entropy, filled.numel() / B), ends, distance], dim=1)
    return masked, feats


class FilterNet(nn.Module):
    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, feats: Tensor) -> Tensor:
        """[M, FEATURES] -> logit of "this prediction is final" [M]."""
        return self.net(feats).squeeze(-1)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), path)

    @staticmethod
    def load(path: Path) -> FilterNet:
        net = FilterNet()
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return net.eval()


class LearnedFilter(Unmasker):
    lossless = False

    def __init__(self, net: FilterNet, eos_ids: frozenset[int], threshold: float = 0.9) -> None:
        self.net, self.eos_ids, self.threshold = net, eos_ids, threshold

    def propose(self, logits: Tensor, state: Tensor, mask_id: int, room: int) -> list[Fill]:
        c = confidence(logits, state, mask_id)
        masked, feats = position_features(logits, state, mask_id, self.eos_ids)
        final = torch.sigmoid(self.net(feats)) >= self.threshold
        sure = [int(p) for p, ok in zip(masked, final) if ok and int(p) != c.order[0]]
        return [(p, int(c.tokens[p])) for p in [c.order[0], *sure]]
