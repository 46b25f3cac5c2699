"""Launch-settings sweep of the fused decode kernels on one full-size layer each: which block sizes and
warps make the MoE (`kernels/moe_decode_triton.py`) and the MLA attention (`kernels/mla_decode_triton.py`)
fastest on this GPU, next to the settings they ship with.

For each kernel in turn, every combination of its candidate settings (`MOE_GRID`, `MLA_GRID`) runs with
the other kernels at the best settings found so far (one pass of coordinate descent). Each run is
checked against the shipped settings' output (a setting that changes the answer by more than
`TOLERANCE` of its largest value is marked wrong, one Triton cannot build is marked so) and timed per
call from a CUDA graph of 50 calls. The table lists the three fastest settings of each kernel and the
shipped one; the last lines give the whole operation's time, shipped vs tuned (each the median of three
alternating timings), and the settings to put into `launch_settings`, or "keep shipped" where the
tuned ones are less than `MIN_GAIN` faster.

    python bench/kernel_sweep.py                 # a CUDA GPU: one MoE layer at 1 and 4 rows, one
                                                 # attention layer at 1 row, position 1500 (2-3 minutes)
    python bench/kernel_sweep.py --smoke         # CPU, tiny config, Triton's interpreter: checks the script
    bash bench/gpu_check.sh --sections 8         # the same inside gpu_check, on its full model
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

if "--smoke" in sys.argv:  # before Triton is imported anywhere
    os.environ["TRITON_INTERPRET"] = "1"

import torch

TOLERANCE = 2e-2
MIN_GAIN = 0.03  # tuned settings replace the shipped ones only when at least this much faster
MOE_GRID: dict[str, dict[str, list[int]]] = {
    "route_kernel": {"warps": [4, 8]},
    "gate_up_kernel": {"BLOCK_I": [8, 16, 32], "BLOCK_D": [128, 256, 512], "warps": [4, 8]},
    "down_combine_kernel": {"BLOCK_D": [4, 8, 16], "BLOCK_C": [512, 1024], "warps": [4, 8]},
}
# "chunk" is attend_kernel's and combine_kernel's CHUNK_S together (they must agree)
MLA_GRID: dict[str, dict[str, list[int]]] = {
    "prep_kernel": {"BLOCK_R": [64, 128, 256], "warps": [4, 8]},
    "chunk": {"CHUNK_S": [32, 64, 128]},
    "attend_kernel": {"BLOCK_S": [16, 32, 64], "warps": [4, 8]},
    "combine_kernel": {"BLOCK_SP": [8, 16], "BLOCK_V": [16, 32, 64], "warps": [4, 8]},
}


def time_us(fn: Callable[[], Any], device: str, reps: int = 50) -> float:
    """Microseconds per call of `fn`: replayed from a CUDA graph of `reps` calls on CUDA (median of 5
    replays), one eager call elsewhere."""
    if device != "cuda":
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e6
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            fn()
    times = []
    for _ in range(5):
        torch.cuda.synchronize()
        t = time.perf_counter()
        graph.replay()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1e6 / reps)
    return statistics.median(times)


@dataclass
class Trial:
    kernel: str
    setting: dict[str, int]
    us: float | None = None  # None: wrong or not built
    note: str = ""


@dataclass
class Sweep:
    """One operation's sweep: its trials, and the overrides it ends with."""

    name: str
    shipped_us: float = 0.0
    tuned_us: float = 0.0
    best: dict[str, tuple[dict[str, int], int | None]] = field(default_factory=dict)
    trials: list[Trial] = field(default_factory=list)
    dropped: dict[str, tuple[dict[str, int], int | None]] = field(default_factory=dict)  # best, under MIN_GAIN


def shipped_vs_tuned(shipped: Callable[[], Any], tuned: Callable[[], Any], device: str, rounds: int = 3
                     ) -> tuple[float, float]:
    """Median microseconds per call of each, timed alternately (so drift hits both alike)."""
    a, b = [], []
    for _ in range(rounds):
        a.append(time_us(shipped, device))
        b.append(time_us(tuned, device))
    return statistics.median(a), statistics.median(b)


def _overrides(kernel: str, setting: dict[str, int]) -> dict[str, tuple[dict[str, int], int | None]]:
    constants = {k: v for k, v in setting.items() if k != "warps"}
    if kernel == "chunk":  # one constant of two kernels
        return {"attend_kernel": (constants, None), "combine_kernel": (constants, None)}
    return {kernel: (constants, setting.get("warps"))}


def _merge(a: dict[str, tuple[dict[str, int], int | None]],
           b: dict[str, tuple[dict[str, int], int | None]]) -> dict[str, tuple[dict[str, int], int | None]]:
    out = dict(a)
    for kernel, (constants, warps) in b.items():
        old_constants, old_warps = out.get(kernel, ({}, None))
        out[kernel] = ({**old_constants, **constants}, old_warps if warps is None else warps)
    return out


