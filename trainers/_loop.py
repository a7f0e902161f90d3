"""The self-play training loop: rollouts -> batch -> advantages -> loss -> update -> sync.

Each iteration's rollouts are a run of their own in the store (`<run>/it00003`),
written with `run_recipe(resume=True)`: a kill during rollouts leaves the stored
episodes in place and the resumed iteration runs only the missing indexes, with
the same weights (those of the last checkpoint), so nothing is repeated or skipped.
The checkpoint folder's atomic rename is the commit point of an iteration; the
new weights are published to the serving model after it, and the store's metrics
and cursor follow. A resumed run publishes the checkpoint's weights again under
the checkpoint's weight version (see `_versions.py`) and re-writes the metrics if
a kill fell in between.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from agentplay._kill_points import KILL_AT_ENV, kill_point
from agentplay.errors import AgentplayError

from ._advantages import AdvantageStats, TrainSample, compute_advantages
from ._checkpoint import CheckpointState, latest_checkpoint, load_checkpoint, save_checkpoint
from ._config import TrainConfig
from ._distributed import data_parallel
from ._learner import GRPOLearner
from ._token_ids import token_id_problem
from ._versions import IterationVersions
from ._weights_sync import WeightSyncError, sync_weights

log = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = ["NothingToTrainError", "SelfPlayTrainer", "TrainError", "TrainSummary", "no_sample_verdict",
           "rollout_run_id", "train"]


class TrainError(AgentplayError, RuntimeError):
    """A training run cannot start or continue as configured (the message says why and how)."""


class NothingToTrainError(TrainError):
    """An iteration had no trainable sample because things failed (episode errors, reward fn
    failures, missing token ids), not because its groups were uninformative."""


class TrainSummary(BaseModel):
    """What `train` did: iterations run in this call and the final figures."""

    run_id: str
    first_iteration: int
    """Where this call started (0, or after the resumed checkpoint)."""
    last_iteration: int
    weight_version: int | None = None
    metrics: list[dict[str, float]] = Field(default_factory=list)
    """One dict per iteration run by this call."""
    skipped_steps: dict[int, str] = Field(default_factory=dict)
    """Iteration -> why it took no optimizer step (nothing trainable, and what was left out)."""


def no_sample_verdict(stats: AdvantageStats, max_error_fraction: float) -> tuple[str, bool]:
    """(why an iteration has no trainable sample, whether that is a failure that must stop the run).

    Zero-variance groups (every sample rewarded alike) and roles weighted 0 are a batch with
    nothing to learn: skip the step and go on. Turns lost to failures (episode errors, reward
    fns that raised, missing token ids or rewards) are a broken run when nothing else explains
    the empty batch, or when they are more than `max_error_fraction` of the turns left out.
    """
    parts = [f"{n} turns: {why}" for why, n in stats.exclusions().items()]
    why = "no trainable sample (" + ("; ".join(parts) if parts else "no turns at all") + ")"
    failed, uninformative = stats.failed_turns, stats.uninformative_turns
    if failed == 0 and uninformative == 0:
        return why, True  # no episode produced a turn of a trainable role
    fatal = failed > 0 and (uninformative == 0 or failed / (failed + uninformative) > max_error_fraction)
    return why, fatal


def rollout_run_id(run_id: str, iteration: int) -> str:
    return f"{run_id}/it{iteration:05d}"


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def _resolve_recipe(ref: Any, model: str, options: dict[str, Any]) -> Any:
    """A CompiledRecipe from a Recipe, a built-in name or ``path/to/file.py:attr``."""
    from agentplay._loading import load_recipe
    from agentplay.recipe import CompiledRecipe, Recipe

    if isinstance(ref, CompiledRecipe):
        return ref
    if isinstance(ref, Recipe):
        return ref.compile()
    try:
        recipe, _ = load_recipe(str(ref), model=model, options=options)
    except (ValueError, TypeError, KeyError, FileNotFoundError, AttributeError) as exc:
        raise TrainError(str(exc)) from exc
    return recipe.compile()


class TimeBudget:
    """Wall-clock budget of a run: stop before an iteration that would end past it, taking
    the last iteration's length as the estimate. Time in callbacks (evaluation) is paused
    out, so adding an evaluation does not shorten the training it measures."""

    def __init__(self, limit_s: float | None, clock: Callable[[], float] = time.perf_counter):
        self.limit_s, self._clock = limit_s, clock
        self._began, self._paused, self.last_iteration_s = clock(), 0.0, 0.0

    @property
    def spent_s(self) -> float:
        return self._clock() - self._began - self._paused

    def allows_another(self) -> bool:
        return self.limit_s is None or self.spent_s + self.last_iteration_s <= self.limit_s

    def pause(self, seconds: float) -> None:
        self._paused += seconds


def _trainable_copy(served: Any, cfg: TrainConfig) -> tuple[Any, Any]:
    """The trainer's own weights, loaded from the folder the served model came from.

    A separate module because rollouts of the next iteration must see whole
    updates only (never a half-applied optimizer step), the engine keeps its
    module in eval mode with its own dtype and injected adapters, and TRL patches
    the forward of the module it trains; 135M parameters cost ~0.5 GB.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = cfg.base_model_path or getattr(served, "model_dir", None)
    if path is None:
        from agentplay.models._weights import PACKAGED_MODELS, default_model_dir, local_model_dir

        local = cfg.model.removeprefix("local:")
        path = local_model_dir(local) if local in PACKAGED_MODELS else default_model_dir()
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    tok = getattr(served, "tokenizer", None)
    return model, tok if tok is not None else AutoTokenizer.from_pretrained(str(path))


