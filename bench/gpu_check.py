"""One-GPU check of the runtime at full Kimi-VL-A3B size with random bf16 weights built on the device:

1. graph decode == eager decode (greedy tokens of a captured-graph decoder vs the same fixed-shape
   step run eagerly: must be identical; agreement with the dynamic eager path is reported too);
2. decode tokens/s at batch 1, 4, 16 (eager vs CUDA graph), next to the weight-bandwidth ceiling
   (bytes of weights one batch-1 token reads / measured device copy bandwidth), and at batch 1
   through `Engine.stream_ids` (a token read back per step, as an agent step decodes), with and
   without lookahead (the next step queued before the token is read);
3. time to first token of a 1920x1080 screenshot (1032 image tokens) + 300 text tokens, with the
   vision and language-model parts;
4. agent step time: `bench/agent_episode.py`'s 10-step sliding-window episode on the full model
   (real history policy, real processor, 200-token replies), exact-K vs chunked;
5. (on request) where an agent step's time goes;
6. batched decode of the serving scheduler (`BatchScheduler`, sequences at their own positions):
   graph == static tokens, and generated tok/s with eager vs graph steps, graph with and without
   lookahead ("sync": each step's tokens read before the next step is queued);
7. the fused decode kernels (Triton) on one full-size layer: the MoE (`fused_moe.py`), the MLA
   attention (`fused_mla.py`) and the residual add + RMSNorm (`fused_norm.py`), each against its
   eager reference (and the MoE against grouped_mm), with the time of each both ways, replayed from
   CUDA graphs;
8. (on request, 2-3 minutes) `bench/kernel_sweep.py`: the fused kernels' block sizes and warps,
   shipped vs the fastest found here.

Section 2 times graph decode three ways side by side: as `StaticDecoder` runs it (Triton kernels for
attention and norms; the fused MoE for up to 4 rows), with the grouped_mm MoE in every bucket, and
with no Triton at all (KIMI_AGENT_TRITON=0: the eager formulas, the path before these kernels).

    bash bench/gpu_check.sh            # sets up imports, then runs this; about 3-5 minutes on an H100/H200
    python bench/gpu_check.py --compile   # also time torch.compile + graph decode (adds minutes of compile)
    python bench/gpu_check.py --fp32 --sections 1,6   # graph vs eager tokens in fp32 (no bf16 near-ties;
                                                      # 66 GB of weights: an H200, or an H100 with little else)

Every section runs even if an earlier one failed (its error is printed); if a failure broke the CUDA
context (a faulty kernel), the sections left run again in a fresh process without the Triton
kernels. The summary table at the end says which targets were met (H100 targets: decode b1 >= 400
tok/s, TTFT <= 60 ms).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from functools import partial
from typing import Any
from unittest import mock

import torch
from kernel_sweep import sweep_model, time_us  # sets TRITON_INTERPRET=1 under --smoke, before Triton loads

T0 = time.perf_counter()
# decode paths compared: name -> (the decoder's MoE, Triton kernels on). BEFORE_PATHS are the paths
# before the fused kernels: the grouped_mm MoE, and no Triton at all (every eager formula)
PATHS = {"auto": ("auto", True), "grouped_mm": ("grouped_mm", True), "no Triton": ("grouped_mm", False)}
BEFORE_PATHS = ("grouped_mm", "no Triton")
SUMMARY: dict[str, str] = {}


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


def section(name: str, fn: Callable[[], None]) -> None:
    log(f"== {name}")
    try:
        fn()
    except Exception:  # a benchmark keeps going: the next section's figures are still worth having
        SUMMARY[name] = "FAILED (traceback above)"
        traceback.print_exc()
        sys.stdout.flush()


def cuda_context_error() -> str | None:
    """The error that broke this process's CUDA context (an illegal address in a kernel is sticky:
    every later CUDA call fails), or None while it still works."""
    try:
        torch.cuda.synchronize()
        torch.ones(1, device="cuda").add_(1).item()
    except RuntimeError as e:
        return str(e).splitlines()[0]
    return None


def restart_without_triton(error: str, rest: list[str]) -> None:
    """Print what was measured, then run the sections left in a fresh process with the Triton kernels
    off (KIMI_AGENT_TRITON=0), so one faulty kernel does not cost the rest of a lent GPU's time."""
    log(f"the CUDA context is broken ({error})")
    for k, v in SUMMARY.items():
        print(f"  {k:34} {v}", flush=True)
    if not rest or os.environ.get("KIMI_AGENT_TRITON") == "0":
        log("nothing left to run" if not rest else "it broke without Triton too: stopping")
        return
    argv = [a for i, a in enumerate(sys.argv) if a != "--sections" and not a.startswith("--sections=")
            and (i == 0 or sys.argv[i - 1] != "--sections")]
    log(f"running the sections left ({','.join(rest)}) in a fresh process, without the Triton kernels")
    os.execve(sys.executable, [sys.executable, *argv, "--sections", ",".join(rest)],
              {**os.environ, "KIMI_AGENT_TRITON": "0"})


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def cuda_ms(fn: Callable[[], Any], repeat: int = 5) -> tuple[float, Any]:
    """Median wall ms of fn() over `repeat` runs (synchronised), and the last result."""
    times, out = [], None
    for _ in range(repeat):
        sync()
        t = time.perf_counter()
        out = fn()
        sync()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), out


