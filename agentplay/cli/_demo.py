"""`agentplay demo`: the README's first command, a short self-play-and-train loop on the defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def _prepare_sandbox(console: Console) -> None:
    """Use the sandbox this machine has: build the Docker image when an engine answers
    (a no-op when it is up to date), else the recipes fall back to bubblewrap."""
    from agentplay.sandbox import SandboxError, build_image

    try:
        import docker

        docker.from_env(timeout=5).ping()
    except Exception:  # noqa: BLE001 - no engine: auto picks bubblewrap
        console.print("[yellow]no Docker engine answers: code runs under bubblewrap[/]")
        return
    try:
        console.print(build_image("agentplay-sandbox:latest", "auto", say=lambda m: console.print(f"[dim]{m}[/]")))
    except SandboxError as exc:
        console.print(f"[yellow]sandbox image not built ({exc}); falling back to bubblewrap[/]")


def demo(
    recipe: Annotated[str, typer.Option(help="Built-in recipe to play.")] = "code-selfplay",
    iterations: Annotated[int, typer.Option(min=1, help="Rollout + GRPO step iterations.")] = 2,
    episodes_per_iteration: Annotated[int, typer.Option(min=1, help="Episodes per iteration.")] = 4,
    output_dir: Annotated[Path, typer.Option(help="Where the store, checkpoints and report go.")] = Path("runs/demo"),
) -> None:
    """Self-play and train SmolLM2 on CPU for a few iterations, then write a report."""
    from agentplay.cli._train import train
    from agentplay.cli._ui import report

    console = Console(stderr=True)
    _prepare_sandbox(console)
    output_dir.mkdir(parents=True, exist_ok=True)
    store = output_dir / "traces.db"
    train(recipe=recipe, iterations=iterations, episodes_per_iteration=episodes_per_iteration,
          concurrency=episodes_per_iteration, store=store, output_dir=output_dir / "train",
          run_id="demo", lora=True, resume=(output_dir / "train").exists())
    report(run_id="demo", store=store, out=output_dir / "report")
    console.print(f"\nreport: {output_dir / 'report' / 'index.html'} · live: [bold]agentplay ui --store {store}[/] · "
                  f"[bold]agentplay traces list --store {store}[/]")
