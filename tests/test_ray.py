"""Scale-out on Ray: a real local cluster, real `agentplay serve` endpoints (SmolLM2), real actors.

One cluster and two serving endpoints for the module (Ray starts in ~10-20 s, a
server loads the model in ~10 s); the endpoint-kill test runs last because it
takes one server away for good.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from _recipes import SHORT_ANSWERS
from _servers import AGENTPLAY, SERVED, agentplay_env, start_server, stop_server

from agentplay import RayConfig, RayExecutor, RecipeRef, RunConfig, load_recipe, run_recipe
from agentplay._executors import loopback_only_ray
from agentplay.runner import episode_seeds
from agentplay.traces import TraceStore

loopback_only_ray()  # before ray is imported: the test cluster listens on 127.0.0.1 only
ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'agentplay[ray]')")

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = f"{ROOT / 'examples' / 'my_recipe.py'}:build"
OPTIONS = {"max_tokens": 4, "n_solvers": 1}


@pytest.fixture(scope="module")
def servers():
    started = [start_server(), start_server()]
    yield started
    for proc, _ in started:
        stop_server(proc)


@pytest.fixture(scope="module")
def cluster():
    """A private Ray cluster for this module, bound to 127.0.0.1 and gone afterwards."""
    ray.init(num_cpus=4, include_dashboard=False, _node_ip_address="127.0.0.1", namespace="agentplay-tests",
             log_to_driver=False)
    context = ray.get_runtime_context()
    yield context.gcs_address
    ray.shutdown()


def test_cluster_listens_on_loopback_only(cluster):
    import psutil

    ours = {p.pid for p in psutil.Process().children(recursive=True)} | {os.getpid()}
    listening = [c for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN and c.pid in ours]
    assert listening  # gcs, raylet, workers are ours and listen somewhere
    assert {c.laddr.ip for c in listening} <= {"127.0.0.1", "::ffff:127.0.0.1"}, listening


def _compiled():
    recipe, _ = load_recipe(EXAMPLE, model=SERVED, options=OPTIONS)
    return recipe.compile()


def _executor(urls: list[str], workers: int = 2, concurrency: int = 4) -> RayExecutor:
    ref = RecipeRef(recipe=EXAMPLE, model=SERVED, options=OPTIONS, endpoints=urls)
    return RayExecutor(ref, RayConfig(workers=workers, concurrency=concurrency))


def _check_exactly(store: TraceStore, run_id: str, n: int, seed: int, block: int) -> list:
    episodes = list(store.episodes(run_id))
    assert sorted(e.index for e in episodes) == list(range(n))  # each index once: nothing lost, nothing twice
    for e in episodes:
        assert (e.seed, e.metadata["group_seed"]) == episode_seeds(seed, e.index, block)
    return episodes


async def test_two_workers_store_exactly_the_requested_episodes(tmp_path, cluster, servers):
    urls = [u for _, u in servers]
    compiled = _compiled()
    executor = _executor(urls)
    try:
        with TraceStore(tmp_path / "t.db") as store:
            summary = await run_recipe(compiled, RunConfig(episodes=6, concurrency=4, run_id="r", seed=7,
                                                           progress=False), store=store, executor=executor)
            assert summary.completed == 6 and summary.errors == 0
            episodes = _check_exactly(store, "r", 6, 7, compiled.block_size)
    finally:
        await executor.aclose()
    assert {e.metadata["worker"] for e in episodes} == {"rollout-1", "rollout-2"}
    assert all(e.status == "ok" and {t.role for t in e.turns} == {"writer", "solver"} for e in episodes)
    assert all(t.generations and t.generations[0].completion_token_ids for e in episodes for t in e.turns)
    # each episode pinned to one server, and both servers used across the run
    assert all(len(e.metadata["endpoints"]) == 1 for e in episodes)
    assert {e.metadata["endpoints"][0] for e in episodes} == set(urls)
    assert not executor.retried and ray.is_initialized()  # the executor left the test's cluster running


async def test_killed_worker_loses_and_duplicates_nothing(tmp_path, cluster, servers):
    urls = [u for _, u in servers]
    compiled = _compiled()
    executor = _executor(urls)
    killed: list[str] = []

    def kill_the_other_worker(episode) -> None:
        if killed:
            return
        victim = next(w for w in executor._workers if w.alive and w.name != episode.metadata["worker"])
        assert victim.busy > 0  # it has episodes in flight: they die with it
        killed.append(victim.name)
        ray.kill(victim.actor)

    try:
        with TraceStore(tmp_path / "k.db") as store:
            summary = await run_recipe(compiled, RunConfig(episodes=8, concurrency=4, run_id="k", seed=3,
                                                           progress=False),
                                       store=store, executor=executor, on_episode=kill_the_other_worker)
            episodes = _check_exactly(store, "k", 8, 3, compiled.block_size)
    finally:
        await executor.aclose()
    assert killed and executor.retried  # episodes were lost with the worker and run again elsewhere
    assert summary.completed == 8 and all(e.status == "ok" for e in episodes)
    # the retried indexes were stored from the workers that survived (or the replacement)
    assert killed[0] not in {e.metadata["worker"] for e in episodes if e.index in executor.retried}


def test_cli_runs_on_ray_joining_a_cluster(tmp_path, cluster, servers):
    db = tmp_path / "cli.db"
    urls = ",".join(u for _, u in servers)
    out = subprocess.run([*AGENTPLAY, "run", EXAMPLE, "--model", SERVED, "--executor", "ray", "--address", cluster,
                          "--workers", "2", "--endpoints", urls, "--episodes", "4", "--concurrency", "4",
                          "--store", str(db), "--run-id", "c", "--set", "max_tokens=4", "--set", "n_solvers=1",
                          "--no-progress"], check=False, env=agentplay_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["completed"] == 4 and summary["errors"] == 0
    with TraceStore(db) as store:
        episodes = list(store.episodes("c"))
    assert sorted(e.index for e in episodes) == [0, 1, 2, 3]
    assert {e.metadata["worker"] for e in episodes} <= {"rollout-1", "rollout-2"}


@pytest.mark.slow  # a GRPO step on CPU plus Ray workers: ~1-3 min on a loaded box
def test_train_on_ray_workers_follows_the_loaded_adapter(tmp_path, cluster, servers):
    out = subprocess.run([*AGENTPLAY, "train", SHORT_ANSWERS, "--model", SERVED, "--endpoints", servers[1][1],
                          "--executor", "ray", "--address", cluster, "--workers", "2", "--lora",
                          "--iterations", "2", "--episodes-per-iteration", "2", "--concurrency", "2",
                          "--store", str(tmp_path / "t.db"), "--output-dir", str(tmp_path / "out"),
                          "--run-id", "tr", "--learning-rate", "1e-3", "--micro-batch-size", "8", "--set", "n=2"],
                         check=False, env=agentplay_env(), capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    with TraceStore(tmp_path / "t.db") as store:
        its = [list(store.episodes(f"tr/it{i:05d}")) for i in range(2)]
    assert [sorted(e.index for e in eps) for eps in its] == [[0, 1], [0, 1]]
    assert all(e.metadata["worker"].startswith("rollout-") for eps in its for e in eps)
    first = {g.model for e in its[0] for t in e.turns for g in t.generations}
    second = {g.model for e in its[1] for t in e.turns for g in t.generations}
    # iteration 0 ran on the base weights; after the step every worker asked for the adapter
    assert first == {"smollm2-135m-instruct"} and second == {"agentplay"}


async def test_dead_endpoint_leaves_rotation_and_the_run_completes(tmp_path, cluster, servers):
    """Runs last: it kills one of the module's servers."""
    (doomed, doomed_url), (_, alive_url) = servers
    compiled = _compiled()
    executor = _executor([doomed_url, alive_url])
    before: set[int] = set()

    def kill_server(episode) -> None:
        if doomed.poll() is None:
            before.add(episode.index)
            os.killpg(doomed.pid, signal.SIGKILL)

    try:
        with TraceStore(tmp_path / "e.db") as store:
            summary = await run_recipe(compiled, RunConfig(episodes=8, concurrency=4, run_id="e", seed=11,
                                                           progress=False),
                                       store=store, executor=executor, on_episode=kill_server)
            episodes = _check_exactly(store, "e", 8, 11, compiled.block_size)
    finally:
        await executor.aclose()
    assert doomed.poll() is not None and summary.completed == 8
    assert all(e.status == "ok" for e in episodes), [e.error for e in episodes if e.error]
    used = {u for e in episodes for u in e.metadata["endpoints"]}
    assert used == {doomed_url, alive_url}
    # episodes caught on the dead server moved to the live one mid-episode
    moved = [e for e in episodes if e.metadata.get("endpoint_failovers")]
    assert moved and all(e.metadata["endpoints"] == [doomed_url, alive_url] for e in moved)
    # after the kill, nothing new was pinned to the dead server
    late = [e for e in episodes if e.index >= 6]
    assert all(e.metadata["endpoints"][-1] == alive_url for e in late)
