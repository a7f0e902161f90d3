"""`agentplay train RECIPE`: self-play rollouts and GRPO steps, the served model updated after each."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

__all__ = ["train"]


def train(
    recipe: Annotated[str, typer.Argument(help="Built-in recipe (code-selfplay, search-selfplay, "
                                               "propose-solve-judge) or path/to/file.py:attr.")],
    model: Annotated[str, typer.Option(help="Model spec serving every role (local:..., openai:... with --base-url).")]
    = "local:smollm2-135m-instruct",
    base_url: Annotated[str | None, typer.Option(help="Serving URL of an openai: --model, e.g. "
                                                      "http://127.0.0.1:8000/v1 for `agentplay serve` or vLLM; several "
                                                      "comma-separated: adapters are loaded on every one. "
                                                      "Default: $OPENAI_BASE_URL.")] = None,
    iterations: Annotated[int, typer.Option(min=1, help="Iterations (rollouts + one optimizer step) in total.")] = 10,
    episodes_per_iteration: Annotated[int, typer.Option(min=1, help="Episodes rolled out per iteration.")] = 8,
    concurrency: Annotated[int, typer.Option(min=1, help="Episodes in flight at once.")] = 8,
    store: Annotated[Path, typer.Option(help="SQLite trace store (rollouts, metrics, cursor).")] = Path("traces.db"),
    output_dir: Annotated[Path, typer.Option(help="Checkpoints, adapters and TensorBoard logs.")] = Path("runs/train"),
    run_id: Annotated[str, typer.Option(help="Run id of the training run in the store (the same flag as "
                                             "`agentplay run`); rollouts of iteration k are <run-id>/it<k>.")]
    = "train",
    run_name: Annotated[str | None, typer.Option("--run-name", hidden=True,
                                                 help="Old name of --run-id, kept as an alias.")] = None,
    lora: Annotated[bool, typer.Option("--lora", help="Train a LoRA adapter (needed for HTTP-served models).")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in --output-dir.")] = False,
    loss_type: Annotated[str, typer.Option(help="TRL loss: grpo, bnpo, dr_grpo, dapo, cispo, sapo.")] = "dapo",
    learning_rate: Annotated[float, typer.Option(help="Optimizer learning rate.")] = 1e-5,
    beta: Annotated[float, typer.Option(help="KL coefficient against the initial model (0: no KL).")] = 0.0,
    micro_batch_size: Annotated[int, typer.Option(min=1, help="Sequences per forward pass (rows of one prompt share it).")] = 8,
    seed: Annotated[int, typer.Option(help="Run seed; rollout seeds derive from it and the iteration.")] = 0,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Recipe build option name=value (JSON values), "
                                                                  "repeatable.")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", help="Any TrainConfig field name=value "
                                                                      "(JSON values), repeatable.")] = None,
    executor: Annotated[str, typer.Option(help="Where rollouts run: local or ray (worker actors; needs "
                                               "an HTTP-served model: --base-url).")] = "local",
    address: Annotated[str | None, typer.Option(help="Ray cluster to join; default: a private local one.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Ray rollout worker actors.")] = 2,
    endpoints: Annotated[str | None, typer.Option(hidden=True, help="Deprecated name of --base-url.")] = None,
    retry_deadline: Annotated[float | None, typer.Option(min=0.1, help="Seconds a model call of an openai: "
                                                         "--model keeps retrying, waiting for a server to come "
                                                         "back, before its episode fails (default 300).")] = None,
    max_error_fraction: Annotated[float, typer.Option(min=0.0, max=1.0, help="Stop (exit 1, with a diagnosis) "
                                                      "when more than this fraction of an iteration's episodes "
                                                      "errored; always when all did.")] = 0.5,
    episode_retries: Annotated[int, typer.Option(min=0, help="Reruns of an episode that failed for "
                                                 "infrastructure reasons, same seeds, before it is stored "
                                                 "as an error.")] = 1,
    strict_rewards: Annotated[bool, typer.Option("--strict-rewards", help="Stop at the first reward fn "
                                                 "that raises.")] = False,
) -> None:
    """Train the model serving RECIPE's roles on its own self-play traces (GRPO via TRL)."""
    from pydantic import ValidationError

    from agentplay.cli._run import _parse_sets
    from agentplay.trainers import TrainConfig, TrainError

    console = Console(stderr=True)
    if run_name is not None:  # `--run-name` was this command's flag before `run` and `train` shared `--run-id`
        if run_id not in ("train", run_name):
            console.print(f"[red]error:[/] --run-id: {run_id!r} and its alias --run-name {run_name!r} disagree")
            raise typer.Exit(2)
        run_id = run_name
    try:
        cfg = TrainConfig(
            recipe=recipe, model=model, iterations=iterations, episodes_per_iteration=episodes_per_iteration,
            concurrency=concurrency, store=store, output_dir=output_dir, run_name=run_id, lora=lora,
            loss_type=loss_type, learning_rate=learning_rate, beta=beta, micro_batch_size=micro_batch_size,
            seed=seed, recipe_options=_parse_sets(set_ or []), max_error_fraction=max_error_fraction,
            episode_retries=episode_retries, strict_rewards=strict_rewards, **_parse_sets(option or []),
        )
    except ValidationError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None

    from agentplay.cli._scale import ScaleOptions

    from agentplay.cli._run import serving_url

    try:
        served_at = serving_url(base_url, endpoints)
        if executor == "ray" and not served_at:
            raise ValueError("--executor ray: workers must reach the weights the trainer updates; "
                             "serve the model over HTTP and pass --base-url")
        make_executor = ScaleOptions(executor=executor, address=address, workers=workers, endpoints=served_at,
                                     retry_deadline=retry_deadline).plan(
            recipe, model=model, options=cfg.recipe_options, concurrency=concurrency, register_local=False)
    except ValueError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None

    progress = _train_progress(console, iterations)
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
        deadline = {"retry_deadline_s": retry_deadline} if retry_deadline is not None else {}
        served = load_model(model, base_url=served_at, **deadline) if model.startswith("openai:") else None
        runner = make_executor(follow=served)
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
    console.print(_summary_table(summary))
    typer.echo(summary.model_dump_json(exclude={"metrics"}))


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


def _train_progress(console: Console, iterations: int) -> Any:
    """Iterations done, time elapsed and the last iteration's figures, live on stderr."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.fields[figures]}"), console=console)
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
