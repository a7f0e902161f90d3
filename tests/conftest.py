"""Shared fixtures.

Docker-backed tests must not pass vacuously in CI: when AGENTPLAY_REQUIRE_DOCKER=1
(set by .ci/run) a missing engine is a test failure, elsewhere it is a skip with
the reason spelled out.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _docker_required() -> bool:
    return os.environ.get("AGENTPLAY_REQUIRE_DOCKER", "") not in ("", "0", "false")


def require_docker():
    """Return a live docker client, or fail (CI) / skip (dev box) with the reason."""
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
        return client
    except Exception as exc:  # noqa: BLE001 - any failure means "no engine"
        msg = f"no Docker engine answers: {exc!r}"
        if _docker_required():
            pytest.fail(f"AGENTPLAY_REQUIRE_DOCKER=1 but {msg}")
        pytest.skip(msg)


@pytest.fixture(scope="session")
def docker_client():
    return require_docker()


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    """Two cores: one intra-op thread per process avoids 2-10x contention slowdowns."""
    try:
        import torch

        torch.set_num_threads(int(os.environ.get("AGENTPLAY_TORCH_THREADS", "2")))
    except ImportError:
        pass
    yield
