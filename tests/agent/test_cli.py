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
    # --open where no browser can start ($BROWSER a command that fails, no display): it says so
    r = run_cli("report", str(run_dir), "--open", tmp_path=tmp_path, extra_env={"BROWSER": "false"})
    assert r.returncode == 0 and "no web browser could be started here" in r.stderr, r.stderr


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


def test_ground_names_a_bad_image_or_an_empty_target_in_one_line(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (20, 10)).save(tmp_path / "shot.png")
    (tmp_path / "text.png").write_text("hello")
    (tmp_path / "folder").mkdir()
    replies = tmp_path / "r.jsonl"
    replies.write_text(json.dumps("```python\npyautogui.click(x=0.25, y=0.75)\n```") + "\n")
    for image, target, message in (("shot.png", "  ", "error: TEXT is empty"),
                                   ("text.png", "x", "error: IMAGE text.png is not a PNG or JPEG image."),
                                   ("folder", "x", "error: IMAGE folder is a folder; give a screenshot file"),
                                   ("gone.png", "x", "error: IMAGE gone.png: no such file.")):
        r = run_cli("ground", image, target, "--backend", "scripted", "--replies", str(replies), tmp_path=tmp_path)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith(message), (image, r.stderr)


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


@pytest.mark.parametrize(("argv", "message"), [
    (["--max-stesp", "3", "x"], "error: No such option: --max-stesp (Possible options: --max-seconds, --max-steps); "
                                "see kimi-agent --help"),
    (["--max-steps", "0", "x"], "error: Invalid value for '--max-steps': Input should be greater than or equal to 1; "
                                "see kimi-agent --help"),
    (["run", "--workers", "0", "t"], "error: Invalid value for '--workers': Input should be greater than or equal "
                                     "to 1; see kimi-agent run --help"),
    (["report"], "error: Missing argument 'RUN_DIR'; see kimi-agent report --help"),
])
def test_usage_mistakes_are_one_error_line(tmp_path: Path, argv: list[str], message: str) -> None:
    """A mistyped option or a value out of range reads like every other mistake: one line, exit 2 (not click's
    four-line Usage/Try/Error block)."""
    r = run_cli(*argv, tmp_path=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.strip().splitlines() == [message] and r.stdout == "", (r.stdout, r.stderr)


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
    "display-not-answering": (["--backend", "scripted", "--replies", "r.jsonl", "--display", "{nodisplay}", "do it"],
                              "nothing answers on X display {nodisplay} (--display;"),
    "display-not-a-name": (["--backend", "scripted", "--replies", "r.jsonl", "--display", "foo", "do it"],
                           "--display 'foo' is not an X display name"),
    "app-not-on-path": (["--backend", "scripted", "--replies", "r.jsonl", "--app", "nonexistent-app-xyz --x", "do it"],
                        "no executable 'nonexistent-app-xyz' on PATH"),
    "profile-is-a-file": (["--backend", "scripted", "--replies", "r.jsonl", "--profile", "r.jsonl", "do it"],
                          "--profile r.jsonl is a file, not a folder"),
    "url-not-a-url": (["--backend", "scripted", "--replies", "r.jsonl", "--env", "browser", "--url", "not a url",
                       "do it"], "--url 'not a url' is not a URL a browser can open"),
    "url-without-scheme": (["--backend", "scripted", "--replies", "r.jsonl", "--url", "example.com", "do it"],
                           "give one with its scheme"),
    "url-on-a-blocked-port": (["--backend", "scripted", "--replies", "r.jsonl", "--env", "browser", "--url",
                               "http://127.0.0.1:6000/", "do it"],
                              "--url http://127.0.0.1:6000/: Chromium refuses to load pages from port 6000"),
    "url-not-allowed": (["--backend", "scripted", "--replies", "r.jsonl", "--env", "browser", "--url",
                         "https://example.com", "--allow-url", "https://other.com", "do it"],
                        "--url https://example.com is not allowed by --allow-url https://other.com"),
    "allow-url-on-the-desktop": (["--backend", "scripted", "--replies", "r.jsonl", "--url", "https://example.com",
                                  "--allow-url", "https://example.com", "do it"],
                                 "--allow-url works only with --env browser"),
    "subcommand-typo": (["doctr"], "'doctr' is not a command; did you mean 'kimi-agent doctor'?"),
    "subcommand-typo-with-args": (["reprot", "runs/x"], "did you mean 'kimi-agent report'?"),
    "subcommand-typo-after-options": (["--backend", "scripted", "--replies", "r.jsonl", "serv"],
                                      "did you mean 'kimi-agent serve'?"),
}


