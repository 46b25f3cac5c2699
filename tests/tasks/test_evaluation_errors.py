"""What a task file's values make a setup step, a getter or a metric raise becomes a typed error that
names where in the task file it happened (`config[0] ...`, `evaluator.result[0] ...`,
`evaluator.func[0] ...`), so the runner records it in the task's result and keeps its episode,
instead of an "internal error" result without steps or trajectory. Real setup steps, getters and
metrics where one raises on such values; the three registered here are test doubles of a step, a
getter and a metric that raise what a browser or a decoder would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kimi_agent.errors import EvaluationError, SetupStepError
from kimi_agent.tasks.context import EpisodeEnd, HostPaths
from kimi_agent.tasks.evaluate import evaluate, run_steps
from kimi_agent.tasks.host import COMMAND_OUTPUT_LIMIT, _read_output
from kimi_agent.tasks.registry import getter, metric, setup_step
from kimi_agent.tasks.spec import SetupStep, TaskSpec


class PageTimeout(Exception):
    """What Playwright raises for a page that never answers (not one of ours)."""


@getter("test_page_never_answers")
def _page_never_answers(ctx: Any, config: Any) -> Any:
    raise PageTimeout("Timeout 10000ms exceeded")


@getter("test_value")
def _value(ctx: Any, config: Any) -> Any:
    return config.params["value"]


@metric("test_metric_overflows")
def _overflows(result: Any, expected: Any) -> float:
    return float(10 ** 400)


@setup_step("test_step_bad_bytes")
def _bad_bytes(host: Any, params: Any) -> None:
    b"\xff".decode("utf-8")


class FakeHost:
    """A test double of the worker's host: a home folder, no browser."""

    def __init__(self, home: Path) -> None:
        self.paths = HostPaths(home)
        self.client_password = "pw"

    def browser_running(self) -> bool:
        return False

    def stop_browser(self) -> None:
        pass


def _spec(func: str, result: dict[str, Any], expected: dict[str, Any] | None) -> TaskSpec:
    return TaskSpec.model_validate({"id": "t", "instruction": "x", "evaluator": {
        "func": func, "result": result, **({"expected": expected} if expected else {})}})


def test_a_getter_that_raises_is_an_evaluation_error_naming_the_getter(tmp_path: Path) -> None:
    spec = _spec("exact_match", {"type": "test_page_never_answers"}, {"type": "rule", "rules": {"expected": "a"}})
    with pytest.raises(EvaluationError) as err:
        evaluate(spec, FakeHost(tmp_path), EpisodeEnd("success"), cache_dir=tmp_path / "c")  # type: ignore[arg-type]
    assert str(err.value) == ("evaluator.result[0] test_page_never_answers: PageTimeout: Timeout 10000ms exceeded")


def test_a_metric_that_raises_is_an_evaluation_error_naming_the_metric(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    # a real metric given a pattern from the task file that is not a regular expression
    spec = _spec("is_expected_url_pattern_match", {"type": "test_value", "value": "http://h/a"},
                 {"type": "rule", "rules": {"expected": ["("]}})
    with pytest.raises(EvaluationError) as err:
        evaluate(spec, host, EpisodeEnd("success"), cache_dir=tmp_path / "c")  # type: ignore[arg-type]
    assert str(err.value).startswith("evaluator.func[0] is_expected_url_pattern_match: rules.expected[0] '(' is "
                                     "not a valid regex"), err.value  # the metric named once
    # and a score that is not a number
    spec = _spec("test_metric_overflows", {"type": "test_value", "value": 1}, {"type": "test_value", "value": 2})
    with pytest.raises(EvaluationError, match=r"^evaluator\.func\[0\] test_metric_overflows: OverflowError: "):
        evaluate(spec, host, EpisodeEnd("success"), cache_dir=tmp_path / "c")  # type: ignore[arg-type]


def test_a_setup_step_that_raises_is_a_setup_step_error_naming_the_step(tmp_path: Path) -> None:
    steps = [SetupStep.model_validate({"type": "test_step_bad_bytes", "parameters": {}})]
    with pytest.raises(SetupStepError, match=r"^config\[0\] test_step_bad_bytes: UnicodeDecodeError: "):
        run_steps(FakeHost(tmp_path), steps)  # type: ignore[arg-type]


def test_command_output_is_text_whatever_its_bytes_and_is_cut_at_its_limit(tmp_path: Path) -> None:
    with open(tmp_path / "out", "w+b") as f:
        f.write(b"caf\xc3\xa9 \xff\r\nnext\rlast\n")
        assert _read_output(f) == "caf\u00e9 \ufffd\nnext\nlast\n"  # universal newlines, as text=True gives
    with open(tmp_path / "big", "w+b") as f:
        f.truncate(COMMAND_OUTPUT_LIMIT + 100)  # a sparse file of zeros
        text = _read_output(f)
    assert len(text) == COMMAND_OUTPUT_LIMIT + len("\n[output cut at 16 MiB]")
    assert text.endswith("\n[output cut at 16 MiB]")


def test_a_missing_file_of_several_is_named_by_its_own_path(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    host = FakeHost(tmp_path)
    spec = _spec("exact_match", {"type": "vm_file", "multi": True, "path": ["/home/user/a.txt", "/home/user/b.txt"],
                                 "dest": ["a.txt", "b.txt"], "gives": [1]}, {"type": "rule", "rules": {"expected": "x"}})
    ev = evaluate(spec, host, EpisodeEnd("success"), cache_dir=tmp_path / "c")  # type: ignore[arg-type]
    assert ev.score == 0.0 and ev.metrics[0].note == "file not found: /home/user/b.txt"  # not a.txt, the first


def test_a_download_from_a_loopback_server_is_streamed_to_its_file(tmp_path: Path) -> None:
    from support.page_server import page_server

    from kimi_agent.tasks.setup_steps import DownloadParams, download

    body = bytes(range(256)) * 20_000  # 5 MB, in chunks of 1 MiB
    with page_server(lambda path: (body, "application/octet-stream")) as base:
        download(FakeHost(tmp_path), DownloadParams.model_validate(  # type: ignore[arg-type]
            {"files": [{"url": f"{base}/data.bin", "path": "/home/user/in/data.bin"}]}))
    assert (tmp_path / "in" / "data.bin").read_bytes() == body
