"""TraceStore on real SQLite files: round trips, duplicates, queries, metrics, cursors, errors."""

from __future__ import annotations

import asyncio
import math
import sqlite3
from pathlib import Path

import pytest
from store_factory import make_episode

from agentplay.traces import (
    SCHEMA_VERSION,
    DuplicateEpisode,
    Episode,
    RewardRecord,
    RoleTurn,
    StoreError,
    TraceStore,
)


@pytest.fixture
def store(tmp_path: Path):
    with TraceStore(tmp_path / "traces.db") as s:
        yield s


def test_episode_round_trips_exactly(store: TraceStore) -> None:
    run_id = store.create_run("search-selfplay", {"episodes": 3, "model": "local:smollm2"})
    originals = [make_episode(run_id, i) for i in range(3)]
    bare = Episode(
        run_id=run_id, index=3, status="error", error="boom", turns=[RoleTurn(role="solver")]
    )
    originals.append(bare)
    seqs = [store.append_episode(ep) for ep in originals]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    for ep, seq in zip(originals, seqs, strict=True):
        assert store.get_episode(ep.episode_id) == ep.model_copy(update={"seq": seq})
    listed = list(store.episodes(run_id))
    assert [e.index for e in listed] == [0, 1, 2, 3]
    assert (
        listed[3].turns[0].token_ids is None
        and listed[0].turns[0].generations[1].completion_token_ids == []
    )


def test_token_columns_are_packed_blobs(store: TraceStore) -> None:
    """SQL users read token ids as little-endian int32 BLOBs (4 bytes a token), masks as int8."""
    run_id = store.create_run("r")
    ep = make_episode(run_id, 0, n_turns=1, n_tokens=100)
    store.append_episode(ep)
    blob, mask, logprobs, n, n_model = store._conn.execute(
        "SELECT token_ids, mask, logprobs, n_tokens, n_model_tokens FROM turns"
    ).fetchone()
    assert (len(blob), len(mask), len(logprobs)) == (400, 100, 800)
    assert int.from_bytes(blob[:4], "little") == ep.turns[0].token_ids[0]
    assert (n, n_model) == (100, sum(ep.turns[0].mask))


def test_duplicate_index_is_refused_and_leaves_nothing_behind(store: TraceStore) -> None:
    run_id = store.create_run("r")
    first = make_episode(run_id, 0)
    store.append_episode(first)
    turns_before = store._conn.execute("SELECT count(*) FROM turns").fetchone()[0]
    again = make_episode(run_id, 0, seed=99)  # same index, different content and ids
    with pytest.raises(DuplicateEpisode, match="already has episode index 0") as info:
        store.append_episode(again)
    assert isinstance(info.value, StoreError) and info.value.episode_id == first.episode_id
    assert store._conn.execute("SELECT count(*) FROM turns").fetchone()[0] == turns_before
    assert store.stored_indexes(run_id) == {0}
    with pytest.raises(StoreError, match="already stored"):
        store.append_episode(first.model_copy(update={"index": 5}))
    assert store.stored_indexes(run_id) == {0}


def test_append_needs_a_known_run(store: TraceStore) -> None:
    with pytest.raises(StoreError, match="run_id is empty"):
        store.append_episode(Episode(index=0))
    with pytest.raises(StoreError, match="no run 'ghost'.*create_run"):
        store.append_episode(Episode(run_id="ghost", index=0))


def test_resume_reuses_the_run(store: TraceStore) -> None:
    run_id = store.create_run("search-selfplay", run_id="run-a")
    store.append_episode(make_episode(run_id, 0))
    store.set_run_status(run_id, "failed")
    assert store.get_or_create_run("run-a", "search-selfplay") == "run-a"
    run = store.get_run("run-a")
    assert run.status == "running" and run.episodes == 1 and run.status_counts == {"ok": 1}
    with pytest.raises(StoreError, match="recipe 'search-selfplay', not 'code-selfplay'"):
        store.get_or_create_run("run-a", "code-selfplay")
    with pytest.raises(StoreError, match="already exists"):
        store.create_run("search-selfplay", run_id="run-a")
    with pytest.raises(StoreError, match="run status must be one of"):
        store.set_run_status(run_id, "done")  # type: ignore[arg-type]
    assert store.get_or_create_run("run-b", "code-selfplay") == "run-b"
    assert [r.run_id for r in store.list_runs()] == ["run-a", "run-b"]


