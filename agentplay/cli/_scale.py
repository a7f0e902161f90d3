"""`--executor`, `--address`, `--workers`, `--endpoints`: shared by `agentplay run` and `train`."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["ScaleOptions"]

_FORWARDED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM", "OPENAI_BASE_URL",
                  "OPENAI_API_KEY")
"""Set in each Ray worker as on the driver (plus every AGENTPLAY_* variable): a worker on
another node does not inherit the driver's shell."""


class ScaleOptions(BaseModel):
    """Where a run's episodes execute and which servers answer its model calls."""

    model_config = ConfigDict(extra="forbid")

    executor: str = "local"
    """`local`: this process's event loop; `ray`: rollout worker actors on a Ray cluster."""
    address: str | None = None
    """Ray cluster to join; None starts a private one on 127.0.0.1."""
    workers: int = 2
    """Ray worker actors."""
    endpoints: str | None = None
    """Comma-separated serving URLs for an `openai:` model."""

    def urls(self) -> list[str]:
        return [u.strip() for u in (self.endpoints or "").split(",") if u.strip()]

    def plan(self, recipe: str, *, model: str | None, options: dict[str, Any], concurrency: int,
             register_local: bool = True) -> Callable[..., Any]:
        """Check the options (ValueError naming the flag) and return a factory of the executor
        (None for local; `follow=` a served model handle for Ray). Local runs with --endpoints
        get the endpoint pool registered here unless `register_local` is False."""
        kind: Literal["local", "ray"]
        if self.executor not in ("local", "ray"):
            raise ValueError(f"--executor: expected local or ray, got {self.executor!r}")
        kind = "ray" if self.executor == "ray" else "local"
        urls = self.urls()
        if self.endpoints is not None and not urls:
            raise ValueError("--endpoints: give at least one URL, e.g. http://127.0.0.1:8000/v1")
        if urls and not (model or "").startswith("openai:"):
            raise ValueError(f"--endpoints: needs --model openai:<served model name>, got --model {model!r}")
        if kind == "local":
            if self.address is not None:
                raise ValueError("--address: only used with --executor ray")
            if urls and model and register_local:
                from agentplay._executors import register_endpoints

                register_endpoints(model, urls)
            return lambda follow=None: None
        from agentplay._executors import RayConfig, RayExecutor, RecipeRef

        env = {k: v for k, v in os.environ.items() if k in _FORWARDED_ENV or k.startswith("AGENTPLAY_")}
        try:
            ref = RecipeRef(recipe=recipe, model=model, options=options, endpoints=urls, env=env)
            config = RayConfig(address=self.address, workers=self.workers, concurrency=concurrency)
        except ValidationError as exc:
            raise ValueError("; ".join(f"--{e['loc'][0]}: {e['msg']}" for e in exc.errors())) from None
        return lambda follow=None: RayExecutor(ref, config, follow=follow)
