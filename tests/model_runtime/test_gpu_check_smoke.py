"""`bench/gpu_check.py --smoke`: the GPU check's own code, run on CPU with the tiny config and the
Triton kernels interpreted, so that a session lent a GPU (rarely, and for minutes) does not spend
them on a crash in the script. It checks that the sections run and that the token comparisons
hold; the figures it prints are CPU figures and are not checked."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("triton", reason="the smoke run interprets the Triton kernels")


def test_gpu_check_runs_its_sections_on_cpu_and_its_token_checks_hold() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--smoke", "--sections", "7,1,3,6"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=540)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "FAILED" not in out and "Traceback" not in out, out[-4000:]
    summary = out[out.index("== summary"):]
    assert "graph == eager (greedy; forced)    True" in summary, summary
    assert "batched decode graph == static     True" in summary, summary
    assert "TTFT 1920x1080 + 300 tokens" in summary, summary  # section 3 ran to its figure
    for kernel in ("MoE layer b1", "MLA decode b1"):  # section 7: each fused kernel against its reference
        line = next(ln for ln in summary.splitlines() if ln.strip().startswith(kernel))
        found = re.search(r"\|fused-ref\| ([0-9.e+-]+)", line)
        assert found is not None and float(found.group(1)) < 1e-4, line  # fp32 on CPU
