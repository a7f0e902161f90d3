"""Configuration and result types shared by every sandbox backend."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from agentplay.errors import AgentplayError, InfrastructureError

Status = Literal["ok", "error", "timeout", "oom", "output_limit", "sandbox_error"]
BackendName = Literal["docker", "bwrap", "subprocess"]


class SandboxError(AgentplayError, RuntimeError):
    """The sandbox cannot do what was asked: a usage mistake to fix (bad arguments, limits
    above the pool's ceiling), or, as `SandboxUnavailable`, no working sandbox. Never a run's
    outcome: what the code did is a `SandboxResult`."""


class SandboxUnavailable(SandboxError, InfrastructureError):
    """No sandbox can run code here, or the one in use broke (no Docker engine answers, the
    image is missing, bubblewrap is not installed, the runner died): the machinery failed, not
    the code, so an episode that meets it is retried and never scored."""


class Limits(BaseModel):
    """Per-run resource limits; every backend enforces all of them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    wall_time_s: float = Field(10.0, gt=0, le=3600)
    """Wall-clock budget; the whole process group is killed when it runs out (status timeout)."""
    memory_mb: int = Field(256, ge=16, le=65536)
    """Address-space cap per run (RLIMIT_AS); Docker also caps the container's memory+swap."""
    output_bytes: int = Field(1 << 20, ge=1, le=32 << 20)
    """Cap on each of stdout and stderr; passing it kills the run (status output_limit)."""
    processes: int = Field(64, ge=2, le=4096)
    """Processes and threads the run may have at once (RLIMIT_NPROC on a private uid, pids cgroup)."""
    file_size_mb: int = Field(16, ge=1, le=4096)
    """Largest file the code may write (RLIMIT_FSIZE)."""
    open_files: int = Field(256, ge=16, le=65536)
    """Open file descriptors per process (RLIMIT_NOFILE)."""


class SandboxConfig(BaseModel):
    """How a sandbox is chosen and, for Docker, how its warm pool behaves."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["auto", "docker", "bwrap", "subprocess"] = "auto"
    """`auto` takes Docker when an engine answers and the image exists, else bubblewrap,
    else refuses unless `allow_unsafe`."""
    allow_unsafe: bool = False
    """Permit the plain-subprocess backend (rlimits only: not a security boundary)."""
    limits: Limits = Field(default_factory=Limits)
    """Defaults for runs that pass no limits; for Docker also the container-wide ceiling."""
    image: str = "agentplay-sandbox:latest"
    """Docker image with the runner (build it with `agentplay sandbox build`)."""
    runtime: Literal["auto", "runc", "runsc"] = "auto"
    """OCI runtime; `auto` picks gVisor's runsc when the engine has it."""
    pool_min: int = Field(1, ge=0, le=64)
    """Warm containers kept ready even when idle."""
    pool_max: int = Field(4, ge=1, le=256)
    """Most containers at once: also the bound on concurrent runs."""
    max_uses: int = Field(200, ge=1)
    """A container is replaced after this many runs even if every run was clean."""
    idle_timeout_s: float = Field(30.0, gt=0)
    """Containers above `pool_min` idle this long are removed."""
    cpus: float = Field(1.0, gt=0, le=64)
    """CPU quota per container (cores)."""
    tmpfs_mb: int = Field(64, ge=1, le=16384)
    """Size of each tmpfs (/work, /tmp, /dev/shm); counted against the memory limit."""
    host_grace_s: float = Field(3.0, gt=0, le=120)
    """Extra wall time the host allows before it kills the container itself."""
    docker_timeout_s: float = Field(30.0, gt=0)
    """Timeout of Docker API calls (create, start, remove)."""
    bwrap_path: str = "bwrap"
    """bubblewrap binary."""
    bwrap_python: str | None = None
    """Interpreter the bwrap backend runs (only its binary, stdlib and shared libraries are
    mounted); None: the system python3 under /usr when there is one, else this process's."""


class SandboxResult(BaseModel):
    """The verdict of one run. A sandbox failure is `sandbox_error`, never `error`."""

    status: Status
    """ok: exit 0; error: the code failed; timeout/oom/output_limit: a limit stopped it;
    sandbox_error: the sandbox itself failed and says so in `detail`."""
    exit_code: int | None = None
    """Process exit code; negative is the signal that killed it; None when it never ran."""
    stdout: str = ""
    """Decoded as UTF-8 with replacement characters for invalid bytes."""
    stderr: str = ""
    stdout_truncated: bool = False
    """True when stdout passed the output cap and was cut."""
    stderr_truncated: bool = False
    wall_time_s: float = 0.0
    """Time the code ran, measured inside the sandbox (or by the host if it had to kill it)."""
    backend: BackendName
    """Which backend actually ran it."""
    detail: str | None = None
    """For sandbox_error: what failed, for the operator."""
    spawn: Literal["zygote", "exec"] | None = None
    """How the runner started the code: forked from its warm interpreter ("zygote", Docker
    pool) or a fresh exec; None when the run never reached the runner."""

    @property
    def ok(self) -> bool:
        return self.status == "ok"
