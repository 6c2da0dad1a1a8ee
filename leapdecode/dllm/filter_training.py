"""`leapdecode train-filter`: the learned filter (learned_filter.py) from the dLLM's own stepwise runs.

Every step of stepwise decoding on training prompts (parallel-tasks problems from a training seed, never the
bench's, and synthetic instructions) records, for each masked position, its features and whether its current
top token is the one stepwise decoding ends up putting there. Positions past the answer's end count as final
when they predict an end token. The filter is an MLP fitted to those labels (binary cross-entropy), saved
where `--method filter` looks for it.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from leapdecode.dllm.learned_filter import FilterNet, LearnedFilter, position_features
from leapdecode.dllm.unmasking import Fill, Stepwise
from leapdecode.errors import ModelLoadError
from leapdecode.paths import cache_dir


def filter_path(model_dir: Path) -> Path:
    """Where a dLLM's filter lives: named by the checkpoint's path and weights, so a retrained model needs a
    new filter."""
    weights = sorted(model_dir.glob("*.safetensors"))
    stamp = "".join(f"{w.resolve()}:{w.stat().st_size}:{w.stat().st_mtime_ns}" for w in weights)
    return cache_dir() / "dllm" / f"{model_dir.name}-{hashlib.sha1(stamp.encode()).hexdigest()[:10]}.filter.pt"


def load_filter(model_dir: Path) -> FilterNet:
    path = filter_path(model_dir)
    if not path.is_file():
        raise ModelLoadError("method filter needs the filter trained for this model: run `leapdecode train-filter "
                             f"--model {model_dir}` (a few minutes)")
    return FilterNet.load(path)


class TrainedFilter:
    """A model's learned filter: whether one is trained, and its Unmasker at a threshold (loaded on first use)."""

    def __init__(self, model_dir: Path, eos_ids: frozenset[int]) -> None:
        self.model_dir, self.eos_ids = model_dir, eos_ids
        self.net: FilterNet | None = None

    def ready(self) -> bool:
        return self.net is not None or filter_path(self.model_dir).is_file()

    def unmasker(self, threshold: float) -> LearnedFilter:
        if self.net is None:
            self.net = load_filter(self.model_dir)
        return LearnedFilter(self.net, self.eos_ids, threshold)


class _Recorder(Stepwise):
    """Stepwise decoding that keeps each step's features, by block and position, with the token predicted."""

    def __init__(self, eos_ids: frozenset[int]) -> None:
        self.eos_ids, self.steps, self.block = eos_ids, [], -1

    def propose(self, logits: Tensor, state: Tensor, mask_id: int, room: int) -> list[Fill]:
        if bool((state == mask_id).all()):
            self.block += 1
        masked, feats = position_features(logits, state, mask_id, self.eos_ids)
        tokens = logits[masked].float().index_fill(-1, torch.tensor([mask_id]), float("-inf")).argmax(-1)
        self.steps.append((self.block, masked, feats, tokens))
        return super().propose(logits, state, mask_id, room)


def collect(llm: Any, prompts: list[str], max_new: int, block: int) -> tuple[Tensor, Tensor]:
    """(features [N, F], labels [N]) from stepwise runs."""
    feats, labels = [], []
    eos = frozenset(llm.eos_ids)
    for prompt in tqdm(prompts, desc="stepwise runs", unit="prompt"):
        recorder = _Recorder(eos)
        res = llm.generate(prompt, method="stepwise", max_new_tokens=max_new, block_size=block, unmasker=recorder)
        final = res.token_ids
        for b, masked, f, tokens in recorder.steps:
            at = [b * block + int(p) for p in masked]
            truth = [(final[i] == int(t)) if i < len(final) else (int(t) in eos) for i, t in zip(at, tokens)]
            feats.append(f)
            labels.append(torch.tensor(truth, dtype=torch.float32))
    return torch.cat(feats), torch.cat(labels)


def train_filter(llm: Any, prompts: int = 96, max_new: int = 64, block: int = 8, epochs: int = 400,
                 seed: int = 0) -> dict[str, Any]:
    """Collect, fit and save; returns what a person wants to know about it."""
    from leapdecode.dllm.tasks import make_tasks
    from leapdecode.heads.prompts import instructions

    rng = random.Random(seed)
    tasks = [t.prompt for t in make_tasks(4, seed=7000 + seed)]
    texts = rng.sample(tasks, min(len(tasks), prompts * 3 // 4)) + instructions(prompts // 4, seed=seed + 1)
    x, y = collect(llm, texts, max_new, block)
    torch.manual_seed(seed)
    net = FilterNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for _ in range(epochs):
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        p = torch.sigmoid(net(x))
    sure = p >= 0.9
    path = filter_path(llm.checkpoint_dir)
    net.save(path)
    llm.learned.net = net
    return {"path": str(path), "positions": int(y.numel()), "final_share": round(float(y.mean()), 3),
            "loss": round(loss.item(), 4), "precision_at_0.9": round(float(y[sure].mean()) if sure.any() else 0.0, 3),
            "called_final_at_0.9": round(float(sure.float().mean()), 3)}
