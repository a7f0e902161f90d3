"""`agentplay serve`: the OpenAI-compatible server over a local model."""

from __future__ import annotations

import typer

__all__ = ["serve"]


def serve(
    model: str | None = typer.Option(
        None, "--model", "-m", help="Model spec, e.g. local:smollm2-135m-instruct or hf:<folder>."
    ),
    host: str = typer.Option(
        "127.0.0.1", help="Interface to bind; 127.0.0.1 keeps the server private."
    ),
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port."),
    served_model_name: str | None = typer.Option(
        None, help="Name clients send as `model` (default: the name part of the spec)."
    ),
    log_level: str = typer.Option("info", help="uvicorn log level."),
    scheduler: str = typer.Option(
        "continuous", help="Batching of a local/hf model: static (one batch decoded to its end, then the next) or "
                       "continuous (requests join the running batch at every decode step; see ModelConfig.scheduler)."
    ),
    decode_dtype: str | None = typer.Option(
        None, help="What a local/hf Llama-family model's decode step multiplies: float32 (exact logprobs) or "
                   "bfloat16 (1.5-2x faster batched steps on AMX CPUs, logprobs ~0.01 off; recorded in each "
                   "answer's sampled_with; see ModelConfig.decode_dtype). Default: $AGENTPLAY_DECODE_DTYPE, "
                   "else float32."
    ),
) -> None:
    """Serve a model over /v1/chat/completions, with vLLM's LoRA-loading endpoints for weight updates."""
    import os

    # Before torch loads OpenMP: idle OpenMP workers sleep instead of spinning. On a busy 2-core box
    # (load ~6) a 2-thread server's spinning workers fought the other processes for the cores:
    # 32 tokens took 34-55 s with the default policy, 2-5 s passive (1 thread: 4.6 s). Issue #21.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import uvicorn

    from agentplay.models import DEFAULT_MODEL_SPEC, ModelSpecError, load_model
    from agentplay.models._server import create_app

    try:
        dtype = {} if decode_dtype is None else {"decode_dtype": decode_dtype}
        chat_model = load_model(model or DEFAULT_MODEL_SPEC, scheduler=scheduler, **dtype)
    except ModelSpecError as exc:
        hint = "--decode-dtype" if "decode_dtype:" in str(exc) else "--model"
        raise typer.BadParameter(str(exc), param_hint=hint) from None
    if chat_model.spec.startswith("openai:"):
        raise typer.BadParameter(
            "serve runs an in-process engine; an openai: model is already a server",
            param_hint="--model",
        )
    app = create_app(chat_model, served_model_name=served_model_name)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
