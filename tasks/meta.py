"""OSWorld's meta files: `test_all.json` maps a domain to task ids, whose files sit at
`<meta folder>/examples/<domain>/<id>.json` (OSWorld's `evaluation_examples/` layout).
"""

from __future__ import annotations

import json
from pathlib import Path

from kimi_agent.errors import ConfigError
from kimi_agent.tasks.loader import id_problem


def paths_from_meta(meta: Path, domains: list[str] | None = None, *, examples: Path | None = None) -> list[Path]:
    """Task file paths listed in `meta` for `domains` (all when None or empty), in file order.

    Raises ConfigError naming the file when it is not a {domain: [id, ...]} object, when a domain
    or id is not one safe path component, or when a requested domain is not in it. Missing task
    files are returned anyway: the loader reports each as an invalid task.
    """
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise ConfigError(f"{meta}: cannot read the meta file: {e}") from e
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ConfigError(f"{meta}: a meta file maps each domain to a list of task ids")
    wanted = domains or list(data)
    unknown = [d for d in wanted if d not in data]
    if unknown:
        raise ConfigError(f"{meta}: no domain {', '.join(map(repr, unknown))} (it has {', '.join(data)})")
    root = examples if examples is not None else meta.parent / "examples"
    out: list[Path] = []
    for domain in wanted:
        for task_id in data[domain]:
            for name in (domain, task_id):
                problem = id_problem(name) if isinstance(name, str) else "not a string"
                if problem is not None:
                    raise ConfigError(f"{meta}: {domain!r} entry {name!r}: {problem}")
            out.append(root / domain / f"{task_id}.json")
    return out
