"""leapdecode generate | bench | models: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leapdecode.errors import LeapError
from leapdecode.models.precision import DTYPE_CHOICES

if TYPE_CHECKING:
    from leapdecode.server import ServerConfig


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models are local; the bench's and serve's processes inherit it
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except LeapError as exc:
        print(f"leapdecode: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    from leapdecode.dllm.config import DLLM_ONLY
    from leapdecode.drafters import DRAFTER_METHODS

    p = argparse.ArgumentParser(prog="leapdecode", description="Lossless speculative decoding: same output, faster.")
    sub = p.add_subparsers(title="commands")
    g = sub.add_parser("generate", help="generate text from a prompt")
    g.add_argument("prompt", nargs="?", help="the prompt (else --prompt-file, else standard input)")
    g.add_argument("--prompt-file", help="read the prompt from this file")
    _model_arguments(g)
    g.add_argument("--method", default="auto", choices=DRAFTER_METHODS + DLLM_ONLY,
                   help="drafting method (default: auto, which picks among the others per step); for a diffusion "
                        "LM: stepwise (one token per forward), ssd (self-speculative, identical), auto, or the "
                        "lossy fixed, threshold, prophet")
    _dllm_arguments(g)
    g.add_argument("--max-new-tokens", type=int, default=256)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    g.add_argument("--raw", action="store_true", help="feed the prompt as plain text, without the chat template")
    _constraint_arguments(g)
    g.add_argument("--corpus", help="suffix method: also draft from this text file")
    g.add_argument("--draft-model", help="draft method (or an arm of auto): a smaller model with the same tokenizer "
                                         "(known name or path)")
    g.add_argument("--draft-threshold", type=float, default=None,
                   help="draft method: stop a draft after a token the draft model gives less than this "
                        "probability (default 0.4; 0: always the full draft length)")
    _draft_dtype_argument(g)
    g.add_argument("--skip-layers", help="layerskip method: layers to skip, e.g. 3,5,7-12 "
                   "(default: found by a short search, once per model)")
    _skip_dtype_argument(g)
    g.add_argument("--window", type=int, default=None,
                   help="lookahead method (with auto: adds a lookahead arm): columns of the Jacobi window "
                        "(default 4; wider finds more, costs rows)")
    g.add_argument("--ngram", type=int, default=None,
                   help="lookahead method: n-gram size, the window's levels + 1 and the longest guess + 1 (default 4)")
    g.add_argument("--guesses", type=int, default=None,
                   help="lookahead method: pool candidates verified per step (default 3)")
    g.add_argument("--head", help="eagle method: a trained draft head file (default: the one `leapdecode train-head` "
                                  "saved for this model); with --method auto, an arm it may pick")
    _tree_argument(g)
    g.add_argument("--json", action="store_true", help="print one JSON object instead of streaming")
    g.add_argument("--compare", action="store_true",
                   help="also decode plainly (method none) and print the speedup and whether the output matches")
    g.set_defaults(run=_generate)
    b = sub.add_parser("bench", help="benchmark methods against Hugging Face generate()")
    from leapdecode.bench import add_bench_arguments

    add_bench_arguments(b)
    b.set_defaults(run=_bench)
    s = sub.add_parser("serve", help="an OpenAI-compatible server that batches and speculates")
    _server_arguments(s)
    s.set_defaults(run=_serve)
    r = sub.add_parser("serve-replicas", help="the same server, several replicas behind Ray Serve's load balancer "
                                              "(needs: pip install -e '.[ray]')")
    _server_arguments(r)
    r.add_argument("--replicas", type=int, default=2, help="engines, each with its own copy of the model")
    r.add_argument("--threads-per-replica", type=int, default=None,
                   help="torch threads in each replica (default: this machine's cores // --replicas)")
    r.add_argument("--ray-address", default=None,
                   help="join this running Ray cluster (e.g. auto, on one of its nodes) instead of starting one here")
    r.set_defaults(run=_serve_replicas)
    bs = sub.add_parser("bench-serve", help="load-test a server: throughput and latency per concurrency, "
                                            "speculation on and off")
    from leapdecode.bench.serve_bench import add_bench_serve_arguments

    add_bench_serve_arguments(bs)
    bs.set_defaults(run=_bench_serve)
    t = sub.add_parser("train-head", help="train an EAGLE-style draft head for --method eagle on the model's own "
                                          "answers (CPU: minutes to an hour)")
    _model_arguments(t)
    t.add_argument("--prompts", type=int, default=1600, help="synthetic instructions the model answers")
    t.add_argument("--max-new-tokens", type=int, default=192, help="tokens per answer")
    t.add_argument("--epochs", type=int, default=6)
    t.add_argument("--seed", type=int, default=0, help="which instructions are drawn, and the training order")
    t.add_argument("--out", help="where to save the head (default: where --method eagle looks for this model)")
    t.set_defaults(run=_train_head)
    d = sub.add_parser("train-dllm", help="make a diffusion LM from an AR model (masked diffusion, AR-initialised; "
                                          "CPU: about an hour), cached as --model smollm2-135m-dllm")
    d.add_argument("--model", default="smollm2-135m", help="the autoregressive model to start from")
    d.add_argument("--minutes", type=float, default=45.0, help="training time budget (resumes where it stopped)")
    d.add_argument("--answers", type=int, default=384, help="synthetic instructions the AR model answers")
    d.add_argument("--task-share", type=float, default=0.7,
                   help="share of training batches that are parallel-tasks problems (the rest: the AR model's answers)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    d.add_argument("--out", help="where to save it (default: the cache, where its known name finds it)")
    d.set_defaults(run=_train_dllm)
    f = sub.add_parser("train-filter", help="train the learned filter of --method filter on a diffusion LM's own "
                                            "stepwise runs (minutes)")
    f.add_argument("--model", default="smollm2-135m-dllm", help="known dLLM name or checkpoint directory")
    f.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES)
    f.add_argument("--threads", type=int, default=None)
    f.add_argument("--prompts", type=int, default=96, help="training prompts decoded stepwise")
    f.add_argument("--max-new-tokens", type=int, default=64)
    f.add_argument("--block-size", type=int, default=8)
    f.add_argument("--seed", type=int, default=0)
    f.set_defaults(run=_train_filter)
    x = sub.add_parser("export-gguf", help="write a diffusion LM as a GGUF file for llama.cpp's diffusion runner "
                                           "(its dream architecture)")
    x.add_argument("--model", default="smollm2-135m-dllm", help="known dLLM name or checkpoint directory")
    x.add_argument("--out", required=True, help="the .gguf file to write")
    x.add_argument("--dtype", default="float32", choices=("float32", "float16"))
    x.set_defaults(run=_export_gguf)
    m = sub.add_parser("models", help="list the models known by name and where they are cached")
    m.set_defaults(run=_models)
    return p


def _model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m", help="known name, .gguf file or Hugging Face directory")
    p.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES,
                   help="auto: the fastest this CPU runs well (a GGUF at its stored precision where bf16 is native)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")


def _skip_dtype_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--skip-dtype", default=None, choices=DTYPE_CHOICES,
                   help="layerskip method (or auto, as one of its arms): the draft pass reads the target's own "
                        "weights at this precision (int4: a GGUF target's weights as stored; default: the target's "
                        "own precision)")


def _draft_dtype_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--draft-dtype", default="auto", choices=DTYPE_CHOICES,
                   help="the draft model's own precision (auto: a GGUF draft at its stored precision, e.g. int4, "
                        "else the target's); lossless at any, the target verifies every token")
def _tree_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tree", type=int, default=None, metavar="N",
                   help=f"{', '.join(_tree_methods())}: draft a token tree of up to N alternative branches, "
                        "verified in one forward (default: a chain)")


def _tree_methods() -> list[str]:
    from leapdecode.drafters import DRAFTER_METHODS, can_tree

    return [m for m in DRAFTER_METHODS if can_tree(m)]


def _server_arguments(p: argparse.ArgumentParser) -> None:
    from leapdecode.dllm.config import DLLM_ONLY
    from leapdecode.drafters import DRAFTER_METHODS

    _model_arguments(p)
    p.add_argument("--method", default=None, choices=DRAFTER_METHODS + DLLM_ONLY,
                   help="default drafting method (a request may name another; 'none' turns speculation off); "
                        "default suffix, or auto for a diffusion LM")
    p.add_argument("--draft-model", help="method draft, and an arm of auto: the smaller model with the same tokenizer "
                                         "(name or path)")
    _draft_dtype_argument(p)
    p.add_argument("--skip-layers", help="method layerskip, and an arm of auto: the layers its draft skips "
                                         "(default: found once per model)")
    _skip_dtype_argument(p)
    _tree_argument(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-model-name", help="the model id clients send (default: --model)")
    p.add_argument("--max-batch", type=int, default=16, help="requests decoding together")
    p.add_argument("--max-queue", type=int, default=64, help="requests waiting; beyond this answers 429")
    p.add_argument("--fixed-drafts", action="store_true",
                   help="verify every draft whole instead of trimming drafts by measured step cost under load")
    p.add_argument("--shutdown-grace", type=float, default=30.0, help="seconds to finish running requests on SIGTERM")


def _read_prompt(args: argparse.Namespace) -> str:
    if args.prompt is not None:
        return args.prompt
    if args.prompt_file:
        try:
            with open(args.prompt_file, encoding="utf-8") as f:
                return f.read()
        except OSError as exc:
            raise LeapError(f"cannot read prompt file {args.prompt_file}: {exc.strerror}") from exc
    if sys.stdin.isatty():
        raise LeapError("no prompt: pass one as an argument, with --prompt-file, or on standard input")
    return sys.stdin.read()


def _dllm_arguments(g: argparse.ArgumentParser) -> None:
    from leapdecode.dllm.config import DLLM_CACHES

    d = g.add_argument_group("diffusion LMs")
    d.add_argument("--block-size", type=int, default=None, help="tokens per semi-autoregressive block "
                                                                  "(default: the model's)")
    d.add_argument("--parallel", type=int, default=None, help="fixed method: tokens filled per forward (default 2)")
    d.add_argument("--confidence", type=float, default=None,
                   help="threshold method: fill every position whose top token is at least this likely "
                        "(default 0.9)")
    d.add_argument("--commit-gap", type=float, default=None,
                   help="prophet method (and auto below quality 1): commit the rest of the block once the mean "
                        "top-2 log-probability gap reaches this (default 5.0)")
    d.add_argument("--filter-threshold", type=float, default=None,
                   help="filter method: fill every position the learned filter calls final at least this surely "
                        "(default 0.9; train it first: leapdecode train-filter)")
    d.add_argument("--end-of-text", type=float, default=None,
                   help="lossy methods: once an end token is at least this likely, fill it and the padding after "
                        "it in the same step (default 0.9; 0: off)")
    d.add_argument("--adaptive-blocks", action="store_true", default=None,
                   help="block sizes that follow the text (AdaBlock): a block ends at the first sure newline or "
                        "sentence mark within twice --block-size (lossy; block-causal models)")
    d.add_argument("--quality", type=float, default=None,
                   help="auto: 1 (default) = identical to stepwise decoding; below 1, faster and possibly "
                        "different: confidence-threshold filling at this value plus early commit")
    d.add_argument("--cache", default=None, choices=DLLM_CACHES,
                   help="keys and values reused across a block's steps (default: the exact one, prefix on a "
                        "block-causal model, none on a bidirectional one; prefix and dual are approximate there)")


def _dllm_flags() -> tuple[str, ...]:
    from leapdecode.dllm.config import DLLM_KNOBS

    return ("block_size", *DLLM_KNOBS, "cache")


def _generate(args: argparse.Namespace) -> int:
    from leapdecode.api import LLM, parse_options
    from leapdecode.dllm.config import DLLM_ONLY
    from leapdecode.dllm.model import is_dllm

    prompt = _read_prompt(args)
    if is_dllm(args.model):
        from leapdecode.dllm.cli import generate_dllm

        if _constrained(args):
            raise LeapError("structured output (--json-object, --json-schema, --regex, --grammar) is for "
                            "autoregressive models; a diffusion LM fills its block in any order")
        return generate_dllm(args, prompt)
    given = [f for f in _dllm_flags() if getattr(args, f) is not None]
    if given or args.method in DLLM_ONLY:
        what = f"--{given[0].replace('_', '-')}" if given else f"--method {args.method}"
        raise LeapError(f"{what} is for diffusion LMs (e.g. --model smollm2-135m-dllm); {args.model} is autoregressive")
    options = _generate_options(args)
    parse_options(options)  # refuse bad settings before spending seconds on loading the model
    if not prompt.strip():
        raise LeapError("the prompt is empty")
    llm = LLM(args.model, dtype=args.dtype, threads=args.threads)
    if args.draft_model:  # loaded (and its tokenizer checked) now, so the timed generation does not pay for it
        llm.drafts.load(args.draft_model, args.draft_dtype)
    if args.skip_dtype:  # likewise the target's weights at the precision layerskip drafts with
        llm.drafts.load_self(args.skip_dtype)
    if args.method == "eagle" or args.head:  # likewise the head
        llm.heads.load(args.head)
    if _constrained(args):  # likewise the vocabulary the grammar walks (about a second)
        llm.grammar_vocab
    ids = llm.encode(prompt, raw=args.raw)
    if args.json:
        res = llm.generate(prompt_ids=ids, **options)
        out: dict[str, Any] = {"text": res.text, "token_ids": res.token_ids, "finish_reason": res.finish_reason,
                               "method": args.method, "dtype": llm.precision, "stats": res.stats.as_dict()}
        if args.compare:
            out["plain"] = _plain_comparison(llm, ids, options, res)
        print(json.dumps(out))
        return 0
    run = llm.stream(prompt_ids=ids, **options)
    for piece in run:
        print(piece, end="", flush=True)
    res = run.result()
    s = res.stats
    print(f"\n\n[{s.new_tokens} tokens in {s.seconds:.2f}s · {s.tokens_per_s:.1f} tok/s · "
          f"{s.mean_accepted:.2f} tokens per target forward · method {args.method}{_arms(s.arms)} · "
          f"dtype {llm.precision}]", file=sys.stderr)
    if args.compare:
        cmp = _plain_comparison(llm, ids, options, res)
        print(f"[plain decoding: {cmp['tokens_per_s']:.1f} tok/s · speedup {cmp['speedup']:.2f}x · "
              f"identical output: {'yes' if cmp['identical'] else 'NO'}]", file=sys.stderr)
    return 0


def _constraint_arguments(g: argparse.ArgumentParser) -> None:
    c = g.add_argument_group("structured output (one of; every method stays identical to constrained plain decoding)")
    c.add_argument("--json-object", action="store_true", help="the answer is a JSON object")
    c.add_argument("--json-schema", metavar="FILE", help="the answer follows this JSON schema")
    c.add_argument("--regex", help="the answer matches this regular expression")
    c.add_argument("--grammar", metavar="FILE", help="the answer follows this grammar (Lark, or llama.cpp's GBNF)")


def _constrained(args: argparse.Namespace) -> bool:
    """Whether a structured-output flag was given (its file is read once, by _constraint_options)."""
    return args.json_object or any(v is not None for v in (args.json_schema, args.regex, args.grammar))


def _constraint_options(args: argparse.Namespace) -> dict[str, Any]:
    """The output constraint given on the command line, as generate()'s options."""
    given = {"response_format": {"type": "json_object"} if args.json_object else None, "regex": args.regex,
             "json_schema": _read_text(args.json_schema, "--json-schema"),
             "grammar": _read_text(args.grammar, "--grammar")}
    named = [k for k, v in given.items() if v is not None]
    if len(named) > 1:
        raise LeapError("give one of --json-object, --json-schema, --regex and --grammar")
    return {k: v for k, v in given.items() if v is not None}


