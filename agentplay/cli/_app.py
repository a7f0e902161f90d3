"""Top-level typer app; each command group lives in its own module."""

from __future__ import annotations

import typer

from agentplay.cli._corpus import corpus_app
from agentplay.cli._demo import demo
from agentplay.cli._run import run
from agentplay.cli._sandbox import sandbox_app
from agentplay.cli._serve import serve
from agentplay.cli._traces import traces_app
from agentplay.cli._train import train
from agentplay.cli._ui import report, ui

app = typer.Typer(
    name="agentplay",
    help="Self-play training of tool-using LLM agents.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

app.add_typer(traces_app, name="traces")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(corpus_app, name="corpus")
app.command("demo")(demo)
app.command("run")(run)
app.command("train")(train)
app.command("serve")(serve)
app.command("ui")(ui)
app.command("report")(report)


def main() -> None:
    app()
