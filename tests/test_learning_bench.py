"""The learning benchmark's measuring parts: the committed held-out set, the paired
statistics and the sampled evaluation it reports (with the real model)."""

from __future__ import annotations

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


def test_family_seeds_are_new_inputs_of_the_heldout_templates(learning):
    seeds = learning.family_seeds()
    assert seeds == learning.family_seeds()  # fixed rng: the ablation is repeatable
    assert len(seeds) == 2 * len(learning.FAMILIES) and all(len(s["inputs"]) == 3 for s in seeds)
    templates = [t.split("{")[0] for t, _ in learning.FAMILIES]
    assert all(any(s["program"].startswith(t) for t in templates) for s in seeds)


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
