"""TraceStore: the SQLite file every run writes and every reader (trainer, UI, CLI) reads.

Durability choice: WAL with `synchronous=NORMAL` by default. A commit is in the
WAL (in the OS page cache) before `append_episode` returns, so killing the
process (SIGKILL, OOM killer) loses no finished episode; a power cut can lose
the last few commits but never leaves a half-written episode, and `--resume`
simply re-runs the lost indexes. `synchronous="full"` adds an fsync per commit
for machines where power loss matters more than a few ms per episode.

Threads and tasks: one connection guarded by a re-entrant lock, so asyncio tasks
(directly, or through `asyncio.to_thread`) and threads can share one store.
Other processes may read at the same time (WAL); open them with `read_only=True`.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import _codec as c
from ._errors import DuplicateEpisode, StoreError
from ._query import episode_filter
from ._rows import insert_episode, load_episodes
from ._schema import Synchronous, open_store
from ._types import Episode, MetricPoint, RunInfo, RunStatus, new_id

_RUN_STATUSES = ("running", "finished", "failed")
_READ_BATCH = 64
"""Episodes loaded per lock hold while iterating: bounded memory, writers never wait long."""


class TraceStore:
    """Append-only store of runs, episodes, role turns, tool calls, rewards, metrics and cursors."""

    def __init__(
        self, path: str | Path, *, read_only: bool = False, synchronous: Synchronous = "normal"
    ) -> None:
        if synchronous not in ("normal", "full"):
            raise StoreError(f"synchronous must be 'normal' or 'full', not {synchronous!r}")
        self.path = Path(path)
        self.read_only = read_only
        self._conn, self._fts = open_store(self.path, read_only=read_only, synchronous=synchronous)
        self._lock = threading.RLock()
        self._depth = 0

    # -- lifecycle

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> TraceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def full_text_search(self) -> bool:
        """Whether text queries use the FTS5 index (else a LIKE scan with the same meaning)."""
        return self._fts

    def __repr__(self) -> str:
        return f"TraceStore({str(self.path)!r}{', read_only=True' if self.read_only else ''})"

    @contextmanager
    def transaction(self) -> Iterator[TraceStore]:
        """All writes inside commit together or not at all (e.g. a trainer step's metrics + cursor).

        Nested calls (every write method uses one) become savepoints. Do not `await`
        inside: the lock is per thread, so another task on the same loop would join it.
        """
        if self.read_only:
            raise StoreError(f"{self.path} was opened read-only; open TraceStore(path) to write")
        with self._lock:
            outer = self._depth == 0
            savepoint = f"sp{self._depth}"
            self._execute("BEGIN IMMEDIATE" if outer else f"SAVEPOINT {savepoint}")
            self._depth += 1
            try:
                yield self
            except BaseException:
                self._depth -= 1
                if self._conn.in_transaction:  # SQLite may already have rolled back (disk full...)
                    self._execute("ROLLBACK" if outer else f"ROLLBACK TO {savepoint}")
                    if not outer:
                        self._execute(f"RELEASE {savepoint}")
                raise
            self._depth -= 1
            try:
                self._execute("COMMIT" if outer else f"RELEASE {savepoint}")
            except BaseException:
                if outer and self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def _execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        try:
            return self._conn.execute(sql, params)
        except sqlite3.OperationalError as exc:
            raise StoreError(f"trace store {self.path}: {exc}") from exc

    def _rows(self, sql: str, params: Any = ()) -> list[Any]:
        with self._lock:
            return self._execute(sql, params).fetchall()

    # -- runs --

    def create_run(
        self, recipe: str, config: Mapping[str, Any] | None = None, run_id: str | None = None
    ) -> str:
        """Start a new run; refuses an id that exists (use `get_or_create_run` to resume)."""
        run_id = run_id or new_id()
        with self.transaction():
            if self._run_row(run_id) is not None:
                raise StoreError(
                    f"run {run_id!r} already exists in {self.path}; "
                    "resume it with get_or_create_run"
                )
            now = time.time()
            self._execute(
                "INSERT INTO runs VALUES (?,?,?,?,?,?)",
                (run_id, recipe, c.dumps(dict(config or {})), "running", now, now),
            )
        return run_id

    def get_or_create_run(
        self, run_id: str | None, recipe: str, config: Mapping[str, Any] | None = None
    ) -> str:
        """The run to continue: an existing one is marked running again (its recipe must match)."""
        if run_id is None:
            return self.create_run(recipe, config)
        with self.transaction():
            row = self._run_row(run_id)
            if row is None:
                return self.create_run(recipe, config, run_id)
            if row[1] != recipe:
                raise StoreError(
                    f"run {run_id!r} was recorded with recipe {row[1]!r}, not {recipe!r}; "
                    "pick another run id"
                )
            self._execute(
                "UPDATE runs SET status='running', updated_at=? WHERE run_id=?",
                (time.time(), run_id),
            )
        return run_id

    def set_run_status(self, run_id: str, status: RunStatus) -> None:
        if status not in _RUN_STATUSES:
            raise StoreError(
                f"run status must be one of {', '.join(_RUN_STATUSES)}, not {status!r}"
            )
        with self.transaction():
            self._require_run(run_id)
            self._execute(
                "UPDATE runs SET status=?, updated_at=? WHERE run_id=?",
                (status, time.time(), run_id),
            )

    def _run_row(self, run_id: str) -> tuple[Any, ...] | None:
        with self._lock:
            return self._execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()

    def _require_run(self, run_id: str) -> None:
        if self._run_row(run_id) is None:
            raise StoreError(
                f"no run {run_id!r} in {self.path}; "
                "create it with create_run (see `agentplay traces list`)"
            )

    def list_runs(self) -> list[RunInfo]:
        """Every run, oldest first, with episode counts."""
        return self._run_infos(None)

    def get_run(self, run_id: str) -> RunInfo:
        runs = self._run_infos(run_id)
        if not runs:
            raise StoreError(
                f"no run {run_id!r} in {self.path} "
                f"(`agentplay traces list --store {self.path}` lists them)"
            )
        return runs[0]

    def _run_infos(self, run_id: str | None) -> list[RunInfo]:
        where, params = ("WHERE r.run_id = ?", (run_id,)) if run_id else ("", ())
        rows = self._rows(
            "SELECT r.run_id, r.recipe, r.config, r.status, r.created_at, r.updated_at,"
            " (SELECT count(*) FROM episodes e WHERE e.run_id = r.run_id),"
            " (SELECT max(seq) FROM episodes e WHERE e.run_id = r.run_id),"
            " (SELECT avg(value) FROM rewards w WHERE w.run_id = r.run_id)"
            f" FROM runs r {where} ORDER BY r.created_at, r.run_id",
            params,
        )
        counts: dict[str, dict[str, int]] = {}
        for rid, status, n in self._rows(
            f"SELECT run_id, status, count(*) FROM episodes {'WHERE run_id = ?' if run_id else ''}"
            " GROUP BY run_id, status",
            params,
        ):
            counts.setdefault(rid, {})[status] = n
        by_role: dict[str, dict[str, float]] = {}
        for rid, role, mean in self._rows(
            f"SELECT run_id, role, avg(value) FROM rewards {'WHERE run_id = ?' if run_id else ''}"
            " GROUP BY run_id, role HAVING count(value) > 0 ORDER BY run_id, role",
            params,
        ):
            by_role.setdefault(rid, {})[role] = mean
        return [
            RunInfo(
                run_id=row[0],
                recipe=row[1],
                config=c.loads(row[2]),
                status=row[3],
                created_at=row[4],
                updated_at=row[5],
                episodes=row[6],
                last_seq=row[7],
                mean_reward=row[8],
                mean_reward_by_role=by_role.get(row[0], {}),
                status_counts=counts.get(row[0], {}),
            )
            for row in rows
        ]

    # -- episodes --

    def append_episode(self, episode: Episode) -> int:
        """Store a finished episode in one transaction; returns its `seq`.

        Raises `DuplicateEpisode` if (run_id, index) is already stored: a resumed run
        treats that as "already done".
        """
        if not episode.run_id:
            raise StoreError("episode.run_id is empty; set it to the id returned by create_run")
        with self.transaction():
            self._require_run(episode.run_id)
            existing = self._execute(
                "SELECT episode_id FROM episodes WHERE run_id=? AND idx=?",
                (episode.run_id, episode.index),
            ).fetchone()
            if existing is not None:
                raise DuplicateEpisode(episode.run_id, episode.index, existing[0])
            try:
                seq = insert_episode(self._conn, episode, fts=self._fts)
            except sqlite3.IntegrityError as exc:
                if "episodes.episode_id" in str(exc):
                    raise StoreError(
                        f"episode id {episode.episode_id!r} is already stored (under another index)"
                    ) from exc
                raise StoreError(
                    f"cannot store episode {episode.index} of run {episode.run_id!r}: {exc}"
                ) from exc
            self._execute(
                "UPDATE runs SET updated_at=? WHERE run_id=?", (time.time(), episode.run_id)
            )
        return seq

    def stored_indexes(self, run_id: str) -> set[int]:
        """Indexes already stored for a run: what `--resume` skips."""
        return {row[0] for row in self._rows("SELECT idx FROM episodes WHERE run_id=?", (run_id,))}

    def get_episode(self, episode_id: str) -> Episode:
        row = self._rows("SELECT seq FROM episodes WHERE episode_id=?", (episode_id,))
        if not row:
            raise StoreError(f"no episode {episode_id!r} in {self.path}")
        with self._lock:
            return load_episodes(self._conn, [row[0][0]])[0]

    def episodes(
        self,
        run_id: str | None = None,
        *,
        since_seq: int | None = None,
        before_seq: int | None = None,
        role: str | None = None,
        min_reward: float | None = None,
        max_reward: float | None = None,
        status: str | None = None,
        text: str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
        by_index: bool = False,
    ) -> Iterator[Episode]:
        """Episodes in `seq` order (`by_index`: in episode-index order) matching every filter given.

        `since_seq`/`before_seq` bound `seq` exclusively: poll for new episodes, or page
        backwards from the oldest one shown. `role`, `min_reward`/`max_reward` and `text`
        apply to one and the same role turn ("a solver turn rewarded >= 0.5 that mentions
        Paris"). `text` uses the FTS5 index (words, stemmed, all must appear) or LIKE
        where this SQLite lacks FTS5.
        """
        where, params = episode_filter(
            run_id=run_id, since_seq=since_seq, before_seq=before_seq, role=role,
            min_reward=min_reward, max_reward=max_reward, status=status, text=text, fts=self._fts,
        )  # fmt: skip
        order = "DESC" if newest_first else "ASC"
        sql = f"SELECT seq FROM episodes e {where} ORDER BY {'idx' if by_index else 'seq'} {order}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        seqs = [row[0] for row in self._rows(sql, params)]
        for start in range(0, len(seqs), _READ_BATCH):
            with self._lock:
                batch = load_episodes(self._conn, seqs[start : start + _READ_BATCH])
            yield from batch

    def count_episodes(
        self,
        run_id: str | None = None,
        *,
        since_seq: int | None = None,
        before_seq: int | None = None,
        role: str | None = None,
        min_reward: float | None = None,
        max_reward: float | None = None,
        status: str | None = None,
        text: str | None = None,
    ) -> int:
        """How many episodes `episodes(...)` would yield with the same filters (for paging)."""
        where, params = episode_filter(
            run_id=run_id, since_seq=since_seq, before_seq=before_seq, role=role,
            min_reward=min_reward, max_reward=max_reward, status=status, text=text, fts=self._fts,
        )  # fmt: skip
        return int(self._rows(f"SELECT count(*) FROM episodes e {where}", params)[0][0])

    def resolve(self, ref: str) -> RunInfo | Episode:
        """A run or an episode from what a person types: an id, a unique id prefix, or RUN:INDEX."""
        if ":" in ref:
            run_ref, _, index = ref.rpartition(":")
            run = self._resolve_run(run_ref)
            if run is None or not index.isdigit():
                raise StoreError(
                    f"{ref!r} is not RUN:INDEX of a stored run (see `agentplay traces list`)"
                )
            rows = self._rows(
                "SELECT episode_id FROM episodes WHERE run_id=? AND idx=?", (run.run_id, int(index))
            )
            if not rows:
                raise StoreError(f"run {run.run_id} has no episode with index {index}")
            return self.get_episode(rows[0][0])
        run = self._resolve_run(ref)
        if run is not None:
            return run
        rows = self._rows(
            "SELECT episode_id FROM episodes WHERE episode_id >= ? AND episode_id < ? LIMIT 2",
            (ref, ref + "\uffff"),
        )
        if len(rows) == 1:
            return self.get_episode(rows[0][0])
        if len(rows) > 1:
            raise StoreError(f"{ref!r} matches several episodes; type more of the id")
        raise StoreError(
            f"no run or episode {ref!r} in {self.path} (`agentplay traces list` shows run ids)"
        )

    def _resolve_run(self, ref: str) -> RunInfo | None:
        rows = self._rows(
            "SELECT run_id FROM runs WHERE run_id >= ? AND run_id < ? LIMIT 2",
            (ref, ref + "\uffff"),
        )
        exact = [r for r in rows if r[0] == ref]
        if exact or len(rows) == 1:
            return self.get_run((exact or rows)[0][0])
        if len(rows) > 1:
            raise StoreError(f"{ref!r} matches several runs; type more of the id")
        return None

    # -- metrics and cursors --

    def log_metrics(self, run_id: str, iteration: int, values: Mapping[str, float]) -> None:
        """Record figures for one iteration; a name logged again for an iteration replaces it."""
        rows = []
        for name, value in values.items():
            if not isinstance(name, str) or not name:
                raise StoreError(f"metric names must be non-empty strings, got {name!r}")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                try:
                    value = float(value)  # numpy / torch scalars
                except (TypeError, ValueError):
                    raise StoreError(f"metric {name!r} must be a number, got {value!r}") from None
            rows.append((run_id, int(iteration), name, float(value), time.time()))
        with self.transaction():
            self._require_run(run_id)
            self._conn.executemany("INSERT OR REPLACE INTO metrics VALUES (?,?,?,?,?)", rows)

    def metrics(
        self, run_id: str, name: str | None = None, since_iteration: int | None = None
    ) -> list[MetricPoint]:
        """Logged figures ordered by iteration then name."""
        sql = "SELECT iteration, name, value FROM metrics WHERE run_id=?"
        params: list[Any] = [run_id]
        if name is not None:
            sql, params = sql + " AND name=?", [*params, name]
        if since_iteration is not None:
            sql, params = sql + " AND iteration>?", [*params, since_iteration]
        rows = self._rows(sql + " ORDER BY iteration, name", params)
        return [MetricPoint(it, n, c.real(v)) for it, n, v in rows]

    def set_cursor(self, run_id: str, name: str, value: Any) -> None:
        """Save a reader's position (e.g. the trainer's last consumed seq); any JSON value."""
        with self.transaction():
            self._require_run(run_id)
            self._execute(
                "INSERT OR REPLACE INTO cursors VALUES (?,?,?,?)",
                (run_id, name, c.dumps(value), time.time()),
            )

    def get_cursor(self, run_id: str, name: str, default: Any = None) -> Any:
        rows = self._rows("SELECT value FROM cursors WHERE run_id=? AND name=?", (run_id, name))
        return c.loads(rows[0][0]) if rows else default

    # -- export --

    def export_jsonl(self, path: str | Path, run_id: str | None = None) -> int:
        """One episode per line (turns, token ids, rewards, tool calls); returns the count."""
        from ._export import export_jsonl

        return export_jsonl(self, Path(path), run_id)

    def export_parquet(self, path: str | Path, run_id: str | None = None) -> int:
        """One row per role turn (see `turn_rows`); returns the number of rows."""
        from ._export import export_parquet

        return export_parquet(self, Path(path), run_id)

    def to_hf_dataset(self, run_id: str | None = None, *, role: str | None = None) -> Any:
        """A `datasets.Dataset`, one row per role turn, in TRL's column names (see `_export`)."""
        from ._export import to_hf_dataset

        return to_hf_dataset(self, run_id, role=role)
