"""The `kimi-agent` command line, the top layer: it uses the agent (`kimi_agent`) and the task
runner (`kimi_agent.tasks`), and nothing below imports it.

`main()` is the console script; `cli/app.py` holds the episode command and the subcommands, and
each package that adds a subcommand does so with a `register(app)` function.
"""

from kimi_agent.cli.app import EXIT_CANNOT_START, EXIT_FAILED, EXIT_STOPPED, EXIT_SUCCESS, SUBCOMMANDS, main

__all__ = ["EXIT_CANNOT_START", "EXIT_FAILED", "EXIT_STOPPED", "EXIT_SUCCESS", "SUBCOMMANDS", "main"]
