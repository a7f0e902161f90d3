"""The SQLite schema and opening a store file safely.

One file, WAL journal: one writer and any number of readers (other processes
included) at the same time. `PRAGMA user_version` holds the schema version so
an old file is recognised before anything reads it wrongly.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Literal

from ._errors import StoreError

SCHEMA_VERSION = 1
"""Bump on any incompatible change, and add a migration or a message for older files."""

APPLICATION_ID = 0x41675079  # "AgPy": marks the file as an agentplay trace store

Synchronous = Literal["normal", "full"]

_TABLES = """
CREATE TABLE IF NOT EXISTS agentplay_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    recipe TEXT NOT NULL,
    config TEXT NOT NULL,               -- JSON
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS episodes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,   -- commit order, never reused: poll with seq > last
    episode_id TEXT NOT NULL UNIQUE,
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    idx INTEGER NOT NULL,
    recipe TEXT NOT NULL,
    seed INTEGER,
    status TEXT NOT NULL,
    error TEXT,
    metrics TEXT NOT NULL,              -- JSON object
    metadata TEXT NOT NULL,             -- JSON object
    n_turns INTEGER NOT NULL,           -- lets a reader check an episode is whole
    created_at REAL NOT NULL,
    stored_at REAL NOT NULL,
    UNIQUE (run_id, idx)
);
CREATE TABLE IF NOT EXISTS turns (
    turn_rowid INTEGER PRIMARY KEY,
    episode_seq INTEGER NOT NULL REFERENCES episodes(seq),
    position INTEGER NOT NULL,          -- order inside the episode
    turn_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    role TEXT NOT NULL,
    node TEXT NOT NULL,
    group_id TEXT,
    messages TEXT NOT NULL,             -- JSON list of OpenAI-style messages
    prompt_token_ids BLOB,              -- little-endian int32
    token_ids BLOB,                     -- little-endian int32: everything after the prompt
    mask BLOB,                          -- int8: 1 = the model wrote the token, 0 = tool/template
    logprobs BLOB,                      -- little-endian float64, one per token_ids entry
    n_tokens INTEGER,                   -- len(token_ids)
    n_model_tokens INTEGER,             -- sum(mask)
    token_exact INTEGER NOT NULL,
    weight_version INTEGER,
    output TEXT,                        -- JSON
    parse_error TEXT,
    started_at REAL NOT NULL,
    latency_s REAL NOT NULL,
    UNIQUE (episode_seq, position)
);
CREATE TABLE IF NOT EXISTS generations (
    turn_rowid INTEGER NOT NULL REFERENCES turns(turn_rowid),
    position INTEGER NOT NULL,
    prompt_token_ids BLOB,
    completion_token_ids BLOB,
    logprobs BLOB,
    text TEXT NOT NULL,
    finish_reason TEXT NOT NULL,
    weight_version INTEGER,
    model TEXT NOT NULL,
    PRIMARY KEY (turn_rowid, position)
);
CREATE TABLE IF NOT EXISTS tool_calls (
    turn_rowid INTEGER NOT NULL REFERENCES turns(turn_rowid),
    position INTEGER NOT NULL,
    call_id TEXT NOT NULL,
    name TEXT NOT NULL,
    arguments TEXT,                     -- JSON object, NULL when unparseable
    raw_arguments TEXT NOT NULL,
    result TEXT NOT NULL,
    truncated INTEGER NOT NULL,
    error TEXT,
    latency_s REAL NOT NULL,
    sandboxed INTEGER NOT NULL,
    PRIMARY KEY (turn_rowid, position)
);
CREATE TABLE IF NOT EXISTS rewards (
    turn_rowid INTEGER PRIMARY KEY REFERENCES turns(turn_rowid),
    run_id TEXT NOT NULL,
    episode_seq INTEGER NOT NULL,
    role TEXT NOT NULL,
    group_id TEXT,
    value REAL,                         -- NULL only for NaN (SQLite has no NaN)
    reason TEXT NOT NULL,
    components TEXT NOT NULL            -- JSON object
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    iteration INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL,
    logged_at REAL NOT NULL,
    PRIMARY KEY (run_id, iteration, name)
);
CREATE TABLE IF NOT EXISTS cursors (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    name TEXT NOT NULL,
    value TEXT NOT NULL,                -- JSON
    updated_at REAL NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE INDEX IF NOT EXISTS episodes_run_status ON episodes(run_id, status);
CREATE INDEX IF NOT EXISTS turns_run_role ON turns(run_id, role);
CREATE INDEX IF NOT EXISTS turns_group ON turns(group_id);
CREATE INDEX IF NOT EXISTS turns_turn_id ON turns(turn_id);
CREATE INDEX IF NOT EXISTS rewards_run_role_value ON rewards(run_id, role, value);
CREATE INDEX IF NOT EXISTS rewards_group ON rewards(group_id);
CREATE INDEX IF NOT EXISTS tool_calls_name ON tool_calls(name);
"""

ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("generations", "sampling", "TEXT"),  # JSON SamplingRecord: how the tokens were sampled
    ("turns", "reward_failed", "TEXT"),  # the reward fn raised: why (no reward row, never trained on)
    ("episodes", "error_cause", "TEXT"),  # status error: 'infrastructure:Type' or 'recipe:Type'
    ("generations", "tokenizer", "TEXT"),  # the model's tokenizer (folder, tokenizer.json or repo id)
)
"""Columns added after a schema version shipped, as (table, column, SQL type). Adding a
nullable column breaks no reader, so it does not bump `SCHEMA_VERSION`: a writer adds the
missing ones when it opens an older file, and readers of a file without them (a read-only
open cannot add them) read NULL (see `has_column`)."""

# Contentless: the index only (the text already lives in `turns`); rowid = turns.turn_rowid.
_FTS = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS turns_fts"
    " USING fts5(text, content='', tokenize='porter unicode61')"
)


def has_fts5() -> bool:
    """Whether this Python's SQLite was built with FTS5 (else text search falls back to LIKE)."""
    try:
        with sqlite3.connect(":memory:") as probe:
            probe.execute("CREATE VIRTUAL TABLE t USING fts5(x)")
        return True
    except sqlite3.OperationalError:
        return False


def open_store(
    path: Path, *, read_only: bool, synchronous: Synchronous
) -> tuple[sqlite3.Connection, bool]:
    """Open (writers: create if new) and check a store; returns (connection, FTS available)."""
    if read_only:
        _check_readable_file(path)
        conn = _connect(f"{path.resolve().as_uri()}?mode=ro", path)
    else:
        if path.is_dir():
            raise StoreError(
                f"{path} is a directory; give a file path such as {path / 'traces.db'}"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(str(path), path)
    try:
        conn.execute("PRAGMA busy_timeout = 30000")
        _check_schema(conn, path, creating_allowed=not read_only)
        if read_only:
            conn.execute("PRAGMA query_only = ON")
        else:
            _init(conn, synchronous)
        fts = _table_exists(conn, "turns_fts") and has_fts5()
    except BaseException:
        conn.close()
        raise
    return conn, fts


def _connect(target: str, path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(
            target, uri=target.startswith("file:"), isolation_level=None, check_same_thread=False
        )
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} is not a trace store: SQLite cannot read it ({exc})") from exc
    return conn


def _check_readable_file(path: Path) -> None:
    if not path.exists():
        raise StoreError(
            f"no trace store at {path}: the file does not exist "
            "(check the path, or create one with `agentplay run ... --store FILE`)"
        )
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not a trace store file")
    if path.stat().st_size == 0:
        raise StoreError(
            f"{path} is empty (0 bytes): not a trace store; it was never written by agentplay"
        )


def has_column(conn: sqlite3.Connection, table: str, column: str) -> bool:
    """Whether `table` has `column` (files older than an `ADDED_COLUMNS` entry lack it)."""
    return any(row[1] == column for row in conn.execute(f"PRAGMA table_info({table})"))


def _table_exists(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone()
    return row is not None


def _check_schema(conn: sqlite3.Connection, path: Path, *, creating_allowed: bool) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    has_tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0
    if not has_tables and version == 0:
        if creating_allowed:
            return
        raise StoreError(
            f"{path} is an empty SQLite database, not a trace store (it has no tables)"
        )
    if app_id != APPLICATION_ID and not _table_exists(conn, "agentplay_meta"):
        raise StoreError(
            f"{path} is an SQLite database but not an agentplay trace store; "
            "give a file written by `agentplay run --store`, or a new path"
        )
    if version < SCHEMA_VERSION:
        raise StoreError(
            f"{path} uses trace-store schema version {version}, but this agentplay reads version "
            f"{SCHEMA_VERSION}; there is no automatic migration from version {version}: "
            "export it with the agentplay version that wrote it "
            "(`agentplay traces export --format jsonl`) "
            "and start new runs in a new --store file"
        )
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} uses trace-store schema version {version}, "
            f"newer than the version {SCHEMA_VERSION} "
            "this agentplay understands; upgrade agentplay to read it"
        )


def _init(conn: sqlite3.Connection, synchronous: Synchronous) -> None:
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode.lower() != "wal":
        raise StoreError(
            f"could not switch the store to WAL journaling (got {mode!r}); "
            "is it on a network file system?"
        )
    conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
            for statement in _TABLES.split(";"):
                if statement.strip():
                    conn.execute(statement)
            if has_fts5():
                conn.execute(_FTS)
            from agentplay import __version__

            conn.execute(
                "INSERT OR REPLACE INTO agentplay_meta(key, value)"
                " VALUES ('schema_version', ?), ('created_by', ?)",
                (str(SCHEMA_VERSION), f"agentplay {__version__}"),
            )
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        for table, column, kind in ADDED_COLUMNS:
            if not has_column(conn, table, column):
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