def _read_text(path: str | None, flag: str) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).read_text()
    except OSError as e:
        raise LeapError(f"{flag}: cannot read {path}: {e.strerror}") from e


def _arms(arms: dict[str, int]) -> str:
    """auto's steps per arm, e.g. ' (suffix 40, none 12)'; nothing for other methods."""
    return f" ({', '.join(f'{a} {n}' for a, n in sorted(arms.items(), key=lambda x: -x[1]))})" if arms else ""


def _generate_options(args: argparse.Namespace) -> dict[str, Any]:
    from leapdecode.drafters import required_options
    from leapdecode.method_options import BY_NAME, check_options

    options: dict[str, Any] = dict(method=args.method, max_new_tokens=args.max_new_tokens,
                                   temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                                   seed=args.seed, stop=args.stop, **_constraint_options(args))
    given = _method_options(args)
    check_options(args.method, given)
    missing = [BY_NAME[name].flag for name in required_options(args.method) if name not in given]
    if missing:
        raise LeapError(f"--method {args.method} needs {', '.join(missing)}")
    if args.tree is not None:
        given["tree"] = _tree_width(args.method, args.tree)
    return options | given


def _method_options(args: argparse.Namespace) -> dict[str, Any]:
    """The method options (method_options.py) given on the command line."""
    from leapdecode.method_options import OPTIONS

    given = {o.name: getattr(args, o.cli or o.name) for o in OPTIONS}
    if given["draft_dtype"] == "auto":  # the default: a draft model's precision as stored
        del given["draft_dtype"]
    return {k: v for k, v in given.items() if v is not None}


