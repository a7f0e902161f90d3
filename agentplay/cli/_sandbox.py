"""`agentplay sandbox ...`: build the image, check backends, run a snippet."""

from __future__ import annotations

import asyncio
import sys

import typer
from rich.console import Console
from rich.table import Table

sandbox_app = typer.Typer(
    name="sandbox", help="Build and check the code sandbox.", no_args_is_help=True
)
_console = Console()


@sandbox_app.command()
def build(
    image: str = typer.Option("agentplay-sandbox:latest", help="Tag of the image to build."),
    offline: bool = typer.Option(
        False, "--offline", help="Debian rootfs via mmdebstrap + docker import (no registry)."
    ),
    dockerfile: bool = typer.Option(
        False, "--dockerfile", help="Plain Dockerfile build (needs a registry)."
    ),
    force: bool = typer.Option(False, "--force", help="Rebuild even when the image is up to date."),
) -> None:
    """Build the sandbox image; picks the Dockerfile route when a registry answers, else offline."""
    from agentplay.sandbox import SandboxError, build_image
    from agentplay.sandbox._image import Mode

    if offline and dockerfile:
        raise typer.BadParameter("choose one of --offline and --dockerfile")
    mode: Mode = "offline" if offline else "dockerfile" if dockerfile else "auto"
    try:
        summary = build_image(
            image, mode, force=force, say=lambda m: _console.print(f"[dim]{m}[/dim]")
        )
    except SandboxError as exc:
        _console.print(f"[red]build failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    _console.print(f"[green]{summary}[/green]")


@sandbox_app.command()
def doctor(
    image: str = typer.Option("agentplay-sandbox:latest", help="Image the docker backend uses."),
) -> None:
    """Say which sandbox backends work here, and why not."""
    from agentplay.sandbox import SandboxConfig, diagnose

    checks = asyncio.run(diagnose(SandboxConfig(image=image)))
    table = Table("backend", "works", "safe", "why")
    for c in checks:
        table.add_row(
            c.backend,
            "[green]yes[/green]" if c.works else "[red]no[/red]",
            "yes" if c.safe else "[yellow]no[/yellow]",
            c.reason,
        )
    _console.print(table)
    if not any(c.works and c.safe for c in checks):
        raise typer.Exit(1)


@sandbox_app.command()
def run(
    code: str = typer.Argument(..., help="Python code, or '-' to read it from stdin."),
    backend: str = typer.Option("auto", help="auto | docker | bwrap | subprocess"),
    allow_unsafe: bool = typer.Option(
        False, "--allow-unsafe", help="Permit the subprocess backend."
    ),
    wall_time_s: float = typer.Option(10.0, help="Wall-clock limit in seconds."),
) -> None:
    """Run a Python snippet in the sandbox and print the verdict as JSON."""
    from agentplay.sandbox import Limits, SandboxError, open_sandbox

    source = sys.stdin.read() if code == "-" else code

    async def go() -> str:
        async with open_sandbox(backend, allow_unsafe) as sb:
            res = await sb.run_python(source, limits=Limits(wall_time_s=wall_time_s))
            return res.model_dump_json(indent=2)

    try:
        print(asyncio.run(go()))
    except SandboxError as exc:
        _console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
