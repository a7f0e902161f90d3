"""Crash safety and concurrent readers, with real processes and a real SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from store_factory import make_episode

from agentplay.traces import DuplicateEpisode, TraceStore

TESTS = Path(__file__).parent

WRITER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from agentplay.traces import TraceStore
    from store_factory import make_episode

    store = TraceStore({path!r})
    run_id = store.get_or_create_run("run-1", "search-selfplay", {{"episodes": {n}}})
    for i in range({n}):
        episode = make_episode(run_id, i, n_turns={turns}, n_tokens={tokens})
        if i == {hold_at}:
            with store.transaction():  # die with this episode's rows written but not committed
                store.append_episode(episode)
                print("holding", i, flush=True)
                time.sleep(60)
        store.append_episode(episode)
        print("stored", i, flush=True)
        time.sleep({pause})
    """
)


def _spawn(
    path: Path, *, n: int, turns: int = 4, tokens: int = 512, hold_at: int = -1, pause: float = 0.0
):
    code = WRITER.format(
        tests=str(TESTS),
        path=str(path),
        n=n,
        turns=turns,
        tokens=tokens,
        hold_at=hold_at,
        pause=pause,
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for(proc: subprocess.Popen, prefix: str) -> list[str]:
    seen = []
    for line in proc.stdout:  # type: ignore[union-attr]
        seen.append(line.strip())
        if line.startswith(prefix):
            return seen
    raise AssertionError(f"writer ended before printing {prefix!r}: {proc.stderr.read()}")  # type: ignore[union-attr]


def _assert_whole(path: Path, turns: int, tokens: int) -> set[int]:
    """Each stored episode has all its turns, rewards, tool calls, token blobs; file is sound."""
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        broken = conn.execute(
            "SELECT e.idx FROM episodes e WHERE e.n_turns != ? OR"
            " (SELECT count(*) FROM turns t WHERE t.episode_seq = e.seq) != ? OR"
            " (SELECT count(*) FROM rewards r WHERE r.episode_seq = e.seq) != ? OR"
            " (SELECT count(*) FROM turns t"
            "  WHERE t.episode_seq = e.seq AND length(t.token_ids) = ?) != ? OR"
            " (SELECT count(*) FROM tool_calls c JOIN turns t USING (turn_rowid)"
            "  WHERE t.episode_seq = e.seq) != ?",
            (turns, turns, turns, 4 * tokens, turns, 2 * turns),
        ).fetchall()
        assert broken == []
        orphans = conn.execute(
            "SELECT count(*) FROM turns WHERE episode_seq NOT IN (SELECT seq FROM episodes)"
        )
        assert orphans.fetchone()[0] == 0
        return {row[0] for row in conn.execute("SELECT idx FROM episodes")}


def test_sigkill_inside_a_transaction_loses_only_that_episode(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    proc = _spawn(path, n=10, hold_at=4)
    try:
        _wait_for(proc, "holding 4")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        proc.kill()
    assert _assert_whole(path, turns=4, tokens=512) == {0, 1, 2, 3}


def test_sigkill_at_any_moment_then_resume_without_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    proc = _spawn(path, n=400, turns=4, tokens=1024)
    try:
        printed = _wait_for(proc, "stored 3")
        time.sleep(
            0.05 + (os.getpid() % 7) / 20
        )  # somewhere in a later append, not on a boundary we chose
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
        # the kill can cut the last line short ("stored" with no index): only whole lines count
        printed += proc.stdout.read().split("\n")[:-1]  # type: ignore[union-attr]
    finally:
        proc.kill()
    acknowledged = {int(line.split()[1]) for line in printed if line.startswith("stored")}
    with TraceStore(path, read_only=True) as reader:  # the UI/CLI can read a crashed run's file
        seen = {e.index for e in reader.episodes()}
    stored = _assert_whole(path, turns=4, tokens=1024)
    assert seen == stored
    assert acknowledged <= stored  # nothing the writer saw committed was lost
    assert stored == set(range(len(stored)))  # a prefix: whole episodes only, in order
    assert len(stored) < 400

    with TraceStore(path) as store:  # what `agentplay run --resume` does
        run_id = store.get_or_create_run("run-1", "search-selfplay")
        done = store.stored_indexes(run_id)
        for i in range(len(stored) + 3):
            if i in done:
                with pytest.raises(
                    DuplicateEpisode
                ):  # a racing duplicate is refused, not stored twice
                    store.append_episode(make_episode(run_id, i, n_turns=4, n_tokens=1024))
            else:
                store.append_episode(make_episode(run_id, i, n_turns=4, n_tokens=1024))
        assert sorted(e.index for e in store.episodes(run_id)) == list(range(len(stored) + 3))
    _assert_whole(path, turns=4, tokens=1024)


def test_reader_process_polls_while_writer_writes(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    TraceStore(path).close()  # the file exists before the reader opens it read-only
    proc = _spawn(path, n=30, turns=3, tokens=256, pause=0.02)
    seen: list[int] = []
    polls_while_running = 0
    try:
        with TraceStore(path, read_only=True) as reader:
            deadline = time.monotonic() + 60
            while len(seen) < 30 and time.monotonic() < deadline:
                running = proc.poll() is None
                for episode in reader.episodes(since_seq=seen[-1] if seen else None):
                    assert len(episode.turns) == 3 and all(
                        t.reward is not None for t in episode.turns
                    )
                    seen.append(episode.seq)
                polls_while_running += running and 0 < len(seen) < 30
                time.sleep(0.01)
        assert proc.wait(timeout=30) == 0, proc.stderr.read()  # type: ignore[union-attr]
    finally:
        proc.kill()
    assert len(seen) == 30 and seen == sorted(set(seen))  # each episode once, in commit order
    assert polls_while_running > 0  # the reader really read mid-run
