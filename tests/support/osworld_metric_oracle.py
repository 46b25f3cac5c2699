"""OSWorld's own metric scores, for the differential test (tests/tasks/test_metrics_agree_with_osworld.py).

Run with the bridge environment's Python (`.venv-osworld/bin/python`); it imports only the standard
library and `desktop_env` (plus the placeholder installer of `tasks/osworld_bridge_process.py`, loaded
by path). Reads JSON lines `{"metric": NAME, "args": [...], "kwargs": {...}}` from stdin and writes one
line per request: `{"score": float}` or `{"error": "ExceptionType: message"}`. The request
`{"names": true}` answers `{"names": [...]}`, the callables of `desktop_env.evaluators.metrics`.

Two fixed choices, both about scoring inputs rather than metric logic:
- `infeasible`: desktop_env's `infeasible()` is a placeholder; the score is decided in
  `DesktopEnv.evaluate`. A request `{"metric": "infeasible", "args": [REPORTED_FAILURE]}` runs that
  method (OSWorld's code) on a stand-in whose last action is "FAIL" (true) or "DONE" (false).
- `tldextract` reads the public suffix snapshot it ships, never publicsuffix.org: our side never
  fetches it either (docs/osworld-compat.md, "URL comparison's public suffix list"), and the test
  must not depend on the network.
Whatever OSWorld's code prints goes to stderr, so it never corrupts the replies.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

BRIDGE = Path(__file__).resolve().parents[2] / "tasks" / "osworld_bridge_process.py"


def _install_placeholders() -> None:
    spec = importlib.util.spec_from_file_location("osworld_bridge_process", BRIDGE)
    assert spec is not None and spec.loader is not None, BRIDGE
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.install_placeholders()


def _pin_suffix_list() -> None:
    import tldextract.tldextract as tld

    tld.TLD_EXTRACTOR = tld.TLDExtract(suffix_list_urls=(), cache_dir=None)


def _infeasible(reported_failure: Any) -> Any:
    from desktop_env.desktop_env import DesktopEnv

    env = SimpleNamespace(evaluator={"func": "infeasible"}, enable_proxy=False, is_environment_used=False,
                          setup_controller=SimpleNamespace(setup=lambda config, use_proxy=False: True),
                          action_history=["FAIL" if reported_failure else "DONE"])
    return DesktopEnv.evaluate(env)


def answer(request: Any, metrics: Any) -> dict[str, Any]:
    if not isinstance(request, dict):
        return {"error": f"BadRequest: {request!r}"}
    if request.get("names"):
        return {"names": sorted(n for n in dir(metrics) if not n.startswith("_") and callable(getattr(metrics, n)))}
    name = request.get("metric")
    args, kwargs = request.get("args", []), request.get("kwargs", {})
    try:
        value = _infeasible(*args) if name == "infeasible" else getattr(metrics, name)(*args, **kwargs)
    except Exception as e:  # every exception is an answer here
        return {"error": f"{type(e).__name__}: {e}"[:2000]}
    if not isinstance(value, int | float):
        return {"error": f"NotAScore: the metric returned {value!r}"[:2000]}
    return {"score": float(value)}


def main() -> int:
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # OSWorld's metrics print(): keep that out of the replies
    sys.stdout = sys.stderr
    _install_placeholders()
    _pin_suffix_list()
    from desktop_env.evaluators import metrics

    for line in sys.stdin:
        if line.strip():
            replies.write(json.dumps(answer(json.loads(line), metrics)) + "\n")
    replies.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
