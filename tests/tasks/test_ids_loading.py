"""Task ids are safe folder names, duplicates are invalid, and load_tasks never raises on hostile files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kimi_agent.errors import TaskError
from kimi_agent.tasks import load_tasks
from kimi_agent.tasks.loader import MAX_JSON_DEPTH, id_problem
from kimi_agent.tasks.runner import _task_dir


def _task(task_id: str) -> dict[str, object]:
    return {"id": task_id, "instruction": "do it", "config": [], "evaluator": {"func": "infeasible"}}


def _write(path: Path, data: object) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())
    return path


@pytest.mark.parametrize("task_id", ["/tmp/victim", "../victim", "a/b", ".", "..", "x\x00y", "a b", "é", "x" * 129,
                                     "~", "a\\b"])
def test_unsafe_ids_make_the_task_invalid(tmp_path: Path, task_id: str) -> None:
    f = _write(tmp_path / "t.json", _task(task_id))
    [t] = load_tasks(f)
    assert t.status == "invalid"
    assert t.error is not None and t.error.startswith(f"{f}: id ") and "is not a safe folder name" in t.error


@pytest.mark.parametrize("task_id", ["030eeff7-b492-4218-b312-701ec99ee0cc", "suite.font_size-2", "x" * 128, "..a"])
def test_safe_ids_load(tmp_path: Path, task_id: str) -> None:
    [t] = load_tasks(_write(tmp_path / "t.json", _task(task_id)))
    assert (t.status, t.id) == ("runnable", task_id)


def test_duplicate_ids_after_the_first_are_invalid(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.json", _task("same"))
    b = _write(tmp_path / "b.json", _task("same"))
    tasks = load_tasks(tmp_path)
    assert [t.status for t in tasks] == ["runnable", "invalid"]
    assert tasks[1].error == f"{b}: duplicate id 'same' (already used by {a})"
    # the same file given twice is a duplicate too
    twice = load_tasks([a, a])
    assert [t.status for t in twice] == ["runnable", "invalid"]


def test_hostile_files_become_invalid_tasks_naming_file_and_reason(tmp_path: Path) -> None:
    deep = _write(tmp_path / "deep.json", b"[" * 100_000 + b"]" * 100_000)
    just_deep = _write(tmp_path / "deep_dict.json", ('{"a":' * (MAX_JSON_DEPTH + 1) + "1" + "}" * (MAX_JSON_DEPTH + 1)).encode())
    huge_int = _write(tmp_path / "huge_int.json", b'{"id": "h", "n": ' + b"9" * 5000 + b"}")
    bad_utf8 = _write(tmp_path / "utf8.json", b'{"id": "\xff\xfe"}')
    nul = _write(tmp_path / "nul.json", b'{"id": "a\x00b"}')
    nul_escaped = _write(tmp_path / "nul_escaped.json", _task("a\u0000b"))
    shlex_bad = _write(tmp_path / "shlex.json", {**_task("s"), "config": [
        {"type": "execute", "parameters": {"command": "apt install 'unterminated", "shell": True}}]})
    not_object = _write(tmp_path / "list.json", [1, 2])
    ok = _write(tmp_path / "ok.json", _task("fine"))
    tasks = load_tasks(tmp_path)  # must not raise
    by_path = {t.path: t for t in tasks}
    assert by_path[ok].status == "runnable"
    expect = {deep: "JSON nested deeper than", just_deep: "JSON nested deeper than",
              huge_int: "not loadable JSON", bad_utf8: "not UTF-8", nul: "not valid JSON",
              nul_escaped: "is not a safe folder name", shlex_bad: "No closing quotation",
              not_object: "Input should be a valid dictionary"}
    for path, reason in expect.items():
        t = by_path[path]
        assert t.status == "invalid", path
        assert t.error is not None and t.error.startswith(f"{path}: ") and reason in t.error, t.error


def test_strings_with_brackets_do_not_count_as_nesting(tmp_path: Path) -> None:
    text = "[" * (MAX_JSON_DEPTH * 2) + '\\"{'
    [t] = load_tasks(_write(tmp_path / "t.json", {**_task("b"), "instruction": text}))
    assert t.status == "runnable" and t.spec is not None and t.spec.instruction == text


def test_task_folders_are_always_inside_out(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    assert _task_dir(out, "abc") == out / "abc"
    for bad in ("../victim", "/abs", "..", ".", "a/b", "x\x00"):
        with pytest.raises(TaskError):
            _task_dir(out, bad)
    assert id_problem("ok-id_1.2") is None
