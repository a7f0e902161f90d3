"""`agentplay serve` subprocesses for the scale-out tests (real SmolLM2 behind real HTTP)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from agentplay.models import DEFAULT_MODEL_SPEC

SERVED = "openai:smollm2-135m-instruct"
AGENTPLAY = [sys.executable, "-m", "agentplay.cli"]


def cli_env() -> dict[str, str]:
    """The environment of a CLI subprocess that keeps the suite's thread setting (tests/conftest.py)."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def agentplay_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "AGENTPLAY_TORCH_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int | None = None, env: dict[str, str] | None = None,
                 args: tuple[str, ...] = ()) -> tuple[subprocess.Popen[str], str]:
    """`agentplay serve` on `port` (default: a free 127.0.0.1 one), waited for until /v1/models answers.

    `env` defaults to `agentplay_env()` (one torch thread); `args` are more `serve` flags."""
    port = port or _free_port()
    proc = subprocess.Popen([*AGENTPLAY, "serve", "--model", DEFAULT_MODEL_SPEC, "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning", *args], env=env or agentplay_env(),
                            start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"agentplay serve exited: {proc.stderr.read()[-2000:] if proc.stderr else ''}")
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail("agentplay serve did not answer within 300 s")


def stop_server(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # our own child's process group only
    proc.wait(timeout=30)