def _turn(role: str, reward: float | None, text: str) -> RoleTurn:
    return RoleTurn(
        role=role,
        messages=[{"role": "user", "content": text}],
        reward=None if reward is None else RewardRecord(value=reward),
    )


def test_queries_by_role_reward_status_text_and_seq(store: TraceStore) -> None:
    run_id = store.create_run("r")
    other = store.create_run("r")
    rows = [
        (
            "ok",
            [
                _turn("proposer", 0.9, "Which river flows through Paris?"),
                _turn("solver", 0.0, "the Rhine"),
            ],
        ),
        (
            "ok",
            [_turn("proposer", 0.2, "What is 2+2?"), _turn("solver", 1.0, "Answer: 4 (integers)")],
        ),
        ("invalid", [_turn("proposer", None, "malformed {proposal")]),
    ]
    seqs = [
        store.append_episode(Episode(run_id=run_id, index=i, status=status, turns=turns))
        for i, (status, turns) in enumerate(rows)
    ]
    store.append_episode(
        Episode(run_id=other, index=0, turns=[_turn("solver", 1.0, "Paris river")])
    )

    def idx(**kw) -> list[int]:
        return [e.index for e in store.episodes(run_id, **kw)]

    assert store.full_text_search  # this Python's SQLite has FTS5
    for fts in (True, False):  # FTS5 index, then the LIKE fallback
        store._fts = fts
        assert idx(text="Paris") == [0]
        assert idx(text="river paris?") == [0]  # punctuation is literal, every word must appear
        assert idx(text="integers") == [1]
        assert idx(text="{proposal") == [2]
        assert idx(text="rhine", role="proposer") == []  # the text is in the solver turn
    store._fts = True
    assert idx(text="integer") == [1]  # porter stemming
    assert idx(role="solver") == [0, 1]
    assert idx(role="solver", min_reward=0.5) == [1]
    assert idx(role="proposer", min_reward=0.5) == [0]
    assert idx(min_reward=0.1, max_reward=0.3) == [1]
    assert idx(status="invalid") == [2]
    assert idx(since_seq=seqs[0]) == [1, 2]
    assert idx(limit=2, newest_first=True) == [2, 1]
    assert idx(before_seq=seqs[2], limit=1, newest_first=True) == [1]  # paging backwards
    assert store.count_episodes(run_id) == 3 and store.count_episodes(text="paris") == 2
    assert store.count_episodes(run_id, role="solver", min_reward=0.5) == 1
    assert [e.run_id for e in store.episodes(text="paris")] == [run_id, other]


def test_metrics_cursors_and_atomic_transactions(store: TraceStore) -> None:
    run_id = store.create_run("r")
    store.log_metrics(run_id, 0, {"loss": 1.5, "reward/solver": 0.25})
    store.log_metrics(run_id, 1, {"loss": 1.0})
    store.log_metrics(run_id, 1, {"loss": 0.75})  # a redone step replaces its figures
    assert store.metrics(run_id) == [
        (0, "loss", 1.5),
        (0, "reward/solver", 0.25),
        (1, "loss", 0.75),
    ]
    assert store.metrics(run_id, name="loss", since_iteration=0) == [(1, "loss", 0.75)]
    with pytest.raises(StoreError, match="metric 'kl' must be a number"):
        store.log_metrics(run_id, 2, {"kl": "high"})

    with pytest.raises(RuntimeError):
        with store.transaction():
            store.log_metrics(run_id, 2, {"loss": 0.5})
            store.set_cursor(run_id, "trainer", {"seq": 10, "step": 2})
            raise RuntimeError("trainer step failed after writing")
    assert (
        store.get_cursor(run_id, "trainer") is None
        and store.metrics(run_id, since_iteration=1) == []
    )

    store.append_episode(make_episode(run_id, 0))
    with store.transaction():
        store.log_metrics(run_id, 2, {"loss": 0.5})
        store.set_cursor(run_id, "trainer", {"seq": 10, "step": 2})
        with pytest.raises(DuplicateEpisode):  # rolled back to its savepoint, the rest commits
            store.append_episode(make_episode(run_id, 0))
    assert store.get_cursor(run_id, "trainer") == {"seq": 10, "step": 2}
    assert store.get_cursor(run_id, "missing", default=0) == 0
    assert store.metrics(run_id, since_iteration=1) == [(2, "loss", 0.5)]


