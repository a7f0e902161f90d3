"""`agentplay run RECIPE`: run self-play episodes into a trace store."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer
from rich.console import Console

from agentplay.cli._config_flags import build_config, config_flags
from agentplay.cli._scale import ScaleOptions
from agentplay.runner import RunConfig

__all__ = ["run"]


def _parse_sets(pairs: list[str], flag: str = "--set") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip():
            raise typer.BadParameter(f"expected name=value, got {pair!r}", param_hint=flag)
        try:
            out[name.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[name.strip()] = raw  # plain strings need no quotes
    return out


@config_flags(ScaleOptions, into="scale", exclude=("endpoints",))
@config_flags(RunConfig, into="flags")
def run(
    recipe: Annotated[str, typer.Argument(help="Built-in recipe (search-selfplay, code-selfplay, "
                                               "propose-solve-judge) or path/to/file.py:attr.")],
    flags: dict[str, Any],
    scale: dict[str, Any],
    model: Annotated[str | None, typer.Option(help="Model spec for every role (local:..., openai:...).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Recipe build option name=value "
                                                                  "(JSON values), repeatable.")] = None,
    base_url: Annotated[str | None, typer.Option(help="Serving URL of an openai: --model (agentplay serve, "
                                                      "vLLM, any OpenAI-compatible API), e.g. http://127.0.0.1:8000/v1; "
                                                      "several comma-separated spread episodes by load. "
                                                      "Default: $OPENAI_BASE_URL.")] = None,
    endpoints: Annotated[str | None, typer.Option(hidden=True, help="Deprecated name of --base-url.")] = None,
) -> None:
    """Run RECIPE for --episodes episodes, storing each one as it finishes."""
    from agentplay._loading import load_recipe
    from agentplay._registry import close_models, override_models
    from agentplay.cli._scale import check_recipe_models
    from agentplay.recipe import RecipeError
    from agentplay.runner import RunHealthError, run_recipe

    console = Console(stderr=True)
    options = _parse_sets(set_ or [])
    config = build_config(RunConfig, flags)
    scale_options = build_config(ScaleOptions, scale)
    try:
        served_at = serving_url(base_url, endpoints)
        built, model_applied = load_recipe(recipe, model=model, options=options)
        compiled = built.compile()
    except (ValueError, TypeError, KeyError, FileNotFoundError, AttributeError, RecipeError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    scale_options = scale_options.model_copy(update={"endpoints": served_at})
    try:
        make_executor = scale_options.plan(recipe, model=model, options=options, concurrency=config.concurrency)
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
