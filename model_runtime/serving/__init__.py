"""`kimi-agent serve`: the native runtime behind an OpenAI-compatible HTTP API.

- `protocol`: request models, OpenAI messages -> our messages + PIL images (data URLs only), response shapes
- `errors`: `ApiError`, an error with its HTTP status and OpenAI's `{"error": {...}}` body
- `scheduler`: the interface between the HTTP layer and the model (submit -> async text stream),
  and `SerialScheduler`, one worker thread running one `Engine` one request at a time
- `batching`: `BatchingScheduler`, the interface on continuous batching (`model_runtime.scheduler`)
- `app`: the Starlette app (`/v1/models`, `/v1/chat/completions`, SSE streaming)
- `server`: load a checkpoint and run the app under uvicorn

Starlette and uvicorn are imported only by `app` and `server`.
"""
