"""How many OSWorld task files run here, offline and with --allow-network, and why the others do not.

    python bench/osworld_coverage.py <OSWorld>/evaluation_examples/examples/chrome <...>/os

Loads the files twice with `load_tasks` (nothing runs) and prints Markdown: the counts per domain
(the parent folder's name), then every task that is not runnable, grouped by reason: a reason is
the loader's text up to its first ':' ("network: download needs https://..." -> "network"), and
each group lists its task ids (8-character prefixes). The table in docs/osworld-compat.md is this
script's output on OSWorld's chrome and os folders.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from kimi_agent.tasks import load_tasks
from kimi_agent.tasks.loader import LoadedTask, TaskSet


def reason_group(reason: str) -> str:
    """"network: download needs https://x" -> "network"; "getter 'vm_command_line' runs gsettings
    (...): 'cmd'" -> "getter 'vm_command_line' runs gsettings (...)"; others unchanged."""
    return reason.split(":", 1)[0].strip()


def _domain(task: LoadedTask) -> str:
    return task.path.parent.name


def _groups(tasks: TaskSet) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for t in tasks:
        if t.status == "invalid":
            groups[f"invalid: {t.error}"].append(t.id[:8])
            continue
        for group in dict.fromkeys(reason_group(r) for r in t.reasons):
            groups[group].append(t.id[:8])
    return dict(sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])))


def report(paths: list[Path]) -> str:
    offline = load_tasks(paths)
    online = load_tasks(paths, allow_network=True)
    domains = sorted({_domain(t) for t in offline})
    lines = ["| domain | task files | runnable offline | runnable with --allow-network |", "|---|---|---|---|"]
    for d in [*domains, "all"]:
        def count(ts: TaskSet, d: str = d) -> int:
            return sum(1 for t in ts.runnable if d in ("all", _domain(t)))
        total = sum(1 for t in offline if d in ("all", _domain(t)))
        lines.append(f"| {d} | {total} | {count(offline)} | {count(online)} |")
    for title, tasks in (("Not runnable offline", offline), ("Not runnable with --allow-network", online)):
        rest = TaskSet(tuple(t for t in tasks if t.status != "runnable"))
        lines += ["", f"{title}: {len(rest)} tasks; a task with several reasons is counted in each group.", "",
                  "| reason | tasks | ids |", "|---|---|---|"]
        lines += [f"| {g} | {len(ids)} | {', '.join(ids)} |" for g, ids in _groups(rest).items()]
    if online.unsupported:
        lines += ["", "Exact reasons with --allow-network:", ""]
        lines += [f"- `{t.id[:8]}` ({_domain(t)}): {'; '.join(t.reasons)}" for t in online.unsupported]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="task files or folders (e.g. examples/chrome)")
    print(report(parser.parse_args().paths))


if __name__ == "__main__":
    main()
