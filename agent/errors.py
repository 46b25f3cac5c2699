"""The one exception hierarchy of kimi-agent.

Every error the product raises on purpose derives from `AgentError`; callers handle errors in one
place (the agent loop's error funnel, the CLI's exit path, the runner's per-task guard).
"""

from __future__ import annotations


class AgentError(Exception):
    """Base class of every error kimi-agent raises on purpose."""


class ModelOutputError(AgentError):
    """The model's reply could not be turned into actions."""


class ReplyError(ModelOutputError):
    """A reply was rejected; `str(err)` is written to be shown back to the model."""

    def __init__(self, message: str, *, kind: str = "invalid") -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind  # short machine-readable reason, e.g. "no_code", "off_screen"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReplyError) and (self.message, self.kind) == (other.message, other.kind)

    def __hash__(self) -> int:
        return hash((self.message, self.kind))


class ActionError(AgentError):
    """An action could not be executed (or is not supported) by an environment."""


class EnvironmentClosedError(AgentError):
    """An environment was used after `close()` or after its process died."""


class EnvironmentStartError(AgentError):
    """An environment (Xvfb, Chromium, Playwright, a VM server) could not be started or reached."""


class StartTimeoutError(EnvironmentStartError):
    """A process started but did not answer within its start bound (Xvfb's display, Chromium's CDP port);
    a slow or loaded machine may need a larger bound (`DesktopEnv(start_timeout_s=...)`)."""


class VMServerError(AgentError):
    """The OSWorld in-VM server failed a request: `endpoint` and `status` (None when no answer came)
    are attributes; the message carries the server's own reason (its 500 body)."""

    def __init__(self, message: str, *, endpoint: str, status: int | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status


class VMUnreachableError(VMServerError):
    """The OSWorld in-VM server could not be reached or did not answer in time (the VM may be dead)."""


class ConfigError(AgentError):
    """A configuration file or value is missing or invalid (the message names key and file)."""


class WeightLoadError(AgentError):
    """Checkpoint weights are missing, unexpected, mis-shaped or corrupt (names tensor and file)."""


class ModelUnavailableError(AgentError):
    """No model could be reached: no local weights, no network, no endpoint."""


class BackendError(AgentError):
    """A model backend failed while generating (endpoint error, runtime failure)."""


class TaskError(AgentError):
    """A task file is malformed, unsupported, or its setup/evaluation failed."""


class TaskUnsupportedError(TaskError):
    """A task needs a setup step, getter, metric or resource this machine does not support."""

    def __init__(self, message: str, *, names: list[str] | None = None) -> None:
        super().__init__(message)
        self.names = list(names or [])


class SetupStepError(TaskError):
    """A task's setup (or postconfig) step failed; the message names the step and why."""


class EvaluationError(TaskError):
    """A getter or metric failed while scoring an episode."""


class ArtifactError(AgentError):
    """A run folder's derived file (recording, report, replay) could not be made; names file and why."""
