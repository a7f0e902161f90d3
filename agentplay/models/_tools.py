"""Tool calls in text: how tools are shown to a model and how its calls are read back.

Small chat models (SmolLM2) have templates without tool support, so the schemas
go into the system prompt with Hermes-style instructions, the format most open
models are tuned on. Reading calls back never raises: whatever the model wrote
that looks like a call but does not parse becomes a ToolCallParseFailure.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from ._types import Message, ToolCall, ToolCallParseFailure

__all__ = ["inject_tools", "parse_tool_calls", "template_supports_tools", "tool_call_markup"]

_DEFAULT_SYSTEM = "You are a helpful assistant."
_TOOL_PROMPT = """# Tools

You may call one or more functions to help with the user query.
The available functions, as JSON schemas, are:
<tools>
{tools}
</tools>

To call a function, write a JSON object with the function name and its arguments inside <tool_call></tool_call> tags, and nothing else:
<tool_call>
{{"name": "<function-name>", "arguments": {{"<arg>": "<value>"}}}}
</tool_call>
The result comes back in a message from the tool. Answer without tags when no function is needed."""

_CALL_RE = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.DOTALL)
_FENCE_RE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def template_supports_tools(chat_template: str | None) -> bool:
    """Whether the tokenizer's own template renders a `tools` argument (Qwen, Llama 3, ...)."""
    return chat_template is not None and "tools" in chat_template


def tool_call_markup(name: str, arguments: Any) -> str:
    """Hermes markup for one call, for assistant messages that arrive without raw text."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            pass
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def inject_tools(messages: list[Message], tools: list[dict[str, Any]]) -> list[Message]:
    """Put the tool schemas and calling instructions into the system message."""
    block = _TOOL_PROMPT.format(tools="\n".join(json.dumps(t) for t in tools))
    if messages and messages[0].get("role") == "system":
        first = dict(messages[0])
        first["content"] = f"{first.get('content') or ''}\n\n{block}".lstrip()
        return [first, *messages[1:]]
    return [{"role": "system", "content": f"{_DEFAULT_SYSTEM}\n\n{block}"}, *messages]


def parse_tool_calls(
    text: str, tool_names: set[str] | None
) -> tuple[str | None, list[ToolCall], list[ToolCallParseFailure]]:
    """Split a completion into (content without markup, parsed calls, failures).

    Hermes `<tool_call>{...}</tool_call>` blocks are parsed wherever they are (an
    unterminated last block too: the model may hit max_tokens or a stop string).
    When there are no tags, a completion that is nothing but a JSON object naming
    one of the offered tools is also accepted: small models often drop the tags,
    and requiring a known tool name keeps ordinary JSON answers from turning into calls.
    """
    calls: list[ToolCall] = []
    failures: list[ToolCallParseFailure] = []
    blocks = list(_CALL_RE.finditer(text))
    if blocks:
        for match in blocks:
            _parse_one(match.group(1), match.group(0), calls, failures)
        content = _CALL_RE.sub("", text).strip()
        return content or None, calls, failures
    if tool_names:
        body = text.strip()
        fenced = _FENCE_RE.match(body)
        candidate = fenced.group(1) if fenced else body
        if candidate.startswith("{") and candidate.endswith("}"):
            try:
                obj = json.loads(candidate)
            except json.JSONDecodeError:
                obj = None
            if isinstance(obj, dict) and obj.get("name") in tool_names and "arguments" in obj:
                _parse_one(candidate, text, calls, failures)
                if calls:
                    return None, calls, failures
                failures.clear()
    return text or None, calls, failures


def _parse_one(
    body: str, raw: str, calls: list[ToolCall], failures: list[ToolCallParseFailure]
) -> None:
    try:
        obj = json.loads(body.strip())
    except json.JSONDecodeError as exc:
        failures.append(ToolCallParseFailure(raw=raw, error=f"invalid JSON: {exc}"))
        return
    if not isinstance(obj, dict):
        failures.append(ToolCallParseFailure(raw=raw, error="a tool call must be a JSON object"))
        return
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        failures.append(ToolCallParseFailure(raw=raw, error="missing string field 'name'"))
        return
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError as exc:
            failures.append(ToolCallParseFailure(raw=raw, error=f"'arguments' is not JSON: {exc}"))
            return
    if not isinstance(args, dict):
        failures.append(ToolCallParseFailure(raw=raw, error="'arguments' must be a JSON object"))
        return
    calls.append(ToolCall(id=f"call_{uuid.uuid4().hex[:16]}", name=name, arguments=args, raw=raw))
