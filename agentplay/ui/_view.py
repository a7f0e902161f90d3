"""Episodes shaped for people: conversations with tool calls inline, rewards with reasons.

Token view: the store keeps `token_ids` and `mask` but not token strings, and
decoding needs the tokenizer of the model that wrote them. Each generation
names it (`Generation.tokenizer`: a folder, a tokenizer.json or a Hugging Face
repo id), so the viewer decodes token by token for any model whose tokenizer
is on this machine (read offline: nothing is downloaded or dequantized for a
page view). Traces written before generations named their tokenizer fall back
to the default model's, for turns of the default model. Every turn always gets
the token strip: how many tokens the model wrote (mask 1, trained on) and how
many came from tools or the chat template (mask 0); the messages themselves
show tool output apart from model text.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from agentplay.traces import Episode, RoleTurn, RunInfo

__all__ = ["TokenDecoder", "episode_row", "turn_view"]

MAX_TOKEN_VIEW = 3000
"""Tokens decoded one by one per turn; longer turns show the first ones only."""


class TokenDecoder:
    """Decodes token ids with the tokenizer each turn's generations name, when it is on disk."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: dict[str, Any] = {}

    def _tokenizer(self, name: str) -> Any:
        """The tokenizer `name` names (loaded once, offline), or None when it is not at hand."""
        with self._lock:
            if name not in self._loaded:
                self._loaded[name] = _load_tokenizer(name)
            return self._loaded[name]

    def pieces(self, run: RunInfo | None, turn: RoleTurn) -> list[tuple[int, str]] | None:
        """(mask, text) per token, or None when this turn's tokenizer is not at hand."""
        if not turn.token_ids or not turn.mask:
            return None
        name = _tokenizer_name(run, turn)
        tok = self._tokenizer(name) if name else None
        if tok is None:
            return None
        ids = turn.token_ids[:MAX_TOKEN_VIEW]
        return [(turn.mask[i] if i < len(turn.mask) else 0, _piece(tok, t)) for i, t in enumerate(ids)]


def _tokenizer_name(run: RunInfo | None, turn: RoleTurn) -> str | None:
    """The one tokenizer every generation of the turn names; for older traces, the default
    model's folder when every call was the default model; else None (mixed or unknown)."""
    named = {g.tokenizer for g in turn.generations}
    if len(named) == 1 and None not in named:
        return named.pop()
    if named == {None} or not turn.generations:
        if _default_model(run, turn):
            from agentplay.models import default_model_dir

            return str(default_model_dir(create=False))
    return None


def _load_tokenizer(name: str) -> Any:
    """A `tokenizers.Tokenizer` from a folder / tokenizer.json, else a transformers tokenizer
    from the local Hugging Face cache; None when neither is on this machine."""
    from pathlib import Path

    path = Path(name)
    file = path / "tokenizer.json" if path.is_dir() else path
    try:
        if file.is_file() and file.suffix == ".json":
            from tokenizers import Tokenizer

            return Tokenizer.from_file(str(file))
        if path.is_dir() or "/" in name:
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(name, local_files_only=True)
    except Exception:  # noqa: BLE001 - a tokenizer that cannot be read means the strip only
        return None
    return None


def _piece(tok: Any, token_id: int) -> str:
    return str(tok.decode([token_id], skip_special_tokens=False))


def _default_model(run: RunInfo | None, turn: RoleTurn) -> bool:
    """Whether every model call of the turn was the default model (local or served over HTTP)."""
    from agentplay.models import DEFAULT_MODEL_SPEC

    default = DEFAULT_MODEL_SPEC.split(":", 1)[-1].lower()
    names = {g.model for g in turn.generations if g.model}
    if not names and run is not None:
        names = {str(run.config.get("model") or "")} - {""}
    return bool(names) and all(default in name.lower() for name in names)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # OpenAI content parts
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in value)
    return json.dumps(value, indent=2, default=str, ensure_ascii=False)


def _tool_calls_of(msg: dict[str, Any]) -> list[dict[str, str]]:
    calls = []
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        args = fn.get("arguments", call.get("arguments", ""))
        calls.append({"id": str(call.get("id", "")), "name": str(fn.get("name") or call.get("name", "")),
                      "arguments": args if isinstance(args, str) else json.dumps(args)})
    return calls


def turn_view(turn: RoleTurn, pieces: list[tuple[int, str]] | None) -> dict[str, Any]:
    """One role turn as the episode page shows it."""
    records = {call.call_id: call for call in turn.tool_calls}
    messages = []
    for msg in turn.messages:
        kind = msg.get("role", "user")
        entry: dict[str, Any] = {"role": kind, "text": _text(msg.get("content")),
                                 "calls": _tool_calls_of(msg) if kind == "assistant" else []}
        if kind == "tool":
            rec = records.get(str(msg.get("tool_call_id", "")))
            entry["name"] = msg.get("name") or (rec.name if rec else "")
            if rec is not None:
                entry.update(error=rec.error, latency_s=rec.latency_s, truncated=rec.truncated,
                             sandboxed=rec.sandboxed)
        messages.append(entry)
    mask = turn.mask or []
    return {
        "turn_id": turn.turn_id, "role": turn.role, "node": turn.node, "group_id": turn.group_id,
        "weight_version": turn.weight_version, "latency_s": turn.latency_s,
        "reward": turn.reward.model_dump() if turn.reward else None,
        "output": _text(turn.output) if turn.output is not None else None,
        "parse_error": turn.parse_error, "token_exact": turn.token_exact,
        "messages": messages,
        "tools": [c.model_dump() for c in turn.tool_calls if c.call_id not in
                  {str(m.get("tool_call_id", "")) for m in turn.messages}],
        "tokens": {"model": sum(mask), "other": len(mask) - sum(mask),
                   "prompt": len(turn.prompt_token_ids or [])},
        "pieces": pieces,
        "pieces_truncated": bool(pieces) and len(turn.token_ids or []) > MAX_TOKEN_VIEW,
    }


def episode_row(episode: Episode) -> dict[str, Any]:
    """One line of the episode list: enough to pick the episode worth opening."""
    rewards: dict[str, list[float]] = {}
    for turn in episode.turns:
        if turn.reward is not None:
            rewards.setdefault(turn.role, []).append(turn.reward.value)
    first = next((t for t in episode.turns if "propos" in t.role), episode.turns[0] if episode.turns else None)
    summary = ""
    if first is not None:
        from ._series import proposal_text

        summary = proposal_text(first)
    return {
        "episode_id": episode.episode_id, "run_id": episode.run_id, "index": episode.index,
        "seq": episode.seq, "status": episode.status, "error": episode.error,
        "rewards": {role: sum(v) / len(v) for role, v in sorted(rewards.items())},
        "metrics": episode.metrics, "turns": len(episode.turns),
        "summary": summary[:200], "created_at": episode.created_at,
    }
