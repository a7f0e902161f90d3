"""Data that crosses the model boundary, shared by every backend.

Messages stay OpenAI-shaped dicts (role/content/tool_calls/tool_call_id) because
that is the lingua franca of LangChain, vLLM and every API we talk to; what we
add is the token-level record that training needs.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Message = dict[str, Any]
"""An OpenAI-style chat message: {"role": ..., "content": ..., optional "tool_calls", "tool_call_id", "name"}."""

FinishReason = Literal["stop", "length", "tool_calls", "error"]


class SamplingParams(BaseModel):
    """Sampling knobs accepted by every backend (OpenAI names and meanings)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    temperature: float = Field(1.0, ge=0.0, le=5.0)
    """0 means greedy."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling: draw from the smallest set of tokens whose probability reaches top_p (1: all)."""
    max_tokens: int = Field(256, ge=1, le=32768)
    """Upper bound on completion tokens per choice."""
    stop: list[str] | None = None
    """Strings that end the completion when generated (not included in it)."""
    n: int = Field(1, ge=1, le=64)
    """Number of independent choices for the same prompt (one GRPO group)."""
    seed: int | None = None
    """Sampling seed; roles inside an episode get one derived from the episode seed (reproducible runs)."""
    logprobs: bool = True
    """Ask for per-token logprobs of the sampled tokens (training needs them)."""
    top_logprobs: int = Field(0, ge=0, le=20)
    """Also return this many most likely alternatives per position (0: none)."""


class SamplingRecord(BaseModel):
    """How one completion was drawn, which is what the trainer must score it under.

    The importance ratio pi_theta / pi_old compares a logprob recomputed by the trainer
    with the one the engine recorded; both must be of the same distribution. Roles
    sample at their own temperatures (a judge at 0.7, a solver at 1.0), so the
    trainer reads these settings per generation instead of assuming one of its own.
    """

    temperature: float
    """0 means greedy (its logprobs are then of the raw distribution)."""
    top_p: float = 1.0
    top_k: int | None = None
    """None: no top-k filter (the local engine has none)."""
    logprobs_mode: str | None = None
    """Which distribution the recorded logprobs are of: `temperature` (log_softmax(logits / T)),
    `raw` (T = 1) or `processed` (after temperature and top_p); None when the backend cannot say."""
    engine: str = ""
    """What sampled: `agentplay-local`, `agentplay-serve/agentplay-local`, a server's model name..."""
    decode_dtype: str | None = None
    """What the engine's decode step multiplied: `float32` (the trainer's arithmetic: logprobs exact),
    `bfloat16` (`ModelConfig.decode_dtype`: logprobs ~0.01 off the fp32 policy's; correct with
    `tis_cap` / `mis_bound`); None when the backend cannot say."""
    reported: bool = True
    """True: the backend said how it sampled. False: a server that cannot say (vLLM, llama.cpp,
    a hosted API); these are the parameters the recipe requested, and the trainer scores the
    tokens at them, assuming `temperature` logprobs."""


class ToolCall(BaseModel):
    """A tool call the model wrote, already parsed."""

    id: str
    name: str
    arguments: dict[str, Any]
    raw: str = ""
    """The exact text the model wrote for this call (for traces and re-rendering)."""


class ToolCallParseFailure(BaseModel):
    """Text that looked like a tool call but could not be parsed: data, not an exception."""

    raw: str
    error: str


class TopLogprob(BaseModel):
    token_id: int
    token: str
    logprob: float


class Choice(BaseModel):
    """One sampled completion."""

    index: int = 0
    text: str
    """Everything the model wrote, tool-call markup included (the raw completion)."""
    content: str | None = None
    """The text without tool-call markup: what a chat client shows."""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_failures: list[ToolCallParseFailure] = Field(default_factory=list)
    finish_reason: FinishReason = "stop"
    completion_token_ids: list[int] | None = None
    """Exact ids the model sampled; decoding them gives `text`. None when the backend cannot say."""
    logprobs: list[float] | None = None
    """Logprob of each sampled token under the weights that sampled it."""
    top_logprobs: list[list[TopLogprob]] | None = None

    def assistant_message(self) -> Message:
        """The message to append to the conversation; carries the raw text so a
        re-render reproduces the exact tokens the model wrote."""
        msg: Message = {"role": "assistant", "content": self.text}
        if self.tool_calls:
            msg["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in self.tool_calls
            ]
        return msg


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ChatResult(BaseModel):
    """The answer to one chat request (one prompt, `n` choices)."""

    model: str
    choices: list[Choice]
    prompt_token_ids: list[int] | None = None
    """The exact prompt ids the model conditioned on (chat template applied)."""
    weight_version: int | None = None
    """Version of the weights that produced every choice; increments on each update."""
    sampled_with: SamplingRecord | None = None
    """How the backend says it sampled every choice; None when it cannot say."""
    usage: Usage = Field(default_factory=Usage)
    retokenized: bool = False
    """True when the server returned no ids and these were rebuilt from text by a local
    tokenizer: plausible ids, not necessarily the ones sampled (traces say token_exact = false)."""
    tokenizer: str | None = None
    """The model's tokenizer: a local folder (or tokenizer.json) or a Hugging Face repo id; the
    trace keeps it so its token ids can be read back (the UI's token view) whatever the model.
    None when the backend cannot say (an OpenAI-compatible server without `tokenizer=`)."""

    @property
    def choice(self) -> Choice:
        return self.choices[0]