def _tree_width(method: str, tree: int) -> int:
    """--tree, checked before the model loads: a width for a method that can tree."""
    from leapdecode.decode.tree import tree_width

    if tree_width(tree) and method not in _tree_methods():
        raise LeapError(f"method {method} cannot propose token trees (--tree goes with {' or '.join(_tree_methods())})")
    return tree


def _plain_comparison(llm: Any, ids: list[int], options: dict[str, Any], res: Any) -> dict[str, Any]:
    from leapdecode.method_options import BY_NAME

    plain_opts = {k: v for k, v in options.items() if k not in BY_NAME and k != "tree"} | {"method": "none"}
    plain = llm.generate(prompt_ids=ids, **plain_opts)
    speedup = res.stats.tokens_per_s / plain.stats.tokens_per_s if plain.stats.tokens_per_s else 0.0
    return {"tokens_per_s": round(plain.stats.tokens_per_s, 3), "speedup": round(speedup, 3),
            "identical": plain.token_ids == res.token_ids}


def _bench(args: argparse.Namespace) -> int:
    from leapdecode.bench import bench_config_from_args, run_bench

    run_bench(bench_config_from_args(args))
    return 0


def _server_config(args: argparse.Namespace) -> ServerConfig:
    from leapdecode.dllm.model import is_dllm
    from leapdecode.server import ServerConfig

    method = args.method or ("auto" if is_dllm(args.model) else "suffix")
    return ServerConfig(model=args.model, dtype=args.dtype, method=method, threads=args.threads,
                        served_name=args.served_model_name, max_batch=args.max_batch, max_queue=args.max_queue,
                        adaptive=not args.fixed_drafts, shutdown_grace=args.shutdown_grace,
                        draft_model=args.draft_model, draft_dtype=args.draft_dtype, tree=args.tree or 0,
                        skip_layers=args.skip_layers, skip_dtype=args.skip_dtype)


