"""Sampling settings are stored per generation, exported, and older stores without the
column still open (a writer adds it; a read-only reader sees None)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pyarrow.parquet as pq
from store_factory import make_episode

from agentplay.models import SamplingRecord
from agentplay.traces import TraceStore

COLD = SamplingRecord(temperature=0.5, top_p=0.9, top_k=None, logprobs_mode="temperature",
                      engine="agentplay-local", reported=True)
SILENT = SamplingRecord(temperature=0.7, engine="served-model", reported=False)


def _episode_with_sampling(run_id: str, index: int):
    ep = make_episode(run_id, index, n_turns=2, n_tokens=16)
    ep.turns[0].generations[0].sampling = COLD
    ep.turns[1].generations[0].sampling = SILENT
    return ep


def test_sampling_round_trips_and_is_exported(tmp_path: Path) -> None:
    with TraceStore(tmp_path / "traces.db") as store:
        run = store.create_run("r", run_id="run")
        store.append_episode(_episode_with_sampling(run, 0))
        (back,) = store.episodes("run")
        assert back.turns[0].generations[0].sampling == COLD
        assert back.turns[1].generations[0].sampling == SILENT
        assert back.turns[0].generations[1].sampling is None
        store.export_parquet(tmp_path / "t.parquet")
        store.export_jsonl(tmp_path / "t.jsonl")
    rows = pq.read_table(tmp_path / "t.parquet").to_pylist()
    assert [(r["temperature"], r["top_p"], r["top_k"], r["logprobs_mode"], r["sampling_engine"],
             r["sampling_reported"]) for r in rows] == [(0.5, 0.9, None, "temperature", "agentplay-local", True),
                                                        (0.7, 1.0, None, None, "served-model", False)]
    assert '"sampling":{"temperature":0.5' in (tmp_path / "t.jsonl").read_text()


def _drop_sampling_column(path: Path) -> None:
    """Make the file what a store written before the sampling record looks like."""
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE generations DROP COLUMN sampling")


def test_an_older_store_without_the_column_opens_for_reading_and_writing(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with TraceStore(path) as store:
        run = store.create_run("r", run_id="run")
        store.append_episode(make_episode(run, 0, n_turns=2, n_tokens=16))
    _drop_sampling_column(path)
    with sqlite3.connect(path) as conn:
        assert "sampling" not in {row[1] for row in conn.execute("PRAGMA table_info(generations)")}
    with TraceStore(path, read_only=True) as reader:  # cannot migrate: reads None
        (old,) = reader.episodes("run")
        assert all(g.sampling is None for t in old.turns for g in t.generations)
    with TraceStore(path) as writer:  # adds the column, keeps the old rows, stores new ones with it
        writer.append_episode(_episode_with_sampling("run", 1))
        first, second = writer.episodes("run")
        assert first.turns[0].generations[0].sampling is None
        assert second.turns[0].generations[0].sampling == COLD