def sweep(name: str, run: Callable[[Any], torch.Tensor], grid: dict[str, dict[str, list[int]]], device: str,
          valid: Callable[[str, dict[str, int]], bool] = lambda kernel, setting: True,
          limit: int | None = None) -> Sweep:
    """Coordinate descent over `grid` for `run(overrides) -> output`; see the module docstring.
    `limit`: at most this many settings per kernel (the smoke run)."""
    from triton.compiler.errors import CompilationError
    from triton.runtime.errors import OutOfResources

    ref = run(None).float()
    scale = float(ref.abs().max()) or 1.0
    result = Sweep(name)  # shipped_us and tuned_us: timed side by side at the end
    for kernel, axes in grid.items():
        settings = [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]
        settings = [s for s in settings if valid(kernel, s)][:limit]
        # to beat: the settings so far (so a kernel's shipped setting stays unless another is faster)
        fastest = (time_us(lambda: run(result.best), device), result.best)
        for setting in settings:
            trial = Trial(kernel, setting)
            result.trials.append(trial)
            overrides = _merge(result.best, _overrides(kernel, setting))
            try:
                err = float((run(overrides).float() - ref).abs().max()) / scale
            except (CompilationError, OutOfResources) as e:
                trial.note = f"not built: {type(e).__name__}"
                continue
            if err > TOLERANCE:
                trial.note = f"WRONG: |d| {err:.1e} of max"
                continue
            trial.us = time_us(lambda o=overrides: run(o), device)  # type: ignore[misc]
            if trial.us < fastest[0]:
                fastest = (trial.us, overrides)
        result.best = fastest[1]
    # the verdict: shipped and tuned side by side; a gain under MIN_GAIN is noise, not a reason to change
    result.shipped_us, result.tuned_us = shipped_vs_tuned(lambda: run(None), lambda: run(result.best), device)
    if result.best and result.tuned_us > result.shipped_us * (1 - MIN_GAIN):
        result.dropped, result.best = result.best, {}
    return result


def report(result: Sweep, log: Callable[[str], None], shipped: dict[str, dict[str, int]]) -> None:
    """The three fastest settings of each kernel and the shipped one, then shipped vs tuned."""
    log(f"{result.name}: {len(result.trials)} settings tried")
    for kernel in dict.fromkeys(t.kernel for t in result.trials):
        trials = [t for t in result.trials if t.kernel == kernel]
        ok = sorted((t for t in trials if t.us is not None), key=lambda t: t.us or 0.0)
        ship = [t for t in trials if all(shipped.get(kernel, {}).get(k) == v for k, v in t.setting.items())]
        shown = ok[:3] + [t for t in ship if all(t is not o for o in ok[:3])]
        for t in shown:
            mark = " (shipped)" if t in ship else ""
            figure = f"{t.us:9.1f} us" if t.us is not None else f"{'-':>12}"
            log(f"  {kernel:20} {figure}  {t.setting}{mark}{'  ' + t.note if t.note else ''}")
        bad = [t for t in trials if t.us is None]
        if bad:
            log(f"  {kernel:20} {len(bad)} of {len(trials)} settings wrong or not built: "
                + "; ".join(f"{t.setting} {t.note}" for t in bad[:3]))
    log(f"{result.name}: {verdict(result)}")


def verdict(result: Sweep) -> str:
    """Shipped vs tuned in one line, and what to change."""
    if not (result.best or result.dropped):
        return f"shipped {result.shipped_us:.1f} us; no other setting was faster: keep the shipped"
    times = (f"shipped {result.shipped_us:.1f} us, tuned {result.tuned_us:.1f} us "
             f"({result.shipped_us / result.tuned_us:.2f}x; medians of 3 alternating timings)")
    if result.dropped:
        return f"{times}: under {MIN_GAIN:.0%} faster, keep the shipped (the best found: {result.dropped})"
    return f"{times}; overrides {result.best}"


def shipped_settings(settings: dict[str, tuple[dict[str, Any], int]], grid: dict[str, dict[str, list[int]]]
                     ) -> dict[str, dict[str, int]]:
    """The shipped value of each swept axis, per grid kernel (to mark the shipped row)."""
    out: dict[str, dict[str, int]] = {}
    for kernel, axes in grid.items():
        source = settings["attend_kernel" if kernel == "chunk" else kernel]
        out[kernel] = {a: (source[1] if a == "warps" else source[0][a]) for a in axes}
    return out