class SelfPlayTrainer:
    """Owns the served model handle, the learner and the store for one training run."""

    def __init__(self, cfg: TrainConfig, *, recipe: Any = None, served: Any = None, store: Any = None,
                 executor: Any = None):
        self.cfg = cfg
        self.executor = executor
        """Where rollouts run (`agentplay._executors`); None: this event loop."""
        self._recipe_ref = recipe if recipe is not None else cfg.recipe
        self._served = served
        self._store = store
        self.learner: GRPOLearner | None = None
        self.rae_baselines: dict[str, dict[str, float]] = {}
        """RAE baselines carried across iterations (restored from the checkpoint on resume)."""
        self.on_iteration: Callable[[int, dict[str, float]], Any] | None = None
        """Called (and awaited if async) after each iteration is committed: progress, evaluations."""
        self.weight_version = 0
        """The policy's version: optimizer steps committed so far (restored from the checkpoint)."""
        self.history: list[IterationVersions] = []
        """Per iteration so far: the version that sampled its rollouts and the one it produced."""
        self._iteration = -1
        self.skip_reasons: dict[int, str] = {}
        """Iteration -> why it took no optimizer step (read by `on_iteration` callbacks)."""
        self._train_thread: ThreadPoolExecutor | None = None
        self.dp = data_parallel()
        """Data-parallel place: rank 0 rolls out, writes the store and checkpoints, syncs the server."""

    async def _setup(self, resume: bool) -> tuple[Any, Any, int]:
        from agentplay._registry import resolve_model
        from agentplay.traces import TraceStore

        cfg = self.cfg
        cfg.output_dir.mkdir(parents=True, exist_ok=True)
        ckpt = latest_checkpoint(cfg.output_dir)
        if ckpt is not None and not resume:
            raise TrainError(f"output_dir: {cfg.output_dir} already holds {ckpt.name}; pass --resume to continue it or choose an empty --output-dir")
        main = self.dp.is_main
        if main:
            store = self._store if self._store is not None else TraceStore(cfg.store)
            store.get_or_create_run(cfg.run_name, recipe="train", config=cfg.model_dump(mode="json"))
        self.dp.barrier()  # other processes only read the store the main one created
        if not main:
            store = self._store if self._store is not None else TraceStore(cfg.store, read_only=True)
        self._store = store
        served = self._served if self._served is not None or not main else await resolve_model(cfg.model)
        self._served = served
        compiled = _resolve_recipe(self._recipe_ref, cfg.model, dict(cfg.recipe_options))
        model, tok = _trainable_copy(served, cfg)
        # seeded: TRL wraps the LoRA adapter (random A matrices) before transformers seeds anything,
        # so without this two runs with the same --seed start from different adapters
        _seed_everything(cfg.seed)
        try:
            self.learner = GRPOLearner(model, tok, cfg, tensorboard_dir=cfg.output_dir / "tensorboard")
        except ValueError as exc:  # device / dtype this machine cannot give
            raise TrainError(str(exc)) from exc
        self.dp.broadcast_parameters(self.learner.model)  # every process starts from the main one's weights
        self._arm_step_kill_point()
        start = 0
        if ckpt is not None:
            t = self.learner.trainer
            state = load_checkpoint(ckpt, t.model, t.optimizer, t.lr_scheduler)
            t.state.global_step = state.global_step
            self.rae_baselines = {role: dict(b) for role, b in state.rae_baselines.items()}
            # checkpoints from before versions were the policy's: the optimizer steps are the versions
            self.weight_version = state.weight_version if state.weight_version is not None else state.global_step
            self.history = list(state.versions)
            start = state.iteration + 1
            # the serving model restarted with base weights, or holds this checkpoint's (a kill came
            # after the publish): either way it gets exactly the checkpoint's weights and version
            t0 = time.perf_counter()
            if main:
                await self._publish(state.iteration)
            if main and not any(p.iteration == state.iteration
                                for p in store.metrics(cfg.run_name, name="iteration")):
                # the kill fell between checkpoint and store: log what the checkpoint holds
                self._log(state.iteration, {**state.metrics, "time/update_s": time.perf_counter() - t0})
        if main:
            self._check_served_version()
        return compiled, store, start

    def _arm_step_kill_point(self) -> None:
        """`AGENTPLAY_TEST_KILL_AT=step@k` kills inside iteration k's optimizer step (crash tests)."""
        if not os.environ.get(KILL_AT_ENV):
            return
        assert self.learner is not None
        opt = self.learner.trainer.optimizer
        opt = getattr(opt, "optimizer", opt)  # accelerate's wrapper, if any
        assert opt is not None, "the learner's trainer made its optimizer in __init__"
        opt.register_step_pre_hook(lambda *_: self._before_step_kill_point())

    def _before_step_kill_point(self) -> None:
        """With rollouts ahead (--async-level > 0) a kill inside iteration k's step is meant to find
        iteration k+1's rollouts under way; on a busy machine the step can come first, so the test
        hook waits (bounded) for one of them to be stored instead of racing it."""
        if self.cfg.async_level > 0 and os.environ.get(KILL_AT_ENV) == f"step@{self._iteration}":
            from agentplay.traces import TraceStore

            ahead = rollout_run_id(self.cfg.run_name, self._iteration + 1)
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and self._iteration + 1 < self.cfg.iterations:
                with TraceStore(self._store.path, read_only=True) as peek:  # its own connection: another thread
                    if any(True for _ in peek.episodes(ahead)):
                        break
                time.sleep(0.2)
        kill_point("step", self._iteration)

    def _check_served_version(self) -> None:
        served = self._served.weight_version
        if served is not None and served != self.weight_version:
            raise TrainError(
                f"model: the serving model reports weight version {served}, the policy is at version"
                f" {self.weight_version}; it serves other weights than the trainer's (another run's"
                " adapter, or it was updated by someone else): restart it or use a fresh --output-dir"
            )

    async def _publish(self, iteration: int) -> None:
        """Give the serving model the trainer's weights under the policy's version. Version 0
        is the initial weights, which a (restarted) server already holds: nothing to send."""
        assert self.learner is not None
        if self.weight_version == 0:
            return
        adapters = self.cfg.output_dir / "adapters"
        try:
            await sync_weights(
                self._served,
                self.learner.model,
                lora=self.cfg.lora,
                adapter_name=self.cfg.adapter_name,
                adapter_dir=adapters / f"it{iteration:05d}",
                version=self.weight_version,
                before_load=lambda: kill_point("publish", iteration),
            )
        except WeightSyncError as exc:  # this model cannot take these weights at all: no point resuming
            raise TrainError(str(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - a server gone mid-update: the checkpoint keeps the weights
            raise TrainError(
                f"model: the serving model did not take weight version {self.weight_version}"
                f" ({type(exc).__name__}: {exc}); checkpoint-{iteration:05d} holds those weights:"
                " once the server answers again, run the same command with --resume"
            ) from exc
        # the server holds the adapter in memory once loaded; keep the last two on disk
        for old in sorted(adapters.glob("it*"))[:-2] if self.cfg.lora else []:
            shutil.rmtree(old, ignore_errors=True)

    def _log(self, iteration: int, metrics: dict[str, float]) -> None:
        with self._store.transaction():
            self._store.log_metrics(self.cfg.run_name, iteration, metrics)
            self._store.set_cursor(self.cfg.run_name, "iteration", iteration)
        assert self.learner is not None
        self.learner.report(metrics, step=iteration)

    async def rollouts(self, compiled: Any, iteration: int) -> list[Any]:
        from agentplay import RunConfig, run_recipe
        from agentplay._registry import override_models

        cfg = self.cfg
        run_id = rollout_run_id(cfg.run_name, iteration)
        with override_models(self._served):
            await run_recipe(
                compiled,
                RunConfig(episodes=cfg.episodes_per_iteration, concurrency=cfg.concurrency, resume=True,
                          seed=cfg.seed * 1_000_003 + iteration, run_id=run_id, progress=False,
                          max_error_fraction=cfg.max_error_fraction, episode_retries=cfg.episode_retries,
                          strict_rewards=cfg.strict_rewards),
                store=self._store, executor=self.executor,
                on_episode=lambda _: kill_point("rollout", iteration),
            )
        # by index, not by the order they finished in: a resumed iteration builds the same batch
        return sorted(self._store.episodes(run_id), key=lambda ep: ep.index)

    def _metrics(self, episodes: list[Any], samples: list[TrainSample], stats: AdvantageStats,
                 version: int | None, headline: Sequence[str] = ()) -> dict[str, float]:
        m: dict[str, float] = {
            "episodes": float(len(episodes)),
            "samples": float(len(samples)),
            "groups": float(stats.groups),
            "dropped_groups": float(stats.dropped_groups),
            "dropped_group_fraction": stats.dropped_group_fraction,
            "skipped_turns": float(stats.skipped_no_group + stats.skipped_no_reward + stats.skipped_no_tokens),
            "excluded/episode_error": float(stats.skipped_episode_error),
            "excluded/reward_failed": float(stats.skipped_reward_failed),
            "excluded/reward_failed_group": float(stats.dropped_reward_failed_turns),
            "excluded/no_tokens": float(stats.skipped_no_tokens),
            "excluded/no_reward": float(stats.skipped_no_reward),
            "excluded/zero_variance": float(stats.dropped_zero_variance_turns),
            "errored_episodes": float(sum(ep.status == "error" for ep in episodes)),
            "trained_tokens": float(sum(sum(s.turn.mask or []) for s in samples)),
        }
        for role, rewards in sorted(stats.per_role_rewards.items()):
            m[f"reward/{role}"] = _mean(rewards)
        for role, count in sorted(stats.filtered.items()):
            m[f"filtered/{role}"] = float(count)
        if stats.dropped_zero_advantage:
            m["dropped_zero_advantage"] = float(stats.dropped_zero_advantage)
        for role, envs in sorted(stats.rae_baselines.items()):
            for env, value in sorted(envs.items()):
                m[f"rae_baseline/{role}/{env}"] = value
        names = sorted({k for ep in episodes for k in ep.metrics})
        for name in names:
            m[f"episode/{name}"] = _mean([float(ep.metrics[name]) for ep in episodes if name in ep.metrics])
        for name in headline:  # the recipe's headline figures, for the log line, summary table and UI
            if f"episode/{name}" in m:
                m[f"headline/{name}"] = m[f"episode/{name}"]
        lags = [version - s.turn.weight_version for s in samples
                if version is not None and s.turn.weight_version is not None]
        m["off_policy_lag/mean"] = _mean([float(x) for x in lags])
        m["off_policy_lag/max"] = float(max(lags)) if lags else 0.0
        # synchronous training samples every turn with the policy's current weights, asynchronous
        # training with weights at most async_level versions behind
        stale = sum(1 for x in lags if not 0 <= x <= self.cfg.async_level)
        if stale:
            log.warning("%d of %d turns were sampled by weight versions more than %d behind or ahead of the"
                        " policy's %s (max lag %s): the serving model held other weights (restarted, or"
                        " updated by someone else)", stale, len(lags), self.cfg.async_level, version,
                        m["off_policy_lag/max"])
        return m

    async def run(self, *, resume: bool = False) -> TrainSummary:
        cfg = self.cfg
        compiled, store, start = await self._setup(resume)
        assert self.learner is not None
        summary = TrainSummary(run_id=cfg.run_name, first_iteration=start, last_iteration=start - 1,
                               weight_version=self.weight_version)
        main = self.dp.is_main  # data-parallel: only the main process writes the store
        if main:
            store.set_run_status(cfg.run_name, "running")
        try:
            await self._iterations(compiled, store, start, summary)
        except BaseException:
            if main:
                store.set_run_status(cfg.run_name, "failed")  # a health stop, a crash or a kill alike
            self.learner.close()
            raise
        if main:
            store.set_run_status(cfg.run_name, "finished")
        self.learner.close()
        return summary

    async def _iterations(self, compiled: Any, store: Any, start: int, summary: TrainSummary) -> None:
        cfg = self.cfg
        assert self.learner is not None
        budget = TimeBudget(cfg.time_budget_s)
        ahead = _RolloutsAhead(self, compiled, cfg.async_level, cfg.iterations)
        try:
            await self._iterate(compiled, store, start, budget, ahead, summary)
        finally:
            await ahead.cancel()  # past the budget or failed: stored episodes stay for --resume
            if self._train_thread is not None:
                self._train_thread.shutdown(wait=True)
                self._train_thread = None

    async def _iterate(self, compiled: Any, store: Any, start: int, budget: TimeBudget, ahead: _RolloutsAhead,
                       summary: TrainSummary) -> None:
        cfg = self.cfg
        assert self.learner is not None
        main = self.dp.is_main
        for it in range(start, cfg.iterations):
            if not self.dp.broadcast(budget.allows_another()):
                break
            self._iteration = it
            t0 = time.perf_counter()
            episodes = await ahead.episodes(it) if main else []
            self.dp.barrier()
            if not main:  # the same batch as the main process: its episodes, read back by index
                episodes = sorted(store.episodes(rollout_run_id(cfg.run_name, it)), key=lambda ep: ep.index)
            if (problem := token_id_problem(episodes, it)) is not None:
                raise TrainError(problem)
            t1 = time.perf_counter()
            rollout_version = self.weight_version
            recipe = compiled.recipe
            samples, stats = compute_advantages(
                episodes, scale_rewards=cfg.scale, zero_variance=cfg.zero_variance, role_weights=cfg.role_weights,
                estimators=recipe.advantages, filters=recipe.filters, rae_baselines=self.rae_baselines,
                reward_failed_groups=cfg.reward_failed_groups,
            )
            metrics = self._metrics(episodes, samples, stats, rollout_version, recipe.headline_metrics)
            if samples:
                metrics.update(await self._step(samples, cfg.seed * 1_000_003 + it))
                self.weight_version = rollout_version + 1
            else:  # nothing to learn from: no step, same version, but the iteration counts
                why, fatal = no_sample_verdict(stats, cfg.max_error_fraction)
                if fatal:
                    raise NothingToTrainError(
                        f"iteration {it}: {why}. That is a failure, not an uninformative batch, so no "
                        f"optimizer step was taken and training stops; the rollouts are in the store under "
                        f"run {rollout_run_id(cfg.run_name, it)!r} (`agentplay traces list`)."
                    )
                summary.skipped_steps[it] = why
                self.skip_reasons[it] = why
            metrics.update({
                "iteration": float(it), "optimizer_step": float(self.learner.global_step),
                "skipped_step": 0.0 if samples else 1.0,  # nothing to learn from: no step, same version
                "rollout_weight_version": float(rollout_version), "weight_version": float(self.weight_version),
                "time/rollout_s": t1 - t0, "time/train_s": time.perf_counter() - t1,
            })
            self.history.append(IterationVersions(iteration=it, rollout_version=rollout_version,
                                                  weight_version=self.weight_version))
            t = self.learner.trainer
            self.rae_baselines = stats.rae_baselines  # committed with the checkpoint below
            if not main:  # the main process commits, publishes and logs the same weights
                summary.metrics.append(metrics)
                summary.last_iteration, summary.weight_version = it, self.weight_version
                continue
            # commit, then publish: the serving model only ever holds checkpointed weights
            state = CheckpointState(
                iteration=it, global_step=self.learner.global_step, weight_version=self.weight_version,
                lora=cfg.lora, metrics=metrics, versions=self.history, rae_baselines=stats.rae_baselines,
            )
            await self._on_train_thread(lambda: save_checkpoint(
                cfg.output_dir, state, t.model, t.optimizer, t.lr_scheduler, keep=cfg.keep_checkpoints))
            kill_point("checkpoint", it)
            t2 = time.perf_counter()
            if self.weight_version != rollout_version:
                await self._publish(it)
            kill_point("sync", it)
            metrics["time/update_s"] = time.perf_counter() - t2
            self._log(it, metrics)
            summary.metrics.append(metrics)
            summary.last_iteration = it
            summary.weight_version = self.weight_version
            budget.last_iteration_s = time.perf_counter() - t0
            if self.on_iteration is not None:
                t4 = time.perf_counter()
                maybe = self.on_iteration(it, metrics)
                if inspect.isawaitable(maybe):
                    await maybe
                budget.pause(time.perf_counter() - t4)


    async def _step(self, samples: list[TrainSample], seed: int) -> dict[str, float]:
        """One optimizer step. Synchronous training runs it inline; with rollouts in flight it runs
        on the trainer's own thread (its own torch threads) so the event loop keeps serving them."""
        assert self.learner is not None
        learner = self.learner

        def step() -> dict[str, float]:
            # seeded per iteration: a resumed step draws what the uninterrupted one drew
            # (dropout, sampling in user losses), whatever the rollouts consumed before it
            _seed_everything(seed)
            return learner.step(samples)

        return await self._on_train_thread(step)

    async def _on_train_thread(self, fn: Callable[[], T]) -> T:
        """`fn()` inline when training is synchronous; else on the trainer's thread, whose torch
        intra-op threads are `train_threads` (set on that thread, as the engine sets its own)."""
        if self.cfg.async_level == 0:
            return fn()
        if self._train_thread is None:
            import torch

            threads = self.cfg.train_threads
            self._train_thread = ThreadPoolExecutor(
                1, thread_name_prefix="agentplay-train",
                initializer=(lambda: torch.set_num_threads(threads)) if threads else None)
        return await asyncio.get_running_loop().run_in_executor(self._train_thread, fn)


class _RolloutsAhead:
    """Rollouts of the iterations the trainer has not reached yet, at most `level` ahead.

    When iteration `it` begins, the policy holds every step up to `it - 1`; rollouts of
    iterations up to `it + level` may start now, on the weights served now. Iteration
    `it + level` trains after at most `level` more steps, so none of its samples is more
    than `level` versions behind (the bound on stored versions `test_trainer_async` checks).
    Each iteration's rollouts are still their own resumable run in the store, and an
    iteration trains only after its run is complete: a kill leaves every stored episode of
    later iterations in place and the resumed run completes them; none is trained twice.
    `level=0` starts nothing ahead: rollouts run inline, exactly the synchronous loop.
    Only the main process of a data-parallel run rolls out (the others read the store).
    """

    def __init__(self, trainer: SelfPlayTrainer, compiled: Any, level: int, iterations: int) -> None:
        self._trainer, self._compiled, self._level, self._end = trainer, compiled, level, iterations
        self._tasks: dict[int, asyncio.Task[list[Any]]] = {}

    async def episodes(self, it: int) -> list[Any]:
        if self._level == 0:
            return await self._trainer.rollouts(self._compiled, it)
        for j in range(it, min(it + self._level, self._end - 1) + 1):
            if j not in self._tasks:
                self._tasks[j] = asyncio.create_task(self._trainer.rollouts(self._compiled, j),
                                                     name=f"agentplay-rollouts-it{j}")
        return await self._tasks.pop(it)

    async def cancel(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()

def _seed_everything(seed: int) -> None:
    from transformers import set_seed

    set_seed(seed % 2**32)


async def train(cfg: TrainConfig, *, resume: bool = False, recipe: Any = None, served: Any = None,
                store: Any = None) -> TrainSummary:
    """Run (or continue) a self-play training run as configured."""
    return await SelfPlayTrainer(cfg, recipe=recipe, served=served, store=store).run(resume=resume)