async def test_many_tasks_share_one_store(store: TraceStore) -> None:
    run_id = store.create_run("r")
    await asyncio.gather(
        *(
            asyncio.to_thread(store.append_episode, make_episode(run_id, i, n_turns=2))
            for i in range(24)
        )
    )
    episodes = list(store.episodes(run_id))
    assert sorted(e.index for e in episodes) == list(range(24))
    assert all(len(e.turns) == 2 for e in episodes)


def test_read_only_reader_sees_commits_and_cannot_write(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    writer = TraceStore(path)
    run_id = writer.create_run("r")
    reader = TraceStore(path, read_only=True)
    assert list(reader.episodes(run_id)) == []
    seq = writer.append_episode(make_episode(run_id, 0))
    assert [e.seq for e in reader.episodes(run_id, since_seq=0)] == [seq]
    with pytest.raises(StoreError, match="read-only"):
        reader.create_run("r")
    reader.close()
    writer.close()


def test_clear_errors_for_files_that_are_not_stores(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(StoreError, match="does not exist"):
        TraceStore(missing, read_only=True)
    assert not missing.exists()  # a reader never creates files
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(StoreError, match=r"empty \(0 bytes\)"):
        TraceStore(empty, read_only=True)
    text = tmp_path / "notes.db"
    text.write_text("hello, not a database\n" * 100)
    with pytest.raises(StoreError, match="not a trace store: SQLite cannot read it"):
        TraceStore(text)
    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(StoreError, match="not an agentplay trace store"):
        TraceStore(foreign)
    with pytest.raises(StoreError, match="is a directory"):
        TraceStore(tmp_path)


@pytest.mark.parametrize(
    "version, message",
    [(0, "schema version 0, but this agentplay reads"), (99, "upgrade agentplay")],
)
def test_other_schema_versions_are_named(tmp_path: Path, version: int, message: str) -> None:
    path = tmp_path / "t.db"
    TraceStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {version}")
    for read_only in (True, False):
        with pytest.raises(StoreError, match=message) as info:
            TraceStore(path, read_only=read_only)
        assert str(SCHEMA_VERSION) in str(info.value)


def test_nan_rewards_and_metrics_survive(store: TraceStore) -> None:
    """SQLite stores NaN as NULL; a broken reward fn must still read back as NaN, not vanish."""
    run_id = store.create_run("r")
    turn = RoleTurn(role="solver", reward=RewardRecord(value=float("nan"), reason="judge failed"))
    store.append_episode(Episode(run_id=run_id, index=0, turns=[turn]))
    (episode,) = store.episodes(run_id)
    assert (
        math.isnan(episode.turns[0].reward.value)
        and episode.turns[0].reward.reason == "judge failed"
    )
    store.log_metrics(run_id, 0, {"kl": float("nan")})
    assert math.isnan(store.metrics(run_id)[0].value)


@pytest.mark.parametrize("read_only", [False, True])
def test_file_without_the_failure_columns_opens_and_gains_them(tmp_path: Path, read_only: bool) -> None:
    """A store written before reward failures and error causes were recorded opens, its
    episodes read back (a reader sees no failure), and a writer adds the columns (issue 19)."""
    path = tmp_path / "old.db"
    with TraceStore(path) as s:
        run_id = s.create_run("r")
        s.append_episode(make_episode(run_id, 0))
    with sqlite3.connect(path) as conn:  # make it what agentplay wrote before: no such columns
        conn.execute("ALTER TABLE turns DROP COLUMN reward_failed")
        conn.execute("ALTER TABLE episodes DROP COLUMN error_cause")
    with TraceStore(path, read_only=read_only) as s:
        (old,) = s.episodes(run_id)
        assert old.index == 0 and old.error_cause is None and all(t.reward_failed is None for t in old.turns)
    with TraceStore(path) as s:
        failed = Episode(run_id=run_id, index=1, status="error", error="x", error_cause="infrastructure:X",
                         turns=[RoleTurn(role="solver", reward_failed="reward fn raised KeyError: 'a'")])
        s.append_episode(failed)
        back = {e.index: e for e in s.episodes(run_id)}[1]
        assert back.error_cause == "infrastructure:X" and back.turns[0].reward_failed.startswith("reward fn raised")
