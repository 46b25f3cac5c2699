"""Typed models of an OSWorld task file (`evaluation_examples/examples/<domain>/<uuid>.json`).

`TaskSpec` mirrors the JSON field for field. OSWorld lets several evaluator fields be either one
value or a list (`func`, `result`, `expected`, `options`); `EvaluatorSpec` normalizes all of them to
parallel lists in one validator, so the evaluator never branches on shape. Unknown top-level keys
are tolerated (newer OSWorld files add fields) and recorded in `TaskSpec.extra_keys`.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator


class TaskFieldError(ValueError):
    """A load-time check found a bad value: `field` is its dotted path inside the step's parameters
    or the getter (e.g. "command"); the loader prefixes where the step or getter sits."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


#: Steps one `config` (or one `postconfig`) may hold. Real OSWorld files have at most 11; the bound
#: keeps a file from asking for thousands of load-time checks (each may run `dpkg-query`) and steps.
MAX_SETUP_STEPS = 100


class SetupStep(BaseModel):
    """One `config[]` / `postconfig[]` entry: a step type and its keyword parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(min_length=1)
    parameters: dict[str, Any] = Field(default_factory=dict)


class GetterConfig(BaseModel):
    """A `result` / `expected` entry: the getter's name plus whatever keys that getter reads."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str = Field(min_length=1)

    @property
    def params(self) -> dict[str, Any]:
        """Every key except `type` (for example `rules` of the `rule` getter)."""
        return dict(self.model_extra or {})


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


class EvaluatorSpec(BaseModel):
    """`evaluator`: metric `func[i]` applied to `result[i]` (and `expected[i]`, `options[i]`).

    After validation `func`, `result`, `expected` and `options` are lists of the same length
    (`expected[i]` is None where a metric takes no expected value; `result` is empty only for
    `infeasible`). `conj` combines several metrics as OSWorld does.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    func: list[str] = Field(min_length=1)
    conj: Literal["and", "or"] = "and"
    result: list[GetterConfig | None] = Field(default_factory=list)
    expected: list[GetterConfig | None] = Field(default_factory=list)
    options: list[dict[str, Any]] = Field(default_factory=list)
    postconfig: list[SetupStep] = Field(default_factory=list, max_length=MAX_SETUP_STEPS)

    @model_validator(mode="before")
    @classmethod
    def _normalize(cls, data: Any) -> Any:
        """The one place where OSWorld's "str or list" fields become parallel lists."""
        if not isinstance(data, dict):
            return data
        # keys starting with "_" are notes for people (OSWorld's `_config_note`), which OSWorld ignores
        data = {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("_"))}
        funcs = _as_list(data.get("func"))
        n = len(funcs)
        data["func"] = funcs
        for key in ("result", "expected"):
            items = [None if item in (None, {}) else item for item in _as_list(data.get(key))]
            data[key] = items if items or key == "result" else [None] * n
        raw_options = data.get("options")
        if isinstance(raw_options, list):
            data["options"] = [{} if o is None else o for o in raw_options]
        elif raw_options is None or isinstance(raw_options, dict):
            data["options"] = [dict(raw_options or {}) for _ in range(n)]
        # anything else (5, true, "ab") is left as is: the field's own validation names `options`
        return data

    @model_validator(mode="after")
    def _check_lengths(self) -> EvaluatorSpec:
        if self.infeasible:
            return self
        n = len(self.func)
        for name, items in (("result", self.result), ("expected", self.expected), ("options", self.options)):
            if len(items) != n:
                raise ValueError(f"evaluator.{name} has {len(items)} entries but func has {n}")
        for i, r in enumerate(self.result):
            if r is None:
                raise ValueError(f"evaluator.result[{i}] is empty (metric {self.func[i]!r} needs a getter)")
        return self

    @property
    def infeasible(self) -> bool:
        return self.func == ["infeasible"]


class TaskSpec(BaseModel):
    """One OSWorld task."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: str = Field(min_length=1)
    snapshot: str = ""
    instruction: str = Field(min_length=1)
    source: str | list[str] = ""  # where the task came from: a URL, or several (OSWorld ignores it)
    config: list[SetupStep] = Field(default_factory=list, max_length=MAX_SETUP_STEPS)
    trajectory: str = "trajectories/"
    related_apps: list[str] = Field(default_factory=list)
    evaluator: EvaluatorSpec
    proxy: StrictBool = False  # every real OSWorld file has true/false; "yes" is a mistake
    fixed_ip: StrictBool = False
    possibility_of_env_change: str | None = None

    @property
    def extra_keys(self) -> list[str]:
        """Top-level keys this model does not know (kept, not interpreted)."""
        return sorted((self.model_extra or {}).keys())

    def all_steps(self) -> list[tuple[str, SetupStep]]:
        """Every setup step with where it sits: `config[i]` or `evaluator.postconfig[i]`."""
        out = [(f"config[{i}]", s) for i, s in enumerate(self.config)]
        out += [(f"evaluator.postconfig[{i}]", s) for i, s in enumerate(self.evaluator.postconfig)]
        return out

    def with_values(self, values: dict[str, str]) -> TaskSpec:
        """A copy with `{KEY}` tokens replaced in every string (e.g. `{LOCAL_SERVER}` of the
        built-in suite); other tokens such as `{CLIENT_PASSWORD}` are left for the setup steps."""
        text = self.model_dump_json()
        for key, value in values.items():
            text = text.replace("{" + key + "}", json.dumps(value)[1:-1])
        return TaskSpec.model_validate_json(text)
