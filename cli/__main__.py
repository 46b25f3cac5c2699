"""`python -m kimi_agent.cli ...`: the same as the `kimi-agent` command."""

from kimi_agent.cli.app import main

main()
