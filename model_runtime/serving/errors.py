"""`ApiError`: a request that cannot be answered, with its HTTP status and OpenAI's error body."""

from __future__ import annotations

from typing import Any

from kimi_agent.errors import AgentError


class ApiError(AgentError):
    """Answered as `{"error": {"message", "type", "param", "code"}}` with HTTP `status`.

    type follows OpenAI: "invalid_request_error" (4xx caused by the request), "rate_limit_error"
    (a full queue), "server_error" (the model failed), "timeout" (a request ran past its bound).
    """

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class QueueFullError(ApiError):
    """The scheduler's queue is full: 429 with Retry-After, which OpenAI clients retry."""

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(429, message, type="rate_limit_error", code="queue_full",
                         headers={"Retry-After": str(retry_after_s)})


def as_api_error(err: BaseException) -> ApiError:
    """Any error that ended a request -> what its client is told (an `ApiError` as is; a full cache
    is a too-long request; a timeout a 504; anything else a 500 naming the error)."""
    from kimi_agent.model_runtime.static_decode import CacheFullError  # torch: loaded by the model already

    if isinstance(err, ApiError):
        return err
    if isinstance(err, CacheFullError):
        return ApiError(400, str(err), param="messages", code="context_length_exceeded")
    if isinstance(err, TimeoutError):
        return ApiError(504, str(err) or "the request ran past the server's time limit", type="timeout")
    return ApiError(500, f"the model failed on this request: {type(err).__name__}: {err}", type="server_error")
