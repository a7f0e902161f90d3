"""Exports: JSONL (one episode per line) and per-role-turn tables (Parquet, HF datasets).

Training wants one row per role turn, since that is what GRPO scores: its prompt
ids, the tokens after the prompt, the mask of model-written tokens, the reward
and the group to normalise it against. The column names follow TRL's
`rollout_func` contract (`prompt_ids`, `completion_ids`, `logprobs`, `env_mask`),
so rows plug into GRPOTrainer without renaming. Episode-level fields repeat on
each row (episode_id, episode_index, status...) so episodes can be regrouped.
Free-shaped fields (messages, tool calls, output) are JSON strings: their shape
differs from row to row, which Arrow columns cannot hold.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _codec as c
from ._errors import StoreError
from ._types import Episode, turn_sampling

if TYPE_CHECKING:
    import pyarrow as pa

    from ._store import TraceStore

_ROWS_PER_BATCH = 256


def _open_out(path: Path) -> Path:
    if path.is_dir():
        raise StoreError(
            f"--out {path} is a directory; give a file name such as {path / 'traces.jsonl'}"
        )
    if not path.parent.exists():
        raise StoreError(f"--out {path}: the folder {path.parent} does not exist")
    return path


def export_jsonl(store: TraceStore, path: Path, run_id: str | None) -> int:
    """Written to a temp file and renamed, so a reader never sees half an export."""
    _open_out(path)
    if run_id is not None:
        store.get_run(run_id)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    count = 0
    try:
        with tmp.open("w", encoding="utf-8") as out:
            for episode in store.episodes(run_id):
                out.write(episode.model_dump_json())
                out.write("\n")
                count += 1
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return count


def turn_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            ("run_id", pa.string()),
            ("recipe", pa.string()),
            ("episode_id", pa.string()),
            ("episode_index", pa.int64()),
            ("episode_seq", pa.int64()),
            ("episode_status", pa.string()),
            ("episode_error_cause", pa.string()),
            ("seed", pa.int64()),
            ("turn_id", pa.string()),
            ("turn_position", pa.int32()),
            ("role", pa.string()),
            ("node", pa.string()),
            ("group_id", pa.string()),
            ("prompt_ids", pa.list_(pa.int32())),
            ("completion_ids", pa.list_(pa.int32())),
            ("env_mask", pa.list_(pa.int8())),
            ("logprobs", pa.list_(pa.float64())),
            ("reward", pa.float64()),
            ("reward_reason", pa.string()),
            ("reward_components", pa.string()),
            ("reward_failed", pa.string()),
            ("token_exact", pa.bool_()),
            ("weight_version", pa.int64()),
            ("temperature", pa.float64()),
            ("top_p", pa.float64()),
            ("top_k", pa.int64()),
            ("logprobs_mode", pa.string()),
            ("sampling_engine", pa.string()),
            ("sampling_reported", pa.bool_()),
            ("n_tool_calls", pa.int32()),
            ("output", pa.string()),
            ("parse_error", pa.string()),
            ("messages", pa.string()),
            ("tool_calls", pa.string()),
            ("started_at", pa.float64()),
            ("latency_s", pa.float64()),
        ]
    )


def turn_rows(episodes: Iterator[Episode], role: str | None = None) -> Iterator[dict[str, Any]]:
    """One plain dict per role turn, in the columns of `turn_schema`."""
    for ep in episodes:
        for position, turn in enumerate(ep.turns):
            if role is not None and turn.role != role:
                continue
            reward = turn.reward
            sampled = turn_sampling(turn)
            yield {
                "run_id": ep.run_id,
                "recipe": ep.recipe,
                "episode_id": ep.episode_id,
                "episode_index": ep.index,
                "episode_seq": ep.seq,
                "episode_status": ep.status,
                "episode_error_cause": ep.error_cause,
                "seed": ep.seed,
                "turn_id": turn.turn_id,
                "turn_position": position,
                "role": turn.role,
                "node": turn.node,
                "group_id": turn.group_id,
                "prompt_ids": turn.prompt_token_ids,
                "completion_ids": turn.token_ids,
                "env_mask": turn.mask,
                "logprobs": turn.logprobs,
                "reward": None if reward is None else reward.value,
                "reward_reason": None if reward is None else reward.reason,
                "reward_components": None if reward is None else c.dumps(reward.components),
                "reward_failed": turn.reward_failed,
                "token_exact": turn.token_exact,
                "weight_version": turn.weight_version,
                "temperature": None if sampled is None else sampled.temperature,
                "top_p": None if sampled is None else sampled.top_p,
                "top_k": None if sampled is None else sampled.top_k,
                "logprobs_mode": None if sampled is None else sampled.logprobs_mode,
                "sampling_engine": None if sampled is None else sampled.engine,
                "sampling_reported": None if sampled is None else sampled.reported,
                "n_tool_calls": len(turn.tool_calls),
                "output": None if turn.output is None else c.dumps(turn.output),
                "parse_error": turn.parse_error,
                "messages": c.dumps(turn.messages),
                "tool_calls": c.dumps([t.model_dump(mode="json") for t in turn.tool_calls]),
                "started_at": turn.started_at,
                "latency_s": turn.latency_s,
            }


def _batches(store: TraceStore, run_id: str | None, role: str | None) -> Iterator[pa.RecordBatch]:
    import pyarrow as pa

    if run_id is not None:
        store.get_run(run_id)
    schema = turn_schema()
    batch: list[dict[str, Any]] = []
    for row in turn_rows(store.episodes(run_id), role):
        batch.append(row)
        if len(batch) >= _ROWS_PER_BATCH:
            yield pa.RecordBatch.from_pylist(batch, schema=schema)
            batch = []
    if batch:
        yield pa.RecordBatch.from_pylist(batch, schema=schema)


def export_parquet(
    store: TraceStore, path: Path, run_id: str | None, role: str | None = None
) -> int:
    import pyarrow.parquet as pq

    _open_out(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    count = 0
    try:
        with pq.ParquetWriter(tmp, turn_schema(), compression="zstd") as writer:
            for batch in _batches(store, run_id, role):
                writer.write_batch(batch)
                count += batch.num_rows
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return count


def to_hf_dataset(store: TraceStore, run_id: str | None, *, role: str | None = None) -> Any:
    import datasets
    import pyarrow as pa
    from datasets.table import InMemoryTable

    table = pa.Table.from_batches(list(_batches(store, run_id, role)), schema=turn_schema())
    return datasets.Dataset(InMemoryTable(table))
