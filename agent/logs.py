"""Where kimi-agent's log records go.

Library code only logs (to the `kimi_agent` logger, which has a `NullHandler`, so nothing reaches
stderr unless the application configures logging). The programs kimi-agent ships (the CLI, the
task runner's workers) call `log_to_stderr()` so their warnings and errors are shown as lines.
"""

from __future__ import annotations

import logging
import sys

LOGGER = "kimi_agent"
_HANDLER_NAME = "kimi-agent-stderr"


def log_to_stderr(level: int = logging.WARNING) -> None:
    """Print the `kimi_agent` logger's records of `level` and above on stderr, one plain line each
    (as Python's last-resort handler would); calling it again adds nothing."""
    logger = logging.getLogger(LOGGER)
    if any(h.get_name() == _HANDLER_NAME for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
