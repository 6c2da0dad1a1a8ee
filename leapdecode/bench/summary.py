"""Per-method numbers from the raw records: throughput, speedups, acceptance, agreement with the reference."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection
from typing import Any

from leapdecode.bench.breakdown import breakdown
from leapdecode.bench.config import AR_PREFIX
from leapdecode.bench.record import RunRecord

REFERENCE = "hf"  # plain transformers greedy: the output every method must reproduce and the speed to beat
# a speedup_vs_<base> column for each one that ran
SPEED_BASES = (REFERENCE, "hf-pld", "llamacpp", "llamacpp-server", "llamacpp-draft", "stepwise")
# A prompt-lookup mode and the plain greedy of the same runtime: PLD should reproduce its own plain output
# even where that runtime's numerics differ from hf's.
# leapdecode's speculative methods must reproduce its own plain decoding (`none`) at every dtype.
OWN_PLAIN = {"hf-pld": "hf", "hf-assist": "hf", "llamacpp-pld": "llamacpp", "llamacpp-draft": "llamacpp-server",
             "llamacpp-lookup": "llamacpp-server"}
OUTSIDE = ("hf", "llamacpp", "llamacpp-server")  # runtimes other than ours: their plain modes have no `none` to match


def own_plain(method: str, ran: Collection[str] = ()) -> str:
    """The plain decoding a method must reproduce: stepwise for a diffusion LM's methods, ar:none for an AR
    model's beside one, else none (or the outside runtime's own plain mode)."""
    if method in OWN_PLAIN:
        return OWN_PLAIN[method]
    if method.startswith(AR_PREFIX):
        return "" if method == AR_PREFIX + "none" else AR_PREFIX + "none"
    if "stepwise" in ran:
        return "" if method == "stepwise" else "stepwise"
    return "" if method in OUTSIDE or method == "none" else "none"


def summarise(records: list[RunRecord], models_rss: dict[str, float] | None = None) -> dict[str, dict[str, Any]]:
    """Method -> overall stats plus a per-category breakdown, methods in first-seen order (unrounded).
    models_rss: method -> peak RSS with its models loaded (engine methods; see harness)."""
    by_method = _group(records, lambda r: r.method)
    reference = {r.prompt_id: r.token_ids for r in by_method.get(REFERENCE, [])}
    out: dict[str, dict[str, Any]] = {}
    for method, recs in by_method.items():
        plain = {r.prompt_id: r.token_ids for r in by_method.get(own_plain(method, by_method), [])}
        out[method] = _stats(recs, reference) | {
            "exact_match_vs_plain": _exact_match(recs, plain),  # None: no plain counterpart ran
            "peak_rss_mb": max(r.peak_rss_mb for r in recs),
            "peak_rss_models_mb": (models_rss or {}).get(method),
            "by_category": {cat: _stats(rs, reference) for cat, rs in _group(recs, lambda r: r.category).items()},
            "accuracy_by_level": {lv: _accuracy(rs) for lv, rs in _group(recs, lambda r: r.level).items() if lv},
        } | breakdown(recs) | _structure(recs)
    _add_speedups(out)
    return out


def _stats(recs: list[RunRecord], reference: dict[str, list[int]]) -> dict[str, Any]:
    tokens = sum(r.new_tokens for r in recs)
    seconds = sum(r.seconds for r in recs)
    # Total tokens over total time: long answers weigh more, as they do for a user waiting on them.
    return {
        "prompts": len(recs),
        "new_tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
        "mean_accepted": _mean_accepted(recs),
        "exact_match_rate": _exact_match(recs, reference),
        "accuracy": _accuracy(recs),
    }


def _structure(recs: list[RunRecord]) -> dict[str, Any]:
    """Structured prompts: the share of answers that ended before max_new_tokens, valid-JSON and schema-valid
    rates among those (an answer cut short is a JSON prefix), the share of emitted tokens the grammar forced
    (drafted for free, accepted), and the grammar's share of the time (its masks and forced tokens)."""
    judged = [r for r in recs if r.valid_json is not None]
    if not judged:
        return {}
    ended = [r for r in judged if r.finish_reason == "stop"]
    tokens = sum(r.new_tokens for r in judged)
    seconds = sum(r.seconds for r in judged)
    drafted = sum(r.engine_stats.get("grammar_forced", 0) for r in judged)
    masking = sum(r.engine_stats.get("grammar_seconds", 0.0) for r in judged)
    return {"finished_rate": len(ended) / len(judged),
            "valid_json_rate": sum(bool(r.valid_json) for r in ended) / len(ended) if ended else None,
            "schema_valid_rate": sum(bool(r.schema_valid) for r in ended) / len(ended) if ended else None,
            "grammar_token_share": drafted / tokens if tokens and any(r.engine_stats for r in judged) else None,
            "grammar_time_share": masking / seconds if seconds and any(r.engine_stats for r in judged) else None}


def _accuracy(recs: list[RunRecord]) -> float | None:
    """Share of checkable answers that were right; None where no prompt had one."""
    judged = [r.correct for r in recs if r.correct is not None]
    return sum(judged) / len(judged) if judged else None


def _mean_accepted(recs: list[RunRecord]) -> float | None:
    """Tokens per target forward over all prompts: total tokens / total forwards, not a mean of ratios."""
    if any(r.mean_accepted is None for r in recs):
        return None
    forwards = sum(r.new_tokens / r.mean_accepted for r in recs if r.mean_accepted)
    return sum(r.new_tokens for r in recs) / forwards if forwards else None


def _exact_match(recs: list[RunRecord], reference: dict[str, list[int]]) -> float | None:
    compared = [r for r in recs if r.prompt_id in reference]
    if not compared:
        return None
    return sum(r.token_ids == reference[r.prompt_id] for r in compared) / len(compared)


def _add_speedups(out: dict[str, dict[str, Any]]) -> None:
    """speedup_vs_<base> = tok/s / base's tok/s, overall and per category (None when the base was not run)."""
    for base in SPEED_BASES:
        key = "speedup_vs_" + base.replace("-", "_")
        for stats in out.values():
            stats[key] = _ratio(stats, out.get(base))
            for cat, cat_stats in stats["by_category"].items():
                base_cat = out[base]["by_category"].get(cat) if base in out else None
                cat_stats[key] = _ratio(cat_stats, base_cat)


def _ratio(stats: dict[str, Any], base: dict[str, Any] | None) -> float | None:
    if base is None or not base["tokens_per_s"]:
        return None
    return stats["tokens_per_s"] / base["tokens_per_s"]


def _group(recs: list[RunRecord], key: Callable[[RunRecord], str]) -> dict[str, list[RunRecord]]:
    groups: dict[str, list[RunRecord]] = defaultdict(list)
    for r in recs:
        groups[key(r)].append(r)
    return dict(groups)
