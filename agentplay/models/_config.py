"""Model specs: one string (`local:...`, `hf:...`, `openai:...`) or one pydantic config.

Strings are what users type on the command line and in recipes; the config is
what code passes around. Both are checked up front with errors that name the
field and list the accepted forms, because a typo in a model spec otherwise
surfaces minutes later as a download or connection error.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentplay.errors import AgentplayError

from ._weights import DEFAULT_MODEL_NAME, PACKAGED_MODELS

__all__ = ["DEFAULT_MODEL_SPEC", "LOCAL_MODELS", "ModelConfig", "ModelSpecError", "parse_model_spec"]

DEFAULT_MODEL_SPEC = f"local:{DEFAULT_MODEL_NAME}"
LOCAL_MODELS = tuple(PACKAGED_MODELS)
"""Names accepted after `local:` (models whose weights ship in a pip package: `_weights.py`)."""

ACCEPTED_FORMS = (
    "local:<name> (one of: " + ", ".join(LOCAL_MODELS) + "), "
    "hf:<folder or repo id>, openai:<model> (with base_url, api_key)"
)

Backend = Literal["local", "hf", "openai"]
LogprobsMode = Literal["temperature", "raw", "processed"]
DecodeDtype = Literal["float32", "bfloat16"]
DECODE_DTYPES: tuple[DecodeDtype, ...] = ("float32", "bfloat16")


class ModelSpecError(AgentplayError, ValueError):
    """A model spec or config that cannot work; the message names the field and the fix."""


class ModelConfig(BaseModel):
    """Everything needed to build a chat model. Fields a backend does not use are ignored by it."""

    model_config = ConfigDict(extra="forbid")

    backend: Backend
    """Which engine serves the model: in-process `local`/`hf`, or an OpenAI-compatible `openai` API."""
    name: str = Field(min_length=1)
    """`local`: a packaged model name; `hf`: a local folder or hub repo id; `openai`: the served model name."""
    path: str | None = None
    """Hugging Face folder to load for `local`/`hf` (filled in when the model is loaded)."""
    base_url: str | None = None
    """`openai`: API root, e.g. http://127.0.0.1:8000/v1 for vLLM, llama.cpp, Ollama or `agentplay serve`;
    several comma-separated roots make an `EndpointPool` (episodes spread by load, dead servers skipped)."""
    api_key: str | None = None
    """`openai`: API key (local servers accept any value)."""
    device: str = "auto"
    """`auto` picks CUDA when present, else CPU; or any torch device string."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """`auto`: float32 on CPU (bf16 matmuls are slow there), bfloat16 on GPU."""
    max_batch_size: int = Field(16, ge=1, le=1024)
    """Most sequences (rows: requests x n) decoded together in one batch."""
    share_prefill: bool = True
    """`local`: encode each distinct prompt of a batch once and copy its KV cache to every row
    sampling from it (n > 1, or the same prompt twice), instead of one prefill per row
    (vLLM does the same with its automatic prefix caching)."""
    batch_wait_ms: float = Field(4.0, ge=0.0, le=1000.0)
    """How long the batcher waits for more requests after the first one arrives (when idle)."""
    scheduler: Literal["continuous", "static"] = "continuous"
    """`local`: `continuous` admits waiting requests into the running batch at every decode step
    and drops rows the step they finish (no request waits for a batch to end, fewer decoded rows);
    `static` admits only between batches (one batch decoded to its end, then the next). Llama-family
    models run both through the lean decode path (`_continuous.py`, `_decoder.py`), where with one
    torch thread a row's tokens and logprobs do not depend on what shares its batch, bit for bit
    (what the kill/resume trials in tests/test_trainer_kill.py need); with more threads MKL's
    rounding moves with the batch (~1e-7) under either scheduler. Other models (sliding-window or
    linear-attention caches, other architectures) are batched statically through `model.generate`
    (`_engine.py`) whatever this says."""
    decode_dtype: DecodeDtype = Field(default_factory=lambda: _env_decode_dtype())
    """`local`/`hf` Llama-family models: what the lean decode path multiplies. `float32` (the default):
    the trainer's own arithmetic, logprobs exact. `bfloat16`: bf16 copies of the weights (AMX/AVX512-BF16
    CPUs; rebuilt on every weight update), 1.5-2x faster steps from 4 rows, but each recorded logprob
    moves by ~0.015 (up to ~0.2) from the fp32 policy's and about 1 greedy token in 100 differs; samples
    record `sampled_with.decode_dtype` and the trainer's `tis_cap` / `mis_bound` correct for the
    mismatch. Defaults to $AGENTPLAY_DECODE_DTYPE, else float32."""
    torch_threads: int | None = Field(default_factory=lambda: _env_threads(), ge=1)
    """Intra-op threads for torch (None leaves torch's default). Defaults to
    $AGENTPLAY_TORCH_THREADS, else 2: the dev box has 2 cores, and more threads than
    free cores makes OpenMP spin-waits slow every forward pass several-fold."""
    logprobs_mode: LogprobsMode = "temperature"
    """Which distribution the returned logprobs are of. `temperature`: log_softmax(logits / T),
    what TRL's GRPO recomputes for its importance ratio (the default); `raw`: the model's own
    distribution at T=1 (vLLM's default `raw_logprobs`); `processed`: after temperature and
    top_p, exactly the distribution sampled from. Greedy requests (T=0) report `raw`."""
    prefix_cache_size: int = Field(1024, ge=0)
    """Recent (text -> token ids) pairs kept so multi-turn prompts reuse the exact sampled ids."""
    timeout: float = Field(600.0, gt=0)
    """`openai`: seconds a request may wait for the server's next byte (a stalled request is
    cut off after this and retried)."""
    max_retries: int = Field(4, ge=0, le=20)
    """`openai`: retries of one request by the openai client (exponential backoff with jitter,
    Retry-After honoured) on 408/409/429/5xx, connection errors, timeouts and 2xx answers
    that are not JSON. With several endpoints each gets at most one before the pool fails over."""
    retry_deadline_s: float = Field(300.0, gt=0)
    """`openai`: how long one model call keeps trying after its first failed request: while
    every endpoint is down (circuit breaker open) it waits for one to come back, probing
    each with growing pauses; past the deadline it fails with `NoLiveEndpointError`
    naming every endpoint and its last error (an infrastructure failure: never a reward)."""
    tokenizer: str | None = None
    """`openai`: tokenizer to rebuild token ids with when the server returns none (llama.cpp's
    server, hosted APIs): a local Hugging Face folder, or `default` for the packaged model's.
    Such ids are recorded with token_exact = false and are not trained on."""
    max_concurrency: int = Field(64, ge=1)
    """`openai`: most requests in flight at once from this model object."""
    extra_headers: dict[str, str] = Field(default_factory=dict)
    """`openai`: headers sent with every request (gateways, organisation ids)."""
    return_token_ids: bool = True
    """`openai`: ask for vLLM's token-id fields (`return_token_ids`); turn off for APIs that reject unknown fields (api.openai.com)."""

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.backend == "local" and self.name not in LOCAL_MODELS:
            raise ValueError(
                f"name: unknown local model {self.name!r}; known: {', '.join(LOCAL_MODELS)}"
                f" (for any other Hugging Face folder use hf:<folder or repo id>)"
            )
        if self.backend != "openai" and (self.base_url or self.api_key):
            raise ValueError(
                f"base_url/api_key: only used by the openai backend, not {self.backend!r}"
            )
        if self.backend == "openai" and "decode_dtype" in self.model_fields_set and self.decode_dtype != "float32":
            raise ValueError(f"decode_dtype: only used by in-process local/hf models, not {self.backend!r}"
                             " (the server decides its own precision)")
        if self.backend != "openai" and self.tokenizer:
            raise ValueError(
                f"tokenizer: only used by the openai backend (local models return exact ids), not {self.backend!r}"
            )
        return self

    @property
    def spec(self) -> str:
        """The spec string this config stands for."""
        return f"{self.backend}:{self.name}"

    def endpoint_urls(self) -> list[str]:
        """`openai`: the API roots to call: `base_url` (comma-separated), else $OPENAI_BASE_URL,
        else api.openai.com when an API key is given. Raises ModelSpecError when there is none,
        so a run fails before its first episode instead of storing a connection error in each."""
        raw = self.base_url or os.environ.get("OPENAI_BASE_URL") or ""
        if not raw.strip() and (self.api_key or os.environ.get("OPENAI_API_KEY")):
            raw = "https://api.openai.com/v1"
        urls = [u.strip().rstrip("/") for u in raw.split(",") if u.strip()]
        if not urls:
            raise ModelSpecError(
                f"base_url: {self.spec} has no server to call: pass --base-url URL (e.g. "
                "http://127.0.0.1:8000/v1 for `agentplay serve` or vLLM), or set OPENAI_BASE_URL, "
                "or OPENAI_API_KEY for api.openai.com"
            )
        if len(set(urls)) != len(urls):
            raise ModelSpecError(f"base_url: duplicate endpoint in {urls}")
        return urls


def _env_decode_dtype() -> DecodeDtype:
    value = os.environ.get("AGENTPLAY_DECODE_DTYPE", "float32")
    for dtype in DECODE_DTYPES:
        if value == dtype:
            return dtype
    raise ModelSpecError(f"decode_dtype: AGENTPLAY_DECODE_DTYPE={value!r} is not one of {', '.join(DECODE_DTYPES)}")


def _env_threads() -> int:
    value = os.environ.get("AGENTPLAY_TORCH_THREADS", "2")
    try:
        return max(1, int(value))
    except ValueError:
        raise ModelSpecError(f"torch_threads: AGENTPLAY_TORCH_THREADS={value!r} is not an integer") from None


def parse_model_spec(spec: str | ModelConfig | dict[str, Any], **overrides: Any) -> ModelConfig:
    """Turn `local:...`, `hf:...`, `openai:...` (or a config/dict) into a checked ModelConfig.

    `overrides` are ModelConfig fields (base_url, api_key, device, ...).
    """
    if isinstance(spec, ModelConfig):
        fields = spec.model_dump(exclude_unset=True) | overrides
        fields.setdefault("backend", spec.backend)
        fields.setdefault("name", spec.name)
    elif isinstance(spec, dict):
        fields = dict(spec) | overrides
    elif isinstance(spec, str):
        fields = _split_spec(spec) | overrides
    else:
        raise ModelSpecError(
            f"model: expected a spec string or ModelConfig, got {type(spec).__name__};"
            f" accepted forms: {ACCEPTED_FORMS}"
        )
    try:
        return ModelConfig(**fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'model'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ModelSpecError(f"model {spec!r}: {problems}; accepted forms: {ACCEPTED_FORMS}") from None


def _split_spec(spec: str) -> dict[str, Any]:
    backend, sep, name = spec.strip().partition(":")
    if not sep:
        raise ModelSpecError(
            f"model: {spec!r} has no backend prefix; accepted forms: {ACCEPTED_FORMS}"
        )
    if backend not in ("local", "hf", "openai"):
        raise ModelSpecError(
            f"model: unknown backend {backend!r} in {spec!r}; accepted forms: {ACCEPTED_FORMS}"
        )
    if not name.strip():
        raise ModelSpecError(
            f"model: missing name after {backend + ':'!r} in {spec!r}; accepted forms: {ACCEPTED_FORMS}"
        )
    return {"backend": backend, "name": name.strip()}
