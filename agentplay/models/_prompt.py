"""Chat rendering and token-exact prompts across turns.

A role runs model -> tool -> model, and each turn re-renders the whole
conversation. Re-tokenizing that text can split the earlier completion into
different ids than the ones the model sampled, and then the trainer's prompt
and completion tokens no longer line up. So the engine remembers recent
(text -> ids) pairs of its own prompts and completions and, when a new prompt
starts with one of those texts, reuses its ids and tokenizes only the rest.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from ._tools import inject_tools, template_supports_tools, tool_call_markup
from ._types import Message

__all__ = ["PrefixCache", "render_chat"]


def render_chat(tokenizer: Any, messages: list[Message], tools: list[dict[str, Any]] | None) -> str:
    """The prompt text for `messages`, ending with the assistant generation header."""
    native_tools = template_supports_tools(getattr(tokenizer, "chat_template", None))
    msgs = [_normalise(m, native_tools) for m in messages]
    kwargs: dict[str, Any] = {}
    if tools and native_tools:
        kwargs["tools"] = tools
    elif tools:
        msgs = inject_tools(msgs, tools)
    return tokenizer.apply_chat_template(
        msgs, tokenize=False, add_generation_prompt=True, **kwargs
    )


def _normalise(message: Message, native_tools: bool) -> Message:
    """Make one message renderable, keeping raw assistant text verbatim.

    An assistant message that carries the raw text the model wrote (tool-call
    markup included) is rendered from that text alone; its parsed `tool_calls`
    would otherwise be serialised a second time by tool-aware templates.
    """
    msg = dict(message)
    content = msg.get("content")
    if isinstance(content, list):  # OpenAI content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    content = content or ""
    calls = msg.get("tool_calls")
    if msg.get("role") == "assistant" and calls:
        if "<tool_call>" in content or not native_tools:
            msg.pop("tool_calls")
        if "<tool_call>" not in content and not native_tools:
            marks = [
                tool_call_markup(c["function"]["name"], c["function"].get("arguments", {}))
                for c in calls
            ]
            content = "\n".join(([content] if content else []) + marks)
    msg["content"] = content
    return msg


class PrefixCache:
    """Bounded LRU of text -> exact token ids, shared by the requests of one engine."""

    def __init__(self, tokenizer: Any, size: int) -> None:
        self._tok = tokenizer
        self._size = size
        self._entries: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def encode(self, text: str) -> list[int]:
        """Ids for `text`, reusing the ids of the longest remembered prefix of it."""
        best = ""
        with self._lock:
            for key in self._entries:
                if len(best) < len(key) <= len(text) and text.startswith(key):
                    best = key
            prefix = list(self._entries[best]) if best else []
            if best:
                self._entries.move_to_end(best)
        rest = text[len(best) :]
        ids = prefix + (self._tok(rest, add_special_tokens=False)["input_ids"] if rest else [])
        self.remember(text, ids)
        return ids

    def remember(self, text: str, ids: list[int]) -> None:
        if self._size <= 0:
            return
        with self._lock:
            self._entries[text] = tuple(ids)
            self._entries.move_to_end(text)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
