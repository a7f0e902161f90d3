"""Which backends work on this machine, and if not, why: each is tried for real."""

from __future__ import annotations

import shutil

from pydantic import BaseModel

from ._models import Limits, SandboxConfig, SandboxError
from ._sandbox import open_sandbox

_PROBE = "import sys; print(sum(range(10)), sys.version_info[0])"


class BackendCheck(BaseModel):
    """One backend's verdict on this machine."""

    backend: str
    works: bool
    safe: bool
    """False for subprocess: rlimits only, not a security boundary."""
    reason: str
    """Why it works (what ran) or why not (what to fix)."""


async def _probe(name: str, config: SandboxConfig) -> BackendCheck:
    safe = name != "subprocess"
    try:
        cfg = config.model_copy(update={"backend": name, "allow_unsafe": True, "pool_min": 0})
        async with open_sandbox(config=cfg) as sb:
            res = await sb.run_python(_PROBE, limits=Limits(wall_time_s=20))
    except SandboxError as exc:
        return BackendCheck(backend=name, works=False, safe=safe, reason=str(exc))
    if res.status != "ok" or res.stdout.split() != ["45", "3"]:
        why = res.detail or res.stderr.strip()[-300:] or res.status
        return BackendCheck(
            backend=name, works=False, safe=safe, reason=f"trial run {res.status}: {why}"
        )
    return BackendCheck(
        backend=name,
        works=True,
        safe=safe,
        reason=f"trial run ok in {res.wall_time_s * 1000:.0f} ms",
    )


async def diagnose(config: SandboxConfig | None = None) -> list[BackendCheck]:
    """Probe docker, bwrap and subprocess in that order (the order `auto` prefers)."""
    config = config or SandboxConfig()
    checks = [await _probe("docker", config)]
    if shutil.which(config.bwrap_path) is None:
        checks.append(
            BackendCheck(
                backend="bwrap",
                works=False,
                safe=True,
                reason=f"{config.bwrap_path!r} not on PATH; install bubblewrap",
            )
        )
    else:
        checks.append(await _probe("bwrap", config))
    checks.append(await _probe("subprocess", config))
    return checks
