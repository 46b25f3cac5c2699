"""The README stays true: its bash and python blocks run exactly as written.

Every fenced `bash` and `python` block of README.md is extracted in order and run in a copy of the
repository (its tracked files; `.venv` there links to the environment running the tests), the way
a new user runs them after `source .venv/bin/activate`: the venv's `bin` first on `PATH`, no
`$DISPLAY` (a private Xvfb), offline Hugging Face cache. Bash blocks run in one `bash -euo
pipefail` each, python blocks as script files (so a missing `if __name__ == "__main__":` for
spawned workers shows). A command that needs what a CI machine lacks (model weights, a GPU, a
model server, the internet, root) is replaced by a no-op and its reason is listed in `skip_reason`
below; a block whose commands are all skipped is reported as skipped with those reasons.
Everything else must exit 0.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK_TIMEOUT_S = 540  # below pytest's 600 s per test; the OSWorld demo runs 20 tasks

# Python blocks that cannot run here: a substring of the block -> why.
PYTHON_SKIPS = {
    "KimiVL.from_pretrained": "needs the Kimi-VL weights (about 33 GB in bf16) and a CUDA GPU",
    'BackendOptions(endpoint="http://localhost:8000/v1")': "needs a model server at localhost:8000",
    'OpenAI(base_url="http://localhost:8000/v1"': "needs a model server at localhost:8000 (kimi-agent serve)",
}
# Bash commands that cannot run here: a regex on the command -> why.
BASH_SKIPS = {
    r"^bash scripts/setup\.sh": "installs system packages (root, apt) and the venv; CI ran it before the tests",
    r"-m pytest": "the whole test suite, which this test is part of",
    r"download\.pytorch\.org": "needs the internet, and would replace this venv's CPU torch with the CUDA build",
    r"^source \.venv/bin/activate": "the test already runs in the venv: its bin is first on PATH",
    r"--device cuda": "needs a CUDA GPU (without one it exits 2 with one sentence: "
                      "test_bench_runtime_without_cuda_says_so_in_one_sentence)",
    r"bench/gpu_check\.sh": "needs a CUDA GPU (the runtime's GPU figures; about 3 minutes on an H100/H200)",
    r"bench/(runtime|step|agent_episode|batching|serve|recording|sandbox_overhead|osworld_coverage|kernel_sweep)\.py": "a benchmark taking minutes of CPU (bench/runtime.py ran past 4 minutes on a "
                                 "shared 2-core machine); speed is measured in bench/, not in tests",
    r"--endpoint http://localhost:8000": "needs a model server at localhost:8000",
    r"--model /models/": "needs a local snapshot of the Kimi-VL weights",
    r"^kimi-agent osworld": "needs a checkout of OSWorld's repository (OSWorld/evaluation_examples); the "
                            "bridge environment itself is built by CI (setup.sh --osworld) and used by "
                            "tests/tasks/test_vm_runner.py",
    r"--provider docker|--vm http": "needs OSWorld VMs (docker with KVM, or running VMs) and a model",
}
# kimi-agent commands that run without a model; any other kimi-agent command needs one.
NO_MODEL = re.compile(r"^kimi-agent (--help|--version|doctor|report |replay |run .*--backend solutions|"
                      r".*--backend scripted)", re.S)


@dataclass(frozen=True)
class Block:
    index: int
    lang: str
    heading: str
    line: int
    text: str

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.heading.lower()).strip("-")
        return f"{self.index:02d}-{slug}-{self.lang}"


def readme_blocks(text: str) -> list[Block]:
    """The fenced bash/python blocks of `text`, in order (a fence closes on a line that is only ```)."""
    blocks: list[Block] = []
    heading, lang, start = "top", None, 0
    body: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        if lang is None:
            if line.startswith("#"):
                heading = line.lstrip("#").strip()
            elif line.startswith("```"):
                lang, start, body = line[3:].strip(), n, []
        elif line.strip() == "```":
            if lang in ("bash", "python"):
                blocks.append(Block(len(blocks), lang, heading, start, "\n".join(body) + "\n"))
            lang = None
        else:
            body.append(line)
    return blocks


def bash_commands(text: str) -> list[str]:
    """Logical lines of a bash block: `\\` continuations joined, a heredoc kept with its command."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        cmd = lines[i]
        while cmd.endswith("\\") and i + 1 < len(lines):
            i += 1
            cmd += "\n" + lines[i]
        heredoc = re.search(r"<<-?'?(\w+)'?", cmd)
        if heredoc:
            while i + 1 < len(lines) and lines[i].strip() != heredoc.group(1):
                i += 1
                cmd += "\n" + lines[i]
        out.append(cmd)
        i += 1
    return out


def skip_reason(command: str) -> str | None:
    """Why a bash command cannot run on a CI machine, or None when it must run."""
    for pattern, reason in BASH_SKIPS.items():
        if re.search(pattern, command, re.M):
            return reason
    if command.startswith("kimi-agent ") and not NO_MODEL.match(command):
        return "needs a model (Kimi-VL weights on a GPU, or a server at --endpoint)"
    return None


def runnable_script(block: Block) -> tuple[str, list[str]]:
    """The block as it will run (skipped commands become `:` no-ops) and the skip reasons."""
    if block.lang == "python":
        why = [r for marker, r in PYTHON_SKIPS.items() if marker in block.text]
        return ("" if why else block.text), why
    lines: list[str] = []
    reasons: list[str] = []
    for cmd in bash_commands(block.text):
        stripped = cmd.strip()
        reason = None if not stripped or stripped.startswith("#") else skip_reason(stripped)
        if reason is None:
            lines.append(cmd)
        else:
            reasons.append(f"{stripped.splitlines()[0][:60]}: {reason}")
            lines.append(f": skipped, {reason!r}")
    runs = any(ln.strip() and not ln.strip().startswith(("#", ":")) for ln in lines)
    return ("\n".join(lines) + "\n" if runs else ""), reasons


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))
SLOW = ("osworld-tasks", "benchmarks")


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository's tracked files, with `.venv` linking to the running environment."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to know the tracked files")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    dest = tmp_path_factory.mktemp("readme") / "kimi-agent"
    for name in filter(None, files.decode().split("\0")):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    (dest / ".venv").symlink_to(Path(sys.prefix))
    return dest


def _env(checkout: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "COLUMNS", "OPENAI_BASE_URL")}
    bin_dir = str(Path(sys.executable).parent)
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=sys.prefix,
               HF_HOME=str(checkout / ".hf"), HF_HUB_OFFLINE="1", BROWSER="true",  # --open opens nothing
               PYTHONUNBUFFERED="1")
    return env


def test_readme_has_the_blocks_this_test_knows() -> None:
    langs = [b.lang for b in BLOCKS]
    assert langs.count("bash") >= 5 and langs.count("python") >= 5, langs
    runnable = [b for b in BLOCKS if runnable_script(b)[0]]
    assert len(runnable) >= 6, [b.id for b in runnable]  # most of the README runs without a model


@pytest.mark.parametrize("block", [pytest.param(b, id=b.id, marks=[pytest.mark.slow] if any(
    s in b.id for s in SLOW) else []) for b in BLOCKS])
def test_readme_block_runs_as_written(block: Block, checkout: Path) -> None:
    script, reasons = runnable_script(block)
    if not script:
        pytest.skip(f"README.md:{block.line}: " + "; ".join(reasons))
    if block.lang == "python":
        path = checkout / f"readme_block_{block.index:02d}.py"
        path.write_text(script, encoding="utf-8")
        cmd = [sys.executable, path.name]
    else:
        cmd = ["bash", "-euo", "pipefail", "-c", script]
    r = subprocess.run(cmd, cwd=checkout, env=_env(checkout), capture_output=True, text=True,
                       timeout=BLOCK_TIMEOUT_S, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, (f"README.md:{block.line} ({block.lang}) exited {r.returncode}\n"
                               f"--- script\n{script}\n--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-3000:]}")
    assert "Traceback" not in r.stderr, r.stderr[-3000:]


def test_bench_runtime_without_cuda_says_so_in_one_sentence() -> None:
    """The README's GPU benchmark line, as written, on a machine without CUDA: its flags parse (argparse
    would exit 2 with a usage error first) and it says in one sentence why it cannot run."""
    code = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"
    if subprocess.run([sys.executable, "-c", code]).returncode == 0:
        pytest.skip("a CUDA GPU is present: the README command runs for real there")
    (line,) = [c for b in BLOCKS if b.lang == "bash" for c in bash_commands(b.text)
               if "bench/runtime.py --device cuda" in c]
    command = line.split("#", 1)[0].strip().replace(".venv/bin/python", sys.executable, 1)
    r = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "needs a CUDA GPU" in r.stderr, r.stderr
