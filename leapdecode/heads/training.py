"""Training a draft head on the target's own features (EAGLE, with EAGLE-3's training-time test).

Step 1 of the head reads true features everywhere, exactly as at the start of a draft. Step s > 1 reads,
at position j, the feature step s-1 predicted at j-1, and attends to true entries up to j-s+1 plus the
earlier steps' own entries on its diagonal: the cache a draft of s tokens sees. So the head is trained on
its own mistakes' inputs as it will meet them, not only on teacher-forced ones.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor
from tqdm import tqdm

from leapdecode.heads.corpus import Sample, answers
from leapdecode.heads.head import DraftHead, HeadShape
from leapdecode.heads.head_store import default_head_path
from leapdecode.models.base import Segment
from leapdecode.models.llama import rope_tables
from leapdecode.models.loader import resolve_checkpoint

IGNORE = -100


@dataclass(frozen=True, slots=True)
class Example:
    feats: Tensor  # [L, dim] bfloat16: the target's features at every position
    tokens: Tensor  # [L] int64
    labels: Tensor  # [L] int64: the target's argmax at every position (the token after it)
    prompt_len: int


@dataclass(frozen=True, slots=True)
class TrainConfig:
    epochs: int = 6
    steps: int = 2  # draft steps unrolled in training (training-time test)
    lr: float = 2e-3
    batch: int = 8
    vocab: int = 8192  # the head drafts among the target's this many most frequent output tokens
    noise: float = 0.05  # uniform noise on input features, for robustness to its own predictions
    seed: int = 0


@dataclass(frozen=True, slots=True)
class HeadReport:
    """Held-out agreement with the target: per draft step, and tokens per forward of a chain that drafts
    `steps` tokens (1 + the mean accepted run)."""

    step_accuracy: tuple[float, ...]
    tokens_per_forward: float
    train_tokens: int
    vocab_coverage: float


@torch.inference_mode()
def examples(llm: Any, samples: list[Sample]) -> list[Example]:
    """Run the target over each prompt + answer once: its features and argmax at every position."""
    net, out = llm.network, []
    for s in tqdm(samples, desc="features", unit="answer"):
        ids = s.tokens
        logits, feats = net.forward_features([Segment(torch.tensor(ids), 0, net.new_cache(len(ids)))])
        out.append(Example(feats.to(torch.bfloat16), torch.tensor(ids), logits.argmax(-1), len(s.prompt_ids)))
    return out


def fit_head(llm: Any, data: list[Example], cfg: TrainConfig) -> tuple[DraftHead, HeadReport]:
    """A head for llm's target, trained on `data`; the report is on a held-out tenth of the answers."""
    sd = _float_weights(llm)
    head, coverage = _new_head(llm.network, sd, data, cfg)
    order = list(range(len(data)))
    random.Random(cfg.seed).shuffle(order)
    cut = max(1, len(order) // 10)
    held, fit = order[:cut], order[cut:] or order
    trainer = _Trainer(head, data, cfg, sd["model.embed_tokens.weight"].float())
    trainer.fit(fit)
    accuracy, tokens_per_forward = trainer.evaluate(held)
    answered = sum(len(data[i].tokens) - data[i].prompt_len for i in fit)
    return head, HeadReport(accuracy, tokens_per_forward, answered, coverage)


def _float_weights(llm: Any) -> dict[str, Tensor]:
    """The target's weights in float. At an integer precision llm.checkpoint_dir holds only the GGUF's
    metadata (its tensors are read as stored), so the GGUF is converted once, as the float precisions do."""
    sd: dict[str, Tensor] = {}
    for f in sorted(resolve_checkpoint(llm.heads.model_name).glob("*.safetensors")):
        sd.update(load_file(f))
    return sd


def _new_head(net: Any, sd: dict[str, Tensor], data: list[Example], cfg: TrainConfig) -> tuple[DraftHead, float]:
    """A head whose layer starts as the target's last one, drafting among the target's most frequent
    answer tokens; with the share of answer tokens that vocabulary covers."""
    counts = torch.zeros(net.vocab_size)
    for ex in data:
        counts += torch.bincount(ex.labels[max(ex.prompt_len - 1, 0) :], minlength=net.vocab_size).float()
    vocab_ids = counts.argsort(descending=True)[: cfg.vocab].sort().values
    coverage = float(counts[vocab_ids].sum() / counts.sum().clamp(min=1))
    out_embed = sd["model.embed_tokens.weight"] if net.shape.tied else sd["lm_head.weight"]
    last = net.num_layers - 1
    inter = sd[f"model.layers.{last}.mlp.gate_proj.weight"].shape[0]
    head = DraftHead(HeadShape.of_target(net.shape, inter), vocab_ids, out_embed[vocab_ids].to(torch.bfloat16))
    head.copy_layer(sd, last, sd["model.norm.weight"])
    return head, coverage


class _Trainer:
    """Batches, the unrolled forward, the losses and the held-out evaluation. embed [V, dim]: the target's
    input embeddings, frozen."""

    def __init__(self, head: DraftHead, data: list[Example], cfg: TrainConfig, embed: Tensor) -> None:
        self.head, self.data, self.cfg, self.embed = head, data, cfg, embed
        self.remap = torch.full((head.shape.vocab,), IGNORE, dtype=torch.long)
        self.remap[head.vocab_ids] = torch.arange(head.vocab_ids.shape[0])
        longest = max(len(ex.tokens) for ex in data)
        self.cos, self.sin = rope_tables(head.shape.head_dim, head.shape.rope_theta, longest, torch.float32)

    def fit(self, ids: list[int]) -> None:
        """AdamW, a short warmup then linear decay, over `epochs` passes of ids."""
        cfg, head = self.cfg, self.head
        total = max(1, cfg.epochs * math.ceil(len(ids) / cfg.batch))
        opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / 20) * max(0.05, 1 - i / total))
        head.train()
        with tqdm(total=total, desc="training", unit="batch") as bar:
            for epoch in range(cfg.epochs):
                order = list(ids)
                random.Random(cfg.seed + epoch).shuffle(order)
                for b in range(0, len(order), cfg.batch):
                    loss = self.loss(order[b : b + cfg.batch], cfg.noise)
                    opt.zero_grad()
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
                    opt.step()
                    sched.step()
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss.item():.3f}")
        head.eval()

    def batch(self, ids: list[int]) -> tuple[Tensor, Tensor, Tensor]:
        """features [B, L, dim], tokens [B, L], labels [B, L] over the head's vocabulary (answers only)."""
        L, d = max(len(self.data[i].tokens) for i in ids), self.head.shape.dim
        f, t = torch.zeros(len(ids), L, d), torch.zeros(len(ids), L, dtype=torch.long)
        y = torch.full((len(ids), L), IGNORE, dtype=torch.long)
        for b, i in enumerate(ids):
            ex, n = self.data[i], len(self.data[i].tokens)
            f[b, :n], t[b, :n] = ex.feats.float(), ex.tokens
            y[b, :n] = self.remap[ex.labels]
            y[b, : max(ex.prompt_len - 1, 0)] = IGNORE  # learn where the target answers, not the prompt
        return f, t, y

    def unroll(self, f: Tensor, t: Tensor, noise: float) -> list[Tensor]:
        """Predicted features [B, L, dim] of each draft step (see the module's docstring)."""
        head, (B, L, d), S = self.head, f.shape, self.cfg.steps
        embeds = self.embed[t]
        prev = torch.cat([f.new_zeros(B, 1, d), f[:, :-1]], dim=1)
        if noise:
            prev = prev + (torch.rand_like(prev) - 0.5) * 2 * noise
        cos, sin = self.cos[:L], self.sin[:L]
        keys, values, outs = [], [], []
        for s, mask in enumerate(_step_masks(L, S)):
            x = head.inputs(prev, embeds)
            q, k, v = head.qkv_of(x, cos, sin)
            keys.append(k)
            values.append(v)
            pad = [torch.zeros_like(k)] * (S - 1 - s)
            a = F.scaled_dot_product_attention(q, torch.cat(keys + pad, 2), torch.cat(values + pad, 2),
                                               attn_mask=mask, enable_gqa=head.shape.heads != head.shape.kv_heads)
            out = head.finish(x, a.transpose(1, 2).reshape(B, L, -1))
            outs.append(out)
            prev = torch.cat([f.new_zeros(B, 1, d), out[:, :-1]], dim=1)
        return outs

    def loss(self, ids: list[int], noise: float) -> Tensor:
        f, t, y = self.batch(ids)
        total = f.new_zeros(())
        for s, out in enumerate(self.unroll(f, t, noise)):
            ce = F.cross_entropy(self.head.logits(out).flatten(0, 1), y.flatten(), ignore_index=IGNORE)
            reg = F.smooth_l1_loss(out, f, reduction="none").mean(-1)[y != IGNORE].mean()
            total = total + 0.8**s * (ce + 0.1 * reg)
        return total

    @torch.no_grad()
    def evaluate(self, ids: list[int]) -> tuple[tuple[float, ...], float]:
        hits = [0] * self.cfg.steps
        runs, counted = 0, 0
        for b in range(0, len(ids), self.cfg.batch):
            f, t, y = self.batch(ids[b : b + self.cfg.batch])
            ok = [(self.head.logits(o).argmax(-1) == y) & (y != IGNORE) for o in self.unroll(f, t, 0.0)]
            valid = y != IGNORE
            for s in range(self.cfg.steps):
                hits[s] += int(ok[s].sum())
            run = torch.ones_like(valid)  # a chain from position n: step s must be right at n + s
            for s in range(self.cfg.steps):
                shifted = torch.zeros_like(valid)
                shifted[:, : valid.shape[1] - s] = ok[s][:, s:]
                run = run & shifted
                runs += int((run & valid).sum())
            counted += int(valid.sum())
        n = max(counted, 1)
        return tuple(h / n for h in hits), 1 + runs / n


