"""One real training iteration of a self-play recipe on SmolLM2: the shape the recipes'
end-to-end tests share (test_agent0.py, test_spice.py).

The checks every such run must pass live here: the iteration ends, each episode is stored
`ok`, every turn is token-exact, and the optimizer stepped once (some group had reward
variance). The test then checks what its recipe adds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _trace_checks import check_token_exact

from agentplay import Recipe
from agentplay.models import DEFAULT_MODEL_SPEC, load_model
from agentplay.traces import Episode, TraceStore
from agentplay.trainers import SelfPlayTrainer, TrainConfig, rollout_run_id


@dataclass
class TrainedIteration:
    episodes: list[Episode]
    """The iteration's episodes, by index."""
    metrics: dict[str, float]
    """Every metric the trainer logged for the run, by name."""
    tokenizer: Any


async def train_one_iteration(recipe: Recipe, tmp_path: Path, *, run_name: str, episodes: int) -> TrainedIteration:
    """Train `recipe` for one iteration of `episodes` episodes (2 at a time) on its own SmolLM2."""
    served = load_model(DEFAULT_MODEL_SPEC)  # its own engine: the step must not reach other tests' models
    store = TraceStore(tmp_path / "traces.db")
    try:
        cfg = TrainConfig(recipe=recipe.name, iterations=1, episodes_per_iteration=episodes, concurrency=2,
                          store=tmp_path / "traces.db", output_dir=tmp_path / "out", run_name=run_name,
                          learning_rate=1e-6, micro_batch_size=8, report_to=[])
        summary = await SelfPlayTrainer(cfg, recipe=recipe, served=served, store=store).run()
        assert summary.last_iteration == 0
        stored = sorted(store.episodes(rollout_run_id(run_name, 0)), key=lambda e: e.index)
        assert len(stored) == episodes and all(ep.status == "ok" for ep in stored), [ep.error for ep in stored]
        for ep in stored:
            for turn in ep.turns:
                check_token_exact(turn, served.tokenizer)
        metrics = {p.name: p.value for p in store.metrics(run_name)}
        # the iteration trained (some group had reward variance) and the optimizer stepped once
        assert metrics["samples"] > 0 and metrics["optimizer_step"] == 1.0 and metrics["weight_version"] == 1.0
        return TrainedIteration(episodes=stored, metrics=metrics, tokenizer=served.tokenizer)
    finally:
        store.close()
        await served.aclose()
