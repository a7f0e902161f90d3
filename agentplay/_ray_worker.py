"""The Ray actor that runs episodes: one per worker process, many episodes on its loop.

It receives a recipe *reference*, not a recipe: LangGraph graphs and reward
closures do not pickle, and every worker should own its model clients, tools
and sandbox pool anyway. Episodes go through `execute_spec`, the same path the
local executor takes; the finished Episode goes back to the driver, which alone
writes the store.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from agentplay._executors import EpisodeSpec, RecipeRef, execute_spec, register_endpoints
from agentplay.recipe import CompiledRecipe
from agentplay.traces import Episode

__all__ = ["RolloutWorker"]


class RolloutWorker:
    """Made remote by the driver (`ray.remote(RolloutWorker)`); async methods make it an asyncio actor."""

    def __init__(self, ref: RecipeRef, name: str) -> None:
        self.ref = ref
        self.name = name
        self._compiled: CompiledRecipe | None = None
        self._override: str | None = None  # --model for a ready Recipe, entered around each run (a ContextVar)

    async def setup(self) -> dict[str, Any]:
        """Build the recipe and its model clients once; a failure here is a configuration error."""
        from agentplay._loading import load_recipe

        os.environ.update(self.ref.env)
        recipe, model_applied = load_recipe(self.ref.recipe, model=self.ref.model, options=dict(self.ref.options))
        self._compiled = recipe.compile()
        if (self.ref.endpoints or self.ref.tokenizer or self.ref.retry_deadline_s) and self.ref.model:
            register_endpoints(self.ref.model, self.ref.endpoints, tokenizer=self.ref.tokenizer,
                               retry_deadline_s=self.ref.retry_deadline_s)
        if not model_applied and self.ref.model:
            self._override = self.ref.model  # a ready Recipe: --model still wins
        return {"name": self.name, "pid": os.getpid(), "host": socket.gethostname()}

    async def run(self, spec: EpisodeSpec, request_model: str | None = None,
                  adapters: dict[str, str] | None = None, adapter_version: int | None = None) -> Episode:
        """`request_model`: the served name the driver's model uses now (an adapter after a
        training step); workers send the same, so rollouts run on the weights just trained.
        `adapters` / `adapter_version`: what the driver's pool loaded, so this worker's pool
        can replay them to a server that restarted without them."""
        if self._compiled is None:
            raise RuntimeError(f"worker {self.name}: run() before setup()")
        if request_model is not None and self.ref.model:
            from agentplay._registry import resolve_model

            model = await resolve_model(self.ref.model)
            if adapters and hasattr(model, "follow"):
                model.follow(request_model, adapters, adapter_version)
            elif getattr(model, "request_model", request_model) != request_model:
                model.request_model = request_model  # type: ignore[attr-defined]
        from agentplay._registry import override_models

        with override_models(self._override):
            return await execute_spec(self._compiled, spec, worker=self.name)

    async def close(self) -> None:
        from agentplay._registry import close_models

        await close_models()
