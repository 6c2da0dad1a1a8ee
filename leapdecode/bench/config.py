"""What a benchmark run measures, validated once, and the `leapdecode bench` flags that fill it in."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from leapdecode.bench.prompts import BUILTIN_SETS, prompt_set_name
from leapdecode.dllm.config import DLLM_ONLY, is_variant, split_variant
from leapdecode.errors import LeapError
from leapdecode.method_options import accepts, misplaced
from leapdecode.models.precision import DTYPE_CHOICES

HF_METHODS = ("hf", "hf-pld", "hf-assist")  # transformers generate(): plain greedy, prompt lookup, assistant model
# the methods that run a second, smaller model: --draft-model
DRAFT_MODEL_METHODS = ("draft", "hf-assist", "llamacpp-draft")
LLAMACPP_METHODS = ("llamacpp", "llamacpp-pld")  # llama-cpp-python on the GGUF: the same two (optional extra)
# llama.cpp's own llama-server (scripts/build-llamacpp): plain greedy, draft-model speculation, n-gram cache lookup
LLAMA_SERVER_METHODS = ("llamacpp-server", "llamacpp-draft", "llamacpp-lookup")
OUTSIDE_METHODS = HF_METHODS + LLAMACPP_METHODS + LLAMA_SERVER_METHODS  # each runs in a process of its own
DEFAULT_METHODS = ("hf", "hf-pld", "none", "ngram", "suffix")
AR_PREFIX = "ar:"  # "ar:auto": the autoregressive model (--ar-model) beside a diffusion LM, in the same run
TREE_VARIANT = ":tree"  # "suffix:tree": that method drafting token trees of --tree branches
DEFAULT_TREE = 3  # branches of a :tree variant when --tree is not given


def engine_methods() -> tuple[str, ...]:
    """The engine's drafters, by their registry's names (imported on call: the bench's outside workers and
    the CLI's parser do not load the engine)."""
    from leapdecode.drafters import DRAFTER_METHODS

    return DRAFTER_METHODS


def tree_variants() -> tuple[str, ...]:
    """"M:tree" for every engine method that can draft token trees."""
    from leapdecode.drafters import DRAFTER_METHODS, can_tree

    return tuple(m + TREE_VARIANT for m in DRAFTER_METHODS if can_tree(m))


def base_method(method: str) -> str:
    """The drafting method a bench method runs: "suffix:tree" -> "suffix", "threshold@0.8+dual" -> "threshold"."""
    return split_variant(method)[0] if is_variant(method) else method.removesuffix(TREE_VARIANT)


def with_tree_variants(methods: tuple[str, ...]) -> tuple[str, ...]:
    """Each tree-capable engine method followed by its :tree variant (chain and tree side by side)."""
    variants = tree_variants()
    out: list[str] = []
    for m in methods:
        out += [m] + ([m + TREE_VARIANT] if m + TREE_VARIANT in variants and m + TREE_VARIANT not in methods else [])
    return tuple(out)


@dataclass(frozen=True, slots=True)
class BenchConfig:
    model: str = "smollm2-135m"
    prompts: str = "mt-bench"  # a built-in set's name or a JSONL path
    methods: tuple[str, ...] = DEFAULT_METHODS
    max_new_tokens: int = 256
    limit: int | None = 20  # None: every prompt of the set
    out: Path | None = None  # None: bench-out/<prompt set name>
    dtype: str = "auto"
    threads: int = 2
    warmup: int = 1  # prompts run by every method before timing starts, not counted
    draft_model: str | None = None  # known name or path of the draft for draft and hf-assist (and an arm of auto)
    draft_dtype: str = "auto"  # our draft's own precision (hf-assist runs transformers' draft at --dtype)
    skip_layers: str | None = None  # layerskip: the layers to skip ("3,5,7-12"); None: its cached search
    skip_dtype: str | None = None  # layerskip: the precision its draft pass reads the target's weights at
    tree: int | None = None  # branches of the :tree variants; None: DEFAULT_TREE
    llamacpp_draft_max: int | None = None  # llamacpp-draft: llama.cpp's --spec-draft-n-max; None: its default
    llamacpp_draft_min: int | None = None  # llamacpp-draft: --spec-draft-n-min; None: its default
    block_size: int | None = None  # a diffusion LM's block; None: the model's own
    ar_model: str | None = None  # the AR model of the ar:METHOD contenders; None: the one the dLLM was made from

    def __post_init__(self) -> None:
        known = OUTSIDE_METHODS + engine_methods() + tree_variants() + DLLM_ONLY
        unknown = [m for m in self.methods if m not in known and m.removeprefix(AR_PREFIX) not in engine_methods()
                   and not (is_variant(m) and split_variant(m)[0] in known)]
        if not self.methods or unknown or len(set(self.methods)) != len(self.methods):
            raise LeapError(f"methods {','.join(self.methods)!r}: choose distinct ones from {','.join(known)}")
        for name in ("max_new_tokens", "threads"):
            if getattr(self, name) < 1:
                raise LeapError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise LeapError(f"limit must be >= 1, got {self.limit}")
        if self.warmup < 0:
            raise LeapError(f"warmup must be >= 0, got {self.warmup}")
        if self.tree is not None and self.tree < 2:
            raise LeapError(f"--tree must be >= 2 branches, got {self.tree}")
        needing = [m for m in self.methods if base_method(m) in DRAFT_MODEL_METHODS]
        if needing and not self.draft_model:
            raise LeapError(f"methods {','.join(needing)} need --draft-model NAME|PATH (a smaller model, same tokenizer)")
        for name in ("skip_layers", "skip_dtype"):
            if getattr(self, name) and not any(accepts(base_method(m), name) for m in self.methods):
                raise LeapError(misplaced(name))
        self._check_llamacpp_draft()
        if self.dtype not in DTYPE_CHOICES:
            raise LeapError(f"dtype {self.dtype!r}: choose from {', '.join(DTYPE_CHOICES)}")
        if self.block_size is not None and (self.block_size < 1 or self.max_new_tokens % self.block_size):
            raise LeapError(f"--block-size {self.block_size} must divide --max-new-tokens {self.max_new_tokens}")

    @property
    def ar_methods(self) -> tuple[str, ...]:
        return tuple(m for m in self.methods if m.startswith(AR_PREFIX))

    def _check_llamacpp_draft(self) -> None:
        given = [v for v in (self.llamacpp_draft_max, self.llamacpp_draft_min) if v is not None]
        if given and "llamacpp-draft" not in self.methods:
            raise LeapError("--llamacpp-draft-max/--llamacpp-draft-min go with the llamacpp-draft method")
        if any(v < 0 for v in given):
            raise LeapError(f"--llamacpp-draft-max/--llamacpp-draft-min must be >= 0, got {given}")

    @property
    def tree_width(self) -> int:
        return self.tree if self.tree is not None else DEFAULT_TREE

    @property
    def out_dir(self) -> Path:
        return self.out if self.out is not None else Path("bench-out") / prompt_set_name(self.prompts)


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    sets = ",".join(BUILTIN_SETS)
    defaults = BenchConfig()  # slots=True: the class itself holds descriptors, not the defaults
    parser.add_argument("--model", default=defaults.model, help="known model name, .gguf file or HF directory")
    parser.add_argument("--prompts", default=defaults.prompts, help=f"{sets}, or a .jsonl file")
    parser.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help="comma list; hf, hf-pld, hf-assist: transformers generate() (plain, prompt lookup, assistant_model "
        '= --draft-model); draft: ours with --draft-model; llamacpp, llamacpp-pld: llama-cpp-python '
        '(pip install -e ".[llamacpp]"); llamacpp-server, llamacpp-draft, llamacpp-lookup: llama.cpp\'s own '
        'llama-server plain, with -md --draft-model, with its n-gram cache (scripts/build-llamacpp); '
        'ngram:tree, suffix:tree, ...: that method drafting token trees; a diffusion LM (--model '
        'smollm2-135m-dllm): stepwise, ssd, auto, fixed, threshold, prophet, each with a knob and cache '
        '(threshold@0.9+dual), and ar:METHOD for --ar-model beside it',
    )
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    parser.add_argument("--limit", type=int, default=defaults.limit, help="first K prompts; 0 for all")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default bench-out/<prompts>)")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default=defaults.dtype)
    parser.add_argument("--threads", type=int, default=defaults.threads, help="CPU threads (torch and llama.cpp)")
    parser.add_argument("--warmup", type=int, default=defaults.warmup, help="untimed warm-up prompts")
    parser.add_argument("--draft-model", default=None, help="draft, hf-assist and llamacpp-draft: the draft model (name or path)")
    parser.add_argument("--draft-dtype", default=defaults.draft_dtype, choices=DTYPE_CHOICES,
                        help="method draft: the draft's own precision (auto: a GGUF draft as stored, e.g. int4)")
    parser.add_argument("--skip-layers", default=None,
                        help="layerskip: layers to skip, e.g. 3,5,7-12 (default: search once per model)")
    parser.add_argument("--skip-dtype", default=None, choices=DTYPE_CHOICES,
                        help="layerskip: its draft pass reads the target's own weights at this precision (int4: a "
                             "GGUF target's as stored)")
    parser.add_argument("--tree", type=int, default=None, metavar="N",
                        help=f"run every tree-capable method also as METHOD:tree, drafting token trees of N branches "
                             f"(the :tree methods' width; default {DEFAULT_TREE})")
    parser.add_argument("--llamacpp-draft-max", type=int, default=None, metavar="N",
                        help="llamacpp-draft: llama.cpp's --spec-draft-n-max (default: llama.cpp's own)")
    parser.add_argument("--llamacpp-draft-min", type=int, default=None, metavar="N",
                        help="llamacpp-draft: llama.cpp's --spec-draft-n-min (default: llama.cpp's own)")
    parser.add_argument("--block-size", type=int, default=None,
                        help="diffusion LMs: tokens per block (default: the model's)")
    parser.add_argument("--ar-model", default=None,
                        help="ar:METHOD contenders beside a diffusion LM run on this AR model (default: the one the "
                             "dLLM was trained from)")


def bench_config_from_args(args: argparse.Namespace) -> BenchConfig:
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    return BenchConfig(
        model=args.model,
        prompts=args.prompts,
        methods=with_tree_variants(methods) if args.tree is not None else methods,
        max_new_tokens=args.max_new_tokens,
        limit=args.limit or None,
        out=args.out,
        dtype=args.dtype,
        threads=args.threads,
        warmup=args.warmup,
        draft_model=args.draft_model, draft_dtype=args.draft_dtype,
        skip_layers=args.skip_layers, skip_dtype=args.skip_dtype,
        tree=args.tree,
        llamacpp_draft_max=args.llamacpp_draft_max, llamacpp_draft_min=args.llamacpp_draft_min,
        block_size=args.block_size, ar_model=args.ar_model,
    )
