"""Top-level typer app; each command group lives in its own module."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="agentplay",
    help="Self-play training of tool-using LLM agents.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


def main() -> None:
    app()
