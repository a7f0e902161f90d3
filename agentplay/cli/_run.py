"""`agentplay run RECIPE`: run self-play episodes into a trace store."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer
from rich.console import Console

__all__ = ["run"]


def _parse_sets(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip():
            raise typer.BadParameter(f"expected name=value, got {pair!r}", param_hint="--set")
        try:
            out[name.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[name.strip()] = raw  # plain strings need no quotes
    return out


def run(
    recipe: Annotated[str, typer.Argument(help="Built-in recipe (search-selfplay, code-selfplay, "
                                               "propose-solve-judge) or path/to/file.py:attr.")],
    model: Annotated[str | None, typer.Option(help="Model spec for every role (local:..., openai:...).")] = None,
    episodes: Annotated[int, typer.Option(min=1, help="Episodes the run holds in total.")] = 8,
    concurrency: Annotated[int, typer.Option(min=1, help="Episodes in flight at once.")] = 4,
    store: Annotated[str, typer.Option(help="SQLite trace store file.")] = "traces.db",
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run (--run-id, else the latest "
                                                           "run of this recipe), skipping stored episodes.")] = False,
    seed: Annotated[int, typer.Option(help="Run seed; episode seeds derive from it.")] = 0,
    run_id: Annotated[str | None, typer.Option(help="Run name in the store (default: generated).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Recipe build option name=value "
                                                                  "(JSON values), repeatable.")] = None,
    progress: Annotated[bool, typer.Option(help="Live progress bar and summary table.")] = True,
    executor: Annotated[str, typer.Option(help="Where episodes run: local (this process) or ray "
                                               "(rollout worker actors).")] = "local",
    address: Annotated[str | None, typer.Option(help="Ray cluster to join (auto, host:6379, "
                                                     "ray://host:10001); default: a private local one.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Ray rollout worker actors.")] = 2,
    base_url: Annotated[str | None, typer.Option(help="Serving URL of an openai: --model (agentplay serve, "
                                                      "vLLM, any OpenAI-compatible API), e.g. http://127.0.0.1:8000/v1; "
                                                      "several comma-separated spread episodes by load. "
                                                      "Default: $OPENAI_BASE_URL.")] = None,
    endpoints: Annotated[str | None, typer.Option(hidden=True, help="Deprecated name of --base-url.")] = None,
    tokenizer: Annotated[str | None, typer.Option(help="For a server that returns no token ids (llama.cpp): "
                                                       "rebuild them with this tokenizer (a local model folder, or "
                                                       "`default`); recorded as token_exact = false.")] = None,
    retry_deadline: Annotated[float | None, typer.Option(min=0.1, help="Seconds a model call of an openai: "
                                                         "--model keeps retrying, waiting for a server to come "
                                                         "back, before its episode fails (default 300).")] = None,
    max_error_fraction: Annotated[float, typer.Option(min=0.0, max=1.0, help="Fail (exit 1, with a diagnosis) "
                                                      "when more than this fraction of episodes errored; "
                                                      "a run where all did always fails.")] = 0.5,
    episode_retries: Annotated[int, typer.Option(min=0, help="Reruns of an episode that failed for "
                                                 "infrastructure reasons (sandbox, model server, network), "
                                                 "same seeds, before it is stored as an error.")] = 1,
    strict_rewards: Annotated[bool, typer.Option("--strict-rewards", help="Stop at the first reward fn that "
                                                 "raises (default: the turn is stored reward_failed and "
                                                 "left out of training).")] = False,
) -> None:
    """Run RECIPE for --episodes episodes, storing each one as it finishes."""
    from agentplay._loading import load_recipe
    from agentplay._registry import close_models, override_models
    from agentplay.cli._scale import ScaleOptions, check_recipe_models
    from agentplay.recipe import RecipeError
    from agentplay.runner import RunConfig, RunHealthError, run_recipe

    console = Console(stderr=True)
    options = _parse_sets(set_ or [])
    try:
        served_at = serving_url(base_url, endpoints)
        built, model_applied = load_recipe(recipe, model=model, options=options)
        compiled = built.compile()
    except (ValueError, TypeError, KeyError, FileNotFoundError, AttributeError, RecipeError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    config = RunConfig(episodes=episodes, concurrency=concurrency, store=store, resume=resume,
                       seed=seed, run_id=run_id, progress=progress, max_error_fraction=max_error_fraction,
                       episode_retries=episode_retries, strict_rewards=strict_rewards)
    scale = ScaleOptions(executor=executor, address=address, workers=workers, endpoints=served_at,
                         tokenizer=tokenizer, retry_deadline=retry_deadline)
    try:
        make_executor = scale.plan(recipe, model=model, options=options, concurrency=concurrency)
        if model is None:
            check_recipe_models(built)
    except ValueError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None

    async def main() -> Any:
        runner = make_executor()
        try:
            with override_models(None if model_applied else model):
                return await run_recipe(compiled, config, console=console, executor=runner)
        finally:
            if runner is not None:
                await runner.aclose()
            await close_models()

    try:
        summary = asyncio.run(main())
    except RunHealthError as exc:
        from rich.markup import escape

        console.print(f"[red]run failed:[/] {escape(str(exc))}", highlight=False)
        if exc.summary is not None:
            typer.echo(exc.summary.model_dump_json())
        raise typer.Exit(1) from None
    typer.echo(summary.model_dump_json())


def serving_url(base_url: str | None, endpoints: str | None) -> str | None:
    """`--base-url`, or its deprecated name `--endpoints` (not both)."""
    if endpoints is not None and base_url is not None:
        raise ValueError("--base-url: give --base-url only (--endpoints is its deprecated name), not both")
    return base_url if base_url is not None else endpoints
