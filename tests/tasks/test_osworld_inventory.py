"""`kimi-agent osworld inventory` agrees with `kimi-agent run` on VMs: a file loads when the VM
runner takes it (`vm_tasks.vm_spec`: a readable UTF-8 JSON object with an instruction and one safe,
unused id; OSWorld's code reads the raw file, so a file our stricter schema rejects still runs), and
every other file is named with its reason, with or without `--tasks`. The bridge process runs in a real
virtual environment whose `desktop_env` is a small stand-in (a test double of OSWorld's package);
the last test uses the real `.venv-osworld` and skips without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.task_files import make_venv_with

from kimi_agent.tasks.loader import load_tasks
from kimi_agent.tasks.osworld_bridge import default_venv, inventory

ROOT = Path(__file__).parents[2]
GOOD = ROOT / "tests/fixtures/osworld/chrome/bb5e4c0d-f964-439c-97b6-bdb9747de3f4.json"

# What the good chrome task needs: launch and sleep steps, two getters, one metric.
STAND_IN = {
    "desktop_env/__init__.py": "",
    "desktop_env/controllers/__init__.py": "",
    "desktop_env/controllers/setup.py": """
        class SetupController:
            def _launch_setup(self, command, shell=False):
                pass
            def _sleep_setup(self, seconds):
                pass
    """,
    "desktop_env/evaluators/__init__.py": "",
    "desktop_env/evaluators/getters/__init__.py": """
        def get_default_search_engine(env, config):
            return "Bing"
        def get_rule(env, config):
            return config["rules"]
    """,
    "desktop_env/evaluators/metrics/__init__.py": """
        def match_in_list(result, rules):
            return float(result in rules["expected"])
    """,
}

# file name -> the reason the inventory must give for it (the good task's copy "dup.json" sorts
# first, so the original "good.json" is the repeated id)
REASONS = {
    "broken.json": "not valid JSON",
    "empty.json": "not valid JSON: Expecting value",
    "evil.json": "id '../../evil' is not a safe folder name",
    "good.json": "duplicate id 'bb5e4c0d-f964-439c-97b6-bdb9747de3f4' (already used by",
    "latin1.json": "not UTF-8",
    "list.json": "<root>: Input should be a valid dictionary",
}


@pytest.fixture(scope="module")
def stand_in_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_venv_with(tmp_path_factory.mktemp("inventory") / "venv", STAND_IN)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Four loadable tasks (the good one; one whose metric no bridge has; two that our schema rejects but
    OSWorld's code reads: an evaluator with no getter for its metric, an evaluator that is a string,
    which the bridge reports instead of crashing) next to 6 bad files."""
    d = tmp_path / "tasks"
    d.mkdir()
    good = json.loads(GOOD.read_text())
    files = {
        "dup.json": json.dumps(good),
        "good.json": json.dumps(good),
        "needs-more.json": json.dumps({**good, "id": "needs-more",
                                       "evaluator": {**good["evaluator"], "func": "no_such_metric"}}),
        "evil.json": json.dumps({**good, "id": "../../evil"}),
        "bad-evaluator.json": json.dumps({**good, "id": "bad-evaluator",
                                          "evaluator": {**good["evaluator"], "result": []}}),
        "string-evaluator.json": json.dumps({"id": "string-evaluator", "instruction": "x", "evaluator": "oops"}),
        "broken.json": '{"id": "broken", ',
        "empty.json": "",
        "list.json": "[]",
    }
    for name, text in files.items():
        (d / name).write_text(text)
    (d / "latin1.json").write_bytes(b'{"id": "caf\xe9", "instruction": "x"}')
    return d


def _inventory_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kimi_agent.cli", "osworld", "inventory", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_inventory_loads_what_a_vm_run_takes(stand_in_venv: Path, folder: Path) -> None:
    report = inventory([folder], venv=stand_in_venv)
    assert (report["files"], report["loaded"], report["complete"]) == (10, 4, 2)
    assert report["problems"] == {"metric 'no_such_metric'": 1, "evaluator (a JSON str, not an object)": 1}
    errors = {Path(row["path"]).name: row["error"] for row in report["tasks"] if "error" in row}
    assert errors.keys() == REASONS.keys()
    for name, reason in REASONS.items():
        assert reason in errors[name], (name, errors[name])
        assert not errors[name].startswith(str(folder)), errors[name]  # the path is not repeated
    # our loader (the local runner) is stricter: it also refuses what only OSWorld's code reads
    tasks = load_tasks([folder])
    assert {t.path.name for t in tasks.invalid} == set(REASONS) | {"bad-evaluator.json", "string-evaluator.json"}
    loaded = {Path(row["path"]).name: row["missing"] for row in report["tasks"] if "error" not in row}
    assert loaded == {"dup.json": [], "bad-evaluator.json": [], "needs-more.json": ["metric 'no_such_metric'"],
                      "string-evaluator.json": ["evaluator (a JSON str, not an object)"]}


@pytest.mark.parametrize("show", [False, True])
def test_inventory_cli_names_every_file_that_does_not_load(stand_in_venv: Path, folder: Path, show: bool) -> None:
    r = _inventory_cli(str(folder), "--venv", str(stand_in_venv), *(["--tasks"] if show else []))
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == ("10 task files, 4 load, 2 have every setup step, getter and metric available "
                        "through the bridge")
    assert sorted(lines[1:3]) == ["     1  evaluator (a JSON str, not an object)", "     1  metric 'no_such_metric'"]
    assert lines[3] == "6 do not load:"
    for line, (name, reason) in zip(lines[4:10], sorted(REASONS.items()), strict=True):
        assert line.startswith(f"  {folder / name}: ") and reason in line, line
    missing_rows = [f"{folder / 'needs-more.json'}: metric 'no_such_metric'",
                    f"{folder / 'string-evaluator.json'}: evaluator (a JSON str, not an object)"] if show else []
    assert sorted(lines[10:]) == missing_rows


def test_inventory_with_only_files_that_do_not_load_skips_the_bridge(stand_in_venv: Path, tmp_path: Path) -> None:
    (tmp_path / "empty.json").write_text("")
    report = inventory([tmp_path], venv=stand_in_venv)
    assert (report["files"], report["loaded"], report["complete"]) == (1, 0, 0)
    assert report["tasks"] == [{"path": str(tmp_path / "empty.json"),
                                "error": "not valid JSON: Expecting value: line 1 column 1 (char 0)"}]


@pytest.mark.skipif(not (default_venv() / "bin" / "python").exists(),
                    reason="no .venv-osworld (bash scripts/setup.sh --osworld)")
def test_inventory_through_the_real_bridge_environment(folder: Path) -> None:
    r = _inventory_cli(str(folder), "--venv", str(default_venv()))
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("10 task files, 4 load,"), r.stdout
    assert "6 do not load:" in lines
    for name, reason in REASONS.items():
        assert any(line.startswith(f"  {folder / name}: ") and reason in line for line in lines), (name, r.stdout)
