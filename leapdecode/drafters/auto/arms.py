"""The arms auto may choose from: each a registered method with its options. Adding one is one line of ARMS."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from leapdecode.drafters.auto.drafter import PLAIN, ArmDrafter
from leapdecode.drafters.base import Drafter
from leapdecode.drafters.resources import DrafterResources
from leapdecode.errors import InvalidRequest
from leapdecode.method_options import options_of
from leapdecode.types import SamplingParams


@dataclass(frozen=True, slots=True)
class Arm:
    method: str  # a name make_drafter knows
    cheap: bool = False  # model-free: auto proposes it every step and scores it for free
    options: Mapping[str, Any] = field(default_factory=dict)  # fixed options of the method
    needs: tuple[str, ...] = ()  # of the options it takes, one must be given, else the arm is left out
    name: str = ""  # what stats and `arms=` call it; the method's name by default
    opt_in: bool = False  # left out unless `arms=` names it or the request gives one of the options it takes

    @property
    def label(self) -> str:
        return self.name or self.method

    @property
    def takes(self) -> tuple[str, ...]:
        """The request's options passed on to the method: its arm options in method_options.OPTIONS."""
        return options_of(self.method, arms_only=True)


ARMS: tuple[Arm, ...] = (
    Arm("suffix", cheap=True),
    Arm("ngram", cheap=True),
    Arm("draft", needs=("draft_model",)),
    # a set given, or a cheaper precision to draft at (the search then finds the set, once per model)
    Arm("layerskip", needs=("skip_layers", "skip_dtype")),
    Arm("eagle", needs=("head",)),  # head None (Python): the model's own trained head
    # Its window's rows cost compute on every step it runs: worth it where a forward's rows come nearly free
    # (a GPU), rarely on a CPU, so auto runs it only when asked to.
    Arm("lookahead", opt_in=True),
)
AUTO_OPTIONS = tuple(sorted({o for arm in ARMS for o in arm.takes}))  # ("draft_model", ...)


def build_arms(make: Callable[..., Drafter], given: Mapping[str, Any], resources: DrafterResources,
               only: str | Sequence[str] | None = None) -> list[ArmDrafter]:
    """The arms this request can run: every one whose needed options are given (or those named in `only`).

    Arms draft deterministically (greedy params): verification of a deterministic draft then samples the
    target's own token at each position, so a seeded request gets the same text whichever arm ran when."""
    unknown = sorted(set(given) - set(AUTO_OPTIONS))
    if unknown:
        raise InvalidRequest(f"auto takes the options arms, {', '.join(AUTO_OPTIONS)}; not {', '.join(unknown)}")
    arms = [a for a in ARMS if not a.needs or any(o in given for o in a.needs)]
    if only is not None:
        arms = _named(arms, only)
    else:
        arms = [a for a in arms if not a.opt_in or any(o in given for o in a.takes)]
    drafting = replace(resources, params=SamplingParams())
    return [ArmDrafter(a.label, make(a.method, drafting, **dict(a.options), **_taken(a, given)), a.cheap)
            for a in arms]


def _named(arms: list[Arm], only: str | Sequence[str]) -> list[Arm]:
    """The arms `only` names ("suffix,ngram"; "none" alone: plain decoding, as auto can always choose it)."""
    names = [n.strip() for n in (only.split(",") if isinstance(only, str) else only) if n.strip()]
    available = {a.label: a for a in arms}
    missing = [n for n in names if n not in available and n != PLAIN]
    if missing or not names:
        known = ", ".join([PLAIN, *available])
        raise InvalidRequest(f"auto arms {','.join(names)!r}: choose from {known} (draft needs draft_model, "
                             f"layerskip skip_layers or skip_dtype, eagle a trained head)")
    return [available[n] for n in names if n != PLAIN]


def _taken(arm: Arm, given: Mapping[str, Any]) -> dict[str, Any]:
    return {o: given[o] for o in arm.takes if o in given}
