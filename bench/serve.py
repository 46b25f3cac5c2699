"""`kimi-agent serve` under agent load: 1, 4 and 16 concurrent episodes against the real HTTP server,
the batching scheduler side by side with the serial one, in one run.

Each episode is an agent-like client: every step it sends the agent's real prompt (`history.
build_messages`: system prompt, the last K 1920x1080 screenshots as PNG data URLs, older steps as
text; `OpenAIBackend.to_openai_messages` makes the OpenAI messages), streams the reply, and sends the
next step as soon as the reply is in (no environment time). The server is the real Starlette app
under uvicorn on a loopback port, on a random-weight model (no checkpoint needed); replies have at
most --reply-tokens tokens (a random model rarely samples a stop token).

    python bench/serve.py                                      # tiny random model, CPU, fp32
    python bench/serve.py --device cuda                        # Kimi-VL-A3B sizes, random bf16

Per (episodes, scheduler): wall seconds, completion tokens/s over all episodes, step latency (mean and
p90, request sent -> last token), time to first token, the share of prompt tokens served from the
prefix cache, and for the batching scheduler the mean number of sequences per decode step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import torch
from agent_episode import ACTION, FIXTURE, THOUGHT, screenshot  # bench/ is on sys.path
from runtime import make_config, random_model, resolve_device_args

from kimi_agent.history import PastStep, build_messages
from kimi_agent.model_runtime.backends.openai import OpenAIBackend
from kimi_agent.model_runtime.engine import Engine
from kimi_agent.model_runtime.processor import KimiVLProcessor
from kimi_agent.model_runtime.scheduler import BatchScheduler
from kimi_agent.model_runtime.serving.app import ServeConfig, create_app
from kimi_agent.model_runtime.serving.batching import BatchingScheduler
from kimi_agent.model_runtime.serving.scheduler import Scheduler, SerialScheduler
from kimi_agent.model_runtime.serving.server import BackgroundServer
from kimi_agent.prompts import build_prompt

MODEL = "kimi-bench"


@dataclass
class StepResult:
    latency_s: float
    ttft_s: float
    completion_tokens: int
    prompt_tokens: int
    cached_tokens: int


def episode_bodies(episode: int, steps: int, k: int, policy: str, reply_tokens: int) -> list[dict[str, Any]]:
    """The request body of every step of one episode (screenshots distinct per episode and step),
    built before the clock starts (PNG encoding is the client's cost, not the server's)."""
    encoder = OpenAIBackend("http://unused", model=MODEL)
    prompt, past, out = build_prompt(), [], []
    for i in range(1, steps + 1):
        shot = screenshot(1000 * episode + i)
        messages, images = build_messages(prompt, f"task {episode}: enable Do Not Track", past, shot,
                                          history_images=k, history_policy=policy)  # type: ignore[arg-type]
        out.append({"model": MODEL, "messages": encoder.to_openai_messages(messages, images),
                    "max_tokens": reply_tokens, "temperature": 0, "stream": True,
                    "stream_options": {"include_usage": True}})
        past.append(PastStep(i, THOUGHT, ACTION, shot))
    encoder.close()
    return out


def run_step(http: httpx.Client, url: str, body: dict[str, Any]) -> StepResult:
    """One streamed request: latency to the last event, time to the first content piece, usage."""
    t0 = time.perf_counter()
    ttft, usage = None, None
    with http.stream("POST", url, json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"server answered {r.status_code}: {r.read().decode()[:300]}")
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(f"server error: {event['error']}")
            if ttft is None and event["choices"] and event["choices"][0]["delta"].get("content"):
                ttft = time.perf_counter() - t0
            if event.get("usage"):
                usage = event["usage"]
    latency = time.perf_counter() - t0
    assert usage is not None, "no usage chunk"
    return StepResult(latency, ttft if ttft is not None else latency, usage["completion_tokens"],
                      usage["prompt_tokens"], usage["prompt_tokens_details"]["cached_tokens"])


def server(scheduler: Scheduler, processor: KimiVLProcessor, max_model_len: int) -> BackgroundServer:
    """The app under uvicorn on a loopback port, in a thread of this process."""
    return BackgroundServer(create_app(scheduler, processor, ServeConfig(model_name=MODEL, max_model_len=max_model_len)))


def load(url: str, episodes: list[list[dict[str, Any]]], timeout_s: float) -> tuple[float, list[StepResult]]:
    """All episodes concurrently, each step after the previous one's reply; (wall s, every step)."""
    def one(bodies: list[dict[str, Any]]) -> list[StepResult]:
        with httpx.Client(timeout=timeout_s) as http:
            return [run_step(http, url, b) for b in bodies]

    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(episodes)) as pool:
        results = list(pool.map(one, episodes))
    return time.perf_counter() - t0, [r for ep in results for r in ep]


