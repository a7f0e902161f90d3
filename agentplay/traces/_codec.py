"""Compact column encodings for token-level data.

Token ids, masks and logprobs are the bulk of a trace (thousands of turns of
1-2k tokens). Packed little-endian arrays are about 2x smaller than JSON text
and 5-6x faster to write and read (`bench/bench_store.py` measures both), so
they are stored as BLOBs: int32 ids, int8 mask, float64 logprobs (float64 so
an episode reads back bit-for-bit equal). NULL keeps "unknown" apart from an
empty list. `json` columns hold everything with a free shape (messages, outputs).
"""

from __future__ import annotations

import json
import math
import sys
from array import array
from typing import Any

from pydantic_core import to_jsonable_python

from ._errors import StoreError

_IDS, _MASK, _FLOATS = "i", "b", "d"
_BIG_ENDIAN = sys.byteorder == "big"

if array(_IDS).itemsize != 4:  # pragma: no cover - every platform we target has 32-bit C int
    raise ImportError("agentplay.traces needs a 32-bit C int to pack token ids")


def _pack(code: str, values: list[int] | list[float] | None, field: str) -> bytes | None:
    if values is None:
        return None
    try:
        packed = array(code, values)
    except (OverflowError, TypeError) as exc:
        raise StoreError(f"cannot store {field}: {exc} (expected a list of numbers)") from exc
    if _BIG_ENDIAN:  # pragma: no cover - stored bytes are little-endian everywhere
        packed.byteswap()
    return packed.tobytes()


def _unpack(code: str, blob: bytes | None) -> array | None:
    if blob is None:
        return None
    values = array(code)
    values.frombytes(blob)
    if _BIG_ENDIAN:  # pragma: no cover
        values.byteswap()
    return values


def pack_ids(values: list[int] | None, field: str = "token ids") -> bytes | None:
    return _pack(_IDS, values, field)


def pack_mask(values: list[int] | None, field: str = "mask") -> bytes | None:
    return _pack(_MASK, values, field)


def pack_floats(values: list[float] | None, field: str = "logprobs") -> bytes | None:
    return _pack(_FLOATS, values, field)


def unpack_ids(blob: bytes | None) -> list[int] | None:
    values = _unpack(_IDS, blob)
    return None if values is None else values.tolist()


def unpack_mask(blob: bytes | None) -> list[int] | None:
    values = _unpack(_MASK, blob)
    return None if values is None else values.tolist()


def unpack_floats(blob: bytes | None) -> list[float] | None:
    values = _unpack(_FLOATS, blob)
    return None if values is None else values.tolist()


def dumps(value: Any) -> str:
    """JSON text for a free-shaped value; pydantic models and the like become plain JSON."""
    return json.dumps(value, default=to_jsonable_python, ensure_ascii=False, separators=(",", ":"))


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def real(value: float | None) -> float:
    """SQLite turns NaN into NULL; keep NaN as NaN on the way back (never silently drop a value)."""
    return math.nan if value is None else value
