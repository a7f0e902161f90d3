"""The WHERE clause behind `TraceStore.episodes` (what the UI filters by)."""

from __future__ import annotations

from typing import Any


def fts_query(text: str) -> str:
    """User text as an FTS5 query: every word must appear; quoting keeps `?`, `-`, `:` literal."""
    words = text.split()
    return " ".join('"' + word.replace('"', '""') + '"' for word in words)


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def episode_filter(
    *,
    run_id: str | None,
    since_seq: int | None,
    before_seq: int | None,
    role: str | None,
    min_reward: float | None,
    max_reward: float | None,
    status: str | None,
    text: str | None,
    fts: bool,
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if run_id is not None:
        clauses.append("e.run_id = ?")
        params.append(run_id)
    if since_seq is not None:
        clauses.append("e.seq > ?")
        params.append(since_seq)
    if before_seq is not None:
        clauses.append("e.seq < ?")
        params.append(before_seq)
    if status is not None:
        clauses.append("e.status = ?")
        params.append(status)
    turn: list[str] = []
    turn_params: list[Any] = []
    if role is not None:
        turn.append("t.role = ?")
        turn_params.append(role)
    if min_reward is not None:
        turn.append("r.value >= ?")
        turn_params.append(min_reward)
    if max_reward is not None:
        turn.append("r.value <= ?")
        turn_params.append(max_reward)
    if text is not None and text.strip():
        if fts:
            turn.append("t.turn_rowid IN (SELECT rowid FROM turns_fts WHERE turns_fts MATCH ?)")
            turn_params.append(fts_query(text))
        else:
            for (
                word
            ) in text.split():  # same meaning as the FTS query: every word somewhere in the turn
                turn.append(
                    "(t.messages LIKE ? ESCAPE '\\' OR t.output LIKE ? ESCAPE '\\'"
                    " OR t.parse_error LIKE ? ESCAPE '\\')"
                )
                turn_params += [_like(word)] * 3
    if turn:
        join = (
            " LEFT JOIN rewards r ON r.turn_rowid = t.turn_rowid"
            if min_reward is not None or max_reward is not None
            else ""
        )
        clauses.append(
            f"EXISTS (SELECT 1 FROM turns t{join}"
            f" WHERE t.episode_seq = e.seq AND {' AND '.join(turn)})"
        )
        params += turn_params
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params
