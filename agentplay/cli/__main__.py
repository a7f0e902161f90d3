"""`python -m agentplay.cli`: the same entry point as the `agentplay` script."""

from agentplay.cli import main

main()
