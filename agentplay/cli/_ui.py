"""`agentplay ui` (local web app) and `agentplay report` (static HTML + PNG charts).

Both open the store read-only first, so a missing, empty or older-schema file
is one `error: ...` line and exit code 1, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agentplay.traces import StoreError, TraceStore

__all__ = ["report", "ui"]


def _open(path: Path) -> TraceStore:
    try:
        return TraceStore(path, read_only=True)
    except StoreError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def ui(
    store: Annotated[Path, typer.Option("--store", "-s", envvar="AGENTPLAY_STORE",
                                        help="Trace store file (SQLite), possibly still being written.")],
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8765,
    host: Annotated[str, typer.Option(help="Interface to bind; the default keeps it on this machine.")] = "127.0.0.1",
) -> None:
    """Serve a local web app over a trace store: runs, charts, episodes; it follows a live run."""
    import uvicorn

    from agentplay.ui import create_app

    db = _open(store)
    app = create_app(db)
    typer.echo(f"agentplay ui: http://{host}:{port}/  (store {store}; Ctrl-C stops)", err=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        db.close()


def report(
    run_id: Annotated[str, typer.Argument(help="Run id (or a unique prefix; see `agentplay traces list`).")],
    store: Annotated[Path, typer.Option("--store", "-s", envvar="AGENTPLAY_STORE", help="Trace store file (SQLite).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for index.html and the PNG charts.")],
) -> None:
    """Write a static HTML report of one run with its charts as PNG images."""
    from agentplay.traces import RunInfo
    from agentplay.ui import write_report

    try:
        import matplotlib  # noqa: F401 - only the report needs it (the `ui` extra)
    except ImportError:
        typer.echo("error: agentplay report draws with matplotlib: pip install 'agentplay[ui]'", err=True)
        raise typer.Exit(1) from None
    with _open(store) as db:
        try:
            found = db.resolve(run_id)
            if not isinstance(found, RunInfo):
                raise StoreError(f"{run_id!r} is an episode, not a run; give a run id")
            result = write_report(db, found.run_id, out)
        except StoreError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        except OSError as exc:
            typer.echo(f"error: cannot write the report to {out}: {exc}", err=True)
            raise typer.Exit(1) from None
    typer.echo(str(result.index))
    for path in result.images:
        typer.echo(str(path))
