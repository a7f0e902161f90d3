"""LocalModel: a Hugging Face causal LM served in-process, with weights that can change.

The trainer reads `hf_model` and pushes updates through the UpdatableModel calls
(full state dict or a PEFT LoRA adapter); every ChatResult carries the weight
version that produced it so traces can tell stale samples from fresh ones.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import torch

from ._base import ChatModel, UpdatableModel, check_version
from ._config import ModelConfig, ModelSpecError
from ._continuous import ContinuousEngine, supports_lean_decoder
from ._engine import Engine
from ._prompt import PrefixCache, render_chat
from ._sampler import RowControl
from ._tools import parse_tool_calls
from ._types import ChatResult, Choice, Message, SamplingParams, SamplingRecord, TopLogprob, Usage
from ._weights import local_model_dir

LOCAL_ENGINE = "agentplay-local"
"""`SamplingRecord.engine` of completions drawn by this in-process engine."""

__all__ = ["LocalModel"]

log = logging.getLogger(__name__)


class LocalModel(ChatModel, UpdatableModel):
    """Build with `load_model("local:...")` / `load_model("hf:<folder>")` or `LocalModel(config)`."""

    def __init__(self, config: ModelConfig) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if config.backend not in ("local", "hf"):
            raise ValueError(f"backend: LocalModel serves 'local' and 'hf' models, not {config.backend!r}")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        if config.torch_threads is not None:
            torch.set_num_threads(config.torch_threads)
        folder = config.path or (
            str(local_model_dir(config.name)) if config.backend == "local" else config.name
        )
        self.config = config.model_copy(update={"path": folder})
        self.spec = config.spec
        self.model_dir = Path(folder)
        device = _pick_device(config.device)
        dtype = _pick_dtype(config.dtype, device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
        except OSError as exc:  # no such folder, and not in the local hub cache
            raise ModelSpecError(
                f"name: cannot load a Hugging Face model from {folder!r} for {config.spec!r}"
                f" (a folder with config.json and weights, or a repo id already in the hub cache): {exc}"
            ) from exc
        # ignore: transformers wraps PreTrainedModel.to with functools.wraps, and typeshed's
        # _Wrapped drops the bound self, so mypy takes `device` for the model
        model.to(device).eval()  # type: ignore[arg-type]
        knobs: dict[str, Any] = dict(
            max_batch_size=config.max_batch_size, batch_wait_ms=config.batch_wait_ms,
            logprobs_mode=config.logprobs_mode, share_prefill=config.share_prefill,
            torch_threads=config.torch_threads)
        # Llama-family models decode through the lean path under either scheduler; others through `generate`
        lean = supports_lean_decoder(model)
        if config.decode_dtype != "float32" and not lean:
            raise ModelSpecError(
                f"decode_dtype: {config.decode_dtype} decoding needs the lean decode path (Llama-family models);"
                f" {config.spec!r} is a {model.config.model_type!r} model: use decode_dtype=float32 (or dtype=...)")
        low = getattr(torch, config.decode_dtype) if config.decode_dtype != "float32" else None
        if low is not None and device.type == "cpu" and not native_bf16():
            log.warning("decode_dtype: %s decoding on a CPU without bf16 matmul instructions (AVX512-BF16 or AMX)"
                        " is emulated and slower than float32; use decode_dtype=float32 here", config.decode_dtype)
        self._engine: Engine | ContinuousEngine = (
            ContinuousEngine(model, self.tokenizer, continuous=config.scheduler == "continuous", low_dtype=low,
                             **knobs)
            if lean else Engine(model, self.tokenizer, **knobs))
        self.decode_dtype = config.decode_dtype if low is not None else str(model.dtype).removeprefix("torch.")
        """What the decode step multiplies, recorded in every result's `sampled_with`."""
        self._prefix = PrefixCache(self.tokenizer, config.prefix_cache_size)
        self._adapters: list[str] = []
        self._update_lock = asyncio.Lock()

    # -- serving ---------------------------------------------------------------

    @property
    def hf_model(self) -> Any:
        """The torch module being served (LoRA layers injected while adapters are loaded)."""
        return self._engine.model

    @property
    def weight_version(self) -> int:
        return self._engine.version

    @property
    def adapters(self) -> list[str]:
        """Loaded LoRA adapters, oldest first; the last one is active."""
        return list(self._adapters)

    async def chat(
        self,
        messages: list[Message],
        *,
        tools: list[dict[str, Any]] | None = None,
        sampling: SamplingParams | None = None,
    ) -> ChatResult:
        sampling = sampling or SamplingParams()
        if not messages:
            raise ValueError("messages: at least one message is required")
        prompt_text = render_chat(self.tokenizer, messages, tools)
        prompt_ids = self._prefix.encode(prompt_text)
        rows, version = await self._engine.generate(prompt_ids, sampling)
        names = {t.get("function", t).get("name") for t in tools or []} or None
        choices = [self._choice(i, row, prompt_text, prompt_ids, names, sampling) for i, row in enumerate(rows)]
        return ChatResult(
            model=self.spec,
            choices=choices,
            prompt_token_ids=list(prompt_ids),
            weight_version=version,
            tokenizer=self.config.path,
            sampled_with=SamplingRecord(
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                # the sampler reports greedy rows' logprobs from the raw distribution
                logprobs_mode="raw" if sampling.temperature == 0 else self.config.logprobs_mode,
                engine=LOCAL_ENGINE,
                decode_dtype=self.decode_dtype,
            ),
            usage=Usage(
                prompt_tokens=len(prompt_ids),
                completion_tokens=sum(len(r.tokens) for r in rows),
            ),
        )

    def _choice(
        self,
        index: int,
        row: RowControl,
        prompt_text: str,
        prompt_ids: list[int],
        tool_names: set[str] | None,
        sampling: SamplingParams,
    ) -> Choice:
        ids = row.tokens
        ended_on_eos = bool(ids) and ids[-1] in self._engine.eos_ids

        def decode(t: list[int]) -> str:
            text = self.tokenizer.decode(t, skip_special_tokens=False)
            assert isinstance(text, str), "one sequence of ids decodes to one string"
            return text

        text = decode(ids[:-1] if ended_on_eos else ids)
        # The next turn re-renders this completion (plus the template's end-of-turn
        # marker); remember its exact ids so that prompt reuses them.
        self._prefix.remember(prompt_text + decode(ids), prompt_ids + ids)
        visible = text.split(row.stop_string, 1)[0] if row.stop_string else text
        content, calls, failures = parse_tool_calls(visible, tool_names)
        finish = "tool_calls" if calls else row.finish or "stop"
        top = None
        if sampling.top_logprobs and row.top:
            top = [
                [
                    TopLogprob(token_id=t, token=self.tokenizer.convert_ids_to_tokens(t), logprob=lp)
                    for t, lp in step
                ]
                for step in row.top
            ]
        return Choice(
            index=index,
            text=text,
            content=content if tool_names else (visible or None),
            tool_calls=calls,
            tool_call_failures=failures,
            finish_reason=finish,
            completion_token_ids=list(ids),
            logprobs=list(row.logprobs) if sampling.logprobs else None,
            top_logprobs=top,
        )

    async def aclose(self) -> None:
        self._engine.close()

    # -- weight updates --------------------------------------------------------

    async def load_lora_adapter(self, name: str, path: str, *, version: int | None = None) -> int:
        check_version(version)
        if not Path(path, "adapter_config.json").is_file():
            raise ValueError(f"path: {path!r} is not a PEFT adapter folder (no adapter_config.json)")
        async with self._update_lock:
            def apply() -> int:
                model = self._engine.model
                if name in self._adapters:
                    model.delete_adapter(name)
                    self._adapters.remove(name)
                model.load_adapter(path, adapter_name=name)
                self._adapters.append(name)
                model.set_adapter(name)
                return self._bump(version)

            return await self._engine.run_exclusive(apply)

    async def unload_lora_adapter(self, name: str, *, version: int | None = None) -> int:
        check_version(version)
        async with self._update_lock:
            if name not in self._adapters:
                raise ValueError(f"name: no LoRA adapter {name!r} is loaded (loaded: {self._adapters})")

            def apply() -> int:
                model = self._engine.model
                model.delete_adapter(name)
                self._adapters.remove(name)
                if self._adapters:
                    model.set_adapter(self._adapters[-1])
                return self._bump(version)

            return await self._engine.run_exclusive(apply)

    async def load_state_dict(self, state_dict: dict[str, Any], *, version: int | None = None) -> int:
        """Copy tensors into the served weights in place; a subset of parameters is fine."""
        check_version(version)
        async with self._update_lock:
            return await self._engine.run_exclusive(lambda: self._copy_weights(state_dict, version))

    def _copy_weights(self, state_dict: dict[str, Any], version: int | None) -> int:
        model = self._engine.model
        targets = dict(model.named_parameters()) | dict(model.named_buffers())
        # With LoRA layers injected the base weight lives under `.base_layer.`;
        # accept the plain names the trainer's copy of the model uses.
        aliases = {k.replace(".base_layer.", "."): k for k in targets if ".base_layer." in k}
        resolved: dict[str, torch.Tensor] = {}
        unknown = []
        for key, value in state_dict.items():
            name = key if key in targets else aliases.get(key)
            if name is None:
                unknown.append(key)
                continue
            tensor = torch.as_tensor(value)
            if tuple(tensor.shape) != tuple(targets[name].shape):
                raise ValueError(
                    f"state_dict[{key!r}]: shape {tuple(tensor.shape)} != served {tuple(targets[name].shape)}"
                )
            resolved[name] = tensor
        if unknown:
            raise ValueError(f"state_dict: unknown parameter names {unknown[:5]}{'...' if len(unknown) > 5 else ''}")
        with torch.no_grad():
            for name, tensor in resolved.items():
                targets[name].copy_(tensor.to(targets[name].device, targets[name].dtype))
        return self._bump(version)

    def _bump(self, version: int | None) -> int:
        """Runs on the engine thread between batches: a batch reads its version once, so every
        result is labelled with the weights that produced it."""
        self._engine.version = self._engine.version + 1 if version is None else version
        return self._engine.version


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (oneDNN's check: AVX512-BF16 or AMX)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)
