"""Load OSWorld task files and folders into a `TaskSet`, classifying every task without running it.

Loading never raises for a bad task: each file becomes a `LoadedTask` whose `status` is
`runnable`, `unsupported` (a step type, getter, metric or resource this machine lacks; `reasons`
names each one exactly, e.g. "getter 'page_info'") or `invalid` (unreadable JSON, JSON
nested too deep or with a number too long to convert, a schema error, a value a load-time check
refuses, an id that is not one safe path component, or an id already used by an earlier file;
`error` names the file and the reason, and the field where one is at fault, e.g.
`config[0].parameters (sleep): seconds: ...` or `evaluator.result[0].command (vm_command_line): ...`).
Tasks that need the internet are `unsupported` with "network: ..." reasons unless
`allow_network=True`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, overload

from pydantic import ValidationError

from kimi_agent.file_reads import FileTooLargeError, NotRegularFileError, read_regular_file
from kimi_agent.tasks.registry import GETTERS, METRICS, SETUP_STEPS, StepCheck
from kimi_agent.tasks.spec import GetterConfig, TaskFieldError, TaskSpec

TaskStatus = Literal["runnable", "unsupported", "invalid"]

#: A task id is used as a folder name under --out: one path component of safe characters.
SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
MAX_TASK_FILE_BYTES = 4 * 1024 * 1024  # the largest real OSWorld task file is about 20 KB
MAX_JSON_DEPTH = 64  # real task files nest at most 8 levels


def id_problem(task_id: str) -> str | None:
    """Why `task_id` cannot name a task folder (None: it can). Safe ids are 1-128 characters of
    letters, digits, `.`, `_` and `-`, and not `.` or `..`."""
    if SAFE_ID.fullmatch(task_id) is None or task_id in (".", ".."):
        shown = task_id if len(task_id) <= 80 else task_id[:80] + "..."
        return (f"id {shown!r} is not a safe folder name (1-128 letters, digits, '.', '_' or '-'; "
                "not '.' or '..')")
    return None


def _json_depth_problem(text: str) -> str | None:
    """A cheap bracket-depth scan before `json.loads` (whose recursion limit would raise
    RecursionError); brackets inside strings are skipped."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                return f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
        elif ch in "]}":
            depth -= 1
    return None


@dataclass(frozen=True, slots=True)
class LoadedTask:
    path: Path
    spec: TaskSpec | None
    status: TaskStatus
    reasons: tuple[str, ...] = ()
    error: str | None = None

    @property
    def id(self) -> str:
        return self.spec.id if self.spec is not None else self.path.stem

    def describe(self) -> str:
        if self.status == "runnable":
            return f"{self.id}: runnable"
        if self.status == "unsupported":
            return f"{self.id}: unsupported ({'; '.join(self.reasons)})"
        return f"{self.path}: invalid ({self.error})"


@dataclass(frozen=True, slots=True)
class TaskSet(Sequence[LoadedTask]):
    """An immutable, sliceable list of loaded tasks (slices and filters are TaskSets too)."""

    items: tuple[LoadedTask, ...] = field(default_factory=tuple)

    @overload
    def __getitem__(self, i: int) -> LoadedTask: ...
    @overload
    def __getitem__(self, i: slice) -> TaskSet: ...
    def __getitem__(self, i: int | slice) -> LoadedTask | TaskSet:
        return TaskSet(self.items[i]) if isinstance(i, slice) else self.items[i]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[LoadedTask]:
        return iter(self.items)

    def __repr__(self) -> str:
        counts = {s: len(self.with_status(s)) for s in ("runnable", "unsupported", "invalid")}
        return f"TaskSet({len(self)} tasks: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + ")"

    def with_status(self, status: TaskStatus) -> TaskSet:
        return TaskSet(tuple(t for t in self.items if t.status == status))

    @property
    def runnable(self) -> TaskSet:
        return self.with_status("runnable")

    @property
    def unsupported(self) -> TaskSet:
        return self.with_status("unsupported")

    @property
    def invalid(self) -> TaskSet:
        return self.with_status("invalid")

    def by_id(self, task_id: str) -> LoadedTask:
        for t in self.items:
            if t.id == task_id or t.id.startswith(task_id):
                return t
        raise KeyError(task_id)


