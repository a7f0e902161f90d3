"""Run health (issue 19): a run that cannot do its job says so; failures are never rewards.

Regression tests for the issue's items 1 (no sandbox: the demo stops, non-zero), 2 (a
raising reward fn is marked `reward_failed`, not scored 0, and left out of training),
6 (a LangChain tool inside a Role adds no empty turn) and 7 (a run whose episodes all
failed fails, with the errors by cause), plus infrastructure failures (retried whole,
never scored) and `train` stopping before an optimizer step with nothing to train on.
Everything runs the real SmolLM2, real SQLite stores and the real CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from agentplay.trainers import compute_advantages
from rich.console import Console

from agentplay import RunConfig, load_recipe, run_recipe
from agentplay.runner import RewardFailedError, RunHealthError
from agentplay.traces import TraceStore

ROOT = Path(__file__).resolve().parents[1]
RECIPE = f"{ROOT / 'tests' / 'data' / 'health_recipe.py'}:build"
AGENTPLAY = [sys.executable, "-m", "agentplay.cli"]


def _recipe(mode: str, **options):
    return load_recipe(RECIPE, options={"mode": mode, **options})[0]


def _config(**kw) -> RunConfig:
    return RunConfig(**{"episodes": 4, "concurrency": 2, "run_id": "r", "seed": 1, "progress": False, **kw})


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **extra}


# -- item 2: a reward fn that raises ------------------------------------------------------------


async def test_raising_reward_fn_is_marked_with_its_frame_never_scored_and_not_trained(tmp_path):
    with TraceStore(tmp_path / "t.db") as store:
        summary = await run_recipe(_recipe("reward_raises"), _config(), store=store)
        episodes = sorted(store.episodes("r"), key=lambda e: e.index)
    assert summary.errors == 0 and summary.reward_failures == {"solver": 2}
    assert [e.status for e in episodes] == ["ok"] * 4
    for ep in episodes:
        (turn,) = ep.turns
        if ep.index % 2:  # stored (read back from SQLite) as a failure, with no reward at all
            assert turn.reward is None
            assert turn.reward_failed.startswith("reward fn raised ZeroDivisionError: the grader divided by zero")
            assert "health_recipe.py" in turn.reward_failed and "in reward: raise ZeroDivisionError" in turn.reward_failed
        else:
            assert turn.reward is not None and turn.reward_failed is None
    # GroupBy.seed(2): each block {0,1}, {2,3} lost a member, so neither can be normalised honestly
    samples, stats = compute_advantages(episodes)
    assert samples == []
    assert stats.skipped_reward_failed == 2 and stats.dropped_reward_failed_groups == 2
    assert stats.dropped_reward_failed_turns == 2 and stats.exclusions()["reward fn failed"] == 2
    assert set(stats.per_role_rewards) == {"solver"} and len(stats.per_role_rewards["solver"]) == 2
    shrunk, sstats = compute_advantages(episodes, reward_failed_groups="shrink", zero_variance="keep")
    assert sstats.skipped_reward_failed == 2 and sstats.dropped_reward_failed_groups == 0
    assert sorted(s.episode_id for s in shrunk) == sorted(e.episode_id for e in episodes if e.index % 2 == 0)


async def test_strict_rewards_stops_at_the_first_failure(tmp_path):
    with TraceStore(tmp_path / "t.db") as store:
        with pytest.raises(RewardFailedError, match=r"reward fn of role 'solver' failed in episode 1.*ZeroDivisionError"):
            await run_recipe(_recipe("reward_raises"), _config(concurrency=1, strict_rewards=True), store=store)
        assert store.get_run("r").status == "failed"
        assert 1 in store.stored_indexes("r") and len(store.stored_indexes("r")) < 4


# -- item 7 and run health: error fraction, diagnosis, errors by cause -------------------------------


async def test_every_episode_failing_is_a_failed_run_with_a_diagnosis(tmp_path):
    with TraceStore(tmp_path / "t.db") as store:
        with pytest.raises(RunHealthError) as caught:
            await run_recipe(_recipe("graph_raises_all"), _config(episodes=3, max_error_fraction=1.0), store=store)
        assert store.get_run("r").status == "failed"
        stored = list(store.episodes("r"))
    text = str(caught.value)
    assert "every episode failed (3 of 3)" in text
    assert "recipe:KeyError x3 (first, episode " in text and "recipe bug in episode" in text
    assert caught.value.summary.errors_by_cause == {"recipe:KeyError": 3}
    assert {e.error_cause for e in stored} == {"recipe:KeyError"}


async def test_error_fraction_threshold_and_summary_by_cause(tmp_path):
    recipe = _recipe("graph_raises_odd")
    with TraceStore(tmp_path / "t.db") as store:
        console = Console(record=True, width=200)
        summary = await run_recipe(recipe, _config(progress=True), store=store, console=console)
        assert summary.errors == 2 and summary.errors_by_cause == {"recipe:KeyError": 2}
        assert summary.first_errors["recipe:KeyError"].startswith("episode 1: KeyError")
        table = console.export_text()
        assert "recipe:KeyError" in table and "recipe bug in episode 1" in table
        assert store.get_run("r").status == "finished"  # 2 of 4 is not more than 0.5
        with pytest.raises(RunHealthError, match=r"2 of 4 episodes failed \(50%\), more than max_error_fraction=0.25"):
            await run_recipe(recipe, _config(run_id="r2", max_error_fraction=0.25), store=store)


def test_cli_run_exits_non_zero_when_every_episode_failed(tmp_path):
    out = subprocess.run(
        [*AGENTPLAY, "run", RECIPE, "--episodes", "2", "--concurrency", "2", "--store", str(tmp_path / "t.db"),
         "--set", "mode=graph_raises_all", "--no-progress"],
        env=_env(COLUMNS="400"), capture_output=True, text=True, timeout=600, check=False,
    )
    assert out.returncode == 1, out.stderr[-3000:]
    assert "run failed:" in out.stderr and "every episode failed (2 of 2)" in out.stderr
    assert "recipe:KeyError x2" in out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["errors"] == 2 and summary["errors_by_cause"] == {"recipe:KeyError": 2}


# -- infrastructure failures: retried whole, never scored -----------------------------------------


async def test_infrastructure_failure_is_retried_as_a_whole_episode(tmp_path):
    with TraceStore(tmp_path / "t.db") as store:
        summary = await run_recipe(_recipe("infra_once"), _config(), store=store)
        episodes = list(store.episodes("r"))
    assert summary.errors == 0 and summary.retried == 4
    assert all(e.status == "ok" and e.metadata["attempts"] == 2 for e in episodes)
    assert all(e.metadata["retried_after"][0].startswith("infrastructure:SandboxWentAway") for e in episodes)
    assert all(t.reward is not None for e in episodes for t in e.turns)


async def test_infrastructure_failure_in_a_reward_fn_retries_instead_of_scoring(tmp_path):
    with TraceStore(tmp_path / "t.db") as store:
        summary = await run_recipe(_recipe("reward_infra_once"), _config(), store=store)
        episodes = list(store.episodes("r"))
    assert summary.errors == 0 and summary.retried == 4 and summary.reward_failures == {}
    assert all(t.reward is not None and t.reward_failed is None for e in episodes for t in e.turns)


async def test_infrastructure_failure_that_persists_is_an_error_never_a_sample(tmp_path):
    with TraceStore(tmp_path / "t.db") as store:
        with pytest.raises(RunHealthError) as caught:
            await run_recipe(_recipe("infra_always"), _config(episode_retries=2), store=store)
        episodes = list(store.episodes("r"))
    assert "infrastructure:SandboxWentAway x4" in str(caught.value)
    assert "retried 2 time(s) per episode" in str(caught.value)
    assert all(e.status == "error" and e.error_cause == "infrastructure:SandboxWentAway" for e in episodes)
    assert all(e.metadata["attempts"] == 3 for e in episodes)
    turns = [t for e in episodes for t in e.turns]
    assert turns and all(t.reward is None for t in turns)  # the model answered, but nobody scored it
    samples, stats = compute_advantages(episodes)
    assert samples == [] and stats.skipped_episode_error == len(turns)


# -- item 6: a LangChain @tool called by a Role ---------------------------------------------------


async def test_langchain_tool_inside_a_role_adds_no_phantom_turn():
    from langchain_core.tools import tool
    from langgraph.graph import END, START, StateGraph

    from agentplay import GroupBy, Recipe, Role, run_episode
    from agentplay.models import DEFAULT_MODEL_SPEC, SamplingParams

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers and return the sum."""
        return a + b

    call = '<tool_call>\n{"name": "add", "arguments": {"a": 17, "b": 25}}\n</tool_call>'
    role = Role(name="adder", model=DEFAULT_MODEL_SPEC, tools=[add], max_tool_turns=1,
                sampling=SamplingParams(max_tokens=40, temperature=0.0))

    async def act(state: dict) -> dict:
        await role.run(f"Repeat exactly this text and nothing else:\n{call}")
        return {}

    graph = StateGraph(dict)
    graph.add_node("act", act)
    graph.add_edge(START, "act")
    graph.add_edge("act", END)
    recipe = Recipe(name="lc-tool", graph=graph, roles={"act": role},
                    rewards={"adder": lambda turn, state, episode: float(len(episode.turns))},
                    groups={"adder": GroupBy.episode()}, initial_state=lambda ctx: {})
    episode = await run_episode(recipe, index=0, seed=0, run_id="lc")
    assert episode.status == "ok", episode.error
    (turn,) = episode.turns  # before the fix: a second, empty RoleTurn from the tool callback
    assert [(c.name, c.result) for c in turn.tool_calls] == [("add", "42")]  # the tool really ran
    assert turn.token_ids and turn.output is not None
    assert turn.reward.value == 1.0  # the reward fn saw one turn


