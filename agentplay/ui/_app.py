"""The web app behind `agentplay ui`: server-rendered pages plus JSON the pages poll.

FastAPI serves Jinja pages and a few JSON endpoints; one small script
(`static/app.js`) polls them every two seconds, so a page follows a run that
is still writing without a reload or a restart (new episodes come with
`since_seq`). No front-end build and nothing loaded from outside the server:
the charts are SVG drawn by that script.

The store is opened read-only (SQLite WAL lets a running writer go on).
A training run's episodes live in its rollout runs (`<run>/it00003`), so its
episode list reads those.
"""

from __future__ import annotations

import heapq
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from agentplay.traces import RunInfo, StoreError, TraceStore

from ._series import SeriesCache, child_runs
from ._view import TokenDecoder, episode_row, turn_view

__all__ = ["create_app"]

_HERE = Path(__file__).parent
POLL_MS = 2000


def _is_valid(episode: Any) -> bool | None:
    value = episode.metrics.get("valid_proposal")
    return None if value is None else value >= 0.5


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


class _Reader:
    """Everything the routes read, over one read-only store."""

    def __init__(self, store: TraceStore) -> None:
        self.store = store
        self.series = SeriesCache(store)
        self.decoder = TokenDecoder()

    def runs(self) -> list[dict[str, Any]]:
        runs = self.store.list_runs()
        iterations: dict[str, int] = {}
        for run in runs:
            iterations[run.run_id] = len({p.iteration for p in self.store.metrics(run.run_id)})
        return [self._run_dict(run, runs, iterations[run.run_id]) for run in runs]

    def _run_dict(self, run: RunInfo, runs: list[RunInfo], iterations: int) -> dict[str, Any]:
        children = child_runs(runs, run.run_id)
        parent = run.run_id.rsplit("/", 1)[0] if "/" in run.run_id else None
        return {
            "run_id": run.run_id, "recipe": run.recipe, "status": run.status,
            "episodes": run.episodes + sum(r.episodes for r in runs if r.run_id in children.values()),
            "status_counts": run.status_counts, "mean_reward": run.mean_reward,
            "iterations": iterations, "rollout_runs": len(children), "parent": parent,
            "created": _when(run.created_at), "updated": _when(run.updated_at),
            "updated_at": run.updated_at, "last_seq": run.last_seq,
        }

    def run(self, run_id: str) -> dict[str, Any]:
        runs = self.store.list_runs()
        run = next((r for r in runs if r.run_id == run_id), None)
        if run is None:
            raise StoreError(f"no run {run_id!r} in {self.store.path}")
        iterations = len({p.iteration for p in self.store.metrics(run_id)})
        return self._run_dict(run, runs, iterations) | {"config": run.config}

    def sources(self, run_id: str) -> list[str]:
        return [run_id, *child_runs(self.store.list_runs(), run_id).values()]

    def episodes(self, run_id: str, *, limit: int, valid: bool | None = None, **filters: Any) -> dict[str, Any]:
        """Newest first across the run and its rollout runs.

        `valid` filters on the episode's `valid_proposal` figure, which SQL cannot
        see (it is inside the metrics JSON), so it scans the matching episodes.
        """
        sources = self.sources(run_id)
        cap = limit if valid is None else None
        streams = [self.store.episodes(src, newest_first=True, limit=cap, **filters) for src in sources]
        merged: Any = heapq.merge(*streams, key=lambda ep: -(ep.seq or 0))
        counts = {k: v for k, v in filters.items() if k != "since_seq"}
        if valid is None:
            rows = [episode_row(ep) for _, ep in zip(range(limit), merged)]
            total = sum(self.store.count_episodes(src, **counts) for src in sources)
        else:
            merged = [ep for ep in merged if _is_valid(ep) == valid]
            rows = [episode_row(ep) for ep in merged[:limit]]
            everything = [self.store.episodes(src, **counts) for src in sources]
            total = sum(_is_valid(ep) == valid for stream in everything for ep in stream)
        # the newest seq shown (not the store's): an episode committed during this read is next
        last = max([r["seq"] for r in rows if r["seq"] is not None] + [filters.get("since_seq") or -1])
        return {"episodes": rows, "total": total, "last_seq": last if last >= 0 else None}

    def episode(self, episode_id: str) -> dict[str, Any]:
        ep = self.store.get_episode(episode_id)
        try:
            run: RunInfo | None = self.store.get_run(ep.run_id)
        except StoreError:
            run = None
        row = episode_row(ep)
        row["turns"] = [turn_view(t, self.decoder.pieces(run, t)) for t in ep.turns]
        row["seed"] = ep.seed
        row["recipe"] = ep.recipe
        row["created"] = _when(ep.created_at)
        row["weight_versions"] = sorted({t.weight_version for t in ep.turns if t.weight_version is not None})
        return row


