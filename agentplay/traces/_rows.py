"""Episode <-> rows: the one place that knows how a model maps onto the tables."""

from __future__ import annotations

import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterable

from agentplay.models._types import SamplingRecord

from . import _codec as c
from ._schema import has_column
from ._types import Episode, Generation, RewardRecord, RoleTurn, ToolCallRecord

_BATCH = 400
"""Rows per `IN (...)` query: well under SQLite's variable limit on every build."""


def insert_episode(conn: sqlite3.Connection, episode: Episode, *, fts: bool) -> int:
    """Insert one episode and everything under it; the caller owns the transaction."""
    cur = conn.execute(
        "INSERT INTO episodes(episode_id, run_id, idx, recipe, seed, status, error, metrics,"
        " metadata, n_turns, created_at, stored_at, error_cause) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            episode.episode_id,
            episode.run_id,
            episode.index,
            episode.recipe,
            episode.seed,
            episode.status,
            episode.error,
            c.dumps(episode.metrics),
            c.dumps(episode.metadata),
            len(episode.turns),
            episode.created_at,
            time.time(),
            episode.error_cause,
        ),
    )
    seq = int(cur.lastrowid or 0)
    for position, turn in enumerate(episode.turns):
        _insert_turn(conn, episode.run_id, seq, position, turn, fts=fts)
    return seq


def _insert_turn(
    conn: sqlite3.Connection, run_id: str, seq: int, position: int, turn: RoleTurn, *, fts: bool
) -> None:
    where = f"turn {position} ({turn.role})"
    cur = conn.execute(
        "INSERT INTO turns(episode_seq, position, turn_id, run_id, role, node, group_id, messages,"
        " prompt_token_ids, token_ids, mask, logprobs, n_tokens, n_model_tokens, token_exact,"
        " weight_version, output, parse_error, started_at, latency_s, reward_failed)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            seq,
            position,
            turn.turn_id,
            run_id,
            turn.role,
            turn.node,
            turn.group_id,
            c.dumps(turn.messages),
            c.pack_ids(turn.prompt_token_ids, f"{where} prompt_token_ids"),
            c.pack_ids(turn.token_ids, f"{where} token_ids"),
            c.pack_mask(turn.mask, f"{where} mask"),
            c.pack_floats(turn.logprobs, f"{where} logprobs"),
            None if turn.token_ids is None else len(turn.token_ids),
            None if turn.mask is None else sum(turn.mask),
            turn.token_exact,
            turn.weight_version,
            None if turn.output is None else c.dumps(turn.output),
            turn.parse_error,
            turn.started_at,
            turn.latency_s,
            turn.reward_failed,
        ),
    )
    rowid = cur.lastrowid
    conn.executemany(
        "INSERT INTO generations(turn_rowid, position, prompt_token_ids, completion_token_ids, logprobs,"
        " text, finish_reason, weight_version, model, sampling, tokenizer) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        [
            (
                rowid,
                i,
                c.pack_ids(g.prompt_token_ids, f"{where} generation {i} prompt_token_ids"),
                c.pack_ids(g.completion_token_ids, f"{where} generation {i} completion_token_ids"),
                c.pack_floats(g.logprobs, f"{where} generation {i} logprobs"),
                g.text,
                g.finish_reason,
                g.weight_version,
                g.model,
                None if g.sampling is None else g.sampling.model_dump_json(),
                g.tokenizer,
            )
            for i, g in enumerate(turn.generations)
        ],
    )
    conn.executemany(
        "INSERT INTO tool_calls VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        [
            (
                rowid,
                i,
                t.call_id,
                t.name,
                None if t.arguments is None else c.dumps(t.arguments),
                t.raw_arguments,
                t.result,
                t.truncated,
                t.error,
                t.latency_s,
                t.sandboxed,
            )
            for i, t in enumerate(turn.tool_calls)
        ],
    )
    if turn.reward is not None:
        r = turn.reward
        conn.execute(
            "INSERT INTO rewards VALUES (?,?,?,?,?,?,?,?)",
            (
                rowid,
                run_id,
                seq,
                turn.role,
                turn.group_id,
                r.value,
                r.reason,
                c.dumps(r.components),
            ),
        )
    if fts:
        conn.execute(
            "INSERT INTO turns_fts(rowid, text) VALUES (?, ?)", (rowid, searchable_text(turn))
        )


def searchable_text(turn: RoleTurn) -> str:
    """What text search looks at: every message, the output, the parse error."""
    parts: list[str] = []
    for message in turn.messages:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif content is not None:
            parts.append(c.dumps(content))
        if message.get("tool_calls"):
            parts.append(c.dumps(message["tool_calls"]))
    if turn.output is not None:
        parts.append(turn.output if isinstance(turn.output, str) else c.dumps(turn.output))
    if turn.parse_error:
        parts.append(turn.parse_error)
    return "\n".join(parts)


def _chunks(values: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(values), _BATCH):
        yield values[start : start + _BATCH]


def _marks(n: int) -> str:
    return ",".join("?" * n)


def load_episodes(conn: sqlite3.Connection, seqs: list[int]) -> list[Episode]:
    """Episodes for `seqs`, in the order given (missing seqs are skipped)."""
    out: dict[int, Episode] = {}
    for chunk in _chunks(seqs):
        out.update(_load_chunk(conn, chunk))
    return [out[s] for s in seqs if s in out]


