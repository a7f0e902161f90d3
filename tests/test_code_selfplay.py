"""Code self-play end to end: real SmolLM2, real Docker sandbox, traces in a real SQLite store."""

from __future__ import annotations

import pytest
import pytest_asyncio
from _trace_checks import check_token_exact
from agentplay.graphs import code_selfplay
from agentplay.sandbox import SandboxConfig, open_sandbox
from conftest import require_docker

from agentplay import RunConfig, resolve_model, run_episode, run_recipe
from agentplay.models import DEFAULT_MODEL_SPEC
from agentplay.traces import TraceStore

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sandbox():
    require_docker()
    sb = open_sandbox(config=SandboxConfig(backend="docker", pool_min=1, pool_max=3))
    yield sb
    await sb.aclose()


async def test_episodes_are_stored_rewarded_and_token_exact(sandbox, tmp_path):
    # Pinned by greedy sampling: with room for a program (200 tokens) SmolLM2 writes valid
    # proposals for these seeds, and its solvers both answer in the asked block and miss it,
    # every time. The parse-error and invalid branches of the proposer's reward are checked on
    # hand-made states (tests/test_recipe_rewards.py) and end to end in the malformed test.
    recipe = code_selfplay.build(
        sandbox=sandbox, n_proposals=2, n_solvers=2, proposer_max_tokens=200, solver_max_tokens=24,
        max_tool_turns=1, task_types=["deduction", "abduction"], temperature=0.0,
    )
    store = TraceStore(tmp_path / "traces.db")
    summary = await run_recipe(recipe, RunConfig(episodes=2, concurrency=2, progress=False), store=store)
    assert summary.completed == 2 and summary.errors == 0
    episodes = list(store.episodes(summary.run_id))
    assert len(episodes) == 2
    tokenizer = (await resolve_model(DEFAULT_MODEL_SPEC)).tokenizer
    solver_branches: set[str] = set()
    for ep in episodes:
        assert ep.status == "ok", ep.error
        assert {"valid_proposal", "solve_rate", "tasks", "from_buffer"} <= set(ep.metrics)
        proposers = [t for t in ep.turns if t.role == "proposer"]
        solvers = [t for t in ep.turns if t.role == "solver"]
        assert len(proposers) == 2 and len({t.group_id for t in proposers}) == 1
        # with fill_from_buffer the solvers always get a task, valid proposal or not
        assert ep.metrics["tasks"] >= 1 and len(solvers) == 2 * ep.metrics["tasks"]
        for turn in ep.turns:
            glue = check_token_exact(turn, tokenizer)
            for call in turn.tool_calls:  # tool output is template glue, never model-written
                assert call.result[:40] in "".join(glue)
            assert turn.reward is not None and turn.reward.reason, turn
        assert ep.metrics["valid_proposal"] == 1.0
        for t in proposers:  # valid: learnability of the solve rate (less a repetition penalty)
            assert t.parse_error is None and t.reward.components["valid"] == 1.0, t.reward
            rate = t.reward.components["solve_rate"]
            assert "solve rate" in t.reward.reason
            assert t.reward.value == pytest.approx((1 - rate) if 0 < rate < 1 else 0.0, abs=0.51)
        for t in solvers:
            assert "/task" in t.group_id
            # the worked example is prompt: shown before the task, never among the trained tokens
            roles = [m["role"] for m in t.messages]  # system, examples, task, the solver's reply
            assert roles[0] == "system" and roles[-2:] == ["user", "assistant"] and len(roles) >= 5
            assert roles[1:-2] == ["user", "assistant"] * ((len(roles) - 3) // 2)
            shown = [m["content"] for m in t.messages[2:-2:2]]
            assert shown in ([ex["answer"] for ex in exs] for exs in code_selfplay.SOLVER_EXAMPLES.values())
            assert all(answer.splitlines()[-2] in tokenizer.decode(t.prompt_token_ids) for answer in shown)
            assert len(t.token_ids) == len(t.mask) and t.mask[0] == 1
            if t.parse_error:
                solver_branches.add("parse error")
                assert t.reward.value == -1.0 and "no ```" in t.reward.reason
            else:
                solver_branches.add("answered")
                c = t.reward.components
                assert t.reward.value == (1.0 if c["correct"] else -0.5 if c["formatted"] else -1.0), t.reward
    assert solver_branches == {"parse error", "answered"}  # pinned: both branches ran
    store.close()


async def test_malformed_output_gets_zero_with_a_reason(sandbox):
    # one token cannot hold a fenced program or answer: every parse fails, nothing crashes
    recipe = code_selfplay.build(sandbox=sandbox, n_proposals=1, n_solvers=2, proposer_max_tokens=1,
                                 solver_max_tokens=1, proposer_tools=False, task_types=["induction"],
                                 format_rewards=False)
    ep = await run_episode(recipe.compile(), index=0, seed=3)
    assert ep.status == "ok", ep.error
    (proposer,) = [t for t in ep.turns if t.role == "proposer"]
    assert proposer.reward.value == 0.0  # format_rewards=False: no -1 for the missing layout
    assert "no ```python block defining f" in proposer.reward.reason
    solvers = [t for t in ep.turns if t.role == "solver"]
    assert ep.metrics["from_buffer"] == 1.0 and len(solvers) == 2
    for t in solvers:
        assert t.reward.value == 0.0 and "no ```python block" in t.reward.reason
    assert ep.metrics["valid_proposal"] == 0.0 and ep.metrics["solve_rate"] == 0.0
    assert ep.metrics["solver_format"] == 0.0


async def test_replayed_seed_tasks_are_solved_beside_the_proposals(sandbox):
    seeds = [{"program": "def f(xs):\n    return xs[0]", "inputs": ["[6, 2, 5]"]},
             {"program": "def f(s):\n    return s * 2", "inputs": ["'ab'"]}]
    buffer = code_selfplay.TaskBuffer(seeds=seeds)
    buffer.add("def f(x):\n    return x + 100", ["1"])  # a later, proposer-made item: never replayed
    # one proposer token cannot hold a program, so every task the solvers get is a replay
    recipe = code_selfplay.build(sandbox=sandbox, buffer=buffer, n_proposals=1, n_solvers=2,
                                 proposer_max_tokens=1, solver_max_tokens=1, proposer_tools=False,
                                 task_types=["deduction"], fill_from_buffer=False, replay_tasks=2)
    ep = await run_episode(recipe.compile(), index=0, seed=5)
    assert ep.status == "ok", ep.error
    assert ep.metrics["replayed"] == 2.0 and ep.metrics["tasks"] == 2.0 and ep.metrics["from_buffer"] == 0.0
    solvers = [t for t in ep.turns if t.role == "solver"]
    assert len(solvers) == 4 and len({t.group_id for t in solvers}) == 2  # one GRPO group per task
    shown = {s["program"] for s in seeds if any(s["program"] in t.messages[-2]["content"] for t in solvers)}
    assert shown == {s["program"] for s in seeds}
    # without replay (and no fill) the invalid proposal leaves the solvers nothing
    bare = code_selfplay.build(sandbox=sandbox, buffer=buffer, n_proposals=1, n_solvers=2, proposer_max_tokens=1,
                               proposer_tools=False, task_types=["deduction"], fill_from_buffer=False)
    ep = await run_episode(bare.compile(), index=0, seed=5)
    assert ep.metrics["replayed"] == 0.0 and not [t for t in ep.turns if t.role == "solver"]


async def test_without_the_proposer_the_solvers_practise_on_seed_tasks_only(sandbox):
    """`propose=False` (the learning bench's no-self-play ablation): no proposer turn, so
    nothing new enters the buffer; the solvers get a buffered seed task plus the replays."""
    seeds = [{"program": "def f(xs):\n    return xs[0]", "inputs": ["[6, 2, 5]"]},
             {"program": "def f(s):\n    return s * 2", "inputs": ["'ab'"]}]
    buffer = code_selfplay.TaskBuffer(seeds=seeds)
    recipe = code_selfplay.build(sandbox=sandbox, buffer=buffer, propose=False, n_solvers=2, solver_max_tokens=1,
                                 proposer_tools=False, task_types=["deduction"], replay_tasks=1)
    ep = await run_episode(recipe.compile(), index=0, seed=5)
    assert ep.status == "ok", ep.error
    assert not [t for t in ep.turns if t.role == "proposer"] and len(buffer) == 2
    assert ep.metrics["tasks"] == 2.0 and ep.metrics["from_buffer"] == 1.0 and ep.metrics["replayed"] == 1.0
    solvers = [t for t in ep.turns if t.role == "solver"]
    assert len(solvers) == 4 and all(any(s["program"] in t.messages[-2]["content"] for s in seeds) for t in solvers)
