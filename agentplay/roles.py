"""A role: a model with a prompt, tools and sampling, run as one LangGraph node's work.

A node calls ``await role.run(...)`` and gets a `RoleTurn` back (answer in
``turn.output``); the turn is also appended to the episode being recorded, so
the graph's state only needs to carry what the next node reads.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from typing import Any

import jinja2
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agentplay._recorder import current_recorder
from agentplay._registry import ModelLike, resolve_model
from agentplay._role_loop import ToolRunner, continue_loop
from agentplay.prompts import ENVIRONMENT
from agentplay.models import ChatModel, ChatResult, Choice, Message, SamplingParams
from agentplay.traces import RoleTurn

__all__ = ["Role"]

_JINJA = ENVIRONMENT
_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


class Role(BaseModel):
    """Who acts in a graph node: model, instructions, tools, sampling, and how to read the answer."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", use_attribute_docstrings=True)

    name: str = Field(min_length=1)
    """Role name used in the recipe's reward and group maps (e.g. ``solver``)."""
    model: ModelLike
    """Spec string (``local:smollm2-135m-instruct``, ``openai:...``), ModelConfig or ChatModel.
    Specs resolve through a per-process registry, so roles naming one spec share one engine."""
    system_prompt: str = ""
    """Plain text or a Jinja2 template rendered with `run(variables=...)` (missing names fail loudly)."""
    user_template: str | None = None
    """Optional Jinja2 template for the user message, used when `run()` gets no message."""
    examples: list[Message] = Field(default_factory=list)
    """Few-shot turns (user/assistant messages) put between the system prompt and the task.
    Small models copy a worked example's layout far more reliably than they follow a
    described one; the turns are prompt, so they are never trained on."""
    tools: list[Any] = Field(default_factory=list)
    """agentplay tools or LangChain BaseTools (wrapped in one `agentplay.tools.Toolbox`), or one
    `ToolRunner` (a Toolbox, or your own object with its three methods) used as is."""
    sampling: SamplingParams = Field(default_factory=lambda: SamplingParams(max_tokens=256))
    """Temperature, token limit and the rest for every model call of the role (`run(sampling=...)` overrides)."""
    max_tool_turns: int = Field(4, ge=0, le=64)
    """Tool rounds allowed before the model must answer; the next call is the last."""
    output_schema: type[BaseModel] | None = None
    """If set, the final answer is parsed as JSON into this model (stored as a dict)."""
    output_parser: Callable[[str], Any] | None = None
    """If set, called on the final answer text; raising ValueError records a parse error."""
    trainable: bool = True
    """False for roles that only check or judge: the recipe needs no reward for them."""

    _toolbox: ToolRunner | None = None

    @field_validator("sampling", mode="before")
    @classmethod
    def _sampling(cls, value: Any) -> Any:
        return SamplingParams(**value) if isinstance(value, dict) else value

    @field_validator("system_prompt", "user_template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value:
            try:
                _JINJA.parse(value)
            except jinja2.TemplateSyntaxError as exc:
                raise ValueError(f"not a valid Jinja2 template (line {exc.lineno}): {exc.message}") from None
        return value

    # -- running -------------------------------------------------------------------------------

    async def run(
        self,
        message: str | list[Message] | None = None,
        *,
        variables: dict[str, Any] | None = None,
        group_id: str | None = None,
        sampling: SamplingParams | None = None,
    ) -> RoleTurn:
        """Run one sample of this role to its final answer and record it."""
        return (await self.run_n(message, n=1, variables=variables, group_id=group_id, sampling=sampling))[0]

    async def run_n(
        self,
        message: str | list[Message] | None = None,
        *,
        n: int,
        variables: dict[str, Any] | None = None,
        group_id: str | None = None,
        sampling: SamplingParams | None = None,
    ) -> list[RoleTurn]:
        """n independent samples of the same prompt (one request with ``n`` choices when the backend allows)."""
        if n < 1:
            raise ValueError(f"n: must be at least 1, got {n}")
        messages = self.build_messages(message, variables or {})
        model = await resolve_model(self.model)
        toolbox = self._get_toolbox()
        schemas = toolbox.schemas() if toolbox is not None else None
        params = (sampling or self.sampling).model_copy()
        recorder = current_recorder()
        if params.seed is None and recorder is not None:
            params.seed = recorder.next_sampling_seed(self.name)
        node = _current_node()
        started = time.time()
        first = await model.chat(messages, tools=schemas, sampling=params.model_copy(update={"n": n}))
        firsts = [(first, c) for c in first.choices[:n]]
        while len(firsts) < n:  # backends that ignore `n`
            extra = params.model_copy(update={"n": 1, "seed": None if params.seed is None else params.seed + len(firsts)})
            more = await model.chat(messages, tools=schemas, sampling=extra)
            firsts.append((more, more.choice))
        later = params.model_copy(update={"n": 1})
        turns = await asyncio.gather(*(
            self._finish(model, messages, result, choice, toolbox, schemas, later, node, group_id, started)
            for result, choice in firsts
        ))
        if recorder is not None:
            for turn in turns:
                recorder.add(turn)
        return list(turns)

    async def _finish(self, model: ChatModel, messages: list[Message], result: ChatResult, choice: Choice,
                      toolbox: ToolRunner | None, schemas: list[dict[str, Any]] | None, sampling: SamplingParams,
                      node: str, group_id: str | None, started: float) -> RoleTurn:
        turn = RoleTurn(role=self.name, node=node, group_id=group_id, started_at=started)
        last = await continue_loop(
            model=model, messages=messages, first=result, choice=choice, toolbox=toolbox,
            tool_schemas=schemas, sampling=sampling, max_tool_turns=self.max_tool_turns, turn=turn,
        )
        turn.output, turn.parse_error = self.parse_output(last)
        turn.latency_s = time.time() - started
        return turn

    # -- pieces a recipe may reuse -------------------------------------------------------------

    def build_messages(self, message: str | list[Message] | None, variables: dict[str, Any]) -> list[Message]:
        """System prompt (rendered), the few-shot examples, then the user message(s)."""
        messages: list[Message] = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self._render("system_prompt", self.system_prompt, variables)})
        messages += [dict(m) for m in self.examples]
        if message is None:
            if self.user_template is None:
                raise ValueError(f"Role {self.name!r}: run() got no message and the role has no user_template")
            messages.append({"role": "user", "content": self._render("user_template", self.user_template, variables)})
        elif isinstance(message, str):
            messages.append({"role": "user", "content": message})
        else:
            messages += list(message)
        return messages

    def parse_output(self, choice: Choice) -> tuple[Any, str | None]:
        """(output, parse_error) for the final choice; never raises for model misbehaviour."""
        text = (choice.content if choice.content is not None else choice.text).strip()
        pending = " (the model was still calling tools)" if choice.tool_calls or choice.tool_call_failures else ""
        if self.output_parser is not None:
            try:
                return self.output_parser(text), None
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                return None, f"output_parser: {exc}{pending}"
        if self.output_schema is not None:
            found = _JSON_OBJECT.search(text)
            if not found:
                return None, f"no JSON object in the answer{pending}"
            try:
                return self.output_schema.model_validate(json.loads(found.group(0))).model_dump(mode="json"), None
            except (json.JSONDecodeError, ValidationError) as exc:
                return None, f"answer does not match {self.output_schema.__name__}: {exc}"[:500]
        if not text:
            return None, f"empty answer{pending}"
        return text, None

    def render(self, template: str, **variables: Any) -> str:
        """Render a prompt template the way this role renders its own (StrictUndefined)."""
        return self._render("template", template, variables)

    def _render(self, field: str, template: str, variables: dict[str, Any]) -> str:
        try:
            return _JINJA.from_string(template).render(**variables)
        except jinja2.UndefinedError as exc:
            raise ValueError(f"Role {self.name!r}: {field} needs a variable: {exc.message}") from None

    def _get_toolbox(self) -> ToolRunner | None:
        if not self.tools:
            return None
        if self._toolbox is None:
            if len(self.tools) == 1 and isinstance(self.tools[0], ToolRunner):
                self._toolbox = self.tools[0]  # a Toolbox, or the user's own runner
            else:
                from agentplay.tools import Toolbox

                self._toolbox = Toolbox(self.tools)
        return self._toolbox


def _current_node() -> str:
    """The LangGraph node running this role, when inside a graph."""
    try:
        from langgraph.config import get_config

        return str(get_config().get("metadata", {}).get("langgraph_node", ""))
    except (RuntimeError, ImportError):
        return ""
