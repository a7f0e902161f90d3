"""`agentplay traces ...`: list, show and export what a run stored.

Every command opens the store read-only, so it is safe to run against the file
of a run in progress; store problems (missing file, not a store, old schema)
print one clear line on stderr and exit 1, never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from pathlib import Path

import typer

from agentplay.traces import Episode, RoleTurn, RunInfo, StoreError, TraceStore

__all__ = ["traces_app"]

traces_app = typer.Typer(
    name="traces",
    help="Inspect and export the traces a run stored.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

_STORE = typer.Option(
    ..., "--store", "-s", envvar="AGENTPLAY_STORE", help="Trace store file (SQLite)."
)


class ExportFormat(StrEnum):
    jsonl = "jsonl"
    parquet = "parquet"


@contextmanager
def _open(path: Path) -> Iterator[TraceStore]:
    try:
        with TraceStore(path, read_only=True) as store:
            yield store
    except StoreError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _counts(run: RunInfo) -> str:
    parts = ", ".join(f"{status} {n}" for status, n in sorted(run.status_counts.items()))
    return f"{run.episodes} episodes" + (f" ({parts})" if parts else "")


def _clip(text: str, limit: int | None, indent: str = "      ") -> str:
    """`text` cut to `limit` characters, its line breaks kept: later lines indented under the first."""
    text = text if limit is None or len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("\n", "\n" + indent)


def _role_rewards(run: RunInfo) -> str:
    if not run.mean_reward_by_role:
        return "mean reward -"
    return "mean reward " + " ".join(f"{role} {value:.3f}" for role, value in run.mean_reward_by_role.items())


@traces_app.command("list")
def list_runs(store: Path = _STORE) -> None:
    """One run per line: run id, recipe, status, episode counts, mean reward per role, start time."""
    with _open(store) as db:
        runs = db.list_runs()
    if not runs:
        typer.echo(f"no runs in {store}", err=True)
        return
    for run in runs:
        typer.echo(
            f"{run.run_id}  {run.recipe}  {run.status}  {_counts(run)}  "
            f"{_role_rewards(run)}  {_when(run.created_at)}"
        )


@traces_app.command("show")
def show(
    ref: str = typer.Argument(
        ..., metavar="RUN_OR_EPISODE", help="Run id, episode id, a unique prefix, or RUN:INDEX."
    ),
    store: Path = _STORE,
    limit: int = typer.Option(50, min=1, help="Episodes listed for a run (the highest indexes, in index order)."),
    full: bool = typer.Option(
        False, "--full", help="Print message and tool texts whole instead of clipped."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the run or episode as JSON."),
) -> None:
    """A run (config, counts, latest metrics, its episodes) or one episode turn by turn."""
    with _open(store) as db:
        try:
            found = db.resolve(ref)
        except StoreError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        if as_json:
            typer.echo(found.model_dump_json(indent=2))
        elif isinstance(found, RunInfo):
            _show_run(db, found, limit)
        else:
            _show_episode(found, None if full else 200)


def _show_run(db: TraceStore, run: RunInfo, limit: int) -> None:
    typer.echo(f"run {run.run_id}")
    typer.echo(
        f"  recipe {run.recipe}  status {run.status}  started {_when(run.created_at)}"
        f"  updated {_when(run.updated_at)}"
    )
    typer.echo(f"  {_counts(run)}  {_role_rewards(run)}")
    typer.echo(f"  config {json.dumps(run.config, sort_keys=True)}")
    points = db.metrics(run.run_id)
    if points:
        last = points[-1].iteration
        figures = "  ".join(f"{p.name}={p.value:.4g}" for p in points if p.iteration == last)
        typer.echo(f"  metrics at iteration {last}: {figures}")
    episodes = list(db.episodes(run.run_id, limit=limit, newest_first=True, by_index=True))[::-1]
    if run.episodes > len(episodes):
        typer.echo(f"episodes (last {len(episodes)} of {run.episodes}):")
    else:
        typer.echo("episodes:")
    for ep in episodes:
        rewards: dict[str, list[str]] = {}
        for turn in ep.turns:
            if turn.reward is not None:
                rewards.setdefault(turn.role, []).append(f"{turn.reward.value:.2f}")
        shown = "  ".join(f"{role}={','.join(values)}" for role, values in rewards.items())
        typer.echo(
            f"  #{ep.index}  {ep.episode_id}  {ep.status}  {len(ep.turns)} turns  {shown}".rstrip()
        )


def _show_episode(ep: Episode, clip: int | None) -> None:
    typer.echo(f"episode {ep.episode_id}  run {ep.run_id}  index {ep.index}  seq {ep.seq}")
    typer.echo(
        f"  recipe {ep.recipe}  status {ep.status}  seed {ep.seed}  created {_when(ep.created_at)}"
    )
    if ep.error:
        typer.echo(f"  error: {_clip(ep.error, clip)}")
    if ep.metrics:
        typer.echo("  metrics " + "  ".join(f"{k}={v:.4g}" for k, v in ep.metrics.items()))
    for position, turn in enumerate(ep.turns):
        _show_turn(position, turn, clip)


def _show_turn(position: int, turn: RoleTurn, clip: int | None) -> None:
    head = f"turn {position}  {turn.role}"
    if turn.node:
        head += f"  node {turn.node}"
    if turn.group_id:
        head += f"  group {turn.group_id}"
    if turn.reward is not None:
        head += f"  reward {turn.reward.value:.3f}" + (
            f" ({turn.reward.reason})" if turn.reward.reason else ""
        )
    typer.echo(head)
    if turn.token_ids is not None:
        model = sum(turn.mask) if turn.mask is not None else len(turn.token_ids)
        prompt = len(turn.prompt_token_ids or [])
        typer.echo(
            f"  tokens: prompt {prompt}, after prompt {len(turn.token_ids)} (model {model}, "
            f"tool/template {len(turn.token_ids) - model}), "
            f"token-exact {'yes' if turn.token_exact else 'NO'}"
            + (f", weights v{turn.weight_version}" if turn.weight_version is not None else "")
        )
    for message in turn.messages:
        content = message.get("content")
        text = content if isinstance(content, str) else json.dumps(content)
        typer.echo(f"  [{message.get('role', '?')}] {_clip(text or '', clip)}")
    for call in turn.tool_calls:
        args = json.dumps(call.arguments) if call.arguments is not None else call.raw_arguments
        outcome = f"error: {call.error}" if call.error else call.result
        typer.echo(f"  tool {call.name}({_clip(args, clip)}) -> {_clip(outcome, clip)}")
    if turn.output is not None:
        output = turn.output if isinstance(turn.output, str) else json.dumps(turn.output)
        typer.echo(f"  output: {_clip(output, clip)}")
    if turn.parse_error:
        typer.echo(f"  parse error: {_clip(turn.parse_error, clip)}")


@traces_app.command("export")
def export(
    store: Path = _STORE,
    fmt: ExportFormat = typer.Option(
        ..., "--format", "-f", help="jsonl: one episode per line; parquet: one row per role turn."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="File to write (replaced if it exists)."),
    run: str = typer.Option(
        None, "--run", help="Only this run (id or unique prefix); default all runs."
    ),
) -> None:
    """Write episodes as JSONL (with role turns, token ids, rewards) or role turns as Parquet."""
    with _open(store) as db:
        try:
            run_id = None
            if run is not None:
                found = db.resolve(run)
                if not isinstance(found, RunInfo):
                    raise StoreError(f"--run {run!r} names an episode, not a run")
                run_id = found.run_id
            if fmt is ExportFormat.jsonl:
                n = db.export_jsonl(out, run_id)
                typer.echo(f"wrote {n} episodes to {out}")
            else:
                n = db.export_parquet(out, run_id)
                typer.echo(f"wrote {n} role turns to {out}")
        except StoreError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