def p90(xs: list[float]) -> float:
    return sorted(xs)[min(len(xs) - 1, int(0.9 * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--config", default=None, choices=["tiny", "full"], help="default: tiny on cpu, full on cuda")
    ap.add_argument("--episodes", default="1,4,16", help="comma-separated concurrent episode counts")
    ap.add_argument("--steps", type=int, default=3, help="agent steps per episode")
    ap.add_argument("--history", type=int, default=3, help="screenshots in the prompt (K)")
    ap.add_argument("--history-policy", default="exact", choices=["exact", "chunked"])
    ap.add_argument("--reply-tokens", type=int, default=None, help="default: 16 on cpu, 200 on cuda")
    ap.add_argument("--schedulers", default="serial,batch", help="which schedulers, in this order")
    ap.add_argument("--repeat", type=int, default=1, help="rounds per scheduler (the fastest is shown)")
    args = ap.parse_args()
    dtype = resolve_device_args(args)
    config, reply = args.config, args.reply_tokens
    counts = [int(x) for x in args.episodes.split(",")]
    model = random_model(make_config(config), args.device, dtype)
    processor = KimiVLProcessor.from_pretrained(FIXTURE)
    workload = {n: [episode_bodies(e, args.steps, args.history, args.history_policy, reply) for e in range(n)]
                for n in counts}
    warmup = episode_bodies(99_999, 1, args.history, args.history_policy, reply)[0]  # shares no screenshot
    max_len = 8192 if config == "tiny" else 16384
    print(f"config={config} device={args.device} dtype={str(dtype).removeprefix('torch.')} steps={args.steps} "
          f"K={args.history} policy={args.history_policy} reply<={reply} tokens, torch threads "
          f"{torch.get_num_threads()}\n")
    print(f"{'episodes':>8} {'scheduler':9} {'wall s':>8} {'tok/s':>8} {'step ms':>9} {'p90 ms':>9} {'ttft ms':>9} "
          f"{'cached':>7} {'rows/step':>9}")
    kinds = args.schedulers.split(",")
    for n in counts:
        best: dict[str, Row] = {}
        for _ in range(args.repeat):  # rounds alternate the schedulers; each keeps its fastest round
            for kind in kinds:
                row = measure(kind, model, processor, n, max_len, max(counts), workload[n], warmup)
                if kind not in best or row.wall_s < best[kind].wall_s:
                    best[kind] = row
        for kind in kinds:
            row = best[kind]
            vs = f"   ({best['serial'].wall_s / row.wall_s:.2f}x serial)" if kind != "serial" and "serial" in best else ""
            print(f"{n:8d} {kind:9} {row.format()}{vs}", flush=True)


@dataclass
class Row:
    wall_s: float
    steps: list[StepResult]
    rows_per_step: float

    def format(self) -> str:
        tokens = sum(s.completion_tokens for s in self.steps)
        cached = sum(s.cached_tokens for s in self.steps) / max(1, sum(s.prompt_tokens for s in self.steps))
        lat = [s.latency_s * 1000 for s in self.steps]
        ttft = [s.ttft_s * 1000 for s in self.steps]
        return (f"{self.wall_s:8.2f} {tokens / self.wall_s:8.1f} {statistics.mean(lat):9.1f} {p90(lat):9.1f} "
                f"{statistics.mean(ttft):9.1f} {cached:7.0%} {self.rows_per_step:9.2f}")


def measure(kind: str, model: Any, processor: KimiVLProcessor, n: int, max_len: int, max_queue: int,
            episodes: list[list[dict[str, Any]]], warmup: dict[str, Any]) -> Row:
    """One round: a fresh server with `kind`'s scheduler, a warm-up request, then the episodes."""
    batch = None
    if kind == "serial":
        scheduler: Scheduler = SerialScheduler(Engine(model, processor, max_cache_tokens=max_len), max_queue=max_queue)
    elif kind == "batch":
        batch = BatchScheduler(model, processor, slots=n, max_len=max_len)
        scheduler = BatchingScheduler(batch, max_queue=max_queue)
    else:
        raise SystemExit(f"unknown scheduler {kind!r}: use serial or batch")
    with server(scheduler, processor, max_len) as running:
        with httpx.Client(timeout=600) as http:  # first-call costs (allocation, graph capture)
            run_step(http, running.base_url + "/chat/completions", warmup)
        if batch is not None:
            batch.decode_steps = batch.decoded_rows = 0
        wall, steps = load(running.base_url + "/chat/completions", episodes, timeout_s=3600)
    rows = batch.decoded_rows / max(1, batch.decode_steps) if batch is not None else 1.0
    return Row(wall, steps, rows)

if __name__ == "__main__":
    main()
