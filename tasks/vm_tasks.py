"""Which task files a run on OSWorld VMs takes: OSWorld's code reads the raw file, so a file our
stricter schema rejects (an extra note field, a non-string `source`) still runs on a VM when it is a
JSON object with an instruction and one safe, unused id. `kimi-agent run --vm/--provider` and
`kimi-agent osworld inventory` both decide with `vm_problem`."""

from __future__ import annotations

from typing import Any

from kimi_agent.tasks.loader import LoadedTask, id_problem, read_task_json
from kimi_agent.tasks.spec import TaskSpec


def read_raw_task(t: LoadedTask) -> dict[str, Any] | None:
    """The task file as OSWorld reads it: its JSON object, or None (unreadable, not JSON, not an object)."""
    try:
        data = read_task_json(t.path)  # bounded: a regular file of at most 4 MB, no NaN, no deep nesting
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def vm_spec(t: LoadedTask, task: dict[str, Any], seen: set[str]) -> TaskSpec:
    """The spec of a task `vm_problem` found nothing against, for a VM run; its id is added to `seen`."""
    seen.add(task["id"])
    if t.spec is not None and t.status != "invalid":
        return t.spec
    return TaskSpec.model_construct(id=task["id"], instruction=task["instruction"])


def vm_problem(t: LoadedTask, task: dict[str, Any] | None, seen: set[str]) -> str | None:
    """Why a VM run cannot take the task, whose raw file is `task` (`read_raw_task`) and whose id
    must not be in `seen`; None: it can (then `vm_spec`). The loader's `t.error` is the reason where
    it has one."""
    if task is None:
        return t.error or "not a JSON object"
    task_id, instruction = task.get("id"), task.get("instruction")
    if not isinstance(task_id, str) or not isinstance(instruction, str):
        return t.error or "no string id and instruction"
    if (unsafe := id_problem(task_id)) is not None:
        return unsafe
    if task_id in seen:
        return t.error or f"duplicate id {task_id!r}"
    return None
