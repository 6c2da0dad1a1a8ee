"""`leapdecode train-dllm`: turn an autoregressive model into a block-causal masked-diffusion LM.

AR initialisation (Dream, DiffuLLaMA): the AR model's weights, shifted targets, one new mask token; attention
becomes bidirectional within the block being decoded. Data: the AR model's own greedy answers to synthetic
instructions (as train-head uses) mixed with parallel-tasks problems (a training seed, never the bench's).
Training runs for a time budget with a progress bar and saves a resumable state as it goes.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from leapdecode.dllm.batch import Batch, make_batch
from leapdecode.dllm.checkpoint import from_autoregressive, save
from leapdecode.dllm.network import DiffusionNet
from leapdecode.dllm.tasks import SIZES, TASKS
from leapdecode.paths import cache_dir

TRAIN_SEED_OFFSET = 7919  # task problems for training come from seed + this; the bench's suite uses its own


@dataclass(frozen=True, slots=True)
class DllmTrainConfig:
    minutes: float = 45.0  # training time budget (the answers' generation comes before it)
    batch: int = 8
    lr: float = 1e-4
    block_sizes: tuple[int, ...] = (4, 8, 8, 16)  # drawn per example, so decoding may pick its block size
    block_size: int = 8  # the checkpoint's default block
    answers: int = 384  # AR answers to synthetic instructions
    max_answer: int = 96  # tokens of an AR answer kept
    task_share: float = 0.7  # of the batches: parallel-tasks problems (shorter than answers: cheaper steps)
    seed: int = 0
    save_every: int = 25  # steps between resumable saves


def default_dllm_dir(ar_name: str) -> Path:
    return cache_dir() / "dllm" / f"{Path(ar_name).name}-dllm"


def train_dllm(ar_model: str, out: Path, cfg: DllmTrainConfig, steps: int | None = None) -> dict[str, Any]:
    """Train (or resume) and save the dLLM at `out`. steps: stop after this many (tests); else the budget."""
    from leapdecode.api import LLM
    from leapdecode.heads.corpus import answers

    llm = LLM(model=ar_model)
    cache = out.parent / f"{out.name}.answers-{cfg.answers}x{cfg.max_answer}-seed{cfg.seed}.jsonl"
    samples = answers(llm, cfg.answers, cfg.max_answer, cfg.seed, cache) if cfg.answers else []
    ar_pairs = [(s.prompt_ids, _strip_eos(s.answer_ids, llm.eos_ids)) for s in samples]
    return fit(Trainee.start(llm, out, cfg), ar_pairs, cfg, steps)


def _strip_eos(ids: list[int], eos: set[int]) -> list[int]:
    return ids[:-1] if ids and ids[-1] in eos else ids


@dataclass
class Trainee:
    net: DiffusionNet
    tokenizer: Any
    opt: torch.optim.Optimizer
    out: Path
    step: int = 0
    seconds: float = 0.0

    @staticmethod
    def new(net: DiffusionNet, tokenizer: Any, out: Path, cfg: DllmTrainConfig) -> Trainee:
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=0.0, betas=(0.9, 0.98))
        return Trainee(net, tokenizer, opt, out)

    @staticmethod
    def start(llm: Any, out: Path, cfg: DllmTrainConfig) -> Trainee:
        from transformers import AutoTokenizer

        from leapdecode.models.loader import resolve_checkpoint

        ar_dir = resolve_checkpoint(str(llm.checkpoint_dir))
        tokenizer = AutoTokenizer.from_pretrained(ar_dir)
        trainee = Trainee.new(from_autoregressive(ar_dir, tokenizer, cfg.block_size), tokenizer, out, cfg)
        state = out.parent / f"{out.name}.state.pt"
        if state.is_file():
            saved = torch.load(state, weights_only=False)
            trainee.net.load_state_dict(saved["net"])
            trainee.opt.load_state_dict(saved["opt"])
            trainee.step, trainee.seconds = saved["step"], saved["seconds"]
        return trainee

    def checkpoint(self, cfg: DllmTrainConfig) -> None:
        state = self.out.parent / f"{self.out.name}.state.pt"
        state.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"net": self.net.state_dict(), "opt": self.opt.state_dict(), "step": self.step,
                    "seconds": self.seconds, "config": asdict(cfg)}, state.with_suffix(".tmp"))
        state.with_suffix(".tmp").replace(state)


def fit(tr: Trainee, ar_pairs: list[tuple[list[int], list[int]]], cfg: DllmTrainConfig,
        steps: int | None, task_share: float | None = None, save_final: bool = True) -> dict[str, Any]:
    """Train on a mix of task problems and the given pairs, for `steps` or the time budget."""
    share = cfg.task_share if task_share is None else task_share
    budget = cfg.minutes * 60
    rng = random.Random(cfg.seed * 1_000_003 + tr.step)
    mask_id, eos_id = tr.net.config.mask_token_id, tr.net.config.eos_token_ids[0]
    tr.net.train()
    bar = tqdm(total=steps or int(budget), initial=0 if steps else int(tr.seconds), desc="train-dllm",
               unit="step" if steps else "s")
    losses: list[float] = []
    while (tr.step < steps) if steps else tr.seconds < budget:
        t0 = time.perf_counter()
        for g in tr.opt.param_groups:
            g["lr"] = cfg.lr * min(1.0, (tr.step + 1) / 20) * max(0.1, 1 - tr.seconds / budget)
        # one kind per batch: a batch pads to its longest example, and answers are several times a task's length
        tasks = rng.random() < share or not ar_pairs
        pairs = [task_pair(tr.tokenizer, rng) if tasks else rng.choice(ar_pairs) for _ in range(cfg.batch)]
        ar, dn = _train_step(tr, make_batch(pairs, mask_id, eos_id, rng, cfg.block_sizes))
        losses.append(dn)
        tr.step += 1
        dt = time.perf_counter() - t0
        tr.seconds += dt
        bar.update(1 if steps else int(tr.seconds) - bar.n)
        bar.set_postfix(step=tr.step, ar=f"{ar:.3f}", denoise=f"{dn:.3f}")
        if save_final and tr.step % cfg.save_every == 0:
            tr.checkpoint(cfg)
    bar.close()
    tr.net.eval()
    report = {"steps": tr.step, "minutes": round(tr.seconds / 60, 1), "denoise_loss_last_20": _mean(losses[-20:])}
    if save_final:
        tr.checkpoint(cfg)
        save(tr.net, tr.tokenizer, tr.out, {"leapdecode_training": asdict(cfg) | report})
    return report


def _train_step(tr: Trainee, b: Batch) -> tuple[float, float]:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden, _ = tr.net(b.tokens, b.positions, b.allowed)
        logits = tr.net.logits(hidden[b.rows[:, 0], b.rows[:, 1]])
    losses = F.cross_entropy(logits.float(), b.targets, reduction="none")
    ar, dn = losses[~b.denoising].mean(), losses[b.denoising].mean()
    loss = ar + dn if b.denoising.any() else ar
    tr.opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(tr.net.parameters(), 1.0)
    tr.opt.step()
    return ar.item(), dn.item() if b.denoising.any() else 0.0


def task_pair(tokenizer: Any, rng: random.Random, sizes: tuple[str, ...] = tuple(SIZES),
              weights: tuple[int, ...] = (5, 3, 2)) -> tuple[list[int], list[int]]:
    """A random parallel-tasks problem as (chat prompt ids, answer ids)."""
    size = rng.choices(sizes, weights=weights[: len(sizes)])[0]
    make, _ = TASKS[rng.choice(list(TASKS))]
    prompt, answer = make(rng, rng.randint(*SIZES[size]))
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                         tokenize=False)
    return tokenizer.encode(text, add_special_tokens=False), tokenizer.encode(answer, add_special_tokens=False)


def _mean(xs: list[float]) -> float:
    return round(sum(xs) / len(xs), 4) if xs else float("nan")