def _load_chunk(conn: sqlite3.Connection, seqs: list[int]) -> dict[int, Episode]:
    marks = _marks(len(seqs))
    # files written before these columns existed, opened read-only, read NULL (see ADDED_COLUMNS)
    error_cause = "error_cause" if has_column(conn, "episodes", "error_cause") else "NULL"
    reward_failed = "reward_failed" if has_column(conn, "turns", "reward_failed") else "NULL"
    episodes = conn.execute(
        "SELECT seq, episode_id, run_id, idx, recipe, seed, status, error, metrics, metadata,"
        f" created_at, {error_cause}"
        f" FROM episodes WHERE seq IN ({marks})",
        seqs,
    ).fetchall()
    turn_rows = conn.execute(
        "SELECT turn_rowid, episode_seq, turn_id, role, node, group_id, messages,"
        " prompt_token_ids, token_ids,"
        " mask, logprobs, token_exact, weight_version, output, parse_error, started_at, latency_s,"
        f" {reward_failed}"
        f" FROM turns WHERE episode_seq IN ({marks}) ORDER BY episode_seq, position",
        seqs,
    ).fetchall()
    rowids = [row[0] for row in turn_rows]
    generations, tool_calls, rewards = _turn_children(conn, rowids)
    turns: dict[int, list[RoleTurn]] = defaultdict(list)
    for row in turn_rows:
        rowid = row[0]
        turns[row[1]].append(
            RoleTurn(
                turn_id=row[2],
                role=row[3],
                node=row[4],
                group_id=row[5],
                messages=c.loads(row[6]),
                prompt_token_ids=c.unpack_ids(row[7]),
                token_ids=c.unpack_ids(row[8]),
                mask=c.unpack_mask(row[9]),
                logprobs=c.unpack_floats(row[10]),
                token_exact=bool(row[11]),
                weight_version=row[12],
                output=c.loads(row[13]),
                parse_error=row[14],
                started_at=row[15],
                latency_s=row[16],
                generations=generations.get(rowid, []),
                tool_calls=tool_calls.get(rowid, []),
                reward=rewards.get(rowid),
                reward_failed=row[17],
            )
        )
    return {
        row[0]: Episode(
            seq=row[0],
            episode_id=row[1],
            run_id=row[2],
            index=row[3],
            recipe=row[4],
            seed=row[5],
            status=row[6],
            error=row[7],
            metrics=c.loads(row[8]),
            metadata=c.loads(row[9]),
            created_at=row[10],
            error_cause=row[11],
            turns=turns.get(row[0], []),
        )
        for row in episodes
    }


def _turn_children(
    conn: sqlite3.Connection, rowids: list[int]
) -> tuple[dict[int, list[Generation]], dict[int, list[ToolCallRecord]], dict[int, RewardRecord]]:
    generations: dict[int, list[Generation]] = defaultdict(list)
    tool_calls: dict[int, list[ToolCallRecord]] = defaultdict(list)
    rewards: dict[int, RewardRecord] = {}
    sampling = "sampling" if has_column(conn, "generations", "sampling") else "NULL"
    tokenizer = "tokenizer" if has_column(conn, "generations", "tokenizer") else "NULL"
    for chunk in _chunks(rowids):
        marks = _marks(len(chunk))
        for row in conn.execute(
            "SELECT turn_rowid, prompt_token_ids, completion_token_ids, logprobs, text,"
            " finish_reason,"
            f" weight_version, model, {sampling}, {tokenizer} FROM generations WHERE turn_rowid IN ({marks})"
            " ORDER BY turn_rowid, position",
            chunk,
        ):
            generations[row[0]].append(
                Generation(
                    prompt_token_ids=c.unpack_ids(row[1]),
                    completion_token_ids=c.unpack_ids(row[2]),
                    logprobs=c.unpack_floats(row[3]),
                    text=row[4],
                    finish_reason=row[5],
                    weight_version=row[6],
                    model=row[7],
                    sampling=None if row[8] is None else SamplingRecord.model_validate_json(row[8]),
                    tokenizer=row[9],
                )
            )
        for row in conn.execute(
            "SELECT turn_rowid, call_id, name, arguments, raw_arguments, result, truncated, error,"
            " latency_s,"
            f" sandboxed FROM tool_calls WHERE turn_rowid IN ({marks})"
            " ORDER BY turn_rowid, position",
            chunk,
        ):
            tool_calls[row[0]].append(
                ToolCallRecord(
                    call_id=row[1],
                    name=row[2],
                    arguments=c.loads(row[3]),
                    raw_arguments=row[4],
                    result=row[5],
                    truncated=bool(row[6]),
                    error=row[7],
                    latency_s=row[8],
                    sandboxed=bool(row[9]),
                )
            )
        for row in conn.execute(
            "SELECT turn_rowid, value, reason, components FROM rewards"
            f" WHERE turn_rowid IN ({marks})",
            chunk,
        ):
            rewards[row[0]] = RewardRecord(
                value=c.real(row[1]), reason=row[2], components=c.loads(row[3])
            )
    return generations, tool_calls, rewards
