"""Exports read back with the libraries users will use: json, pyarrow, datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from store_factory import make_episode

from agentplay.traces import Episode, StoreError, TraceStore


@pytest.fixture
def filled(tmp_path: Path):
    with TraceStore(tmp_path / "traces.db") as store:
        a = store.create_run("search-selfplay", run_id="run-a")
        b = store.create_run("code-selfplay", run_id="run-b")
        for i in range(4):
            store.append_episode(make_episode(a, i, n_turns=3, n_tokens=32))
        store.append_episode(make_episode(b, 0, n_turns=2, n_tokens=16))
        yield store


def test_jsonl_has_one_whole_episode_per_line(filled: TraceStore, tmp_path: Path) -> None:
    out = tmp_path / "a.jsonl"
    assert filled.export_jsonl(out, run_id="run-a") == 4
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 4
    stored = list(filled.episodes("run-a"))
    for line, episode in zip(lines, stored, strict=True):
        raw = json.loads(line)
        assert (
            isinstance(raw["turns"][0]["token_ids"], list)
            and raw["turns"][0]["reward"]["value"] >= 0
        )
        assert Episode.model_validate(raw) == episode
    assert filled.export_jsonl(tmp_path / "all.jsonl") == 5
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary file was renamed, not left behind


def test_parquet_has_one_row_per_role_turn(filled: TraceStore, tmp_path: Path) -> None:
    out = tmp_path / "turns.parquet"
    assert filled.export_parquet(out) == 4 * 3 + 2
    table = pq.read_table(out)
    assert table.num_rows == 14
    rows = table.to_pylist()
    episodes = list(filled.episodes())
    flat = [(ep, pos, turn) for ep in episodes for pos, turn in enumerate(ep.turns)]
    for row, (ep, pos, turn) in zip(rows, flat, strict=True):
        assert (row["episode_id"], row["turn_position"], row["role"]) == (
            ep.episode_id,
            pos,
            turn.role,
        )
        assert (
            row["prompt_ids"] == turn.prompt_token_ids and row["completion_ids"] == turn.token_ids
        )
        assert row["env_mask"] == turn.mask and row["logprobs"] == turn.logprobs
        assert row["reward"] == turn.reward.value and row["group_id"] == turn.group_id
        assert json.loads(row["messages"]) == turn.messages


def test_hf_dataset_rows_are_trl_ready_role_turns(filled: TraceStore) -> None:
    ds = filled.to_hf_dataset("run-a", role="solver")
    assert len(ds) == 4 * 2
    assert set(ds["role"]) == {"solver"}
    row = ds[0]
    first_solver = list(filled.episodes("run-a"))[0].turns[1]
    assert row["prompt_ids"] == first_solver.prompt_token_ids
    assert row["completion_ids"] == first_solver.token_ids
    assert len(row["env_mask"]) == len(row["completion_ids"]) == len(row["logprobs"])
    assert row["reward"] == first_solver.reward.value and row["group_id"] == "g0"


def test_export_errors_name_the_problem(filled: TraceStore, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no run 'nope'"):
        filled.export_jsonl(tmp_path / "x.jsonl", run_id="nope")
    with pytest.raises(StoreError, match="does not exist"):
        filled.export_parquet(tmp_path / "no" / "such" / "x.parquet")
    with pytest.raises(StoreError, match="is a directory"):
        filled.export_jsonl(tmp_path)
