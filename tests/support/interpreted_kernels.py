"""Runs Triton kernels of `kimi_agent.model_runtime.kernels` on CPU tensors under Triton's
interpreter, in a process of its own: `TRITON_INTERPRET=1` must be set before `triton` is first
imported (its own library is jit code too), and a test process has usually imported it already
through `torch._dynamo`.

    python tests/support/interpreted_kernels.py CASES.pt OUT.pt

CASES.pt: a list of dicts, each with `fn` ("module.function" under kimi_agent.model_runtime.kernels),
the positional arguments `args` and the keyword arguments `kw`; OUT.pt: the results, and the
positional arguments after the calls (a kernel may write into them). Tests call
`run_interpreted(cases, folder)`."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_interpreted(cases: list[dict[str, Any]], folder: Path, *, with_args: bool = False) -> list[Any]:
    """The results of the kernel calls `cases` (as CASES.pt above), run by this script; `with_args`:
    (result, positional arguments after the call) pairs."""
    import torch

    torch.save(cases, folder / "cases.pt")
    subprocess.run([sys.executable, __file__, str(folder / "cases.pt"), str(folder / "out.pt")], check=True,
                   timeout=300)
    out = torch.load(folder / "out.pt")
    return list(zip(out["results"], out["args"], strict=True)) if with_args else list(out["results"])


def main(cases_path: str, out_path: str) -> None:
    os.environ["TRITON_INTERPRET"] = "1"
    import torch

    cases = torch.load(cases_path)
    results = []
    for case in cases:
        module, name = case["fn"].rsplit(".", 1)
        fn = getattr(importlib.import_module(f"kimi_agent.model_runtime.kernels.{module}"), name)
        results.append(fn(*case["args"], **case["kw"]))
    torch.save({"results": results, "args": [case["args"] for case in cases]}, out_path)


if __name__ == "__main__":
    main(*sys.argv[1:])
