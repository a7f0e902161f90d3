"""The multi-turn tool loop of one role sample, recorded token-exactly.

Written by hand because no library builds the training view we need: one
sequence (first prompt, then model tokens with mask 1 interleaved with tool
output and template glue with mask 0) checked call by call against the ids the
engine actually conditioned on. LangGraph's prebuilt agent runs the same loop
but only keeps messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from agentplay.models import (
    ChatModel, ChatResult, Choice, Message, SamplingParams, SamplingRecord, ToolCall, ToolCallParseFailure,
)
from agentplay.traces import Generation, RoleTurn, ToolCallRecord

__all__ = ["TokenTrace", "ToolRunner", "continue_loop", "execute_tool_calls", "generation_record"]


@runtime_checkable
class ToolRunner(Protocol):
    """What the role loop needs from a role's tools: core's whole contract with them.

    `agentplay.tools.Toolbox` is the implementation every Role gets by default; core
    depends on this Protocol, not on the tools package, and a Role given one object
    satisfying it (`Role(tools=[runner])`) uses it as is. `execute` never raises: a
    failed, unknown or unparsable call comes back as a record with its error.
    """

    def schemas(self) -> list[dict[str, Any]]:
        """The OpenAI tool schemas offered to the model."""
        ...

    async def execute(self, calls: Sequence[ToolCall | ToolCallParseFailure]) -> list[ToolCallRecord]:
        """Run the calls (concurrently is fine); one record per call, in the order of `calls`."""
        ...

    def tool_message(self, record: ToolCallRecord) -> Message:
        """The chat message that carries `record` back to the model."""
        ...


class TokenTrace:
    """Accumulates (prompt, completion) ids of successive calls into ids/mask/logprobs."""

    def __init__(self) -> None:
        self.prompt_ids: list[int] | None = None
        self.ids: list[int] = []
        self.mask: list[int] = []
        self.logprobs: list[float] = []
        self.exact = True
        self.available = True
        self.breaks: list[str] = []

    def add(self, prompt_ids: list[int] | None, completion_ids: list[int] | None,
            logprobs: list[float] | None, *, exact: bool = True) -> None:
        """`exact=False`: the ids were rebuilt from text (`ChatResult.retokenized`), not sampled."""
        if not self.available or prompt_ids is None or completion_ids is None:
            self.available = False  # an API without token ids: text-only trace
            return
        if not exact:
            self.exact = False
            self.breaks.append(f"call {len(self.breaks) + 1}: ids re-tokenized from text, not from the server")
        if self.prompt_ids is None:
            self.prompt_ids = list(prompt_ids)
        else:
            seen = self.prompt_ids + self.ids
            if prompt_ids[: len(seen)] != seen:
                # The re-rendered prompt does not extend what the model saw: keep going, but say so.
                self.exact = False
                self.breaks.append(f"call {len(self.breaks) + 2}: prompt does not extend previous ids")
            glue = list(prompt_ids[len(seen):])
            self.ids += glue
            self.mask += [0] * len(glue)
            self.logprobs += [0.0] * len(glue)
        self.ids += completion_ids
        self.mask += [1] * len(completion_ids)
        lp = list(logprobs) if logprobs is not None and len(logprobs) == len(completion_ids) else None
        self.logprobs += lp if lp is not None else [0.0] * len(completion_ids)

    def fill(self, turn: RoleTurn) -> None:
        if not self.available or self.prompt_ids is None:
            turn.token_exact = False  # no ids from the server: nothing here is token-exact
            return
        turn.prompt_token_ids = self.prompt_ids
        turn.token_ids = self.ids
        turn.mask = self.mask
        turn.logprobs = self.logprobs
        turn.token_exact = self.exact


def sampling_record(result: ChatResult, sampling: SamplingParams | None) -> SamplingRecord | None:
    """What the backend says it sampled with, else the parameters the role asked for,
    marked as not reported (a server that cannot say how it sampled)."""
    if result.sampled_with is not None:
        return result.sampled_with
    if sampling is None:
        return None
    return SamplingRecord(temperature=sampling.temperature, top_p=sampling.top_p, logprobs_mode=None,
                          engine=result.model, reported=False)


def generation_record(result: ChatResult, choice: Choice, sampling: SamplingParams | None = None) -> Generation:
    return Generation(
        sampling=sampling_record(result, sampling),
        prompt_token_ids=result.prompt_token_ids,
        completion_token_ids=choice.completion_token_ids,
        logprobs=choice.logprobs,
        text=choice.text,
        finish_reason=choice.finish_reason,
        weight_version=result.weight_version,
        model=result.model,
        tokenizer=result.tokenizer,
    )


async def execute_tool_calls(toolbox: ToolRunner, choice: Choice) -> tuple[list[ToolCallRecord], list[Message]]:
    """Run every call the model wrote and build the tool messages it will see.

    The Toolbox never raises: a call that could not be parsed, an unknown tool or
    a crash comes back as a record whose error the model reads and the trace keeps.
    """
    from agentplay._lc_capture import role_tools

    with role_tools():  # the turn records these calls; LangChain tool callbacks must not add a turn
        records: list[ToolCallRecord] = await toolbox.execute([*choice.tool_calls, *choice.tool_call_failures])
    return records, [toolbox.tool_message(r) for r in records]


async def continue_loop(
    *,
    model: ChatModel,
    messages: list[Message],
    first: ChatResult,
    choice: Choice,
    toolbox: ToolRunner | None,
    tool_schemas: list[dict[str, Any]] | None,
    sampling: SamplingParams,
    max_tool_turns: int,
    turn: RoleTurn,
) -> Choice:
    """Carry one sampled choice through tool calls until a final answer; fills `turn`.

    Returns the last choice (whose content is the role's answer). The call after
    the last allowed tool round is final: calls it still writes are recorded
    but not executed.
    """
    trace = TokenTrace()
    result = first
    conversation = list(messages)
    tool_rounds = 0
    while True:
        trace.add(result.prompt_token_ids, choice.completion_token_ids, choice.logprobs,
                  exact=not result.retokenized)
        turn.generations.append(generation_record(result, choice, sampling))
        if result.weight_version is not None:
            turn.weight_version = result.weight_version
        conversation.append(choice.assistant_message())
        wants_tools = bool(choice.tool_calls or choice.tool_call_failures)
        if not wants_tools or toolbox is None or tool_rounds >= max_tool_turns:
            break
        records, tool_messages = await execute_tool_calls(toolbox, choice)
        turn.tool_calls += records
        conversation += tool_messages
        tool_rounds += 1
        result = await model.chat(conversation, tools=tool_schemas, sampling=sampling)
        choice = result.choice
    trace.fill(turn)
    turn.messages = conversation
    return choice