def _format_validation(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "<root>"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


def _checked(check: StepCheck, value: object, where: str, kind: str) -> list[str]:
    """`check(value)`, with a `TaskFieldError` it raises re-raised naming `where` (a step's
    `config[i].parameters` or a getter's `evaluator.result[i]`) and the step or getter type."""
    try:
        return check(value)
    except TaskFieldError as e:
        raise TaskFieldError(f"{where}.{e.field} ({kind})", e.reason) from None


def _getters(spec: TaskSpec) -> list[tuple[str, GetterConfig]]:
    """Every getter with where it sits: `evaluator.result[i]` or `evaluator.expected[i]`."""
    ev = spec.evaluator
    return [(f"evaluator.{name}[{i}]", g) for name, items in (("result", ev.result), ("expected", ev.expected))
            for i, g in enumerate(items) if g is not None]


def classify(spec: TaskSpec, *, allow_network: bool = False) -> tuple[TaskStatus, list[str], str | None]:
    """(status, reasons, error) for a parsed task, from names and static checks only. A check's
    `TaskFieldError` becomes the error, naming the step or getter and the field."""
    reasons: list[str] = []
    try:
        for where, step in spec.all_steps():
            if step.type not in SETUP_STEPS:
                reasons.append(f"setup step {step.type!r}")
                continue
            entry = SETUP_STEPS.entry(step.type)
            params: object = step.parameters
            if entry.params is not None:
                try:
                    params = entry.params.model_validate(step.parameters)
                except ValidationError as e:
                    return "invalid", [], f"{where}.parameters ({step.type}): {_format_validation(e)}"
            if entry.check is not None:
                reasons += _checked(entry.check, params, f"{where}.parameters", step.type)
        reasons += [f"metric {f!r}" for f in spec.evaluator.func if f not in METRICS]
        for i, (f, expected) in enumerate(zip(spec.evaluator.func, spec.evaluator.expected, strict=True)):
            if f in METRICS and expected is not None and (check := METRICS.entry(f).check) is not None:
                reasons += _checked(check, expected, f"evaluator.expected[{i}]", f)  # e.g. its regexes
        for where, g in _getters(spec):
            if g.type not in GETTERS:
                reasons.append(f"getter {g.type!r}")
            elif (check := GETTERS.entry(g.type).check) is not None:
                reasons += _checked(check, g, where, g.type)
    except TaskFieldError as e:
        return "invalid", [], str(e)
    kept = [r for r in reasons if not (allow_network and r.startswith("network"))]
    unique = list(dict.fromkeys(kept))
    return ("unsupported" if unique else "runnable"), unique, None


def read_task_json(path: Path) -> object:
    """The parsed file; raises ValueError (with the reason as its message) or OSError. Only a regular
    file is read (a FIFO named *.json would block forever), and NaN/Infinity are refused (a budget of
    Infinity seconds is no budget)."""
    try:
        data = read_regular_file(path, MAX_TASK_FILE_BYTES, follow_links=True)
    except NotRegularFileError:
        raise ValueError("not a regular file") from None
    except FileTooLargeError:
        raise ValueError(f"larger than {MAX_TASK_FILE_BYTES} bytes") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8: {e}") from e
    problem = _json_depth_problem(text)
    if problem is not None:
        raise ValueError(problem)
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON: {e}") from e
    except (ValueError, RecursionError) as e:  # e.g. an integer longer than 4300 digits
        raise ValueError(f"not loadable JSON: {e}") from e


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number a task may use")


def load_task(path: Path, *, allow_network: bool = False) -> LoadedTask:
    """One file as a `LoadedTask`; never raises (every problem becomes an `invalid` task)."""
    try:
        raw = read_task_json(path)
    except OSError as e:
        return LoadedTask(path, None, "invalid", error=f"{path}: cannot read: {e.strerror or e}")
    except ValueError as e:
        return LoadedTask(path, None, "invalid", error=f"{path}: {e}")
    try:
        spec = TaskSpec.model_validate(raw)
    except ValidationError as e:
        return LoadedTask(path, None, "invalid", error=f"{path}: {_format_validation(e)}")
    except (ValueError, TypeError, RecursionError) as e:  # a validator that assumed a type
        return LoadedTask(path, None, "invalid", error=f"{path}: {type(e).__name__}: {e}")
    problem = id_problem(spec.id)
    if problem is not None:
        return LoadedTask(path, spec, "invalid", error=f"{path}: {problem}")
    try:
        status, reasons, error = classify(spec, allow_network=allow_network)
    except (ValueError, TypeError) as e:  # a check that did not say which field: name at least the file
        return LoadedTask(path, spec, "invalid", error=f"{path}: {type(e).__name__}: {e}")
    if error is not None:
        return LoadedTask(path, spec, "invalid", error=f"{path}: {error}")
    return LoadedTask(path, spec, status, tuple(reasons))


def _expand(paths: Iterable[str | Path]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        try:
            out += sorted(p.rglob("*.json")) if p.is_dir() else [p]
        except OSError:  # an unreadable folder: load_task reports it as an invalid task
            out.append(p)
    return out


def _mark_duplicates(tasks: list[LoadedTask]) -> list[LoadedTask]:
    """A second file with an id already loaded is `invalid` (it would share the task folder)."""
    first: dict[str, Path] = {}
    out: list[LoadedTask] = []
    for t in tasks:
        spec = t.spec
        if spec is not None and t.status != "invalid":
            if spec.id in first:
                t = LoadedTask(t.path, spec, "invalid",
                               error=f"{t.path}: duplicate id {spec.id!r} (already used by {first[spec.id]})")
            else:
                first[spec.id] = t.path
        out.append(t)
    return out


def load_tasks(paths: str | Path | Iterable[str | Path], *, allow_network: bool = False) -> TaskSet:
    """Load task files and folders (recursively, `*.json`, sorted). Never raises: unreadable,
    malformed, unsafe-id and duplicate-id files become `invalid` tasks naming file and reason."""
    if isinstance(paths, str | Path):
        paths = [paths]
    loaded = [load_task(p, allow_network=allow_network) for p in _expand(paths)]
    return TaskSet(tuple(_mark_duplicates(loaded)))
