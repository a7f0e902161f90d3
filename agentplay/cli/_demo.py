"""`agentplay demo`: the README's first command, a short self-play-and-train loop on the defaults."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

NO_SANDBOX_FIX = ("start a Docker engine (the demo builds the sandbox image itself), or install bubblewrap: "
                  "`sudo apt-get install bubblewrap` (Debian/Ubuntu), `sudo dnf install bubblewrap` (Fedora); "
                  "`agentplay sandbox doctor` says what works here")


def _prepare_sandbox(console: Console) -> str:
    """Open the sandbox the recipes will run model code in, prove it runs code, and name it.

    Builds the Docker image first when an engine answers (a no-op when it is up to
    date). The backend is chosen exactly as the recipes choose it (`open_sandbox()`,
    backend auto), so the name printed is the one used; when none works the demo
    stops here, before any episode, and says how to get one.
    """
    from rich.markup import escape

    from agentplay.sandbox import SandboxError, build_image

    try:
        import docker

        docker.from_env(timeout=5).ping()
    except Exception:  # noqa: BLE001, S110 - no engine: the check below says what is used instead
        pass
    else:
        try:
            console.print(build_image("agentplay-sandbox:latest", "auto",
                                      say=lambda m: console.print(f"[dim]{escape(m)}[/]")))
        except SandboxError as exc:
            console.print(f"[yellow]sandbox image not built: {escape(str(exc))}[/]")
    try:
        backend, reason = asyncio.run(_trial_run())
    except SandboxError as exc:
        console.print(f"[red]error:[/] no sandbox can run the model's code here: {escape(str(exc))}. "
                      f"Fix: {NO_SANDBOX_FIX}.", highlight=False)
        raise typer.Exit(1) from None
    console.print(f"sandbox: [bold]{backend}[/] ({escape(reason)})")
    return backend


async def _trial_run() -> tuple[str, str]:
    """(backend, why it was chosen) after a real run of `print(2 + 2)` in it."""
    from agentplay.sandbox import SandboxError, open_sandbox

    async with open_sandbox() as box:
        res = await box.run_python("print(2 + 2)")
        if res.status != "ok" or res.stdout.strip() != "4":
            raise SandboxError(f"backend {box.backend} chosen ({box.backend_reason}) but a trial run ended "
                               f"{res.status}: {res.detail or res.stderr.strip()[-300:]}")
        return box.backend, box.backend_reason


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