# -- item 1: `agentplay demo` on a machine with no usable sandbox -----------------------------------


def test_demo_without_any_sandbox_stops_before_any_episode(tmp_path):
    """No bwrap on PATH and no Docker engine: the demo must not run episodes that all
    error and then exit 0; it stops at once, non-zero, and says how to get a sandbox."""
    bare = tmp_path / "bin"  # a PATH with nothing on it (the interpreter is called by its full path)
    bare.mkdir()
    out = subprocess.run(
        [*AGENTPLAY, "demo", "--output-dir", str(tmp_path / "demo"), "--iterations", "1"],
        env=_env(PATH=str(bare), DOCKER_HOST=f"unix://{tmp_path}/no-docker.sock", COLUMNS="400"),
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert out.returncode == 1, (out.stdout[-2000:], out.stderr[-3000:])
    assert "no sandbox can run the model's code here" in out.stderr
    assert "bwrap" in out.stderr and "install bubblewrap" in out.stderr
    assert not (tmp_path / "demo" / "traces.db").exists()  # stopped before any episode


# -- train: no optimizer step on an iteration with nothing trainable ---------------------------------


async def test_train_stops_before_an_optimizer_step_when_failures_left_nothing(tmp_path):
    from agentplay.trainers import NothingToTrainError, SelfPlayTrainer, TrainConfig, rollout_run_id

    from agentplay.models import load_model

    served = load_model("local:smollm2-135m-instruct")
    try:
        v0 = served.weight_version
        store = TraceStore(tmp_path / "traces.db")
        cfg = TrainConfig(recipe="unused", iterations=2, episodes_per_iteration=4, concurrency=2,
                          store=tmp_path / "traces.db", output_dir=tmp_path / "out", run_name="t")
        trainer = SelfPlayTrainer(cfg, recipe=_recipe("reward_raises"), served=served, store=store)
        with pytest.raises(NothingToTrainError, match=r"iteration 0: no trainable sample \(2 turns: reward fn "
                                                      r"failed; 2 turns: group of a failed reward\)"):
            await trainer.run()
        assert served.weight_version == v0  # no step, no weight sync
        assert trainer.learner.trainer.state.global_step == 0
        assert not list((tmp_path / "out").glob("checkpoint-*"))
        assert store.get_run("t").status == "failed"
        assert len(list(store.episodes(rollout_run_id("t", 0)))) == 4  # the rollouts are kept to inspect
    finally:
        await served.aclose()


def test_uninformative_batch_skips_the_step_but_a_broken_one_stops():
    from agentplay.trainers import AdvantageStats
    from agentplay.trainers._loop import no_sample_verdict

    why, fatal = no_sample_verdict(AdvantageStats(dropped_groups=2, dropped_zero_variance_turns=4), 0.5)
    assert not fatal and why == "no trainable sample (4 turns: zero-variance groups)"
    _, fatal = no_sample_verdict(AdvantageStats(skipped_episode_error=1, dropped_zero_variance_turns=3), 0.5)
    assert not fatal  # one errored episode among uninformative groups: skip and go on
    _, fatal = no_sample_verdict(AdvantageStats(skipped_episode_error=3, dropped_zero_variance_turns=1), 0.5)
    assert fatal
    _, fatal = no_sample_verdict(AdvantageStats(skipped_no_tokens=2), 0.5)
    assert fatal
    _, fatal = no_sample_verdict(AdvantageStats(), 0.5)
    assert fatal  # no episode produced a turn of a trainable role


def test_make_sandbox_setup_names_the_install_command_when_it_cannot_install(tmp_path):
    """`make demo` / `make test` first set up the sandbox: with no bubblewrap on PATH and no
    package manager it may use, the Makefile prints the exact command (and goes on)."""
    import shutil

    bare = tmp_path / "bin"  # make and id only: no bwrap, no apt-get, no dnf
    bare.mkdir()
    for tool in ("make", "id"):
        (bare / tool).symlink_to(shutil.which(tool))
    out = subprocess.run([str(bare / "make"), "--no-print-directory", "-C", str(ROOT), "sandbox-setup"],
                         env={"PATH": str(bare), "HOME": str(tmp_path)}, capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert "bubblewrap (the sandbox without Docker) is missing" in out.stdout
    assert "sudo apt-get install bubblewrap" in out.stdout and "sudo dnf install bubblewrap" in out.stdout
    present = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "sandbox-setup"],
                             capture_output=True, text=True, timeout=60, check=False)
    if shutil.which("bwrap"):  # installed here: nothing to do, nothing said
        assert present.returncode == 0 and present.stdout == "", present.stdout


