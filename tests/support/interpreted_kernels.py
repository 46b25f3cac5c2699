"""Runs Triton kernels of `kimi_agent.model_runtime.kernels` on CPU tensors under Triton's
interpreter, in a process of its own: `TRITON_INTERPRET=1` must be set before `triton` is first
imported (its own library is jit code too), and a test process has usually imported it already
through `torch._dynamo`.

    python tests/support/interpreted_kernels.py CASES.pt OUT.pt

CASES.pt: a list of dicts, each with `fn` ("module.function" under kimi_agent.model_runtime.kernels),
the positional arguments `args` and the keyword arguments `kw`; OUT.pt: the list of results.
Tests call `run_interpreted(cases, folder)`."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_interpreted(cases: list[dict[str, Any]], folder: Path) -> list[Any]:
    """The results of the kernel calls `cases` (as CASES.pt above), run by this script."""
    import torch

    torch.save(cases, folder / "cases.pt")
    subprocess.run([sys.executable, __file__, str(folder / "cases.pt"), str(folder / "out.pt")], check=True,
                   timeout=300)
    return list(torch.load(folder / "out.pt"))


def main(cases_path: str, out_path: str) -> None:
    os.environ["TRITON_INTERPRET"] = "1"
    import torch

    results = []
    for case in torch.load(cases_path):
        module, name = case["fn"].rsplit(".", 1)
        fn = getattr(importlib.import_module(f"kimi_agent.model_runtime.kernels.{module}"), name)
        results.append(fn(*case["args"], **case["kw"]))
    torch.save(results, out_path)


if __name__ == "__main__":
    main(*sys.argv[1:])