def sweep_moe(moe: Any, rows: int, device: str, dtype: torch.dtype, log: Callable[[str], None],
              limit: int | None = None) -> Sweep:
    """The fused MoE launcher on `moe` (a stacked `DeepseekV3MoE`) at `rows` tokens."""
    from kimi_agent.model_runtime.fused_moe import moe_decode_args
    from kimi_agent.model_runtime.kernels.moe_decode_triton import launch_settings, moe_decode

    gate, bias, w13, w2, experts, top_k, inter, shared_inter, scale, renorm = moe_decode_args(moe)
    g = torch.Generator(device=device).manual_seed(rows)
    x = (torch.randn(rows, gate.shape[1], device=device, generator=g) * 0.5).to(dtype)

    def run(overrides: Any) -> torch.Tensor:
        return moe_decode(x, gate, bias, w13, w2, experts=experts, top_k=top_k, inter=inter,
                          shared_inter=shared_inter, scale=scale, renorm=renorm, overrides=overrides)

    with torch.inference_mode():
        result = sweep(f"MoE layer, {rows} row(s)", run, MOE_GRID, device, limit=limit)
    shipped = launch_settings(d=gate.shape[1], experts=experts, top_k=top_k, inter=inter, shared_inter=shared_inter,
                              renorm=renorm)
    report(result, log, shipped_settings(shipped, MOE_GRID))
    return result


def sweep_mla(attn: Any, rows: int, position: int, device: str, dtype: torch.dtype, log: Callable[[str], None],
              limit: int | None = None) -> Sweep:
    """The fused MLA decode launcher on `attn` (a `DeepseekV3Attention`) at `rows` rows, `position`."""
    from kimi_agent.model_runtime.kernels.mla_decode_triton import launch_settings, mla_decode
    from kimi_agent.model_runtime.rope import paired_cos_sin, text_rope_cos_sin

    cfg = attn.cfg
    rank, rope, nope, dv = cfg.kv_lora_rank, cfg.qk_rope_head_dim, cfg.qk_nope_head_dim, cfg.v_head_dim
    g = torch.Generator(device=device).manual_seed(rows)
    window = position + 500
    cache = (torch.randn(rows, window, rank + rope, device=device, generator=g) * 0.5).to(dtype)
    x = (torch.randn(rows, cfg.hidden_size, device=device, generator=g) * 0.5).to(dtype)
    positions = torch.full((rows,), position, device=device)
    cos2, sin2 = paired_cos_sin(*text_rope_cos_sin(positions[:1], rope, cfg.rope_theta, dtype))
    with torch.inference_mode():
        q, kva = attn.q_proj(x), attn.kv_a_proj_with_mqa(x)

    def run(overrides: Any) -> torch.Tensor:
        return mla_decode(q, kva, cos2, sin2, positions, cache, attn.kv_a_layernorm.weight, attn.kv_b_proj.weight,
                          eps=attn.kv_a_layernorm.eps, scale=cfg.softmax_scale, heads=attn.num_heads, nope=nope,
                          rope=rope, v_dim=dv, overrides=overrides)

    def valid(kernel: str, s: dict[str, int]) -> bool:
        return {"prep_kernel": rank % s.get("BLOCK_R", 1) == 0, "combine_kernel": dv % s.get("BLOCK_V", 1) == 0
                }.get(kernel, True)

    with torch.inference_mode():
        result = sweep(f"MLA decode, {rows} row(s) at position {position}", run, MLA_GRID, device, valid, limit)
    shipped = launch_settings(heads=attn.num_heads, nope=nope, rope=rope, rank=rank, v_dim=dv)
    report(result, log, shipped_settings(shipped, MLA_GRID))
    return result


def sweep_model(model: Any, device: str, dtype: torch.dtype, log: Callable[[str], None],
                limit: int | None = None) -> dict[str, str]:
    """Both sweeps on `model`'s first MoE layer and its second layer's attention; summary lines."""
    moe = model.moe_layers()[0]
    attn = model.language_model.model.layers[1].self_attn
    results = [sweep_moe(moe, rows, device, dtype, log, limit) for rows in (1, 4)]
    results.append(sweep_mla(attn, 1, 1500, device, dtype, log, limit))
    return {f"tuned {r.name}": (f"{r.shipped_us:.1f} -> {r.tuned_us:.1f} us ({r.shipped_us / r.tuned_us:.2f}x)"
                                + ("" if r.best else "; keep shipped") if r.best or r.dropped
                                else f"{r.shipped_us:.1f} us; shipped is best") for r in results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true",
                    help="CPU, tiny config, Triton's interpreter, two settings per kernel (figures meaningless)")
    args = ap.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("kernel_sweep needs a CUDA GPU (or --smoke on the CPU)")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from runtime import make_config, random_model

    device, dtype = ("cpu", torch.float32) if args.smoke else ("cuda", torch.bfloat16)
    cfg = make_config("tiny" if args.smoke else "full", text_layers=2)  # a dense layer, then a MoE layer
    t0 = time.perf_counter()
    model = random_model(cfg, device, dtype)

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", flush=True)

    for line, figure in sweep_model(model, device, dtype, log, limit=2 if args.smoke else None).items():
        print(f"  {line:45} {figure}")


if __name__ == "__main__":
    main()