def copy_bandwidth_gbs(device: str, nbytes: int = 4 << 30) -> float:
    """Device-to-device copy bandwidth, bytes read + written per second, in GB/s."""
    x = torch.zeros(nbytes // 2, dtype=torch.bfloat16, device=device)
    y = torch.empty_like(x)
    y.copy_(x)
    ms, _ = cuda_ms(lambda: y.copy_(x), repeat=10)

    return 2 * nbytes / (ms / 1000) / 1e9


def decode_weight_bytes(model: Any) -> int:
    """Bytes of weights one batch-1 decode token reads: the language model except the embedding
    table and the routed experts, plus top-k routed experts per MoE layer."""
    total = 0
    lm = model.language_model
    for name, p in lm.named_parameters():
        if ".experts." in name or name.endswith("embed_tokens.weight"):
            continue
        total += p.numel() * p.element_size()
    for moe in model.moe_layers():
        per_expert = sum(p.numel() * p.element_size() for p in moe.experts[0].parameters())
        total += moe.top_k * per_expert
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile + CUDA graph decode")
    ap.add_argument("--steps", type=int, default=128, help="decode steps timed per batch size")
    ap.add_argument("--episode-steps", type=int, default=10)
    ap.add_argument("--fp32", action="store_true",
                    help="build the model in float32 (graph vs eager tokens without bf16 rounding near-ties)")
    ap.add_argument("--sections", default="7,1,2,3,4,6", help="which sections to run, e.g. 1,2")
    ap.add_argument("--batches", default="1,4,16", help="decode batch sizes timed in section 2")
    ap.add_argument("--variants", default="exact,chunked,exact-nocache", help="agent episode variants")
    ap.add_argument("--skip-eager", action="store_true", help="section 2 without the eager baseline")
    ap.add_argument("--smoke", action="store_true",
                    help="check this script on the CPU with the tiny config (no graphs, numbers meaningless)")
    args = ap.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("gpu_check needs a CUDA GPU; this torch build sees none")
    dev, graph = ("cpu", "static") if args.smoke else ("cuda", "graph")
    dtype = torch.float32 if args.smoke or args.fp32 else torch.bfloat16

    from agent_episode import report as episode_report
    from agent_episode import run as run_episode
    from runtime import GRID, TEXT_TOKENS, make_config, random_model, screenshot_prompt

    from kimi_agent.model_runtime.engine import Engine
    from kimi_agent.model_runtime.generate import decode_step, prefill, sample
    from kimi_agent.model_runtime.moe import grouped_mm_available
    from kimi_agent.model_runtime.static_decode import StaticDecoder

    if dev == "cuda":
        props = torch.cuda.get_device_properties(0)
        log(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {props.name}, "
            f"{props.total_memory / 2**30:.0f} GiB, grouped_mm: {grouped_mm_available()}")
    bw = copy_bandwidth_gbs(dev, 4 << 30 if dev == "cuda" else 64 << 20)
    log(f"device copy bandwidth {bw:.0f} GB/s (read + write)")
    t = time.perf_counter()
    model = random_model(make_config("tiny" if args.smoke else "full"), dev, dtype)
    sync()
    wbytes = decode_weight_bytes(model)
    ceiling = bw * 1e9 / wbytes
    log(f"random {str(dtype).removeprefix('torch.')} model built in {time.perf_counter() - t:.1f} s, "
        f"{sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30:.1f} GiB; a batch-1 token reads {wbytes / 1e9:.2f} GB of "
        f"weights -> ceiling {ceiling:.0f} tok/s at {bw:.0f} GB/s")
    SUMMARY["bandwidth ceiling b1"] = f"{ceiling:.0f} tok/s"

    def stepper(cache: Any, mode: str | None, moe: str = "auto") -> Callable[[torch.Tensor], torch.Tensor]:
        """A decode step: eager `decode_step` (mode None or "eager") or a `StaticDecoder`."""
        if mode in (None, "eager"):
            return lambda tk: decode_step(model, tk, cache)
        return StaticDecoder(model, cache, mode=mode, moe=moe)  # type: ignore[arg-type]

    def greedy(ids: torch.Tensor, steps: int, mode: str | None) -> list[int]:
        cache = model.new_cache(ids.shape[0], ids.shape[1] + steps + 8)
        step = stepper(cache, mode)
        out = []
        with torch.inference_mode():
            tok = sample(prefill(model, ids, cache))
            for _ in range(steps):
                out.append(int(tok[0]))
                tok = sample(step(tok))
        return out

    def forced(ids: torch.Tensor, tokens: list[int], mode: str | None, moe: str = "auto") -> torch.Tensor:
        """Teacher-forced logits [n, V] (fp32, CPU) of feeding `tokens` after prompt `ids`."""
        cache = model.new_cache(1, ids.shape[1] + len(tokens) + 8)
        step = stepper(cache, mode, moe)
        rows = []
        with torch.inference_mode():
            rows.append(prefill(model, ids, cache)[0].float().cpu())
            for t in tokens[:-1]:
                rows.append(step(torch.tensor([t], device=dev))[0].float().cpu())
        return torch.stack(rows)

    def check_tokens() -> None:
        """Greedy tokens of static-eager vs graph (identical kernels: should match), and, since random
        weights give near-tied logits where bf16 rounding flips the argmax, a teacher-forced check:
        the same 64 tokens fed to each path, logits compared step by step."""
        ids = torch.randint(0, 160000, (1, 300), generator=torch.Generator().manual_seed(0)).to(dev)
        modes = ["static", graph] + (["compile+graph"] if args.compile else [])
        got = {m: greedy(ids, 64, m) for m in modes}
        same = got[graph] == got["static"]
        log(f"greedy: {graph} == static-eager tokens: {same}")
        ref = forced(ids, got["static"], "static")
        top2 = ref.topk(2, dim=-1).values
        log(f"logit scale: std {ref.std():.3f}, median top-1/top-2 gap {(top2[:, 0] - top2[:, 1]).median():.4f}")
        results = []
        moe_paths = [(None, "auto"), *((m, "auto") for m in modes[1:])]
        if not args.smoke:
            moe_paths += [("static", path) for path in BEFORE_PATHS]
        for mode, moe in moe_paths:
            with triton_off(not PATHS[moe][1]):
                other = forced(ids, got["static"], mode, PATHS[moe][0])
            diff = (other - ref).abs().max(dim=-1).values
            agree = int((other.argmax(-1) == ref.argmax(-1)).sum())
            name = (mode or "dynamic eager") + (f" ({moe} MoE)" if moe != "auto" else "")
            log(f"teacher-forced {name} vs static-eager: top-1 agrees {agree}/64, max |dlogit| {diff.max():.4f} "
                f"(median {diff.median():.4f})")
            results.append(f"{name} {agree}/64 |d|max {diff.max():.3f}")
        SUMMARY["graph == eager (greedy; forced)"] = f"{same}; " + "; ".join(results)

    def triton_off(off: bool) -> Any:
        """Every Triton path off (KIMI_AGENT_TRITON=0) while in the block, if `off`."""
        from kimi_agent.model_runtime.kernels import TRITON_ENV

        return mock.patch.dict(os.environ, {TRITON_ENV: "0"} if off else {})

    def decode_rates() -> None:
        modes = ([] if args.skip_eager else [("eager", "eager", "auto")]) + [(graph, graph, "auto")]
        if not args.smoke:
            modes += [(f"{graph} {path}", graph, path) for path in BEFORE_PATHS]
        if args.compile:
            modes.append(("compile+graph", "compile+graph", "auto"))
        batches = [int(b) for b in args.batches.split(",")]
        print(f"{'mode':18} " + " ".join(f"{f'b{b} tok/s':>10}" for b in batches) + f" {'ms/tok':>8}", flush=True)
        for label, mode, moe in modes:
            rates = []
            for b in batches:
                ids = torch.randint(0, 160000, (b, 512), device=dev)
                cache = model.new_cache(b, 512 + args.steps + 16)
                with triton_off(not PATHS[moe][1]), torch.inference_mode():
                    step = stepper(cache, mode, PATHS[moe][0])
                    tok = sample(prefill(model, ids, cache))
                    for _ in range(3):  # the first captures the graph: with no Triton, none is in it
                        tok = sample(step(tok))
                    sync()
                    t = time.perf_counter()
                    for _ in range(args.steps):
                        tok = sample(step(tok))
                    sync()
                rates.append(b * args.steps / (time.perf_counter() - t))
            print(f"{label:18} " + " ".join(f"{r:10.1f}" for r in rates) + f" {1000 * batches[0] / rates[0]:8.2f}",
                  flush=True)
            SUMMARY[f"decode {label} b{'/'.join(map(str, batches))}"] = (
                " / ".join(f"{r:.0f}" for r in rates) + f" tok/s ({rates[0] / ceiling:.0%} of ceiling at b{batches[0]})")
        engine_rate()

    def engine_rate() -> None:
        """Batch-1 decode as an agent step gets it: through `Engine.stream_ids`, which reads each
        token back to the host (stop check, prefix bookkeeping), unlike the rows above; with lookahead
        (the next step queued before the token is read: the default on CUDA) and without. Timed from
        the first token (the prefill is behind it) to the last, the best of 3 runs."""
        for lookahead in (True, False):
            engine = Engine(model, decode=graph, max_cache_tokens=512 + args.steps + 64, lookahead=lookahead)
            engine.stop_token_ids = ()  # random weights: every run has its full length
            ids = torch.randint(0, 160000, (1, 512), generator=torch.Generator().manual_seed(1))
            engine.generate_ids(ids, max_new_tokens=8)  # prefill once; capture the graph
            best = float("inf")
            for _ in range(3):
                n, t = 0, 0.0
                for n, _tok in enumerate(engine.stream_ids(ids, max_new_tokens=args.steps), start=1):
                    if n == 1:
                        t = time.perf_counter()
                sync()
                assert n == args.steps, n
                best = min(best, time.perf_counter() - t)
            rate = (args.steps - 1) / best
            label = f"engine {graph}" + ("" if lookahead else " sync")
            print(f"{label:18} {rate:10.1f} {'':>10} {'':>10} {1000 / rate:8.2f}   (Engine.stream_ids"
                  f"{', lookahead' if lookahead else ', no lookahead'})", flush=True)
            SUMMARY[f"decode {label} b1"] = f"{rate:.0f} tok/s ({rate / ceiling:.0%} of ceiling)"

    def ttft() -> None:
        ids, pv, hws = screenshot_prompt(dev)
        pv = pv.to(dtype)
        cache = model.new_cache(1, ids.shape[1] + 8)

        def first_token() -> int:
            cache.reset()
            return int(sample(prefill(model, ids, cache, pv, hws))[0])

        with torch.inference_mode():
            first_token()
            total, _ = cuda_ms(first_token)
            vision, feats = cuda_ms(lambda: model.image_features(pv, hws))

            def lm_only() -> None:
                cache.reset()
                prefill(model, ids, cache, image_features=feats)

            lm, _ = cuda_ms(lm_only)
        log(f"TTFT {total:.1f} ms for {ids.shape[1]} tokens ({GRID[0]}x{GRID[1]} patches -> "
            f"{GRID[0] * GRID[1] // 4} image tokens + {TEXT_TOKENS} text): vision {vision:.1f} ms, "
            f"LM prefill {lm:.1f} ms")
        SUMMARY["TTFT 1920x1080 + 300 tokens"] = f"{total:.1f} ms (vision {vision:.1f}, LM {lm:.1f})"
        if dev == "cuda":
            with torch.inference_mode():
                vision_attention_backends(feats.shape[0] * 4)
                for name, fn in (("vision tower", lambda: model.image_features(pv, hws)), ("LM prefill", lm_only)):
                    top_kernels(name, fn)

    def vision_attention_backends(patches: int) -> None:
        """Which SDPA kernels take MoonViT's attention shape ([1, 16, patches, 72] bf16), and their time."""
        from torch.nn.attention import SDPBackend, sdpa_kernel

        vcfg = model.config.vision
        q, k, v = (torch.randn(1, vcfg.num_attention_heads, patches, vcfg.head_dim, device=dev, dtype=dtype)
                   for _ in range(3))
        times = []
        for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION,
                        SDPBackend.MATH):
            try:
                with sdpa_kernel(backend):
                    ms, _ = cuda_ms(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
                times.append(f"{backend.name.lower()} {ms:.2f} ms")
            except RuntimeError as e:  # this backend does not take the shape
                times.append(f"{backend.name.lower()} unavailable ({str(e).splitlines()[0][:60]})")
        ms, _ = cuda_ms(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
        log(f"vision attention [1, {vcfg.num_attention_heads}, {patches}, {vcfg.head_dim}] per layer: default "
            f"{ms:.2f} ms; " + "; ".join(times))

    def top_kernels(name: str, fn: Callable[[], Any]) -> None:
        """The GPU kernels that take the most time in one call of `fn`."""
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            sync()
        kernels = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
        busy = sum(getattr(e, "self_device_time_total", 0.0) for e in kernels)
        log(f"{name}: {sum(e.count for e in kernels)} kernels, {busy / 1000:.1f} ms of GPU time; the top ones:")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=10, max_name_column_width=70), flush=True)

    def agent_steps() -> None:
        ns = argparse.Namespace(decode=graph, history=3, steps=args.episode_steps,
                                reply_tokens=16 if args.smoke else 200, variants=args.variants)
        results = run_episode(model, ns)
        episode_report(results)
        for name in ("exact", "chunked"):
            tail = [r for r in results[name] if r["step"] >= 4]
            SUMMARY[f"agent step ({name}, steps 4+)"] = (
                f"{statistics.mean(r['model_ms'] for r in tail):.0f} ms model "
                f"+ {statistics.mean(r['process_ms'] for r in tail):.0f} ms processor, "
                f"{statistics.mean(r['prefilled'] for r in tail):.0f} tokens prefilled, {ns.reply_tokens} decoded")

    def profile_step() -> None:
        """Where an agent step's time goes: one Engine call split into prefill and decode, and the
        top operators/kernels of a few decode tokens."""
        from agent_episode import FIXTURE, screenshot

        from kimi_agent.history import build_messages
        from kimi_agent.model_runtime.engine import Engine
        from kimi_agent.model_runtime.processor import KimiVLProcessor
        from kimi_agent.prompts import build_prompt

        processor = KimiVLProcessor.from_pretrained(FIXTURE)
        engine = Engine(model, processor, decode=graph)
        engine.stop_token_ids = ()
        msgs, imgs = build_messages(build_prompt(), "enable Do Not Track", [], screenshot(1))
        b = processor(messages=msgs, images=imgs)
        call = (b["input_ids"], b["pixel_values"], b["image_grid_hws"])
        for n in (1, 201):
            engine.reset()
            engine.generate_ids(*call, max_new_tokens=n)  # warm-up (capture)
        times = {}
        for n in (1, 201):
            engine.reset()
            engine.vision_cache.clear()
            times[n], _ = cuda_ms(lambda n=n: engine.generate_ids(*call, max_new_tokens=n), repeat=3)
        log(f"engine call, {call[0].shape[1]} prompt tokens: prefill+1 token {times[1]:.1f} ms, 200 more tokens "
            f"{times[201] - times[1]:.1f} ms ({(times[201] - times[1]) / 200:.2f} ms/token)")
        SUMMARY["engine step split"] = (f"prefill {times[1]:.0f} ms, decode {(times[201] - times[1]) / 200:.2f} "
                                        f"ms/token")
        from torch.profiler import ProfilerActivity, profile

        engine.reset()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            engine.generate_ids(*call, max_new_tokens=21)
        print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=14, max_name_column_width=60), flush=True)
        for moe in ("auto", "grouped_mm") if dev == "cuda" else ("auto",):
            decode_kernels(moe)

    def decode_kernels(moe: str) -> None:
        """Kernels and GPU kernel time per static-eager decode token with MoE path `moe`."""
        from torch.profiler import ProfilerActivity, profile

        cache = model.new_cache(1, 400)
        dec = StaticDecoder(model, cache, mode="static", moe=moe)
        with torch.inference_mode():
            tok = sample(prefill(model, torch.randint(0, 160000, (1, 300), device=dev), cache))
            for _ in range(3):
                tok = sample(dec(tok))
            sync()
            with profile(activities=[ProfilerActivity.CUDA if dev == "cuda" else ProfilerActivity.CPU]) as prof:
                for _ in range(5):
                    tok = sample(dec(tok))
                sync()
        print(f"GPU kernels of 5 static-eager decode tokens ({moe} MoE):", flush=True)
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60),
              flush=True)
        if dev != "cuda":
            return
        kernels = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
        busy_us = sum(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0)) for e in kernels)
        launches = sum(e.count for e in kernels)
        log(f"per decode token ({moe} MoE): {launches / 5:.0f} kernels, {busy_us / 5 / 1000:.2f} ms of GPU kernel "
            f"time (graph replay takes about this long when the GPU, not the launches, is the limit)")
        SUMMARY[f"decode kernels/token ({moe} MoE)"] = f"{launches / 5:.0f} kernels, {busy_us / 5 / 1000:.2f} ms GPU time"

    def fused_moe_layer() -> None:
        """One full-size MoE layer at 1 and 4 rows: fused op vs its eager reference and vs grouped_mm
        (the routed experts each picks, the output difference), and the time per layer each way."""
        from kimi_agent.model_runtime.fused_moe import (
            fused_moe_available,
            fused_moe_forward,
            moe_decode_args,
            moe_decode_reference,
        )

        moe = model.moe_layers()[0]
        log(f"fused MoE runs as Triton kernels here: {fused_moe_available(torch.device(dev), dtype)}")
        for rows in (1, 4):
            x = (torch.randn(rows, 1, moe.gate.weight.shape[1], device=dev) * 0.5).to(dtype)
            with torch.inference_mode():
                fused = fused_moe_forward(moe, x[:, 0])
                ref = moe_decode_reference(x[:, 0], *moe_decode_args(moe))
                moe.impl = "grouped_mm" if dev == "cuda" else "grouped"
                grouped = moe(x)[:, 0]
                moe.impl = "auto"
            scale = ref.float().abs().max()
            log(f"{rows} rows: |fused - reference| max {(fused.float() - ref.float()).abs().max() / scale:.2e}, "
                f"|fused - grouped| max {(fused.float() - grouped.float()).abs().max() / scale:.2e} (of max |out|)")
            times = {}
            for impl in ("fused", "grouped_mm") if dev == "cuda" else ("fused",):
                with torch.inference_mode():
                    moe.impl = impl
                    times[impl] = layer_us(partial(moe, x))
                    moe.impl = "auto"
            log(f"{rows} rows: one MoE layer " + ", ".join(f"{k} {v:.1f} us" for k, v in times.items()))
            SUMMARY[f"MoE layer b{rows} (us)"] = ", ".join(f"{k} {v:.1f}" for k, v in times.items()) + (
                f"; |fused-ref| {(fused.float() - ref.float()).abs().max() / scale:.1e}")

    def fused_layer() -> None:
        fused_moe_layer()
        fused_attention_layer()

    def fused_attention_layer() -> None:
        """One full-size attention layer's decode op and one add + norm, Triton vs eager reference."""
        from kimi_agent.model_runtime.fused_mla import mla_decode_reference
        from kimi_agent.model_runtime.rope import paired_cos_sin, text_rope_cos_sin

        cfg = model.config.text
        attn = model.language_model.model.layers[1].self_attn
        norm = model.language_model.model.layers[1].post_attention_layernorm
        for rows, pos in ((1, 1500), (4, 3000)):
            g = torch.Generator(device=dev).manual_seed(rows)
            cache = (torch.randn(rows, 4096, cfg.kv_lora_rank + cfg.qk_rope_head_dim, device=dev, generator=g)
                     * 0.5).to(dtype)
            x = (torch.randn(rows, 1, cfg.hidden_size, device=dev, generator=g) * 0.5).to(dtype)
            positions = torch.full((rows,), pos, device=dev)
            cos2, sin2 = paired_cos_sin(*text_rope_cos_sin(positions[:1], cfg.qk_rope_head_dim, cfg.rope_theta, dtype))
            with torch.inference_mode():
                q, kva = attn.q_proj(x).view(rows, -1), attn.kv_a_proj_with_mqa(x).view(rows, -1)
                args = (q, kva, cos2, sin2, positions)
                tail = (attn.kv_a_layernorm.weight, attn.kv_b_proj.weight, attn.kv_a_layernorm.eps, cfg.softmax_scale,
                        attn.num_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim)
                fused_cache, ref_cache = cache[:, : pos + 1000].clone(), cache[:, : pos + 1000].clone()
                fused = torch.ops.kimi_agent.mla_decode(*args, fused_cache, *tail)
                ref = mla_decode_reference(*args, ref_cache, *tail)
                scale = ref.float().abs().max()
                log(f"MLA decode, {rows} rows at position {pos}: |fused - reference| max "
                    f"{(fused.float() - ref.float()).abs().max() / scale:.2e} (of max |out|), latent written "
                    f"{'the same' if torch.allclose(fused_cache.float(), ref_cache.float(), atol=2e-2) else 'DIFFERENTLY'}")
                times = {"fused": layer_us(partial(torch.ops.kimi_agent.mla_decode, *args, fused_cache, *tail))}
                with triton_off(True):
                    times["eager"] = layer_us(partial(torch.ops.kimi_agent.mla_decode, *args, ref_cache, *tail))
                h = x.view(rows, -1)
                a = (torch.randn(rows, cfg.hidden_size, device=dev, generator=g)).to(dtype)
                n_fused = norm.add_and_norm(h, a)
                with triton_off(True):
                    n_ref = norm.add_and_norm(h, a)
                    norm_eager = layer_us(partial(norm.add_and_norm, h, a))
                norm_fused = layer_us(partial(norm.add_and_norm, h, a))
            log(f"MLA decode, {rows} rows: fused {times['fused']:.1f} us, eager {times['eager']:.1f} us; add + RMSNorm "
                f"fused {norm_fused:.1f} us, eager {norm_eager:.1f} us (|d| max "
                f"{(n_fused[1].float() - n_ref[1].float()).abs().max():.2e})")
            SUMMARY[f"MLA decode b{rows} (us)"] = (f"fused {times['fused']:.1f}, eager {times['eager']:.1f}; "
                                                   f"|fused-ref| {(fused.float() - ref.float()).abs().max() / scale:.1e}")

    def layer_us(fn: Callable[[], Any]) -> float:
        """Microseconds per call of `fn`, replayed from a CUDA graph of 50 calls (CPU: eager)."""
        return time_us(fn, dev)

    def kernel_sweep() -> None:
        """bench/kernel_sweep.py on this model: the fused kernels' launch settings, shipped vs tuned."""
        SUMMARY.update(sweep_model(model, dev, dtype, log, limit=2 if args.smoke else None))

    def batched_decode() -> None:
        """The serving scheduler's batched step: 4 prompts of different lengths decoding together at their
        own positions, graph vs static (same kernels: tokens must match) vs eager; then tok/s."""
        from kimi_agent.model_runtime.scheduler import BatchScheduler, GenerationRequest

        g = torch.Generator().manual_seed(1)
        reqs = [torch.randint(0, 160000, (1, n), generator=g) for n in (300, 520, 41, 1100)]

        def run(mode: str, prompts: list[torch.Tensor], new: int) -> tuple[list[list[int]], float]:
            """mode: a decode mode; "... sync" without lookahead (each step's tokens read before the next)."""
            sched = BatchScheduler(model, slots=len(prompts), max_len=2048, stop_token_ids=(),  # type: ignore[arg-type]
                                   decode=mode.removesuffix(" sync"), lookahead=not mode.endswith(" sync"))
            warm = [sched.submit(GenerationRequest(p, max_new_tokens=8)) for p in prompts]  # capture/compile
            sched.run_until_idle()
            assert all(h.done.is_set() for h in warm)
            sync()
            t = time.perf_counter()
            handles = [sched.submit(GenerationRequest(p, max_new_tokens=new)) for p in prompts]
            sched.run_until_idle()
            sync()
            return [h.result(0).token_ids for h in handles], len(prompts) * new / (time.perf_counter() - t)

        tokens = {m: run(m, reqs, 32)[0] for m in ("static", graph, graph + " sync", "eager")}
        same = tokens[graph] == tokens["static"] == tokens[graph + " sync"]
        log(f"batched greedy ({len(reqs)} rows at their own positions): {graph} (with and without lookahead) == "
            f"static tokens: {same}; eager == static: {tokens['eager'] == tokens['static']}")
        rates = {}
        for rows in (4, 16):
            prompts = [torch.randint(0, 160000, (1, 200 + 37 * i), generator=g) for i in range(rows)]
            rates[rows] = {m: run(m, prompts, 64)[1] for m in ("eager", graph, graph + " sync")}
            log(f"{rows} sequences, 64 new tokens each (prefills included): "
                + ", ".join(f"{m} {r:.0f} tok/s" for m, r in rates[rows].items()))
        SUMMARY["batched decode graph == static"] = str(same)
        SUMMARY["batched tok/s eager/graph/sync b4, b16"] = ", ".join(
            f"{r['eager']:.0f}/{r[graph]:.0f}/{r[graph + ' sync']:.0f}" for r in rates.values())

    sections = {"1": ("1. graph decode == eager decode", check_tokens), "2": ("2. decode throughput", decode_rates),
                "3": ("3. time to first token", ttft), "4": ("4. agent episode steps", agent_steps),
                "5": ("5. agent step profile", profile_step), "6": ("6. batched decode (serving)", batched_decode),
                "7": ("7. fused decode kernels, one layer", fused_layer),
                "8": ("8. fused kernels' launch settings sweep", kernel_sweep)}
    order = args.sections.split(",")
    for i, key in enumerate(order):  # in the order given
        section(*sections[key])
        if dev == "cuda" and (broken := cuda_context_error()) is not None:
            restart_without_triton(broken, order[i + 1:])
            break
    from kimi_agent.model_runtime.kernels import unbuildable

    SUMMARY["Triton kernels not built here"] = "; ".join(f"{k}: {v}" for k, v in unbuildable().items()) or "none"
    log("== summary")
    for k, v in SUMMARY.items():
        print(f"  {k:34} {v}")
    if dev == "cuda":
        print(f"  {'peak GPU memory':34} {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB", flush=True)


if __name__ == "__main__":
    main()
