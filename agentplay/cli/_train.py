"""`agentplay train RECIPE`: self-play rollouts and GRPO steps, the served model updated after each."""

from __future__ import annotations

import asyncio
import os
from typing import Annotated, Any

import typer
from rich.console import Console

from agentplay.cli._config_flags import build_config, config_flags
from agentplay.cli._run import _parse_sets
from agentplay.cli._scale import ScaleOptions
from agentplay.trainers._config import TrainConfig

__all__ = ["train"]


@config_flags(ScaleOptions, into="scale", exclude=("endpoints", "tokenizer"))
@config_flags(TrainConfig, into="flags", exclude=("recipe", "recipe_options", "run_name"))
def train(
    recipe: Annotated[str, typer.Argument(help="Built-in recipe (code-selfplay, search-selfplay, "
                                               "propose-solve-judge) or path/to/file.py:attr.")],
    flags: dict[str, Any],
    scale: dict[str, Any],
    base_url: Annotated[str | None, typer.Option(help="Serving URL of an openai: --model, e.g. "
                                                      "http://127.0.0.1:8000/v1 for `agentplay serve` or vLLM; several "
                                                      "comma-separated: adapters are loaded on every one. "
                                                      "Default: $OPENAI_BASE_URL.")] = None,
    endpoints: Annotated[str | None, typer.Option(hidden=True, help="Deprecated name of --base-url.")] = None,
    run_id: Annotated[str | None, typer.Option(help="Run id of the training run in the store (the same flag as "
                                                    "`agentplay run`); rollouts of iteration k are <run-id>/it<k>. "
                                                    "Default: TrainConfig.run_name (train).")] = None,
    run_name: Annotated[str | None, typer.Option("--run-name", hidden=True,
                                                 help="Old name of --run-id, kept as an alias.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in --output-dir.")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Recipe build option name=value (JSON values), "
                                                                  "repeatable.")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", help="Any TrainConfig field name=value "
                                                                      "(JSON values), repeatable.")] = None,
) -> None:
    """Train the model serving RECIPE's roles on its own self-play traces (GRPO via TRL).

    Every TrainConfig field is a flag (`agentplay.trainers.TrainConfig` documents them)."""
    from agentplay.cli._run import serving_url
    from agentplay.trainers import TrainError

    console = Console(stderr=True)
    if run_name is not None and run_id is not None and run_id != run_name:
        # `--run-name` was this command's flag before `run` and `train` shared `--run-id`
        console.print(f"[red]error:[/] --run-id: {run_id!r} and its alias --run-name {run_name!r} disagree")
        raise typer.Exit(2)
    values = {**_parse_sets(option or [], "--option"), **flags}
    if run_id is not None or run_name is not None:
        values["run_name"] = run_id if run_id is not None else run_name
    cfg = build_config(TrainConfig, {"recipe": recipe, "recipe_options": _parse_sets(set_ or []), **values})
    scale_options = build_config(ScaleOptions, scale)
    iterations, model = cfg.iterations, cfg.model

    try:
        served_at = serving_url(base_url, endpoints)
        if scale_options.executor == "ray" and not served_at:
            raise ValueError("--executor ray: workers must reach the weights the trainer updates; "
                             "serve the model over HTTP and pass --base-url")
        make_executor = scale_options.model_copy(update={"endpoints": served_at}).plan(
            recipe, model=model, options=cfg.recipe_options, concurrency=cfg.concurrency, register_local=False)
    except ValueError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None

    if cfg.processes > 1 and "WORLD_SIZE" not in os.environ:
        raise typer.Exit(_launch_processes(cfg.processes))
    worker = int(os.environ.get("RANK", "0")) != 0  # a data-parallel process other than the main one
    progress = _train_progress(console, iterations, disable=worker)
    skip_reasons: dict[int, str] = {}

    def report(it: int, m: dict[str, float]) -> None:
        line = iteration_line(m)
        progress.update(progress.task_ids[0], completed=it + 1, figures=line)
        progress.console.print(f"iteration {it}: {line}")
        if it in skip_reasons:
            from rich.markup import escape

            progress.console.print(f"[yellow]iteration {it}: no optimizer step: {escape(skip_reasons[it])}[/]")

    async def main() -> Any:
        from agentplay._registry import close_models
        from agentplay.models import load_model
        from agentplay.trainers import SelfPlayTrainer

        # an openai: model is an EndpointPool over --base-url (or $OPENAI_BASE_URL)
        # data-parallel workers neither roll out nor serve
        deadline = {"retry_deadline_s": scale_options.retry_deadline} if scale_options.retry_deadline else {}
        served = (load_model(model, base_url=served_at, **deadline)
                  if model.startswith("openai:") and not worker else None)
        runner = make_executor(follow=served) if not worker else None
        trainer = SelfPlayTrainer(cfg, served=served, executor=runner)
        trainer.on_iteration = report
        trainer.skip_reasons = skip_reasons  # shared: `report` reads why a step was skipped
        try:
            return await trainer.run(resume=resume)
        finally:
            if runner is not None:
                await runner.aclose()
            if served is not None:
                await served.aclose()
            await close_models()

    from rich.markup import escape

    from agentplay.runner import RunHealthError
    from agentplay.trainers import NothingToTrainError

    try:
        with progress:
            summary = asyncio.run(main())
    except (RunHealthError, NothingToTrainError) as exc:  # the run broke: not a usage error
        console.print(f"[red]training failed:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    except TrainError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    if worker:
        return
    console.print(_summary_table(summary))
    typer.echo(summary.model_dump_json(exclude={"metrics"}))


def _launch_processes(n: int) -> int:
    """Run this same command as `n` data-parallel processes under torchrun (what `accelerate
    launch` uses for several processes; it sets RANK / WORLD_SIZE for each) on this machine;
    returns its exit code. On GPUs, `accelerate launch --num_processes N -m agentplay.cli train ...`
    starts the same thing."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(n),
           "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "agentplay.cli", *sys.argv[1:]]
    return subprocess.run(cmd, check=False).returncode


def iteration_line(m: dict[str, float]) -> str:
    """One iteration's figures: per-role rewards, the recipe's headline metrics, then the trainer's own."""
    rewards = " ".join(f"{k[7:]}={v:.3f}" for k, v in m.items() if k.startswith("reward/"))
    headline = "".join(f"{k[9:]}={v:.3f} " for k, v in m.items() if k.startswith("headline/"))
    return (
        f"{rewards} {headline}"
        f"dropped={m['dropped_group_fraction']:.2f} samples={int(m['samples'])} "
        f"rollout={m['time/rollout_s']:.1f}s train={m['time/train_s']:.1f}s update={m['time/update_s']:.1f}s "
        f"version={int(m['weight_version'])}"
    )


def _train_progress(console: Console, iterations: int, *, disable: bool = False) -> Any:
    """Iterations done, time elapsed and the last iteration's figures, live on stderr."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.fields[figures]}"), console=console, disable=disable)
    progress.add_task("iterations", total=iterations, figures="rollouts of the first iteration...")
    return progress


def _summary_table(summary: Any) -> Any:
    """The figures that say whether training worked: first vs last iteration, and where time went."""
    from rich.table import Table

    table = Table(title=f"train {summary.run_id}: iterations {summary.first_iteration}..{summary.last_iteration}")
    table.add_column("figure")
    table.add_column("first", justify="right")
    table.add_column("last", justify="right")
    if not summary.metrics:
        table.add_row("iterations run", "0", "0")
        return table
    first, last = summary.metrics[0], summary.metrics[-1]
    names = [k for k in last if k.startswith(("reward/", "headline/"))]  # headline: the recipe's own figures
    names += [k for k in ("dropped_group_fraction", "samples", "trained_tokens", "off_policy_lag/mean") if k in last]
    for name in names:
        table.add_row(name, f"{first.get(name, float('nan')):.3f}", f"{last[name]:.3f}")
    for name in ("time/rollout_s", "time/train_s", "time/update_s"):
        mean = sum(m.get(name, 0.0) for m in summary.metrics) / len(summary.metrics)
        table.add_row(f"{name} (mean)", "", f"{mean:.1f}")
    table.add_row("weight version", "", str(summary.weight_version))
    return table
