"""Run untrusted, model-written code and always get a verdict back.

    async with open_sandbox() as sb:            # docker, else bwrap, else refuse
        res = await sb.run_python("print(1 + 1)")
        res.status, res.stdout                  # "ok", "2\\n"

Backends: a warm pool of hardened Docker containers, bubblewrap namespaces, or
(only with allow_unsafe=True) a plain subprocess with the same rlimits.
"""

from ._doctor import BackendCheck, diagnose
from ._image import build_image
from ._models import Limits, SandboxConfig, SandboxError, SandboxResult, SandboxUnavailable, Status
from ._sandbox import Sandbox, open_sandbox

__all__ = [
    "BackendCheck",
    "Limits",
    "Sandbox",
    "SandboxConfig",
    "SandboxError",
    "SandboxResult",
    "SandboxUnavailable",
    "Status",
    "build_image",
    "diagnose",
    "open_sandbox",
]