def test_cli_train_exits_non_zero_when_an_iteration_has_nothing_to_train_on(tmp_path):
    out = subprocess.run(
        [*AGENTPLAY, "train", RECIPE, "--iterations", "2", "--episodes-per-iteration", "2", "--concurrency", "2",
         "--store", str(tmp_path / "t.db"), "--output-dir", str(tmp_path / "out"), "--set", "mode=reward_raises"],
        env=_env(COLUMNS="400"), capture_output=True, text=True, timeout=900, check=False,
    )
    assert out.returncode == 1, out.stderr[-3000:]
    assert "training failed:" in out.stderr and "iteration 0: no trainable sample" in out.stderr
    assert "1 turns: reward fn failed" in out.stderr and "no optimizer step was taken" in out.stderr
    assert not list((tmp_path / "out").glob("checkpoint-*"))


def test_error_causes_name_the_machinery_or_the_recipe():
    import httpx
    import openai

    from agentplay._health import error_cause
    from agentplay.errors import InfrastructureError

    request = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    server_down = openai.InternalServerError("503", response=httpx.Response(503, request=request), body=None)
    assert error_cause(server_down) == "infrastructure:InternalServerError"
    try:
        try:
            raise httpx.ConnectError("refused", request=request)
        except httpx.ConnectError as exc:
            raise RuntimeError("tool failed") from exc
    except RuntimeError as exc:  # a wrapper keeps its cause: still the network's fault
        assert error_cause(exc) == "infrastructure:ConnectError"
    group = ExceptionGroup("graph", [ValueError("x"), InfrastructureError("sandbox died")])
    assert error_cause(group) == "infrastructure:InfrastructureError"
    assert error_cause(KeyError("answer")) == "recipe:KeyError"
    bad_request = openai.BadRequestError("400", response=httpx.Response(400, request=request), body=None)
    assert error_cause(bad_request) == "recipe:BadRequestError"  # our request was wrong: not retried