def _display_nobody_serves() -> str:
    """An X display name where no X server listens (neither its socket file nor the abstract socket)."""
    for number in range(731, 800):
        path = f"/tmp/.X11-unix/X{number}"
        with socket.socket(socket.AF_UNIX) as s:
            if Path(path).exists() or s.connect_ex("\0" + path) == 0:
                continue
        return f":{number}"
    raise AssertionError("every display :731-:799 is in use")


@pytest.mark.parametrize("case", sorted(BAD_STARTS))
def test_bad_start_is_one_sentence_exit_2_and_no_run_folder(case: str, tmp_path: Path) -> None:
    args, expected = BAD_STARTS[case]
    names = {"down": _closed_port_url(), "nodisplay": _display_nobody_serves()}
    (tmp_path / "r.jsonl").write_text(json.dumps(kimi("x", "y", "computer.wait()")) + "\n")
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "t.json").write_text(json.dumps({"id": "t", "instruction": "x", "config": [],
                                                          "evaluator": {"func": "infeasible"}}))
    r = run_cli(*[a.format(**names) for a in args], "--out", "out", tmp_path=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr  # one line even at 200+ chars on a pipe
    assert expected.format(**names) in lines[0]
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


@pytest.mark.parametrize("out", ["/proc/kimi-agent-test/out", "r.jsonl/out"])
def test_an_out_folder_that_cannot_be_made_fails_before_start_and_leaves_nothing(out: str, tmp_path: Path) -> None:
    (tmp_path / "r.jsonl").write_text(json.dumps(kimi("x", "y", "computer.wait()")) + "\n")
    r = run_cli("--backend", "scripted", "--replies", "r.jsonl", "--out", out, "do it", tmp_path=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --out {out} "), r.stderr
    assert "cannot be created in /proc" in lines[0] or "is inside" in lines[0], lines[0]
    assert {p.name for p in tmp_path.iterdir()} - {"hf"} == {"r.jsonl"}  # no run folder, no probe left behind


def test_a_start_page_that_does_not_load_is_one_sentence(tmp_path: Path) -> None:
    """Nothing listens on the page's port (net::ERR_CONNECTION_REFUSED): one `error:` line, exit 2,
    no run folder."""
    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/"
    (tmp_path / "r.jsonl").write_text(json.dumps(kimi("x", "y", "computer.wait()")) + "\n")
    r = run_cli("--backend", "scripted", "--replies", "r.jsonl", "--env", "browser", "--url", url,
                "--out", "out", "do it", tmp_path=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last == f"error: cannot open the start page {url}: Page.goto: net::ERR_CONNECTION_REFUSED at {url}", r.stderr
    assert not (tmp_path / "out").exists()


def test_an_unquoted_instruction_gets_a_hint_to_quote_it(tmp_path: Path) -> None:
    (tmp_path / "r.jsonl").write_text(json.dumps(kimi("x", "y", "computer.wait()")) + "\n")
    r = run_cli("--backend", "scripted", "--replies", "r.jsonl", "click", "the", "page", tmp_path=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "unexpected extra argument(s) (the page); quote an instruction of several words" in r.stderr
    assert not (tmp_path / "runs").exists()


def test_dash_h_is_help_for_every_subcommand(tmp_path: Path) -> None:
    from kimi_agent.cli import SUBCOMMANDS

    for name in SUBCOMMANDS:
        r = run_cli(name, "-h", tmp_path=tmp_path)
        assert r.returncode == 0, (name, r.stderr)
        assert r.stdout.startswith(f"Usage: kimi-agent {name} "), (name, r.stdout)
        # every option that takes a value names it (--workers N, --out DIR), not typer's <int range> or <str>
        typed = [line for line in r.stdout.splitlines()
                 if line.lstrip().startswith("-") and "<" in line.strip().split("  ")[0]]
        assert not typed, (name, typed)


def test_report_of_a_run_whose_files_are_not_json_is_one_error_line_and_exit_2(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "20250101-000000_x"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text("")  # not JSON: report.html cannot be made from it
    r = run_cli("report", str(run_dir), tmp_path=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)  # as replay: the input cannot be used
    assert r.stdout == ""  # no path of a report that is not there
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: could not read {run_dir / 'run.json'}: "), r.stderr
    assert lines[0].endswith("; nothing was rewritten")
    assert not (run_dir / "report.html").exists()


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--device", "tpu", "error: --device 'tpu': use auto, cpu, cuda or cuda:N."),
    ("--device", "cuda", "error: --device cuda needs a CUDA GPU"),
    ("--dtype", "int8", "error: --dtype 'int8': use bfloat16, float16, float32 or auto (the checkpoint's)."),
    ("--max-model-len", "200000", "error: --max-model-len 200000 is more than the model's 131072 positions"),
])
def test_serve_checks_the_device_and_dtype_before_loading(option: str, value: str, message: str,
                                                          tmp_path: Path) -> None:
    if value == "cuda":
        from kimi_agent.model_runtime.device import device_info

        if device_info().cuda_device is not None:
            pytest.skip("a CUDA GPU is here: --device cuda is valid")
    r = run_cli("serve", "--model", str(FIXTURE_MODEL), "--port", "0", option, value, tmp_path=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), r.stderr  # before any "loading ..." line


def test_the_library_names_a_bad_device_or_dtype_before_loading(tmp_path: Path) -> None:
    from kimi_agent.errors import ConfigError
    from kimi_agent.options import BackendOptions, make_backend

    with pytest.raises(ConfigError, match=r"^device 'tpu': use auto, cpu, cuda or cuda:N\.$"):
        make_backend(BackendOptions(model=str(tmp_path / "nowhere"), device="tpu"))
    with pytest.raises(ConfigError, match=r"^dtype 'int8': use bfloat16"):
        make_backend(BackendOptions(model=str(tmp_path / "nowhere"), dtype="int8"))


def test_doctor_suggests_the_installed_hf_command(tmp_path: Path) -> None:
    assert (Path(sys.executable).parent / "hf").exists()  # huggingface_hub's current CLI
    r = run_cli("doctor", tmp_path=tmp_path, extra_env={"COLUMNS": "400"})
    assert "hf download moonshotai/Kimi-VL-A3B-Instruct --local-dir" in r.stdout, r.stdout
    for tool in ("xclip", "ffmpeg"):  # what typing non-ASCII text and recording.mp4 need (installed by setup.sh)
        row = next(line for line in r.stdout.splitlines() if line.strip("│┃ ").startswith(tool))
        assert f"/usr/bin/{tool}" in row and "ok" in row, row
    assert "huggingface-cli" not in r.stdout


def test_an_endpoint_without_v1_or_without_the_model_is_one_sentence_before_start(tmp_path: Path) -> None:
    """A real HTTP server that serves the OpenAI model list at /v1/models only (as vLLM does)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from kimi_agent.errors import ConfigError
    from kimi_agent.options import BackendOptions, check_endpoint, make_backend

    class Models(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:
            body = json.dumps({"object": "list", "data": [{"id": "kimi-vl", "object": "model"}]}).encode()
            self.send_response(200 if self.path == "/v1/models" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Models)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        no_v1 = run_cli("--endpoint", base, "--model", "kimi-vl", "--out", "out", "do it", tmp_path=tmp_path)
        wrong_model = run_cli("--endpoint", base + "/v1", "--model", "moonshotai/Kimi-VL-A3B-Instruct", "--out", "out",
                              "do it", tmp_path=tmp_path)
        assert check_endpoint(base + "/v1", model="kimi-vl") == "kimi-vl"  # the right pair passes
        # no --model given: the server's only model is the one to ask for
        assert check_endpoint(base + "/v1", model="moonshotai/Kimi-VL-A3B-Instruct", adopt=True) == "kimi-vl"
        adopted = make_backend(BackendOptions(endpoint=base + "/v1"))
        with pytest.raises(ConfigError, match="serves 'kimi-vl', not --model 'other'"):
            make_backend(BackendOptions(endpoint=base + "/v1", model="other"))
    finally:
        server.shutdown()
        server.server_close()
    assert no_v1.returncode == 2 and f"it usually ends in /v1, e.g. --endpoint {base}/v1" in no_v1.stderr, no_v1.stderr
    assert wrong_model.returncode == 2, wrong_model.stderr
    assert "serves 'kimi-vl', not --model 'moonshotai/Kimi-VL-A3B-Instruct'; pass --model kimi-vl" in wrong_model.stderr
    for r in (no_v1, wrong_model):
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()
    assert adopted.model == "kimi-vl"  # type: ignore[attr-defined]


def test_the_api_key_is_the_flag_else_openai_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from kimi_agent.options import BackendOptions

    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    assert BackendOptions(api_key="sk-flag").key() == "sk-flag"
    assert BackendOptions().key() == "sk-env"
    monkeypatch.setenv("OPENAI_API_KEY", "")
    assert BackendOptions().key() is None  # an empty variable sends no Authorization header
