"""Which option goes with which method: the one table that the CLI, the bench, the server and auto read."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from leapdecode.errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class MethodOption:
    name: str  # the keyword generate() and a request's body take; the flag is --name-with-dashes
    method: str  # the method it belongs to
    arm: bool = True  # auto takes it too: it makes or shapes that method's arm
    cli: str = ""  # the command line's name for it, where not the keyword's

    @property
    def flag(self) -> str:
        return "--" + (self.cli or self.name).replace("_", "-")


OPTIONS: tuple[MethodOption, ...] = (
    MethodOption("corpus_path", "suffix", arm=False, cli="corpus"),
    MethodOption("draft_model", "draft"),
    MethodOption("draft_threshold", "draft"),
    MethodOption("draft_dtype", "draft"),
    MethodOption("skip_layers", "layerskip"),
    MethodOption("skip_dtype", "layerskip"),
    MethodOption("head", "eagle"),
    MethodOption("window", "lookahead"),
    MethodOption("ngram", "lookahead"),
    MethodOption("guesses", "lookahead"),
)
BY_NAME = {o.name: o for o in OPTIONS}
# Besides these, "tree" goes with every method whose drafter can grow token trees (drafters.can_tree).


def options_of(method: str, arms_only: bool = False) -> tuple[str, ...]:
    """The table's options of a method (arms_only: those auto passes on to that method's arm)."""
    return tuple(o.name for o in OPTIONS if o.method == method and (o.arm or not arms_only))


def accepts(method: str, name: str) -> bool:
    """Whether `method` takes the table's option `name` (auto: as one of its arms)."""
    option = BY_NAME[name]
    return option.method == method or (method == "auto" and option.arm)


def misplaced(name: str) -> str:
    """The error for option `name` given without a method that takes it."""
    option = BY_NAME[name]
    return f"{option.flag} goes with --method {option.method}" + (" (or auto, as one of its arms)" if option.arm else "")


def check_options(method: str, given: Iterable[str]) -> None:
    """Refuse an option of the table given with a method it does not go with, naming the flag."""
    for name in given:
        if name in BY_NAME and not accepts(method, name):
            raise InvalidRequest(misplaced(name))


def for_method(method: str, given: dict[str, object]) -> dict[str, object]:
    """Of options set for a whole server, those a request of `method` takes."""
    return {k: v for k, v in given.items() if k in BY_NAME and accepts(method, k)}
