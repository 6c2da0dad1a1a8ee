"""leapdecode generate | bench | models: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from leapdecode.errors import LeapError
from leapdecode.models.precision import DTYPE_CHOICES

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
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
    from leapdecode.drafters import DRAFTER_METHODS

    p = argparse.ArgumentParser(prog="leapdecode", description="Lossless speculative decoding: same output, faster.")
    sub = p.add_subparsers(title="commands")
    g = sub.add_parser("generate", help="generate text from a prompt")
    g.add_argument("prompt", nargs="?", help="the prompt (else --prompt-file, else standard input)")
    g.add_argument("--prompt-file", help="read the prompt from this file")
    _model_arguments(g)
    g.add_argument("--method", default="suffix", choices=DRAFTER_METHODS, help="drafting method (default: suffix)")
    g.add_argument("--max-new-tokens", type=int, default=256)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    g.add_argument("--raw", action="store_true", help="feed the prompt as plain text, without the chat template")
    g.add_argument("--corpus", help="suffix method: also draft from this text file")
    g.add_argument("--skip-layers", help="layerskip method: layers to skip, e.g. 3,5,7-12 "
                   "(default: found by a short search, once per model)")
    g.add_argument("--json", action="store_true", help="print one JSON object instead of streaming")
    g.add_argument("--compare", action="store_true",
                   help="also decode plainly (method none) and print the speedup and whether the output matches")
    g.set_defaults(run=_generate)
    b = sub.add_parser("bench", help="benchmark methods against Hugging Face generate()")
    from leapdecode.bench import add_bench_arguments

    add_bench_arguments(b)
    b.set_defaults(run=_bench)
    m = sub.add_parser("models", help="list the models known by name and where they are cached")
    m.set_defaults(run=_models)
    return p


def _model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m", help="known name, .gguf file or Hugging Face directory")
    p.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES,
                   help="auto: the fastest this CPU runs well (a GGUF at its stored precision where bf16 is native)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")


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


def _generate(args: argparse.Namespace) -> int:
    from leapdecode.api import LLM, parse_options

    prompt = _read_prompt(args)
    options = _generate_options(args)
    parse_options(options)  # refuse bad settings before spending seconds on loading the model
    if not prompt.strip():
        raise LeapError("the prompt is empty")
    llm = LLM(args.model, dtype=args.dtype, threads=args.threads)
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
          f"{s.mean_accepted:.2f} tokens per target forward · method {args.method} · dtype {llm.precision}]", file=sys.stderr)
    if args.compare:
        cmp = _plain_comparison(llm, ids, options, res)
        print(f"[plain decoding: {cmp['tokens_per_s']:.1f} tok/s · speedup {cmp['speedup']:.2f}x · "
              f"identical output: {'yes' if cmp['identical'] else 'NO'}]", file=sys.stderr)
    return 0


def _generate_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = dict(method=args.method, max_new_tokens=args.max_new_tokens,
                                   temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                                   seed=args.seed, stop=args.stop)
    if args.corpus:
        if args.method != "suffix":
            raise LeapError("--corpus goes with --method suffix")
        options["corpus_path"] = args.corpus
    if args.skip_layers:
        if args.method != "layerskip":
            raise LeapError("--skip-layers goes with --method layerskip")
        options["skip_layers"] = args.skip_layers
    return options


DRAFTER_ONLY = ("corpus_path", "skip_layers")  # options the plain comparison run does not take


def _plain_comparison(llm: Any, ids: list[int], options: dict[str, Any], res: Any) -> dict[str, Any]:
    plain_opts = {k: v for k, v in options.items() if k not in DRAFTER_ONLY} | {"method": "none"}
    plain = llm.generate(prompt_ids=ids, **plain_opts)
    speedup = res.stats.tokens_per_s / plain.stats.tokens_per_s if plain.stats.tokens_per_s else 0.0
    return {"tokens_per_s": round(plain.stats.tokens_per_s, 3), "speedup": round(speedup, 3),
            "identical": plain.token_ids == res.token_ids}


def _bench(args: argparse.Namespace) -> int:
    from leapdecode.bench import bench_config_from_args, run_bench

    run_bench(bench_config_from_args(args))
    return 0


def _models(args: argparse.Namespace) -> int:
    from leapdecode.models.registry import KNOWN_MODELS, gguf_path

    for name, known in KNOWN_MODELS.items():
        path = gguf_path(known)
        where = f"{path} ({path.stat().st_size / 1e6:.0f} MB)" if path.exists() else "not fetched yet"
        print(f"{name:20} {known.package:34} {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