def create_app(store: TraceStore | str | Path) -> FastAPI:
    """The app over a store (a path is opened read-only; StoreError says what is wrong)."""
    if not isinstance(store, TraceStore):
        store = TraceStore(store, read_only=True)
    reader = _Reader(store)
    app = FastAPI(title="agentplay", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.reader = reader
    app.mount("/static", StaticFiles(directory=_HERE / "static"), name="static")
    templates = Jinja2Templates(directory=_HERE / "templates")
    templates.env.globals.update(poll_ms=POLL_MS, store_path=str(store.path))

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.get("/", response_class=HTMLResponse)
    def runs_page(request: Request) -> HTMLResponse:
        return templates.TemplateResponse(request, "runs.html.jinja", {"runs": reader.runs()})

    @app.get("/runs/{run_id:path}", response_class=HTMLResponse)
    def run_page(request: Request, run_id: str) -> HTMLResponse:
        try:
            run = reader.run(run_id)
        except StoreError as exc:
            raise HTTPException(404, str(exc)) from None
        roles = sorted({t.role for src in reader.sources(run_id)
                        for ep in store.episodes(src, limit=20) for t in ep.turns})
        return templates.TemplateResponse(request, "run.html.jinja", {"run": run, "roles": roles})

    @app.get("/episodes/{episode_id}", response_class=HTMLResponse)
    def episode_page(request: Request, episode_id: str) -> HTMLResponse:
        try:
            episode = reader.episode(episode_id)
        except StoreError as exc:
            raise HTTPException(404, str(exc)) from None
        return templates.TemplateResponse(request, "episode.html.jinja", {"ep": episode})

    @app.get("/api/runs")
    def api_runs() -> list[dict[str, Any]]:
        return reader.runs()

    @app.get("/api/runs/{run_id:path}/metrics")
    def api_metrics(run_id: str) -> dict[str, Any]:
        return reader.series.charts(run_id).model_dump()

    @app.get("/api/runs/{run_id:path}/episodes")
    def api_episodes(
        run_id: str,
        role: str | None = None,
        min_reward: float | None = None,
        max_reward: float | None = None,
        status: str | None = None,
        q: str | None = None,
        since_seq: int | None = None,
        limit: int = Query(100, ge=1, le=1000),
    ) -> dict[str, Any]:
        reader.store.get_run(run_id)
        valid = {"valid": True, "not-valid": False}.get(status or "")
        return reader.episodes(
            run_id, limit=limit, valid=valid, role=role or None, min_reward=min_reward,
            max_reward=max_reward, status=None if valid is not None else (status or None),
            text=q or None, since_seq=since_seq,
        )

    @app.get("/api/runs/{run_id:path}")
    def api_run(run_id: str) -> dict[str, Any]:
        return reader.run(run_id)

    @app.get("/api/episodes/{episode_id}")
    def api_episode(episode_id: str) -> dict[str, Any]:
        return reader.episode(episode_id)

    return app
