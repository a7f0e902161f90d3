"""An OpenAI-compatible HTTP server over any agentplay ChatModel (`agentplay serve`).

It speaks the dialect vLLM speaks, so a client written for one works with the
other: `/v1/chat/completions` with vLLM's token-id extension fields, and
vLLM's runtime LoRA endpoints (`/v1/load_lora_adapter`, `/v1/unload_lora_adapter`)
as the one weight-update path for trainers.

Adapter names are accepted as `model` like vLLM does. The local engine serves
one set of weights at a time (loading an adapter updates the served weights and
bumps `weight_version`), so the base name and the adapter names reach the same
weights; `weight_version` in every response says which weights answered.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from sse_starlette.sse import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agentplay.errors import AgentplayError

from .._kill_points import kill_point
from ._base import ChatModel, UpdatableModel
from ._server_protocol import (
    ChatCompletionRequest,
    LoadLoRAAdapterRequest,
    TokenDecoder,
    UnloadLoRAAdapterRequest,
    choice_stream_deltas,
    completion_response,
)
from ._types import ChatResult

__all__ = ["OpenAIError", "create_app"]

log = logging.getLogger(__name__)

WEIGHT_VERSION_HEADER = "x-weight-version"


class OpenAIError(AgentplayError):
    """An error answered in OpenAI's shape: {"error": {message, type, param, code}}."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = (
            status,
            message,
            type,
            param,
            code,
        )

    def response(self) -> JSONResponse:
        body = {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }
        return JSONResponse(body, status_code=self.status)


def _validation_error(exc: RequestValidationError) -> OpenAIError:
    """FastAPI answers 422 with its own shape; OpenAI clients expect 400 naming the field."""
    problems: list[tuple[str | None, str]] = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            detail = (err.get("ctx") or {}).get("error", err.get("msg"))
            problems.append((None, f"request body is not valid JSON: {detail}"))
            continue
        # drop the `body` root and pydantic's validator / union-member labels from the path
        loc = [
            str(p) for p in err.get("loc", ()) if p != "body" and not str(p).startswith("function-")
        ]
        problems.append(
            (
                ".".join(loc) or None,
                str(err.get("msg", "invalid value")).removeprefix("Value error, "),
            )
        )
    if not problems:
        problems.append((None, "invalid request"))
    message = "; ".join(f"{param}: {msg}" if param else msg for param, msg in problems[:3])
    if len(problems) > 3:
        message += f" (and {len(problems) - 3} more)"
    return OpenAIError(400, message, param=problems[0][0], code="invalid_value")


class _ServerState:
    def __init__(self, model: ChatModel, served_model_name: str) -> None:
        self.model = model
        self.base_name = served_model_name
        self.adapters: dict[str, str] = {}
        self.created = int(time.time())
        self.tokenizer: TokenDecoder | None = getattr(model, "tokenizer", None)

    def check_model(self, name: str) -> None:
        if name != self.base_name and name not in self.adapters:
            served = ", ".join([self.base_name, *self.adapters])
            raise OpenAIError(
                404,
                f"The model `{name}` does not exist. Served models: {served}.",
                param="model",
                code="model_not_found",
            )
        active = getattr(
            self.model, "adapters", None
        )  # LocalModel: the last loaded adapter is live
        if name in self.adapters and active and name != active[-1]:
            raise OpenAIError(
                400,
                f"model: adapter {name!r} is loaded but not active; this engine serves one adapter "
                f"at a time (the last loaded, {active[-1]!r}); load {name!r} again to switch",
                param="model",
                code="adapter_not_active",
            )

    def updatable(self) -> UpdatableModel:
        if not isinstance(self.model, UpdatableModel):
            raise OpenAIError(
                400,
                f"the served model {self.base_name!r} cannot load adapters",
                code="not_supported",
            )
        return self.model

    def model_cards(self) -> list[dict[str, Any]]:
        version = self.model.weight_version
        base = {
            "id": self.base_name,
            "object": "model",
            "created": self.created,
            "owned_by": "agentplay",
            "root": self.base_name,
            "parent": None,
            "weight_version": version,
        }
        adapters = [
            base | {"id": name, "root": path, "parent": self.base_name}
            for name, path in self.adapters.items()
        ]
        return [base, *adapters]