def _serve(args: argparse.Namespace) -> int:
    from leapdecode.server import serve

    serve(_server_config(args), host=args.host, port=args.port)
    return 0


def _serve_replicas(args: argparse.Namespace) -> int:
    if args.threads is not None:
        raise LeapError("serve-replicas takes --threads-per-replica, not --threads")
    # Ray is an optional extra, imported only here; without it this import raises the install hint.
    from leapdecode.server.replicas import ReplicaConfig, serve_replicas

    config = ReplicaConfig(_server_config(args), replicas=args.replicas, threads_per_replica=args.threads_per_replica,
                           ray_address=args.ray_address)
    serve_replicas(config, host=args.host, port=args.port)
    return 0


def _bench_serve(args: argparse.Namespace) -> int:
    from leapdecode.bench.serve_bench import run_bench_serve

    run_bench_serve(args)
    return 0


def _train_head(args: argparse.Namespace) -> int:
    from pathlib import Path

    from leapdecode.api import LLM
    from leapdecode.heads.head_store import default_head_path
    from leapdecode.heads.training import TrainConfig, train_head

    if args.prompts < 2 or args.max_new_tokens < 1 or args.epochs < 1:
        raise LeapError("need --prompts >= 2, --max-new-tokens >= 1 and --epochs >= 1")
    from leapdecode.dllm.model import require_autoregressive

    require_autoregressive(args.model, "draft heads are for autoregressive models")
    llm = LLM(args.model, dtype=args.dtype, threads=args.threads)
    out = Path(args.out) if args.out else default_head_path(llm.checkpoint_dir)
    report = train_head(llm, args.prompts, args.max_new_tokens, TrainConfig(epochs=args.epochs, seed=args.seed), out)
    steps = ", ".join(f"{a:.1%}" for a in report.step_accuracy)
    print(f"saved {out}\nheld-out agreement with the model per draft step: {steps}; "
          f"{report.tokens_per_forward:.2f} tokens per forward for a {len(report.step_accuracy)}-token chain "
          f"({report.train_tokens} answer tokens trained on; its vocabulary covers {report.vocab_coverage:.1%})")
    return 0


