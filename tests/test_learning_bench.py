"""The learning benchmark's measuring parts: the committed held-out set, the paired
statistics and the sampled evaluation it reports (with the real model)."""

from __future__ import annotations

import ast
import importlib.util
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
    rows = learning.write_heldout(tmp_path / "heldout.jsonl")
    assert (tmp_path / "heldout.jsonl").read_bytes() == learning.HELDOUT.read_bytes()
    assert len(rows) == 80 and len({r["id"] for r in rows}) == 80


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
