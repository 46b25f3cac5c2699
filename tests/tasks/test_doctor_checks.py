"""`kimi-agent doctor` as a user runs it: the task sandbox and the workers' kernel limits."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from support.cli import run_cli

from kimi_agent.tasks.cgroups import probe as cgroup_probe
from kimi_agent.tasks.sandbox import probe
from kimi_agent.tasks.sandbox_user import sandbox_user_problem
from kimi_agent.tasks.uplink import uplink_problem


def _doctor(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli("doctor", tmp_path=tmp_path, extra_env={"COLUMNS": "300", **env})


def _row(out: str, name: str) -> str:
    """The check's line of doctor's plain output (a pipe: one tab-separated line a check), as
    " name | status | detail | fix "."""
    assert "│" not in out and "┃" not in out, out  # no table in a pipe
    fields = next(line.split("\t") for line in out.splitlines() if line.split("\t")[0].startswith(name))
    return f" {' | '.join(fields)} "


@pytest.mark.skipif(probe() is not None or cgroup_probe() is not None, reason="needs bwrap and writable cgroups")
def test_doctor_reports_the_sandbox_and_the_worker_limits(tmp_path: Path) -> None:
    done = _doctor(tmp_path)
    assert " ok " in _row(done.stdout, "sandbox (bwrap)"), done.stdout
    limits = _row(done.stdout, "worker limits (cgroups)")
    assert " ok " in limits and "cgroup v" in limits


def test_doctor_without_bubblewrap_says_what_that_means_and_how_to_fix_it(tmp_path: Path) -> None:
    done = _doctor(tmp_path, KIMI_AGENT_BWRAP=str(tmp_path / "no-such-bwrap"))
    row = _row(done.stdout, "sandbox (bwrap)")
    assert "optional" in row and "not installed" in row and "apt-get install bubblewrap" in row, done.stdout


def test_doctor_says_whether_workers_get_networks_of_their_own(tmp_path: Path) -> None:
    missing = _row(_doctor(tmp_path, KIMI_AGENT_SLIRP4NETNS=str(tmp_path / "no-slirp")).stdout, "worker networks")
    assert "optional" in missing and "slirp4netns is not installed" in missing, missing
    assert "apt-get install slirp4netns" in missing and "share this" in missing, missing
    if uplink_problem() is None:
        here = _row(_doctor(tmp_path).stdout, "worker networks")
        assert " ok " in here and "a network of its own" in here, here


def test_doctor_says_which_user_the_sandboxed_tasks_are(tmp_path: Path) -> None:
    taken = _row(_doctor(tmp_path, KIMI_AGENT_SANDBOX_UID="0").stdout, "sandbox user")
    assert "optional" in taken and "uid 0 is not a valid unprivileged id" in taken, taken
    if sandbox_user_problem() is None:
        here = _row(_doctor(tmp_path).stdout, "sandbox user")
        assert " ok " in here and "tasks run as uid 2000000 of this machine, a user of its own" in here, here
