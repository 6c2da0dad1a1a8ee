"""`leapdecode generate` for a diffusion LM: the same flags, its own methods, --compare against stepwise."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from leapdecode.errors import LeapError

# AR-only flags and the defaults that mean "not given"
_AR_ONLY = {"corpus": None, "draft_model": None, "draft_threshold": None, "skip_layers": None, "window": None,
            "ngram": None, "guesses": None, "head": None, "tree": None, "stop": [], "top_k": 0, "top_p": 1.0,
            "seed": None, "raw": False}


def generate_dllm(args: argparse.Namespace, prompt: str) -> int:
    from leapdecode.dllm.config import DLLM_KNOBS, DLLM_METHODS
    from leapdecode.dllm.llm import DiffusionLLM
    from leapdecode.dllm.methods import DllmOptions

    if args.method not in DLLM_METHODS:
        raise LeapError(f"--method {args.method} is for autoregressive models; a diffusion LM takes "
                        f"{', '.join(DLLM_METHODS)}")
    given = [k for k, default in _AR_ONLY.items() if getattr(args, k, default) != default]
    if given:
        raise LeapError(f"--{given[0].replace('_', '-')} does not apply to a diffusion LM")
    if not prompt.strip():
        raise LeapError("the prompt is empty")
    knobs = {k: getattr(args, k) for k in DLLM_KNOBS}
    options: dict[str, Any] = {"method": args.method, "max_new_tokens": args.max_new_tokens,
                               "block_size": args.block_size, "temperature": args.temperature}
    options |= {k: v for k, v in knobs.items() if v is not None}
    llm = DiffusionLLM(args.model, dtype=args.dtype, threads=args.threads)
    if args.cache:
        options["cache"] = args.cache
    given = DllmOptions(quality=options.get("quality", 1.0), adaptive_blocks=bool(args.adaptive_blocks))
    if not llm.lossless(args.method, given, args.cache):
        what = f"method {args.method}" + (f" with cache {args.cache}" if args.cache else "")
        print(f"[{what} is lossy: the output may differ from stepwise decoding (--compare shows where)]",
              file=sys.stderr)
    ids = llm.encode(prompt)
    res = llm.generate(prompt_ids=ids, **options)
    s = res.stats
    compare = _stepwise_comparison(llm, ids, options, res) if args.compare else None
    if args.json:
        out = {"text": res.text, "token_ids": res.token_ids, "finish_reason": res.finish_reason,
               "method": args.method, "dtype": llm.precision, "stats": s.as_dict()}
        print(json.dumps(out | ({"stepwise": compare} if compare else {})))
        return 0
    print(res.text)
    print(f"\n[{s.new_tokens} tokens in {s.seconds:.2f}s · {s.tokens_per_s:.1f} tok/s · {s.target_forwards} forwards, "
          f"{s.mean_accepted:.2f} tokens per forward · method {args.method} · diffusion LM · dtype {llm.precision}]",
          file=sys.stderr)
    if compare:
        same = "yes" if compare["identical"] else f"no, first differs at token {compare['first_difference']}"
        print(f"[stepwise decoding: {compare['tokens_per_s']:.1f} tok/s, {compare['forwards']} forwards · "
              f"speedup {compare['speedup']:.2f}x · identical output: {same}]", file=sys.stderr)
    return 0


def _stepwise_comparison(llm: Any, ids: list[int], options: dict[str, Any], res: Any) -> dict[str, Any]:
    from leapdecode.bench.divergence import first_difference

    ref = llm.generate(prompt_ids=ids, **(options | {"method": "stepwise", "cache": None, "adaptive_blocks": False}))
    speedup = res.stats.tokens_per_s / ref.stats.tokens_per_s if ref.stats.tokens_per_s else 0.0
    return {"tokens_per_s": round(ref.stats.tokens_per_s, 3), "forwards": ref.stats.target_forwards,
            "speedup": round(speedup, 3), "identical": ref.token_ids == res.token_ids,
            "first_difference": first_difference(ref.token_ids, res.token_ids)}

