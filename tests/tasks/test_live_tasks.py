"""Tasks against a real Chromium on a private Xvfb: setup -> (solve | nothing) -> postconfig -> score."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.desk import local_desk

from kimi_agent.tasks import load_tasks
from kimi_agent.tasks.context import EpisodeEnd
from kimi_agent.tasks.evaluate import evaluate, run_steps
from kimi_agent.tasks.spec import TaskSpec
from kimi_agent.tasks.suites import CHROME_SUITE, LOCAL_SERVER_KEY, serve_pages
from kimi_agent.tasks.suites.solutions import (
    apply_solution,
    do_nothing_backend,
    give_up_backend,
    solution_backend,
)

pytestmark = pytest.mark.skipif(shutil.which("Xvfb") is None or shutil.which("chromium") is None,
                                reason="needs Xvfb and Chromium")

CHROME = Path(__file__).parents[1] / "fixtures" / "osworld" / "chrome"
SUITE = {t.id: t.spec for t in load_tasks(CHROME_SUITE)}


@pytest.fixture(scope="module")
def pages() -> Iterator[str]:
    with serve_pages() as base:
        yield base


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with local_desk(tmp_path_factory.mktemp("worker") / "home") as desk:
        yield desk


def _prepared(desk: Any, spec: TaskSpec) -> Any:
    _, host = desk
    host.reset()
    run_steps(host, spec.config)
    return host


def _score(desk: Any, spec: TaskSpec, status: str, tmp_path: Path) -> float:
    return evaluate(spec, desk[1], EpisodeEnd(status), cache_dir=tmp_path / "cache").score


@pytest.mark.parametrize("task_id", sorted(k for k, v in SUITE.items() if v is not None and not v.evaluator.infeasible))
def test_suite_task_scores_both_ways(desk: Any, pages: str, tmp_path: Path, task_id: str) -> None:
    spec = SUITE[task_id]
    assert spec is not None
    spec = spec.with_values({LOCAL_SERVER_KEY: pages})
    _prepared(desk, spec)
    assert _score(desk, spec, "success", tmp_path) == 0.0, "doing nothing must not pass"
    host = _prepared(desk, spec)
    apply_solution(task_id, host, local_server=pages)
    assert _score(desk, spec, "success", tmp_path) == 1.0


def test_suite_infeasible_task(desk: Any, tmp_path: Path) -> None:
    spec = SUITE["suite-infeasible-language"]
    assert spec is not None
    _prepared(desk, spec)
    assert _score(desk, spec, "failure", tmp_path) == 1.0
    assert _score(desk, spec, "success", tmp_path) == 0.0


def _episode(desk: Any, spec: TaskSpec, factory: Any, tmp_path: Path, max_steps: int = 8) -> tuple[Any, float]:
    from kimi_agent.loop import Agent, AgentSettings

    env, host = desk
    host.reset()
    run_steps(host, spec.config)
    agent = Agent(factory(spec, host, ""), env, AgentSettings(max_steps=max_steps, out_dir=tmp_path / "runs"))
    result = agent.run_episode(spec.instruction)
    score = evaluate(spec, host, EpisodeEnd(result.status, result.steps), cache_dir=tmp_path / "cache").score
    return result, score


def test_real_do_not_track_task_by_real_clicks(desk: Any, tmp_path: Path) -> None:
    """The real OSWorld file: google-chrome/socat/pkill mapped; the DNT toggle and Confirm are clicked."""
    from kimi_agent.trajectory import read_steps

    spec = load_tasks(CHROME).by_id("030eeff7").spec
    assert spec is not None
    result, score = _episode(desk, spec, solution_backend, tmp_path)
    assert (result.status, score) == ("success", 1.0)
    executed = " ".join(str(s) for s in read_steps(result.run_dir))
    assert executed.count("pyautogui.click(") >= 2  # the toggle, then Confirm: real clicks, no setPref
    result, score = _episode(desk, spec, do_nothing_backend, tmp_path)
    assert (result.status, score) == ("success", 0.0)


def test_real_infeasible_task_needs_a_failure_report(desk: Any, tmp_path: Path) -> None:
    spec = load_tasks(CHROME).by_id("3720f614").spec
    assert spec is not None
    result, score = _episode(desk, spec, give_up_backend, tmp_path)
    assert (result.status, score) == ("failure", 1.0)
    result, score = _episode(desk, spec, do_nothing_backend, tmp_path)
    assert (result.status, score) == ("success", 0.0)
