"""Run a task's setup steps, and score an episode the way OSWorld's `DesktopEnv.evaluate` does.

Order and combination rules (OSWorld): `postconfig` runs first; `infeasible` scores 1 only when
the episode ended with a failure report, and any other task scores 0 when it did; otherwise
metric i scores getter `result[i]` against `expected[i]`. With `conj="and"` the first 0 ends
scoring at 0, else the mean; with `conj="or"` the first 1 ends at 1, else the max. A getter
raising FileNotFoundError scores that metric 0. One addition: profile-file getters read after a
graceful browser close when the task's postconfig did not close it, so Preferences are flushed.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kimi_agent.errors import AgentError, EvaluationError, SetupStepError, TaskError
from kimi_agent.tasks.context import EpisodeEnd, EvalContext, TaskHost
from kimi_agent.tasks.registry import GETTERS, METRICS, SETUP_STEPS
from kimi_agent.tasks.spec import GetterConfig, SetupStep, TaskSpec

# Getters that read profile files Chromium writes lazily (everything but the CDP/rule/file ones).
PROFILE_FILE_GETTERS = frozenset({
    "enable_do_not_track", "enable_enhanced_safety_browsing", "enable_safe_browsing", "new_startup_page",
    "default_search_engine", "profile_name", "chrome_font_size", "chrome_language",
    "data_delete_automacally", "bookmarks", "history", "cookie_data", "find_unpacked_extension_path",
})
log = logging.getLogger("kimi_agent.tasks")
_LIVE_BROWSER_GETTERS = frozenset({"open_tabs_info", "active_tab_info", "active_url_from_accessTree", "page_info",
                                   "pdf_from_url", "chrome_appearance_mode_ui",
                                   "gotoRecreationPage_and_get_html_content"})


def run_steps(host: TaskHost, steps: Sequence[SetupStep], *, where: str = "config") -> None:
    """Execute setup steps in order; a failure raises SetupStepError naming `where[i]` and type."""
    for i, step in enumerate(steps):
        entry = SETUP_STEPS.entry(step.type)
        try:
            params: Any = entry.params.model_validate(step.parameters) if entry.params else step.parameters
            entry.fn(host, params)
        except SetupStepError as e:
            raise SetupStepError(f"{where}[{i}] {step.type}: {e}") from e
        except (ValidationError, OSError, subprocess.SubprocessError) as e:
            raise SetupStepError(f"{where}[{i}] {step.type}: {type(e).__name__}: {e}") from e
        except AgentError:
            raise
        except Exception as e:  # what a task file's values make a step raise (a browser's, a decoder's...)
            raise _untyped(SetupStepError, f"{where}[{i}] {step.type}", e) from e


def _untyped(kind: type[TaskError], where: str, e: Exception) -> TaskError:
    """`kind` naming `where` for an exception that a step, getter or metric raised on a task file's
    values (a page that never answers, a pattern that is no regex, bytes that are no text...): the
    task's result then says where, and its episode is kept. The traceback goes to the worker's log."""
    log.warning("%s raised %s", where, type(e).__name__, exc_info=e)
    return kind(f"{where}: {type(e).__name__}: {str(e)[:500]}")


@dataclass(slots=True)
class MetricResult:
    func: str
    score: float
    result: Any = None
    expected: Any = None
    note: str | None = None

    def record(self) -> dict[str, Any]:
        return {"func": self.func, "score": self.score, "result": _short(self.result),
                "expected": _short(self.expected), "note": self.note}


@dataclass(slots=True)
class Evaluation:
    score: float
    metrics: list[MetricResult] = field(default_factory=list)
    note: str | None = None

    def record(self) -> dict[str, Any]:
        return {"score": self.score, "metrics": [m.record() for m in self.metrics], "note": self.note}


def _short(value: Any, limit: int = 2000) -> Any:
    """JSON-friendly value for result.json (long values and odd types become truncated text)."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + "..."
    text = repr(value)
    if isinstance(value, list | dict) and len(text) <= limit:
        return value
    return text if len(text) <= limit else text[:limit] + "..."


def _get(ctx: EvalContext, config: GetterConfig | None, where: str) -> Any:
    """The getter's value; FileNotFoundError passes (that metric scores 0), anything else but a
    typed error becomes an EvaluationError naming `where` (`evaluator.result[0] vm_file`)."""
    if config is None:
        return None
    try:
        return GETTERS.get(config.type)(ctx, config)
    except (FileNotFoundError, AgentError):
        raise
    except Exception as e:
        raise _untyped(EvaluationError, f"{where} {config.type}", e) from e


def _flush_profile_if_needed(spec: TaskSpec, host: TaskHost) -> None:
    types = {g.type for g in spec.evaluator.result if g is not None}
    if types & PROFILE_FILE_GETTERS and not types & _LIVE_BROWSER_GETTERS and host.browser_running():
        host.stop_browser()


def evaluate(spec: TaskSpec, host: TaskHost, episode: EpisodeEnd, *, cache_dir: Path) -> Evaluation:
    """Postconfig, then the score in [0, 1] with every metric's inputs for the record."""
    ev = spec.evaluator
    run_steps(host, ev.postconfig, where="evaluator.postconfig")
    if ev.infeasible:
        score = METRICS.get("infeasible")(episode.reported_failure)
        return Evaluation(score, [MetricResult("infeasible", score, result=episode.status)])
    if episode.reported_failure:
        return Evaluation(0.0, note="the episode ended with a failure report")
    _flush_profile_if_needed(spec, host)
    ctx = EvalContext(host=host, episode=episode, cache_dir=cache_dir)
    results: list[MetricResult] = []
    for i, (func, res_cfg, exp_cfg, options) in enumerate(zip(ev.func, ev.result, ev.expected, ev.options,
                                                               strict=True)):
        try:
            result = _get(ctx, res_cfg, f"evaluator.result[{i}]")
        except FileNotFoundError as e:
            results.append(MetricResult(func, 0.0, note=f"file not found: {e}"))
        else:
            expected = _get(ctx, exp_cfg, f"evaluator.expected[{i}]")
            metric = METRICS.get(func)
            try:
                raw = metric(result, expected, **options) if exp_cfg is not None else metric(result, **options)
                score = float(raw)
            except EvaluationError as e:  # its message may start with the metric's name already
                said = str(e).removeprefix(f"{func}: ")
                raise EvaluationError(f"evaluator.func[{i}] {func}: {said}") from e
            except AgentError:
                raise
            except Exception as e:  # a metric given values of the wrong shape (by the task file or the page)
                raise _untyped(EvaluationError, f"evaluator.func[{i}] {func}", e) from e
            results.append(MetricResult(func, score, result=result, expected=expected))
        last = results[-1].score
        if ev.conj == "and" and last == 0.0:
            return Evaluation(0.0, results)
        if ev.conj == "or" and last == 1.0:
            return Evaluation(1.0, results)
    scores = [m.score for m in results]
    return Evaluation(sum(scores) / len(scores) if ev.conj == "and" else max(scores), results)