def _step_masks(L: int, S: int) -> list[Tensor]:
    """Step s's attention over the S steps' keys [L, S*L]: true entries up to j-s, then step r's entry at
    j-s+r for each earlier step r and its own at j (0-based s)."""
    q, k = torch.arange(L)[:, None], torch.arange(L)[None, :]
    masks = []
    for s in range(S):
        blocks = [k <= q - s] + [(k == q - s + r) if r <= s else torch.zeros(L, L, dtype=torch.bool)
                                 for r in range(1, S)]
        masks.append(torch.cat(blocks, dim=1))
    return masks


def train_head(llm: Any, count: int, max_tokens: int, cfg: TrainConfig, out: Path) -> HeadReport:
    """The whole recipe: the target answers `count` instructions (cached), its features are read, a head
    is fitted and saved at `out`."""
    cache = default_head_path(llm.checkpoint_dir).with_name(
        f"{llm.checkpoint_dir.name}.answers-{count}x{max_tokens}-seed{cfg.seed}-{llm.precision}.jsonl")
    samples = answers(llm, count, max_tokens, cfg.seed, cache)
    head, report = fit_head(llm, examples(llm, samples), cfg)
    head.save(out, llm.checkpoint_dir.name, {"answers": count, "max_tokens": max_tokens,
                                                   "precision": llm.precision, **asdict(cfg), **asdict(report)})
    return report
