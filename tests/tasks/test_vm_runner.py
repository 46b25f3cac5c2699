"""`kimi-agent run --vm URL` end to end with OSWorld's REAL `desktop-env` (the bridge environment,
`.venv-osworld`): real chrome task files, their setup run by OSWorld's SetupController against a
stand-in of the in-VM server (tests/support/osworld_server.py) on the test's Xvfb (google-chrome is
this machine's Chromium there), an episode through OSWorldVMEnv, and the score from OSWorld's own
getters and metrics. The model is a test double (do nothing / give up).

Skipped when the bridge environment does not exist (`kimi-agent osworld setup`: about 2 minutes
and over a gigabyte; see README "Running the OSWorld benchmark"). CI builds it (`.ci/run` runs
`scripts/setup.sh --osworld`), so there these tests run.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.osworld_server import StandInServer

from kimi_agent.tasks.osworld_bridge import BridgeTarget, default_venv

FIXTURES = Path(__file__).parent.parent / "fixtures" / "osworld" / "chrome"
DO_NOT_TRACK = "030eeff7-b492-4218-b312-701ec99ee0cc"  # exact_match(enable_do_not_track, "true")
INFEASIBLE = "3720f614-37fd-4d04-8a6b-76f54f8c222d"  # infeasible: a failure report scores 1

pytestmark = pytest.mark.skipif(
    not (default_venv() / "bin" / "python").exists(),
    reason=f"no OSWorld bridge environment at {default_venv()} (build it with `kimi-agent osworld setup`, "
           "or `bash scripts/setup.sh --osworld`)")


def backend_for(spec: Any, host: Any, local_server: str) -> Any:
    """Do nothing and report success; give up on the infeasible task (test doubles, no model)."""
    from kimi_agent.tasks.suites.solutions import do_nothing_backend, give_up_backend

    return (give_up_backend if spec.id == INFEASIBLE else do_nothing_backend)(spec, host, local_server)


@pytest.fixture
def vm(xvfb: Any, tmp_path: Path) -> Iterator[StandInServer]:
    if shutil.which("socat") is None:
        pytest.skip("socat is not installed (the chrome tasks' debugging-port relay)")
    (tmp_path / "home").mkdir()
    server = StandInServer(xvfb.display, tmp_path / "home").start()
    yield server
    server.stop()


def test_two_real_chrome_tasks_scored_by_desktop_env(vm: StandInServer, tmp_path: Path) -> None:
    from kimi_agent.tasks.loader import load_tasks
    from kimi_agent.tasks.runner import RunSettings
    from kimi_agent.tasks.vm_runner import run_vm_tasks

    folder = tmp_path / "chrome"
    folder.mkdir()
    for task_id in (DO_NOT_TRACK, INFEASIBLE):
        shutil.copy(FIXTURES / f"{task_id}.json", folder)
    out = tmp_path / "out"
    settings = RunSettings(out_dir=out, max_steps=2, task_timeout_s=300)
    target = BridgeTarget(vm=vm.url, chromium_port=vm.relay_port)
    summary = run_vm_tasks(load_tasks([folder]), backend_for, settings, [target])

    by_id = {r.task_id: r for r in summary.results}
    dnt, infeasible = by_id[DO_NOT_TRACK], by_id[INFEASIBLE]
    assert dnt.status == "fail" and dnt.score == 0.0, dnt.reason  # nothing was done: DNT is still off
    assert dnt.evaluation is not None and dnt.evaluation["by"].startswith("desktop-env 1.0.2")
    assert dnt.evaluation["func"] == "exact_match"
    launched = [c for c in vm.commands if isinstance(c, list) and c and "chromium" in c[0]]
    assert any(f"--remote-debugging-port={vm.ports[1337]}" in c for c in launched)  # OSWorld's setup ran
    assert any("Preferences" in " ".join(map(str, c)) for c in vm.commands)  # its getter read the profile
    assert infeasible.status == "success" and infeasible.score == 1.0
    for r in (dnt, infeasible):
        assert (out / r.task_id / "result.txt").read_text().strip() == f"{r.score:g}"
        assert (out / str(r.trajectory) / "traj.jsonl").exists()
    assert json.loads((out / "results.json").read_text())["domains"]["chrome"]["rate"] == 0.5
    assert (out / "index.html").exists()

    before = len(vm.commands)
    again = run_vm_tasks(load_tasks([folder]), backend_for, settings.model_copy(update={"resume": True}), [target])
    assert [(r.task_id, r.score) for r in again.results] == [(r.task_id, r.score) for r in summary.results]
    assert len(vm.commands) == before  # resumed: nothing ran on the VM again
