"""Import hygiene: the light packages never pull in torch, Playwright or an X display."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("module", ["kimi_agent.actions", "kimi_agent", "kimi_agent.reply",
                                    "kimi_agent.env", "kimi_agent.model_runtime"])
def test_light_imports(module: str) -> None:
    code = (f"import sys, os; os.environ.pop('DISPLAY', None); import {module}; "
            "heavy = [m for m in ('torch', 'playwright', 'pyautogui', 'transformers') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{module} imported {out.stdout.strip()}"


# Layers, bottom to top: actions <- env <- agent (kimi_agent) <- tasks <- cli. A package may import
# only the ones below it, at the top of a file or inside a function alike.
ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"actions": ("kimi_agent.env", "kimi_agent.tasks", "kimi_agent.cli", "kimi_agent.loop"),
             "env": ("kimi_agent.tasks", "kimi_agent.cli", "kimi_agent.loop"),
             "agent": ("kimi_agent.tasks", "kimi_agent.cli"),
             "tasks": ("kimi_agent.cli",),
             "model_runtime": ("kimi_agent.tasks", "kimi_agent.cli", "kimi_agent.loop", "kimi_agent.env",
                               "kimi_agent.reply")}


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return names


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_layers_import_only_downwards(folder: str) -> None:
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, folder
    bad = [f"{path.relative_to(ROOT)} imports {name}" for path in files for name in _imports(path)
           if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[folder])]
    assert bad == []


def test_every_package_folder_is_in_the_wheel() -> None:
    """A folder with an __init__.py under a mapped package folder is listed in pyproject's `packages`
    (a missing one works in an editable install and is absent from the built wheel)."""
    import tomllib

    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed, dirs = set(setup["packages"]), setup["package-dir"]
    for name, folder in dirs.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            dotted = ".".join((name, *rel.parts)) if rel.parts else name
            if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
                continue
            assert dotted in listed, f"{dotted} ({init.parent.relative_to(ROOT)}) is not in pyproject's packages"
            mapped = dirs.get(dotted)
            assert mapped is None or ROOT / mapped == init.parent, f"{dotted} maps to {mapped}"
