"""Many episodes at once on one event loop, each stored the moment it finishes.

Model calls dominate an episode, and the engine batches concurrent requests,
so the runner's job is to keep `concurrency` episodes in flight, fill groups
(episodes of one `GroupBy.seed(k)` block run back to back), and never lose or
duplicate a finished episode: indexes 0..N-1 with seeds derived from the run
seed make a resumed run pick up exactly the missing ones. A recipe with group
rewards has each block held until it is complete, rewarded as a group, and
stored in one transaction (`_group_rewards`).

A run is judged when it ends: one whose episodes failed more often than
`max_error_fraction` (or all of them) raises `RunHealthError` with a diagnosis
instead of returning a summary that looks like success.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console

from agentplay._executors import EpisodeSpec, Executor, LocalExecutor
from agentplay._group_rewards import BlockBuffer
from agentplay._health import RewardFailedError, RunHealthError
from agentplay._progress import RunProgress, RunStats
from agentplay._recorder import derive_seed
from agentplay.recipe import CompiledRecipe, Recipe
from agentplay.traces import DuplicateEpisode, Episode

__all__ = ["RewardFailedError", "RunConfig", "RunHealthError", "RunSummary", "episode_seeds", "run_recipe"]


class RunConfig(BaseModel):
    """How many episodes to run, how many at once, and where they go."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    episodes: int = Field(8, ge=1)
    """Total episodes of the run (indexes 0..N-1), counting ones stored before a resume."""
    concurrency: int = Field(4, ge=1, le=4096)
    """Episodes in flight at once."""
    store: str | None = Field(None, json_schema_extra={"cli_default": "traces.db"})
    """SQLite file for traces (used when no TraceStore is passed to `run_recipe`; the CLI's default is
    traces.db)."""
    resume: bool = False
    """Continue `run_id` (or the latest run of this recipe): skip stored indexes."""
    seed: int = 0
    """Run seed; every episode's seed and group seed derive from it and the index."""
    run_id: str | None = None
    """Name of the run in the store; generated when omitted."""
    progress: bool = True
    """Show the live progress bar and the summary table."""
    max_error_fraction: float = Field(0.5, ge=0.0, le=1.0)
    """The run fails (`RunHealthError`, non-zero exit) when more than this fraction of its
    episodes ended in error, and always when every episode did (`--max-error-fraction`)."""
    episode_retries: int = Field(1, ge=0, le=100)
    """Times an episode that failed for infrastructure reasons (sandbox, model server,
    network) is run again from scratch, same index and seeds, before it is stored as an
    error (`--episode-retries`)."""
    strict_rewards: bool = False
    """Stop the run at the first reward fn that raises (`--strict-rewards`); otherwise such
    turns are stored `reward_failed`, get no reward and are left out of training."""


class RunSummary(BaseModel):
    """What a run did (returned by `run_recipe`, printed as a table by the CLI)."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    run_id: str
    """Name of the run in the store."""
    recipe: str
    """Name of the recipe it ran."""
    requested: int
    """Episodes the run should hold in total."""
    completed: int
    """Episodes finished by this call (errors included)."""
    skipped: int
    """Indexes already stored before this call (resume)."""
    errors: int
    """Episodes of this call that ended with status "error" (stored, never trained on)."""
    errors_by_cause: dict[str, int] = Field(default_factory=dict)
    """``infrastructure:<Type>`` / ``recipe:<Type>`` -> episodes of this call that failed so."""
    first_errors: dict[str, str] = Field(default_factory=dict)
    """Cause -> the first error of that cause (episode index and message)."""
    retried: int = 0
    """Episodes run more than once after an infrastructure failure."""
    reward_failures: dict[str, int] = Field(default_factory=dict)
    """Role -> turns whose reward fn raised (stored `reward_failed`, never a reward)."""
    elapsed_s: float
    """Wall-clock seconds of this call."""
    episodes_per_s: float
    """Episodes finished per second of this call."""
    headline: dict[str, float] = Field(default_factory=dict)
    """The recipe's headline metrics (`Recipe.headline_metrics`) -> mean over this call's episodes."""
    mean_reward: dict[str, float] = Field(default_factory=dict)
    """Role -> mean reward over this call's turns."""
    metrics: dict[str, float] = Field(default_factory=dict)
    """Episode metric -> mean over this call's episodes."""


