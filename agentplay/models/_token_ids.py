"""Token ids from servers that return none (llama.cpp's server, most hosted APIs).

A trace is only trainable with the ids the model actually sampled. A server
that returns text alone is detected on its first answer and reported once,
with the fix; with a tokenizer the ids are rebuilt from the text (chat template
for the prompt, plain encoding for the completion) and the result is marked
`retokenized`, so the trace records `token_exact = false`: the ids are
plausible, not the ones sampled, and the trainer does not train on them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ._config import ModelSpecError
from ._types import ChatResult, Message

__all__ = ["MISSING_IDS_FIX", "TokenIdCheck", "has_token_ids", "load_tokenizer"]

log = logging.getLogger("agentplay.models")

MISSING_IDS_FIX = (
    "serve with `agentplay serve` or vLLM >= 0.10.2, or give `--tokenizer` to re-tokenize"
)


def has_token_ids(result: ChatResult) -> bool:
    return result.prompt_token_ids is not None and all(
        c.completion_token_ids is not None for c in result.choices
    )


def load_tokenizer(ref: str) -> Any:
    """`default`: the default model's tokenizer; `local:<name>`: that packaged model's; otherwise a local
    Hugging Face folder (`hf:` prefix optional). Never downloads."""
    from transformers import AutoTokenizer  # heavy: only for users who asked for re-tokenizing

    from ._weights import default_model_dir, local_model_dir

    name = ref.strip()
    if name == "default":
        folder = default_model_dir()
    elif name.startswith("local:"):
        folder = local_model_dir(name.removeprefix("local:"))
    else:
        folder = Path(name.removeprefix("hf:")).expanduser()
        if not (folder / "tokenizer_config.json").is_file() and not (folder / "tokenizer.json").is_file():
            raise ModelSpecError(
                f"tokenizer: {ref!r} is not a folder with a Hugging Face tokenizer "
                "(tokenizer.json / tokenizer_config.json); give a local model folder or `default`"
            )
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


class TokenIdCheck:
    """Per model: warns once per endpoint that answers without ids; re-tokenizes when it can."""

    def __init__(self, spec: str, tokenizer: str | None) -> None:
        self._spec = spec
        self._tokenizer_ref = tokenizer
        self._tokenizer: Any = None
        self._warned: set[str] = set()

    def __call__(self, result: ChatResult, url: str, messages: list[Message],
                 tools: list[dict[str, Any]] | None) -> ChatResult:
        if has_token_ids(result):
            return result
        if url not in self._warned:
            self._warned.add(url)
            then = (f"re-tokenizing with {self._tokenizer_ref!r} (recorded as token_exact = false)"
                    if self._tokenizer_ref else "its turns are recorded without token ids and cannot be trained on")
            log.warning("%s at %s returns no token ids: %s; to fix, %s", self._spec, url, then, MISSING_IDS_FIX)
        if not self._tokenizer_ref:
            return result
        return self._retokenize(result, messages, tools)

    def _retokenize(self, result: ChatResult, messages: list[Message],
                    tools: list[dict[str, Any]] | None) -> ChatResult:
        from ._prompt import render_chat
        from ._tools import tool_call_markup

        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self._tokenizer_ref or "default")
        tok = self._tokenizer
        prompt = tok.encode(render_chat(tok, messages, tools), add_special_tokens=False)
        choices = []
        for c in result.choices:
            text = c.text
            if c.tool_calls and "<tool_call>" not in text:  # the server parsed its markup out
                text += "".join(tool_call_markup(t.name, t.arguments) for t in c.tool_calls)
            ids = tok.encode(text, add_special_tokens=False)
            if c.finish_reason != "length" and tok.eos_token_id is not None:
                ids.append(tok.eos_token_id)
            choices.append(c.model_copy(update={"completion_token_ids": ids, "logprobs": c.logprobs
                                                if c.logprobs and len(c.logprobs) == len(ids) else None}))
        return result.model_copy(update={"prompt_token_ids": prompt, "choices": choices, "retokenized": True})