def create_app(model: ChatModel, *, served_model_name: str | None = None) -> FastAPI:
    """The FastAPI app serving `model`; `served_model_name` defaults to the spec's name."""
    state = _ServerState(model, served_model_name or model.spec.partition(":")[2] or model.spec)
    app = FastAPI(title="agentplay", description="OpenAI-compatible server over an agentplay model")
    app.state.agentplay = state

    @app.exception_handler(OpenAIError)
    async def _openai_error(_: Request, exc: OpenAIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # unknown routes and methods: the same error shape as everything else
        kind = "invalid_request_error" if exc.status_code < 500 else "internal_server_error"
        return OpenAIError(exc.status_code, str(exc.detail), type=kind).response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_error(exc).response()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "weight_version": model.weight_version}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": state.model_cards()}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(req: ChatCompletionRequest) -> JSONResponse | EventSourceResponse:
        state.check_model(req.model)
        kill_point("serve_chat")  # crash tests: the server dies with a request in flight
        result = await _run_chat(model, req)
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        headers = (
            {WEIGHT_VERSION_HEADER: str(result.weight_version)}
            if result.weight_version is not None
            else {}
        )
        if req.stream:
            chunks = _stream_chunks(result, req, completion_id, created, state.tokenizer)
            return EventSourceResponse(chunks, sep="\n", headers=headers, ping=None)
        body = completion_response(
            result,
            request=req,
            completion_id=completion_id,
            created=created,
            tokenizer=state.tokenizer,
        )
        return JSONResponse(body, headers=headers)

    @app.post("/v1/load_lora_adapter")
    async def load_lora_adapter(req: LoadLoRAAdapterRequest) -> PlainTextResponse:
        engine = state.updatable()
        if req.lora_name == state.base_name:
            raise OpenAIError(
                400, f"lora_name: {req.lora_name!r} is the base model's name", param="lora_name"
            )
        if req.lora_name in state.adapters and not req.load_inplace:
            raise OpenAIError(
                400,
                f"The lora adapter '{req.lora_name}' has already been loaded; "
                "send load_inplace: true to replace its weights",
                param="lora_name",
            )
        if not Path(req.lora_path).is_dir():
            raise OpenAIError(
                404, f"lora_path: no adapter folder at {req.lora_path!r}", param="lora_path"
            )
        try:
            version = await engine.load_lora_adapter(req.lora_name, req.lora_path, version=req.weight_version)
        except (ValueError, OSError) as exc:
            raise OpenAIError(
                400, f"lora_path: cannot load adapter: {exc}", param="lora_path"
            ) from exc
        state.adapters[req.lora_name] = req.lora_path
        kill_point("serve_load")  # crash tests: the weights changed, the trainer never hears so
        return PlainTextResponse(
            f"Success: LoRA adapter '{req.lora_name}' added successfully.",
            headers={WEIGHT_VERSION_HEADER: str(version)},
        )

    @app.post("/v1/unload_lora_adapter")
    async def unload_lora_adapter(req: UnloadLoRAAdapterRequest) -> PlainTextResponse:
        engine = state.updatable()
        if req.lora_name not in state.adapters:
            raise OpenAIError(
                404,
                f"The lora adapter '{req.lora_name}' cannot be found.",
                param="lora_name",
                code="not_found",
            )
        try:
            version = await engine.unload_lora_adapter(req.lora_name, version=req.weight_version)
        except ValueError as exc:
            raise OpenAIError(404, str(exc), param="lora_name", code="not_found") from exc
        del state.adapters[req.lora_name]
        return PlainTextResponse(
            f"Success: LoRA adapter '{req.lora_name}' removed successfully.",
            headers={WEIGHT_VERSION_HEADER: str(version)},
        )

    return app


async def _run_chat(model: ChatModel, req: ChatCompletionRequest) -> ChatResult:
    try:
        return await model.chat(
            req.engine_messages(), tools=req.engine_tools(), sampling=req.sampling()
        )
    except (
        ValueError
    ) as exc:  # the engine's word for "this request cannot be served" (too long, ...)
        raise OpenAIError(400, str(exc)) from exc
    except Exception as exc:
        log.exception("chat completion failed")
        raise OpenAIError(500, f"the model failed: {exc!r}", type="internal_server_error") from exc


async def _stream_chunks(
    result: ChatResult,
    req: ChatCompletionRequest,
    completion_id: str,
    created: int,
    tokenizer: TokenDecoder | None,
) -> AsyncIterator[str]:
    """SSE `data:` payloads. The engine answers whole completions, so the chunks
    are cut from a finished result: the protocol (per-token deltas, ids and
    logprobs, vLLM's `prompt_token_ids` in the first chunk) is real, the latency
    is that of a non-streamed request."""
    base = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": req.model,
    }
    first = True
    for choice in result.choices:
        for delta in choice_stream_deltas(choice, req, tokenizer):
            chunk = base | {"choices": [delta]}
            if first:
                chunk["weight_version"] = result.weight_version
                if result.sampled_with is not None:
                    chunk["sampled_with"] = result.sampled_with.model_dump(exclude={"reported"})
                if req.wants_token_ids:
                    chunk["prompt_token_ids"] = result.prompt_token_ids
                first = False
            yield json.dumps(chunk)
    if req.stream_options and req.stream_options.include_usage:
        usage = result.usage
        total = usage.prompt_tokens + usage.completion_tokens
        yield json.dumps(
            base
            | {
                "choices": [],
                "usage": {
                    "prompt_tokens": usage.prompt_tokens,
                    "completion_tokens": usage.completion_tokens,
                    "total_tokens": total,
                },
            }
        )
    yield "[DONE]"
