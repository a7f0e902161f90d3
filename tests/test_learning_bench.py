"""The learning benchmark's measuring parts: the committed held-out set, the paired
statistics and the sampled evaluation it reports (with the real model)."""

from __future__ import annotations

import ast
import importlib.util
import json
import math
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "learning.py"


@pytest.fixture(scope="module")
def learning():
    spec = importlib.util.spec_from_file_location("bench_learning", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_heldout_set_is_what_the_generator_writes(learning, tmp_path):
    rows = learning.write_heldout(tmp_path)
    assert (tmp_path / learning.HELDOUT.name).read_bytes() == learning.HELDOUT.read_bytes()
    assert (tmp_path / learning.HELDOUT_EXTRA.name).read_bytes() == learning.HELDOUT_EXTRA.read_bytes()
    assert rows == learning.load_heldout() and len(rows) == 200
    assert len({r["id"] for r in rows}) == 200 and len({(r["program"], r["input"]) for r in rows}) == 200
    # no held-out program is one the bench's solver trains on from its seeds
    assert not {r["program"] for r in rows} & {s["program"] for s in learning.TRAIN_SEEDS}


def _suite(learning):
    """A fixed 4-problem suite: untrained greedy solves p0; best-of-2 solves p0, p1; selfplay
    (2 seeds) and seeds-only (1 seed) final scores below."""
    def run(final, curve_first):
        return {"final": {"correct": final}, "curve": [{"iteration": 1, "correct": curve_first},
                                                        {"iteration": 3, "correct": final}],
                "iterations": 4, "train_wall_s": 120.0, "valid_proposal": 0.5, "groups_with_variance": 0.4,
                "seed_program_fraction": 0.6, "contamination": {"heldout_programs_trained_on": 0}}

    base = {"greedy": {"correct": [1, 0, 0, 0]}, "sampled": {"correct": [1.0, 0.5, 0.0, 0.0]},
            "pass_at_k": [1, 1, 0, 0], "k": 2, "ids": ["p0", "p1", "p2", "p3"]}
    return {"base": base, "arms": {
        "selfplay": {0: run([1, 1, 1, 0], [1, 0, 0, 1]), 1: run([1, 1, 0, 0], [1, 0, 0, 0])},
        "seeds-only": {0: run([0, 1, 0, 0], [1, 0, 0, 0])}}}


def test_suite_summary_pairs_seed_averaged_scores_over_problems(learning):
    s = learning.summarize(_suite(learning), ["p0", "p1", "p2", "p3"])
    sp = s["arms"]["selfplay"]
    assert sp["accuracy_per_seed"] == [0.75, 0.5] and sp["accuracy"] == 0.625
    assert sp["gained_per_seed"] == [2, 1] and sp["lost_per_seed"] == [0, 0] and sp["gained_in_every_seed"] == ["p1"]
    assert sp["seed_sd"] == pytest.approx(math.sqrt(0.03125))
    comps = {c["name"]: c for c in s["comparisons"]}
    # selfplay per problem (seed mean) [1, 1, .5, 0] minus seeds-only [0, 1, 0, 0]: differences [1, 0, .5, 0]
    head = comps["selfplay - seeds-only"]
    assert s["comparisons"][0] is head and head["diff"] == pytest.approx(0.375)
    d = [1, 0, 0.5, 0]
    var = sum((x - 0.375) ** 2 for x in d) / 3
    assert head["paired_se"] == pytest.approx(math.sqrt(var / 4)) and head["in_se"] == pytest.approx(0.375 / math.sqrt(var / 4))
    # against the untrained model's best of k=2 samples [1, 1, 0, 0]: differences [0, 0, .5, 0]
    assert comps["selfplay - untrained best-of-2"]["diff"] == pytest.approx(0.125)
    # solved at either evaluation: [1, 1, .5, .5] (seed 0 solved p3 at iteration 1 only)
    assert comps["selfplay solved at any of its evaluations - untrained best-of-2"]["diff"] == pytest.approx(0.25)
    assert comps["seeds-only - untrained (greedy)"]["diff"] == 0
    assert [c["seed"] for c in s["per_seed"]] == [0] and s["per_seed"][0]["diff"] == 0.5
    lines = learning.report_lines(s)
    assert any(line.startswith("selfplay - seeds-only: 0.625 vs 0.250 = +0.375") for line in lines)


def test_suite_summary_of_a_cut_off_run_has_what_finished(learning):
    suite = _suite(learning)
    suite["arms"]["seeds-only"] = {}
    s = learning.summarize(suite, ["p0", "p1", "p2", "p3"])
    assert list(s["arms"]) == ["selfplay"] and s["per_seed"] == []
    assert [c["name"] for c in s["comparisons"]][0] == "selfplay - untrained best-of-2"
    assert learning.summarize({"base": None, "arms": {}}, ["p0"])["comparisons"] == []


def test_suite_resumes_at_the_first_unfinished_job_and_plots(learning, tmp_path):
    jobs = learning.suite_jobs([0, 1])
    assert jobs == [("base", None), ("selfplay", 0), ("seeds-only", 0), ("selfplay", 1), ("seeds-only", 1)]
    suite = _suite(learning)
    for arm, seed in jobs[:3]:
        d = learning.job_dir(tmp_path, arm, seed)
        d.mkdir()
        (d / "result.json").write_text(json.dumps(suite["base"] if seed is None else suite["arms"][arm][seed]))
    learning.job_dir(tmp_path, "selfplay", 1).mkdir()  # started, never finished: no result.json
    assert learning.pending_jobs(tmp_path, [0, 1]) == jobs[3:]
    summary = learning.write_report(tmp_path, [0, 1], ["unused: the base job's ids name the problems"])
    assert summary["arms"]["selfplay"]["seeds"] == [0]
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert "selfplay - seeds-only" in (tmp_path / "report.txt").read_text()
    for name in ("learning_curves.png", "learning_gains.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_paired_difference_and_its_standard_error(learning):
    mean, se = learning.paired_z([0, 0, 1, 1], [1, 0, 1, 0])  # differences 1, 0, 0, -1
    assert mean == 0 and se == pytest.approx(math.sqrt((2 / 3) / 4))
    mean, se = learning.paired_z([0.25, 0.5], [0.75, 1.0])  # fractional (sampled) scores pair the same way
    assert mean == 0.5 and se == 0


def test_shape_strategies_count_what_each_guess_solves(learning):
    problems = [
        {"program": "def f(x):\n    return x % 9", "output": "4"},        # the target itself
        {"program": "def f(xs):\n    return sum(xs)", "output": "7"},     # the target in a list
        {"program": "def f(xs):\n    return sorted(xs)", "output": "[1, 2]"},  # a list param, echoed
        {"program": "def f(x):\n    return x + 3", "output": "5"},        # needs 2: no guess works
        {"program": "def f(s):\n    return s.upper()", "output": "'AB'"},  # echo; a list raises
    ]
    assert learning.shape_strategies(problems) == {"echo": 3, "list": 1, "by_parameter_name": 3, "either": 4}


def test_family_seeds_are_new_inputs_of_the_heldout_templates(learning):
    seeds = learning.family_seeds()
    assert seeds == learning.family_seeds()  # fixed rng: the ablation is repeatable
    assert len(seeds) == 2 * len(learning.FAMILIES) and all(len(s["inputs"]) == 3 for s in seeds)
    templates = [t.split("{")[0] for t, _ in learning.FAMILIES]
    assert all(any(s["program"].startswith(t) for t in templates) for s in seeds)


@pytest.mark.asyncio
async def test_easy_training_seeds_are_valid_tasks_outside_the_heldout_set(learning):
    """`--buffer easy` seeds the solver's first tasks: each must pass the recipe's own
    validation (input dependence included) in the Docker sandbox, and none may be a
    held-out program, or the held-out set would be trained on from the start."""
    from agentplay.graphs._code_exec import build_task
    from agentplay.sandbox import Limits, SandboxConfig, open_sandbox
    from conftest import require_docker

    require_docker()
    heldout = {p["program"] for p in learning.load_heldout()}
    assert not heldout & {s["program"] for s in learning.TRAIN_SEEDS}
    sandbox = open_sandbox(config=SandboxConfig(backend="docker", pool_min=1, pool_max=2))
    try:
        tasks = [await build_task(sandbox, s["program"], s["inputs"], limits=Limits(wall_time_s=3, memory_mb=256),
                                  require_input_dependence=True) for s in learning.TRAIN_SEEDS]
    finally:
        await sandbox.aclose()
    assert [len(t.outputs) for t in tasks] == [3] * len(learning.TRAIN_SEEDS)
    kinds = {s["program"].split("(")[1].split(")")[0] for s in learning.TRAIN_SEEDS}
    assert kinds == {"x", "xs", "s"}  # integer, list and string arguments all occur
    changes_type = [type(ast.literal_eval(t.inputs[0])) is not type(ast.literal_eval(t.outputs[0])) for t in tasks]
    assert sum(changes_type) >= len(tasks) // 3  # and so do answers of another type than the target


@pytest.mark.asyncio
async def test_sampled_evaluation_is_seeded_per_problem(learning):
    """Before/after comparisons draw the same random numbers: two sampled evaluations of
    the same weights give the same per-problem scores, and a score is a fraction of k."""
    from agentplay.models import ModelConfig, load_model

    model = load_model(ModelConfig(backend="local", name="smollm2-135m-instruct"))
    problems = learning.load_heldout()[:3]
    try:
        first = await learning.evaluate(model, problems, "deduction", max_tokens=24, samples=4, temperature=1.0)
        second = await learning.evaluate(model, problems, "deduction", max_tokens=24, samples=4, temperature=1.0)
    finally:
        await model.aclose()
    assert first["correct"] == second["correct"] and sorted(first["samples"]) == sorted(second["samples"])
    assert all(c * 4 == int(c * 4) for c in first["correct"]) and first["samples_per_problem"] == 4
    assert first["accuracy"] == pytest.approx(sum(first["correct"]) / 3)


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_suite_runs_each_job_as_a_process_and_resumes_after_a_lost_job(learning, tmp_path):
    """The real suite end to end at toy size (4 problems, 1 seed, 1 iteration of 1 episode):
    every job writes its result, the report and both PNGs; a job whose result is lost (a
    run cut off mid-job) is the only one a re-run runs again."""
    import os
    import subprocess
    import sys

    from conftest import require_docker

    require_docker()
    out = tmp_path / "suite"
    cmd = [sys.executable, str(BENCH), "--suite", "--seeds", "0", "--iterations", "1", "--eval-every", "1",
           "--episodes", "1", "--heldout-limit", "4", "--output-dir", str(out), "--recipe-options",
           json.dumps({"task_types": ["deduction"], "n_proposals": 2, "n_solvers": 2, "proposer_tools": False,
                       "proposer_max_tokens": 64, "solver_max_tokens": 24, "temperature": 0.7,
                       "format_rewards": False, "replay_tasks": 1})]
    env = {**os.environ, "AGENTPLAY_TORCH_THREADS": "1"}
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500)
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stdout.count("== ") == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_problems"] == 4 and set(summary["arms"]) == {"selfplay", "seeds-only"}
    assert summary["arms"]["seeds-only"]["valid_proposal"] == [None]  # no proposer in that arm
    for name in ("learning_curves.png", "learning_gains.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    (out / "seeds-only-seed0" / "result.json").unlink()
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500)
    assert again.returncode == 0, again.stderr[-2000:]
    assert [line.split(":")[0] for line in again.stdout.splitlines() if line.startswith("== ")] == ["== seeds-only seed 0"]
