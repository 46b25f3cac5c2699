"""The `kimi-agent` command as a user runs it (subprocesses)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support.cli import run_cli

FIXTURE_MODEL = Path(__file__).parents[1] / "fixtures" / "kimi_vl_a3b_instruct"


def kimi(thought: str, action: str, code: str) -> str:
    return f"## Thought\n{thought}\n\n## Action\n{action}\n\n## Code\n```python\n{code}\n```\n"



@pytest.mark.skipif(shutil.which("Xvfb") is None, reason="needs Xvfb and Chromium")
def test_scripted_episode_writes_trajectory_and_report(tmp_path: Path) -> None:
    replies = tmp_path / "replies.jsonl"
    lines = [kimi("A browser window.", "Click the middle of the page.", "pyautogui.click(x=0.5, y=0.6)"),
             kimi("Done.", "Finish.", "computer.terminate(status='success', answer='clicked')")]
    replies.write_text("".join(json.dumps(t) + "\n" for t in lines))
    r = run_cli("--backend", "scripted", "--replies", str(replies), "--out", "out", "click the page", tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Step 1" in r.stderr and "success" in r.stderr
    (run_dir,) = (tmp_path / "out").iterdir()
    assert run_dir.name.endswith("_click-the-page")
    for name in ("run.json", "steps.jsonl", "report.html", "traj.jsonl"):
        assert (run_dir / name).is_file(), name
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "success" and run["answer"] == "clicked" and run["backend"] == "scripted"
    report = (run_dir / "report.html").read_text()
    assert "data:image/jpeg;base64," in report and "<circle" in report and "Click the middle of the page." in report
    traj = [json.loads(line) for line in (run_dir / "traj.jsonl").read_text().splitlines()]
    assert [t["action"] for t in traj] == ["pyautogui.click(x=0.5, y=0.6)", "DONE"]

    (run_dir / "report.html").unlink()
    r = run_cli("report", str(run_dir), tmp_path=tmp_path)
    assert r.returncode == 0 and (run_dir / "report.html").is_file()


def test_failed_episode_exit_code(tmp_path: Path) -> None:
    replies = tmp_path / "r.jsonl"
    replies.write_text(json.dumps(kimi("Impossible.", "Give up.", "computer.terminate(status='failure')")) + "\n")
    r = run_cli("--backend", "scripted", "--replies", str(replies), "--env", "browser", "--url", "about:blank",
             "--out", "out", "book a flight to the moon", tmp_path=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "failure" in r.stderr


def test_no_model_fails_fast_with_one_sentence(tmp_path: Path) -> None:
    r = run_cli("enable Do Not Track", tmp_path=tmp_path)
    assert r.returncode == 2
    assert "--model DIR" in r.stderr and "--endpoint URL" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()  # it failed before any episode (no run folder, no Xvfb or browser)
    r = run_cli("--backend", "transformers", "--model", str(FIXTURE_MODEL), "x", tmp_path=tmp_path)
    assert r.returncode == 2 and "4.48.2-4.51.x" in r.stderr


def test_ground_prints_the_point(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (200, 100), "white").save(tmp_path / "shot.png")
    replies = tmp_path / "r.jsonl"
    replies.write_text(json.dumps("```python\npyautogui.click(x=0.25, y=0.75)\n```") + "\n")
    r = run_cli("ground", str(tmp_path / "shot.png"), "the Save button", "--backend", "scripted",
             "--replies", str(replies), tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith("x=0.2500 y=0.7500  (50, 75) px of 200x100")


def _closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (a port bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_help_is_a_guide_with_every_subcommand_and_examples(tmp_path: Path) -> None:
    from kimi_agent.cli import SUBCOMMANDS

    r = run_cli("--help", tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    text = r.stdout
    assert text.startswith("Usage: kimi-agent [OPTIONS]") and "INSTRUCTION" in text.splitlines()[0]
    options, commands, examples = text.index("Options:"), text.index("Commands"), text.index("Examples:")
    assert options < commands < examples  # the episode form first, then subcommands, then examples
    listed = text[commands:examples].splitlines()[1:]
    for name in SUBCOMMANDS:
        (line,) = [ln for ln in listed if ln.split()[:1] == [name]]
        assert len(line.split()) > 3, line  # the name and a one-line summary
    example_lines = [ln.strip() for ln in text[examples:].splitlines() if ln.strip().startswith("kimi-agent")]
    assert len(example_lines) == 3, example_lines
    assert "--version" in text[options:commands]
    bare = run_cli(tmp_path=tmp_path)  # no arguments at all: the same guide (exit 2: nothing was run)
    assert bare.returncode == 2 and "Examples:" in bare.stdout + bare.stderr


def test_version(tmp_path: Path) -> None:
    from kimi_agent import __version__

    r = run_cli("--version", tmp_path=tmp_path)
    assert (r.returncode, r.stdout.strip()) == (0, f"kimi-agent {__version__}")


BAD_STARTS = {
    "run-unknown-backend": (["run", "tasks", "--backend", "nonsense"], "--backend must be"),
    "unknown-backend": (["--backend", "nonsense", "do it"], "--backend must be"),
    "unknown-env": (["--env", "foo", "do it"], "--env must be 'desktop' or 'browser', not 'foo'"),
    "unknown-frames": (["--frames", "gif", "do it"], "--frames must be 'png' or 'jpeg', not 'gif'"),
    "empty-instruction": (["--backend", "scripted", "--replies", "r.jsonl", ""], "the instruction is empty"),
    "blank-instruction": (["--backend", "scripted", "--replies", "r.jsonl", "  "], "the instruction is empty"),
    "browser-without-url": (["--env", "browser", "--backend", "scripted", "--replies", "r.jsonl", "do it"],
                            "--env browser needs --url URL"),
    "endpoint-down": (["--endpoint", "{down}", "do it"], "Nothing answers at --endpoint {down}"),
    "run-endpoint-down": (["run", "tasks", "--endpoint", "{down}"], "Nothing answers at --endpoint {down}"),
    "endpoint-not-a-url": (["--endpoint", "localhost:8000", "do it"], "--endpoint must be an http(s) URL"),
}


@pytest.mark.parametrize("case", sorted(BAD_STARTS))
def test_bad_start_is_one_sentence_exit_2_and_no_run_folder(case: str, tmp_path: Path) -> None:
    args, expected = BAD_STARTS[case]
    down = _closed_port_url()
    (tmp_path / "r.jsonl").write_text(json.dumps(kimi("x", "y", "computer.wait()")) + "\n")
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "t.json").write_text(json.dumps({"id": "t", "instruction": "x", "config": [],
                                                          "evaluator": {"func": "infeasible"}}))
    r = run_cli(*[a.format(down=down) for a in args], "--out", "out", tmp_path=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr  # one line even at 200+ chars on a pipe
    assert expected.format(down=down) in lines[0]
    assert "Traceback" not in r.stderr and "pydantic" not in r.stderr
    assert not (tmp_path / "out").exists()  # checked before any display, browser or run folder


def test_openai_base_url_is_the_default_endpoint(tmp_path: Path) -> None:
    down = _closed_port_url()
    r = run_cli("do it", tmp_path=tmp_path, extra_env={"OPENAI_BASE_URL": down})
    assert r.returncode == 2 and f"Nothing answers at --endpoint {down}" in r.stderr, r.stderr


def test_library_names_and_run_tasks_is_silent(tmp_path: Path) -> None:
    """`from kimi_agent import ScriptedBackend`; `run_tasks` prints nothing (the CLI prints the table)."""
    code = ("from kimi_agent import ScriptedBackend\n"
            "from kimi_agent.tasks import RunSettings, run_tasks\n"
            "assert ScriptedBackend(['x']).name == 'scripted'\n"
            "if __name__ == '__main__':\n"
            "    s = run_tasks(['tasks'], None, RunSettings(out_dir='out'))\n"
            "    assert [r.status for r in s.results] == ['unsupported'], s.results\n")
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "t.json").write_text(json.dumps({
        "id": "t", "instruction": "x", "config": [{"type": "no_such_step", "parameters": {}}],
        "evaluator": {"func": "infeasible"}}))
    (tmp_path / "lib.py").write_text(code)
    r = subprocess.run([sys.executable, "lib.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == ""
    assert (tmp_path / "out" / "results.json").is_file()