def _train_filter(args: argparse.Namespace) -> int:
    from leapdecode.dllm.filter_training import train_filter
    from leapdecode.dllm.llm import DiffusionLLM
    from leapdecode.dllm.model import is_dllm

    if not is_dllm(args.model):
        raise LeapError(f"{args.model} is not a diffusion LM: train-filter is for --method filter on one")
    if args.prompts < 4 or args.block_size < 1 or args.max_new_tokens % args.block_size:
        raise LeapError("--prompts must be >= 4 and --block-size must divide --max-new-tokens")
    llm = DiffusionLLM(args.model, dtype=args.dtype, threads=args.threads)
    report = train_filter(llm, args.prompts, args.max_new_tokens, args.block_size, seed=args.seed)
    print(json.dumps(report))
    return 0


def _train_dllm(args: argparse.Namespace) -> int:
    from pathlib import Path

    from leapdecode.dllm.training import DllmTrainConfig, default_dllm_dir, train_dllm

    if args.minutes <= 0 or args.answers < 0 or not 0 <= args.task_share <= 1:
        raise LeapError("need --minutes > 0, --answers >= 0 and --task-share between 0 and 1")
    from leapdecode.dllm.model import require_autoregressive

    require_autoregressive(args.model, "train-dllm starts from an autoregressive model")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else default_dllm_dir(args.model)
    cfg = DllmTrainConfig(minutes=args.minutes, answers=args.answers, seed=args.seed, task_share=args.task_share)
    report = train_dllm(args.model, out, cfg)
    print(f"saved {out}: {report['steps']} steps in {report['minutes']} min, "
          f"denoising loss {report['denoise_loss_last_20']} (last 20 steps)")
    return 0


def _export_gguf(args: argparse.Namespace) -> int:
    from pathlib import Path

    from leapdecode.dllm.gguf_export import export_gguf
    from leapdecode.dllm.model import is_dllm, resolve_dllm

    if not is_dllm(args.model):
        raise LeapError(f"{args.model} is not a diffusion LM (export-gguf writes dLLMs; AR models have GGUFs already)")
    out = export_gguf(resolve_dllm(args.model), Path(args.out), args.dtype)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.0f} MB, llama.cpp arch dream)")
    return 0


def _models(args: argparse.Namespace) -> int:
    from leapdecode.models.registry import KNOWN_MODELS, gguf_path

    for name, known in KNOWN_MODELS.items():
        path = gguf_path(known)
        where = f"{path} ({path.stat().st_size / 1e6:.0f} MB)" if path.exists() else "not fetched yet"
        print(f"{name:20} {known.package:34} {where}")
    from leapdecode.dllm.model import KNOWN_DLLMS
    from leapdecode.dllm.training import default_dllm_dir

    for name, source in KNOWN_DLLMS.items():
        path = default_dllm_dir(source)
        where = path if (path / "config.json").is_file() else "not trained yet"
        print(f"{name:20} {'leapdecode train-dllm (from ' + source + ')':34} {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
