"""The one interface every backend sits behind, and the backend choice."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol, Self

from pydantic import ValidationError

from ._models import (
    BackendName,
    Limits,
    SandboxConfig,
    SandboxError,
    SandboxResult,
    SandboxUnavailable,
)

log = logging.getLogger(__name__)


class _Backend(Protocol):
    name: BackendName

    async def execute(self, *, limits: Limits, **job_fields: Any) -> SandboxResult: ...

    async def aclose(self) -> None: ...


class Sandbox:
    """Runs untrusted code; every call returns a verdict, never raises for the code's sake.

    Made by `open_sandbox`. `backend` says what runs the code and `backend_reason` why
    it was chosen, so traces can record both.
    """

    def __init__(self, backend: _Backend, config: SandboxConfig, reason: str):
        self._backend = backend
        self.config = config
        self.backend: BackendName = backend.name
        self.backend_reason = reason

    async def run_python(
        self,
        code: str,
        *,
        stdin: str | bytes | None = None,
        files: dict[str, str | bytes] | None = None,
        limits: Limits | None = None,
        fresh_interpreter: bool = False,
    ) -> SandboxResult:
        """Run `code` as `python -c` in the work dir (files land there too).

        The warm Docker pool forks a pre-started interpreter, so runs on one container
        share its string-hash seed; `fresh_interpreter=True` starts a new one instead
        (one interpreter start-up slower), for checks that must see hash-order effects,
        e.g. "two runs agree" determinism checks.
        """
        return await self._backend.execute(
            code=code, argv=None, stdin=stdin, files=files, limits=limits or self.config.limits,
            fresh=fresh_interpreter,
        )

    async def run_command(
        self,
        argv: Sequence[str],
        *,
        stdin: str | bytes | None = None,
        files: dict[str, str | bytes] | None = None,
        limits: Limits | None = None,
    ) -> SandboxResult:
        """Run a program (looked up on the sandbox's PATH); a missing one is exit 127, status error."""
        return await self._backend.execute(
            code=None, argv=argv, stdin=stdin, files=files, limits=limits or self.config.limits,
            fresh=True,
        )

    async def aclose(self) -> None:
        """Stop and remove everything this sandbox started."""
        await self._backend.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"Sandbox(backend={self.backend!r}, reason={self.backend_reason!r})"


def _docker(config: SandboxConfig) -> _Backend:
    from ._docker import DockerBackend, check_image, docker_client

    client = docker_client(config)
    check_image(client, config.image)
    return DockerBackend(config, client)


def _bwrap(config: SandboxConfig) -> _Backend:
    from ._local import BwrapBackend

    return BwrapBackend(config)


def _choose(config: SandboxConfig) -> tuple[_Backend, str]:
    if config.backend == "docker":
        return _docker(config), "asked for docker"
    if config.backend == "bwrap":
        return _bwrap(config), "asked for bwrap"
    if config.backend == "subprocess":
        if not config.allow_unsafe:
            raise SandboxError(
                "backend='subprocess' is not a security boundary; pass allow_unsafe=True to use it"
            )
        from ._local import SubprocessBackend

        return SubprocessBackend(config), "asked for subprocess (unsafe)"
    why: list[str] = []
    for name, make in (("docker", _docker), ("bwrap", _bwrap)):
        try:
            return make(config), f"auto: {name} works" + (f" ({'; '.join(why)})" if why else "")
        except SandboxError as exc:
            why.append(f"{name}: {exc}")
    if config.allow_unsafe:
        from ._local import SubprocessBackend

        log.warning("sandbox: falling back to the unsafe subprocess backend: %s", "; ".join(why))
        return SubprocessBackend(config), "auto: unsafe subprocess fallback (" + "; ".join(
            why
        ) + ")"
    raise SandboxUnavailable(
        "backend='auto': no safe backend works here ("
        + "; ".join(why)
        + "); fix one, or pass allow_unsafe=True for the subprocess backend"
    )


def open_sandbox(
    backend: str | None = None,
    allow_unsafe: bool | None = None,
    *,
    config: SandboxConfig | None = None,
) -> Sandbox:
    """Pick a backend and return a Sandbox. Cheap and sync: pools start on first run.

    `backend` and `allow_unsafe` override the fields of `config` when given.
    Raises SandboxError when the requested backend cannot work here.
    """
    config = config or SandboxConfig()
    overrides: dict[str, Any] = {}
    if backend is not None:
        overrides["backend"] = backend
    if allow_unsafe is not None:
        overrides["allow_unsafe"] = allow_unsafe
    if overrides:
        try:
            config = SandboxConfig.model_validate({**config.model_dump(), **overrides})
        except ValidationError as exc:
            raise SandboxError(f"open_sandbox: {exc}") from exc
    chosen, reason = _choose(config)
    if chosen.name != "docker":
        log.info("sandbox backend %s (%s)", chosen.name, reason)
    return Sandbox(chosen, config, reason)
