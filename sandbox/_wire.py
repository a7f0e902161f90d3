"""Host side of the runner protocol: build job frames, turn result frames into results.

Frames are a 4-byte big-endian length then UTF-8 JSON (see `_runner.py`); bytes
travel base64-encoded so code, stdin and files may hold anything.
"""

from __future__ import annotations

import base64
import json
import posixpath
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

from ._models import BackendName, Limits, SandboxError, SandboxResult

HEADER = struct.Struct(">I")
RUNNER_PATH = Path(__file__).with_name("_runner.py")
"""The runner script: copied into the image, bound read-only by bwrap."""
MAX_FRAME = 128 << 20
"""Bigger than any honest result: two capped outputs (32 MiB each) in base64."""


def encode_frame(obj: Mapping) -> bytes:
    body = json.dumps(obj).encode()
    return HEADER.pack(len(body)) + body


def decode_frames(buf: bytearray) -> list[dict]:
    """Pop every complete frame off the front of `buf`."""
    frames = []
    while len(buf) >= HEADER.size:
        (size,) = HEADER.unpack_from(buf)
        if size > MAX_FRAME:
            raise ValueError(f"runner frame of {size} bytes is larger than {MAX_FRAME}")
        if len(buf) < HEADER.size + size:
            break
        frames.append(json.loads(bytes(buf[HEADER.size : HEADER.size + size])))
        del buf[: HEADER.size + size]
    return frames


def _b64(data: str | bytes | None) -> str:
    if data is None:
        return ""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    return base64.b64encode(raw).decode()


def _check_files(files: Mapping[str, str | bytes] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, content in (files or {}).items():
        norm = posixpath.normpath(name) if isinstance(name, str) else ""
        if not norm or norm.startswith("/") or norm == "." or norm.split("/")[0] == "..":
            raise SandboxError(
                f"files: {name!r} must be a relative path inside the work dir (no '..', not absolute)"
            )
        if not isinstance(content, (str, bytes, bytearray)):
            raise SandboxError(
                f"files[{name!r}]: content must be str or bytes, not {type(content).__name__}"
            )
        out[norm] = _b64(content)
    return out


def _check_stdin(stdin: str | bytes | None) -> str:
    if stdin is not None and not isinstance(stdin, (str, bytes, bytearray)):
        raise SandboxError(f"stdin: must be str, bytes or None, not {type(stdin).__name__}")
    return _b64(stdin)


def make_job(
    *,
    code: str | None,
    argv: Sequence[str] | None,
    stdin: str | bytes | None,
    files: Mapping[str, str | bytes] | None,
    limits: Limits,
    workdir: str,
    wipe: list[str],
    nproc: int | None,
    env: Mapping[str, str],
    fresh: bool = False,
) -> dict:
    """The job frame the runner executes; raises SandboxError for caller mistakes."""
    if code is not None and not isinstance(code, str):
        raise SandboxError(f"code: must be str, not {type(code).__name__}")
    if argv is not None and (
        isinstance(argv, (str, bytes)) or not argv or not all(isinstance(a, str) for a in argv)
    ):
        raise SandboxError("argv: must be a non-empty list of str, e.g. ['python3', '-V']")
    lim = limits.model_dump()
    lim["nproc"] = nproc
    return {
        "code": code,
        "argv": list(argv) if argv is not None else None,
        "stdin": _check_stdin(stdin),
        "files": _check_files(files),
        "limits": lim,
        "workdir": workdir,
        "wipe": wipe,
        "env": dict(env),
        "fresh": fresh,
    }


def to_result(frame: Mapping, backend: BackendName) -> SandboxResult:
    """A runner result frame as a SandboxResult (runner failures stay sandbox_error)."""
    if frame.get("status") == "sandbox_error":
        return sandbox_error(backend, str(frame.get("error", "runner failed")))
    return SandboxResult(
        status=frame["status"],
        exit_code=frame["exit_code"],
        stdout=base64.b64decode(frame["stdout"]).decode("utf-8", "replace"),
        stderr=base64.b64decode(frame["stderr"]).decode("utf-8", "replace"),
        stdout_truncated=frame["stdout_truncated"],
        stderr_truncated=frame["stderr_truncated"],
        wall_time_s=frame["wall_time_s"],
        backend=backend,
        spawn=frame.get("spawn"),
    )


def sandbox_error(backend: BackendName, detail: str, wall: float = 0.0) -> SandboxResult:
    return SandboxResult(status="sandbox_error", backend=backend, detail=detail, wall_time_s=wall)


def host_timeout(backend: BackendName, wall: float) -> SandboxResult:
    """The runner did not answer in time; the host killed the whole sandbox."""
    return SandboxResult(
        status="timeout",
        exit_code=None,
        wall_time_s=wall,
        backend=backend,
        detail="killed by the host: the in-sandbox deadline did not fire",
    )