def episode_seeds(run_seed: int, index: int, block_size: int) -> tuple[int, int]:
    """(episode seed, group seed) of an index: the same on every resume."""
    return derive_seed(run_seed, "episode", index), derive_seed(run_seed, "group", index // block_size)


async def run_recipe(
    recipe: Recipe | CompiledRecipe,
    config: RunConfig,
    *,
    store: Any | None = None,
    on_episode: Callable[[Episode], Any] | None = None,
    console: Console | None = None,
    executor: Executor | None = None,
) -> RunSummary:
    """Run `config.episodes` episodes (minus stored ones on resume) with bounded concurrency.

    A coroutine: ``summary = await run_recipe(...)`` inside async code, or
    ``asyncio.run(run_recipe(...))`` from a script. `executor` runs the episodes
    elsewhere (e.g. a `RayExecutor`); default: this event loop.
    """
    compiled = recipe.compile() if isinstance(recipe, Recipe) else recipe
    own_store = False
    if store is None and config.store is not None:
        from agentplay.traces import TraceStore

        store, own_store = TraceStore(config.store), True
    try:
        run_id, stored = _open_run(store, compiled, config)
        todo = [i for i in range(config.episodes) if i not in stored]
        k = compiled.block_size
        resumed_blocks = {i // k for i in stored}
        stats = RunStats(compiled.recipe.headline_metrics)
        specs: list[EpisodeSpec] = []
        for i in todo:
            seed, group_seed = episode_seeds(config.seed, i, k)
            meta: dict[str, Any] = {}
            if i // k in resumed_blocks:
                meta["group_resumed"] = True  # its block mixes episodes from before and after a restart
            if (i // k + 1) * k > config.episodes:
                meta["group_incomplete"] = True  # the last block is cut short by N
            specs.append(EpisodeSpec(index=i, seed=seed, group_seed=group_seed, run_id=run_id, metadata=meta,
                                     retries=config.episode_retries))
        # where episodes run is the executor's business (asyncio here, Ray actors elsewhere)
        runner = executor or LocalExecutor(compiled, concurrency=config.concurrency)
        # group rewards need a block's episodes together before any is stored (see _group_rewards)
        blocks = (BlockBuffer(compiled, todo, total=config.episodes, resumed=resumed_blocks)
                  if compiled.holds_blocks else None)

        def release(finished: list[Episode]) -> None:
            if store is not None:
                with store.transaction():  # a block is stored whole or not at all
                    finished = [ep for ep in finished if _append(store, ep)]
            for ep in finished:
                stats.add(ep)
                if on_episode is not None:
                    on_episode(ep)
            progress.update(stats)
            if config.strict_rewards:
                for ep in finished:
                    _stop_on_reward_failure(ep, run_id)

        async def consume() -> None:
            async with contextlib.aclosing(runner.run(specs)) as episodes:
                async for episode in episodes:
                    # at once (no group rewards): a kill loses only in-flight episodes
                    release([episode] if blocks is None else await blocks.add(episode))

        progress = RunProgress(total=len(todo), recipe=compiled.name, enabled=config.progress, console=console)
        start = time.perf_counter()
        try:
            with progress:
                await consume()
        except BaseException:
            if store is not None:
                store.set_run_status(run_id, "failed")
            raise
        elapsed = time.perf_counter() - start
        summary = RunSummary(
            run_id=run_id, recipe=compiled.name, requested=config.episodes, completed=stats.count,
            skipped=len(stored), errors=stats.errors, elapsed_s=elapsed,
            episodes_per_s=stats.count / elapsed if elapsed > 0 else 0.0,
            headline=stats.headline_means(), mean_reward=stats.mean_rewards(),
            metrics=stats.mean_metrics(), **stats.tally.summary_fields(),
        )
        verdict = stats.tally.verdict(config.max_error_fraction)
        if verdict is not None:  # no summary table: it would read like a run that worked
            if store is not None:
                store.set_run_status(run_id, "failed")
            hint = (f"Its episodes, failed ones included, are stored under run {run_id!r}; --resume skips "
                    "every stored index, so once the cause is fixed start a new run.")
            raise RunHealthError(stats.tally.diagnosis(verdict, run_id=run_id, retries=config.episode_retries,
                                                       hint=hint), summary)
        if store is not None:
            store.set_run_status(run_id, "finished")
        if config.progress:
            progress.print_summary(summary)
        return summary
    finally:
        if own_store and store is not None:
            store.close()


def _append(store: Any, episode: Episode) -> bool:
    try:
        store.append_episode(episode)
    except DuplicateEpisode:
        return False  # another writer stored this index meanwhile: already done
    return True


def _stop_on_reward_failure(episode: Episode, run_id: str) -> None:
    for turn in episode.turns:
        if turn.reward_failed is not None:
            raise RewardFailedError(
                f"run {run_id} stopped (strict_rewards / --strict-rewards): the reward fn of role "
                f"{turn.role!r} failed in episode {episode.index}: {turn.reward_failed}. The episode is "
                "stored with the turn marked reward_failed; fix the reward fn and rerun."
            )


def _open_run(store: Any | None, compiled: CompiledRecipe, config: RunConfig) -> tuple[str, set[int]]:
    """The run id to write under and the indexes already stored in it."""
    from agentplay.traces import new_id

    run_config = {"episodes": config.episodes, "concurrency": config.concurrency, "seed": config.seed,
                  "options": _jsonable(compiled.recipe.options),
                  "headline_metrics": list(compiled.recipe.headline_metrics)}  # what the UI and report chart
    if store is None:
        return config.run_id or new_id(), set()
    if not config.resume:
        return store.create_run(recipe=compiled.name, config=run_config, run_id=config.run_id), set()
    run_id = config.run_id or _latest_run(store, compiled.name)
    if run_id is None:
        run_id = store.create_run(recipe=compiled.name, config=run_config, run_id=None)
    else:
        run_id = store.get_or_create_run(run_id, recipe=compiled.name, config=run_config)
        store.set_run_status(run_id, "running")
    return run_id, set(store.stored_indexes(run_id))


def _latest_run(store: Any, recipe: str) -> str | None:
    runs = [r for r in store.list_runs() if getattr(r, "recipe", None) == recipe]
    if not runs:
        return None
    return max(runs, key=lambda r: getattr(r, "created_at", 0) or 0).run_id


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)
