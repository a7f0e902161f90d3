"""`--executor`, `--address`, `--workers`, `--base-url`, `--tokenizer`, `--retry-deadline`,
`--decode-dtype`: shared by `agentplay run` and `train`.

`--base-url` is the serving URL's one name (what the openai client, vLLM's tools and
OPENAI_BASE_URL call it); several comma-separated URLs make a pool. `--endpoints`,
its earlier name, stays as a hidden alias.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["ScaleOptions"]

_FORWARDED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM", "OPENAI_BASE_URL",
                  "OPENAI_API_KEY")
"""Set in each Ray worker as on the driver (plus every AGENTPLAY_* variable): a worker on
another node does not inherit the driver's shell."""


class ScaleOptions(BaseModel):
    """Where a run's episodes execute and which servers answer its model calls."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    executor: Literal["local", "ray"] = "local"
    """Where episodes run: `local` (this process's event loop) or `ray` (rollout worker actors on a Ray
    cluster; training needs an HTTP-served model, --base-url, so workers see the updates)."""
    address: str | None = None
    """Ray cluster to join (auto, host:6379, ray://host:10001); default: a private local one on 127.0.0.1."""
    workers: int = Field(2, ge=1)
    """Ray rollout worker actors."""
    endpoints: str | None = None
    """`--base-url`: comma-separated serving URLs for an `openai:` model."""
    tokenizer: str | None = None
    """For a server that returns no token ids (llama.cpp): rebuild them with this tokenizer (a local
    model folder, or `default`); recorded as token_exact = false (see ModelConfig.tokenizer)."""
    retry_deadline: float | None = Field(None, gt=0)
    """Seconds a model call of an openai: --model keeps retrying, waiting for a server to come back,
    before its episode fails with NoLiveEndpointError (default 300; ModelConfig.retry_deadline_s)."""

    decode_dtype: Literal["float32", "bfloat16"] | None = None
    """What in-process local/hf models multiply when decoding: float32 (exact logprobs) or bfloat16 (faster
    batched steps, logprobs ~0.01 off the fp32 trainer's; pair with --tis-cap / --mis-bound). Sets
    $AGENTPLAY_DECODE_DTYPE for this run and its workers (default: that variable, else float32;
    ModelConfig.decode_dtype). A served openai: model takes `agentplay serve --decode-dtype` instead."""

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
        served = (model or "").startswith("openai:")
        if self.endpoints is not None and not urls:
            raise ValueError("--base-url: give at least one URL, e.g. http://127.0.0.1:8000/v1")
        if urls and not served:
            raise ValueError(f"--base-url: needs --model openai:<served model name>, got --model {model!r}")
        if self.tokenizer is not None and not served:
            raise ValueError(f"--tokenizer: only for --model openai:<served model name>, got --model {model!r}")
        if self.retry_deadline is not None and not served:
            raise ValueError(f"--retry-deadline: only for --model openai:<served model name>, got --model {model!r}")
        if self.decode_dtype is not None and served:
            raise ValueError(f"--decode-dtype: only for in-process models (local:, hf:), got --model {model!r};"
                             " start the server with `agentplay serve --decode-dtype` instead")
        if self.decode_dtype is not None:
            # read by ModelConfig's default wherever a local model is loaded: this process, the
            # trainer, Ray workers (AGENTPLAY_* is forwarded below), data-parallel processes
            os.environ["AGENTPLAY_DECODE_DTYPE"] = self.decode_dtype
        if served:
            check_served_model(str(model), urls)
        if kind == "local":
            if self.address is not None:
                raise ValueError("--address: only used with --executor ray")
            if served and model and register_local:
                from agentplay._executors import register_endpoints

                register_endpoints(model, urls, tokenizer=self.tokenizer, retry_deadline_s=self.retry_deadline)
            return lambda follow=None: None
        from agentplay._executors import RayConfig, RayExecutor, RecipeRef

        env = {k: v for k, v in os.environ.items() if k in _FORWARDED_ENV or k.startswith("AGENTPLAY_")}
        try:
            ref = RecipeRef(recipe=recipe, model=model, options=options, endpoints=urls, env=env,
                            tokenizer=self.tokenizer, retry_deadline_s=self.retry_deadline)
            config = RayConfig(address=self.address, workers=self.workers, concurrency=concurrency)
        except ValidationError as exc:
            raise ValueError("; ".join(f"--{e['loc'][0]}: {e['msg']}" for e in exc.errors())) from None
        return lambda follow=None: RayExecutor(ref, config, follow=follow)


def check_served_model(model: Any, urls: list[str] | None = None) -> None:
    """Before any episode: an `openai:` model must have a server to call (`--base-url`,
    $OPENAI_BASE_URL, or $OPENAI_API_KEY for api.openai.com). Raises ValueError naming the flag."""
    from agentplay.models import ModelSpecError, parse_model_spec

    try:
        config = parse_model_spec(model, **({"base_url": ",".join(urls)} if urls else {}))
        if config.backend == "openai":
            config.endpoint_urls()
    except ModelSpecError as exc:
        raise ValueError(str(exc).replace("base_url: ", "--base-url: ", 1)) from None


def check_recipe_models(recipe: Any) -> None:
    """`check_served_model` for each role's own model (a recipe run without `--model`)."""
    for role in recipe.roles.values():
        model = getattr(role, "model", None)
        if isinstance(model, str) or hasattr(model, "backend"):
            check_served_model(model)
