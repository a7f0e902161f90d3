"""Shared fixtures and the suite's process settings.

Docker-backed tests must not pass vacuously in CI: when AGENTPLAY_REQUIRE_DOCKER=1
(set by .ci/run) a missing engine is a test failure, elsewhere it is a skip with
the reason spelled out.

Expensive real parts are started once per session and shared by the tests that only
read from them: the in-process SmolLM2 (`smollm2`), one `agentplay serve` of it
(`smollm2_server`) and the store of a real search-selfplay run (`recipe_store`). A test
that trains, loads adapters or kills a server starts its own; the shared model and
server check at the end of the session that nobody changed their weights.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _xdist_workers() -> int:
    return int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))


# Intra-op threads of every process the suite runs that does not choose its own (this one,
# and the CLI/server subprocesses that inherit the environment): a lone pytest process
# has the 2 cores to itself; with N xdist workers computing at once, more threads than
# cores/N only contend (2-10x slowdowns on this 2-core box). A value the user exported
# is kept; one this file set in the xdist controller (which workers inherit) is not.
_SUITE_SET_THREADS = "_AGENTPLAY_SUITE_SET_TORCH_THREADS"
if "AGENTPLAY_TORCH_THREADS" not in os.environ or os.environ.get(_SUITE_SET_THREADS):
    os.environ["AGENTPLAY_TORCH_THREADS"] = "2" if _xdist_workers() <= 1 else "1"
    os.environ[_SUITE_SET_THREADS] = "1"


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
    """This process's intra-op threads: $AGENTPLAY_TORCH_THREADS, which the module top sets
    to 2 (both cores) when pytest runs alone and to 1 per xdist worker."""
    try:
        import torch

        torch.set_num_threads(int(os.environ["AGENTPLAY_TORCH_THREADS"]))
    except ImportError:
        pass
    yield


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2 in process, loaded once per session for the tests that only sample
    from it. A test that trains or loads adapters loads its own (`load_model(DEFAULT_MODEL_SPEC)`);
    the teardown fails the session if anyone changed these weights."""
    from agentplay.models import DEFAULT_MODEL_SPEC, load_model

    model = load_model(DEFAULT_MODEL_SPEC)
    version = model.weight_version
    yield model
    try:
        assert model.weight_version == version and not model.adapters, (
            "a test changed the shared session model's weights: it must load its own model")
    finally:
        asyncio.run(model.aclose())


@pytest.fixture(scope="session")
def smollm2_server() -> Iterator[str]:
    """One `agentplay serve` of SmolLM2 (its /v1 URL) for the tests that only sample from it;
    a test that loads adapters into a server or kills it starts its own (`_servers.start_server`)."""
    import httpx
    from _servers import cli_env, start_server, stop_server

    proc, url = start_server(env=cli_env())  # the suite's thread setting: both cores when pytest runs alone
    version = httpx.get(f"{url[: -len('/v1')]}/health", timeout=30).json()["weight_version"]
    try:
        yield url
        after = httpx.get(f"{url[: -len('/v1')]}/health", timeout=30).json()["weight_version"]
        assert after == version, "a test changed the shared session server's weights: it must start its own"
    finally:
        stop_server(proc)


RECIPE_STORE_SETS = ["n_solvers=2", "group_k=3", "max_tool_turns=1", "proposer_max_tokens=48",
                     "solver_max_tokens=24", "rag_max_tokens=12", "gate_solvers=false", "doc_chars=160",
                     "snippet_chars=80", "noise_docs=1"]
"""Keep the real run lean: 3 episodes, 2 solver attempts each, short prompts and outputs
(~1-3 min on an idle 2-core box; far longer when the machine is shared)."""


@pytest.fixture(scope="session")
def recipe_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(store file, run id) of a real 3-episode `agentplay run search-selfplay` on SmolLM2,
    read by the UI and report tests."""
    from _servers import cli_env

    from agentplay.traces import TraceStore

    path = tmp_path_factory.mktemp("ui-store") / "traces.db"
    cmd = [sys.executable, "-m", "agentplay.cli", "run", "search-selfplay", "--episodes", "3",
           "--concurrency", "3", "--store", str(path), "--run-id", "ui-run", "--no-progress"]
    for pair in RECIPE_STORE_SETS:
        cmd += ["--set", pair]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, env=cli_env(), timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    with TraceStore(path, read_only=True) as store:
        run = store.get_run("ui-run")
    assert run.episodes == 3, run
    return path, "ui-run"


# -- parallel runs (`make test`: pytest -n 2 --dist loadscope) ---------------------------
# Each module runs whole on one worker (its module fixtures start once). The modules of a
# group below also share one worker, one after another, because they share something
# that two processes must not use at once or would each start again:
SERIAL_GROUPS = {
    # sandboxes: the hostile-code checks assert that no sandbox left files in the host's
    # temp dir or processes behind, which another worker's sandbox would break
    "sandbox": ["test_sandbox_api.py", "test_sandbox_docker.py", "test_sandbox_hostile.py", "test_sandbox_zygote.py",
                "test_tools_code.py", "test_code_selfplay.py", "test_code_selfplay_verifier.py", "test_agent0.py",
                "test_cli.py", "test_run_health.py", "test_learning_bench.py"],
    # the work tree's build/ folder (`pip wheel`, the type checker's view) and the session's
    # recipe_store run
    "wheel": ["test_packaging.py", "test_ui.py", "test_report.py", "test_typecheck.py"],
    # the session's `agentplay serve` (smollm2_server), started once
    "server": ["test_runner.py", "test_faults_token_ids.py", "test_ray_endpoints.py"],
}
FIRST = ["test_trainer_kill.py", "sandbox", "test_trainer_async.py", "test_spiral.py", "test_trainer.py", "wheel",
         "test_trainer_resume.py", "test_trainer_shared_prompt.py", "test_r_zero.py", "test_trainer_data_parallel.py",
         "test_models_local_spec.py", "test_trainer_mismatch.py", "server"]
"""The slowest scopes (modules or groups above; 20-120 s each on an idle box), longest first:
started before the rest so that no worker is left running one of them alone at the end."""
_GROUP_OF = {name: group for group, names in SERIAL_GROUPS.items() for name in names}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupedScopes(LoadScopeScheduling):
        """loadscope, with each SERIAL_GROUPS group as one scope and FIRST ahead of the rest."""

        ordered = False

        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return _GROUP_OF.get(module.rsplit("/", 1)[-1], module)

        def _assign_work_unit(self, node) -> None:
            if not self.ordered:  # the first assignment: the queue is complete, nothing sent yet
                rank = {name: i for i, name in enumerate(FIRST)}
                queue = sorted(self.workqueue.items(), key=lambda item: rank.get(item[0].rsplit("/", 1)[-1], len(rank)))
                self.workqueue.clear()
                self.workqueue.update(queue)  # sorted() is stable: the rest keep loadscope's order
                self.ordered = True
            super()._assign_work_unit(node)

    return GroupedScopes(config, log)
