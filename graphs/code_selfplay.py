"""Code self-play (Absolute Zero style): one model proposes programs, the same model solves them.

Each episode picks a task type from its seed. The proposer samples `n_proposals`
programs `f` with inputs; the sandbox runs each twice and keeps only programs that
succeed and agree with themselves. Each kept task goes to `n_solvers` solver samples:

- deduction: given f and an input, predict the output;
- abduction: given f and an output, find an input (any input that works counts);
- induction: given input/output pairs (the last `held_out` pairs hidden), write f.

Every answer is checked by running it in the sandbox (`graphs/_code_exec.py`).
Rewards follow AZR: a solver gets 1 when its answer checks out; a proposer gets
the learnability of its task, 1 - solve rate when some but not all attempts succeed,
else 0. With `format_rewards` (the default, as in AZR) a well-formed but wrong answer
or a proposal that parses but fails validation gets -0.5, and text with no answer to
parse, or an answer of the wrong kind (an expression where a value was asked), gets
-1, so a group that is all wrong still says which samples kept the layout: without
it a small model's groups are all 0 and GRPO has nothing to learn from.
Near-duplicate programs within one episode lose `repetition_weight` x their
repetition penalty. Valid programs join a process-level `TaskBuffer` that
feeds reference examples to later proposers and stands in when no proposal of an
episode is valid (as AZR fills a batch from its buffer).

    recipe = build(n_proposals=2, n_solvers=4)
"""

from __future__ import annotations

import ast
import asyncio
import random
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import Any, TypedDict

from agentplay.sandbox import Limits, open_sandbox
from agentplay.tools import CodeTool
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel, ConfigDict, Field

from agentplay import EpisodeContext, EpisodeView, GroupBy, Recipe, Role
from agentplay.models import DEFAULT_MODEL_SPEC, SamplingParams
from agentplay.prompts import ENVIRONMENT, load_prompt, render_prompt
from agentplay.rewards import learnability, repetition_penalty
from agentplay.traces import RewardRecord, RoleTurn

from ._code_exec import (
    CodeTask,
    TaskType,
    Verdict,
    build_task,
    check_abduction,
    check_deduction,
    check_induction,
    fenced_blocks,
)

__all__ = [
    "PROPOSER_AGAIN",
    "PROPOSER_REFERENCE",
    "PROPOSER_SYSTEM",
    "PROPOSER_USER",
    "SEED_PROGRAMS",
    "SOLVER_EXAMPLES",
    "SOLVER_SYSTEM",
    "SOLVER_USER",
    "CodeSelfPlayConfig",
    "CodeState",
    "TaskBuffer",
    "build",
    "format_penalty",
    "metrics",
    "parse_proposal",
    "proposer_messages",
    "proposer_repetition",
    "proposer_reward",
    "solve_rate",
    "solver_example_turns",
    "solver_group",
    "solver_reward",
    "solver_role",
    "well_formed",
]


# -- config ------------------------------------------------------------------------------------

def _every_task_type() -> list[TaskType]:
    return ["deduction", "abduction", "induction"]


class CodeSelfPlayConfig(BaseModel):
    """Options of `build()`; every one can be passed as a keyword."""

    model_config = ConfigDict(extra="forbid")

    task_types: list[TaskType] = Field(default_factory=_every_task_type, min_length=1)
    """Task types drawn (uniformly, by episode seed) for each episode."""
    n_proposals: int = Field(2, ge=1, le=64)
    """Programs the proposer samples per episode: its GRPO group and repetition-penalty batch."""
    propose: bool = True
    """False turns the proposer off: no proposals, so the solvers practise only on buffered
    and replayed seed tasks (`fill_from_buffer`, `replay_tasks`). The no-self-play ablation
    that tells what the proposer's programs add over training on the seeds alone."""
    n_solvers: int = Field(4, ge=1, le=64)
    """Solver samples per task: the solver's GRPO group and the solve-rate estimate."""
    induction_inputs: int = Field(3, ge=2, le=10)
    """Inputs an induction proposal must give (deduction/abduction use the first one)."""
    held_out: int = Field(1, ge=1)
    """Induction pairs hidden from the solver; its program must still reproduce them."""
    n_references: int = Field(1, ge=0, le=8)
    """Buffered programs shown to the proposer as examples of the format (and of what to avoid repeating)."""
    fill_from_buffer: bool = True
    """When no proposal is valid, the solvers practise on a buffered task instead of idling."""
    replay_tasks: int = Field(0, ge=0, le=8)
    """Seed tasks the solvers also practise on in every episode, besides the proposals. A
    proposer that drifts to one kind of program (the 135M one drifts to integer functions)
    leaves the solver a one-kind curriculum, and its GRPO updates learn that kind's answer
    shape everywhere; replaying the seeds keeps every kind they cover in each batch. Not in
    AZR, which draws from its buffer only when the proposals fall short."""
    accepted_input_reward: float = Field(0.0, ge=0.0, lt=1.0)
    """Abduction: added to a wrong answer's reward when f returns for it instead of raising.
    The 135M solver answers `sum(xs) -> 26` with `26`, which raises: self-play tasks mostly
    keep the argument's type, so GRPO on right/wrong alone teaches "answer with the target's
    type". This rewards the step before the right input, an input of the kind f takes.
    0 (the default) keeps AZR's rewards."""
    format_rewards: bool = True
    """AZR's format-aware rewards: -0.5 for a wrong answer or an invalid proposal that
    parsed, -1 for output with nothing to parse; False gives 0 to both."""
    solver_examples: bool = True
    """Show the solver the worked examples of its task type (`SOLVER_EXAMPLES`) before the task."""
    proposer_max_tokens: int = Field(256, ge=1)
    solver_max_tokens: int = Field(192, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=5.0)
    require_input_dependence: bool = True
    """Reject a program whose output stays the same when its input is edited slightly (see
    `build_task`). Not in AZR; the 135M proposer wrote such programs for 14 of the 55
    tasks one learning run trained its solver on, and the solver learned "any input"."""
    wall_time_s: float = Field(5.0, gt=0, le=120)
    """Sandbox wall-clock limit of each run (a proposal that loops is rejected as a timeout)."""
    memory_mb: int = Field(256, ge=32)
    max_output_chars: int = Field(1000, ge=16)
    """Longest canonical repr of one output; longer outputs make a proposal invalid."""
    repetition_weight: float = Field(0.5, ge=0.0)
    repetition_threshold: float = Field(0.8, gt=0.0, le=1.0)
    """n-gram Jaccard similarity at which two programs count as near-duplicates."""
    proposer_tools: bool = True
    """Give the proposer the `run_python` code tool to try its program before answering
    (the tool's output is recorded with mask 0: not trained on)."""
    max_tool_turns: int = Field(2, ge=0, le=16)
    """Tool rounds the proposer may take before it must answer."""
    sandbox_backend: str = "auto"
    """Backend for the sandbox opened on first use when `build()` gets no `sandbox`."""

    def model_post_init(self, _: Any) -> None:
        if self.held_out >= self.induction_inputs:
            raise ValueError(
                f"held_out: must be below induction_inputs ({self.induction_inputs}) so the solver sees a pair"
            )


# -- state -------------------------------------------------------------------------------------

class CodeState(TypedDict, total=False):
    seed: int
    """The episode seed (for draws made inside nodes)."""
    task_type: str
    references: list[dict[str, Any]]
    """Buffered programs shown to the proposer."""
    proposals: list[dict[str, Any]]
    """Per proposer turn: turn_id, program, inputs, error (None when valid), task (index or None)."""
    tasks: list[dict[str, Any]]
    """CodeTask dumps plus `source` ("proposal" or "buffer")."""
    solver_task: dict[str, int]
    """Solver turn id -> index in `tasks`."""
    answers: dict[str, Any]
    """Solver turn id -> parsed answer (None when it could not be parsed)."""
    verdicts: dict[str, dict[str, Any]]
    """Solver turn id -> {"correct", "reason"}."""


# -- seed programs and the task buffer ---------------------------------------------------------

SEED_PROGRAMS: list[dict[str, Any]] = [
    {"program": "def f(xs):\n    return sorted(xs)[::-1]", "inputs": ["[3, 1, 2]", "[5]", "[2, 9, 4, 9]"]},
    {"program": "def f(s):\n    return s.upper() + s[::-1]", "inputs": ["'abc'", "'Hi'", "''"]},
    {"program": "def f(n):\n    return sum(i * i for i in range(n))", "inputs": ["3", "5", "0"]},
    {"program": "def f(a, b):\n    return [x for x in a if x % b == 0]", "inputs": ["[1, 2, 3, 4, 6], 2", "[9, 10], 3", "[], 5"]},
    {"program": "def f(s):\n    counts = {}\n    for ch in s:\n        counts[ch] = counts.get(ch, 0) + 1\n    return counts",
     "inputs": ["'banana'", "'aab'", "'xyz'"]},
    {"program": "def f(n):\n    out = []\n    while n > 1:\n        n = n // 2 if n % 2 == 0 else 3 * n + 1\n        out.append(n)\n    return out",
     "inputs": ["6", "1", "3"]},
]
"""Small programs (AZR seeds its buffer the same way) with inputs for every task type."""


class TaskBuffer:
    """Valid programs seen so far in this process (seeds first), newest kept when full.

    Inject one into several `build()` calls to share it; it is per process, so Ray
    workers each keep their own.
    """

    def __init__(self, seeds: list[dict[str, Any]] | None = None, max_size: int = 512):
        self._items: deque[dict[str, Any]] = deque(maxlen=max_size)
        self._seeds = [{"program": s["program"], "inputs": list(s["inputs"])}
                       for s in (SEED_PROGRAMS if seeds is None else seeds)]
        for s in self._seeds:
            self.add(s["program"], s["inputs"])

    def __len__(self) -> int:
        return len(self._items)

    def add(self, program: str, inputs: list[str]) -> None:
        if all(item["program"] != program for item in self._items):
            self._items.append({"program": program, "inputs": inputs})

    def sample(self, rng: random.Random, k: int = 1, min_inputs: int = 1) -> list[dict[str, Any]]:
        return _draw(self._items, rng, k, min_inputs)

    def sample_seeds(self, rng: random.Random, k: int = 1, min_inputs: int = 1) -> list[dict[str, Any]]:
        """Seed programs only (`replay_tasks`): the buffer's later items follow the proposer's drift."""
        return _draw(self._seeds, rng, k, min_inputs)


def _draw(items: Iterable[dict[str, Any]], rng: random.Random, k: int, min_inputs: int) -> list[dict[str, Any]]:
    pool = [item for item in items if len(item["inputs"]) >= min_inputs]
    return rng.sample(pool, min(k, len(pool)))


# -- role prompts ------------------------------------------------------------------------------

PROPOSER_SYSTEM = load_prompt(__file__, "code_selfplay/proposer_system.jinja")
"""Variables: `n_inputs` (input blocks asked for) and `tools` (whether run_python is offered)."""
PROPOSER_USER = load_prompt(__file__, "code_selfplay/proposer_user.jinja")
"""Variables: `task_type` (the template says what the student of that type sees)."""
PROPOSER_AGAIN = load_prompt(__file__, "code_selfplay/proposer_again.jinja")
PROPOSER_REFERENCE = load_prompt(__file__, "code_selfplay/proposer_reference.jinja")
"""A buffered program written as the proposer's own earlier reply. Shown as turns
(task, reference reply, "a new one"), the 135M model kept that layout, input block
included, in 11 of 24 samples (abduction, T 0.7); with the same reference quoted inside
the user message 2 of its first 48 proposals parsed."""


def proposer_messages(task_type: str, references: list[dict[str, Any]], n_inputs: int) -> list[dict[str, str]]:
    """The proposer's conversation: its task, each reference as a reply of its own, then
    the request for a new puzzle (AZR conditions on buffer references the same way)."""
    task = render_prompt(PROPOSER_USER, task_type=task_type)
    reply = ENVIRONMENT.from_string(PROPOSER_REFERENCE)
    turns = [{"role": "user", "content": task}]
    for ref in references:
        turns += [{"role": "assistant", "content": reply.render(ref=ref, n_inputs=n_inputs).strip()},
                  {"role": "user", "content": PROPOSER_AGAIN}]
    return turns


SOLVER_SYSTEM = load_prompt(__file__, "code_selfplay/solver_system.jinja")

SOLVER_USER: dict[str, str] = {t: load_prompt(__file__, f"code_selfplay/solver_{t}.jinja")
                               for t in ("deduction", "abduction", "induction")}
"""The task as each type's solver sees it. Variables: a `CodeTask` dump (`program`,
`inputs`, `outputs`) and `shown_inputs` (induction: the inputs not held out)."""

SOLVER_EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "deduction": [{"task": {"program": "def f(xs):\n    return xs + [1]", "inputs": ["[5]"]},
                   "answer": "f([5]) returns [5, 1].\n```output\n[5, 1]\n```"}],
    "abduction": [{"task": {"program": "def f(x):\n    return x * 3", "outputs": ["12"]},
                   "answer": "f(4) returns 12.\n```input\n4\n```"},
                  {"task": {"program": "def f(xs):\n    return xs + [1]", "outputs": ["[5, 1]"]},
                   "answer": "f([5]) returns [5, 1].\n```input\n[5]\n```"}],
    "induction": [{"task": {"shown_inputs": ["1", "2"], "outputs": ["3", "4"]},
                   "answer": "f adds 2.\n```python\ndef f(x):\n    return x + 2\n```"}],
}
"""Worked tasks per type, shown as user/assistant turns before the real task. The 135M
default model writes the asked-for block in 5 of the learning bench's 80 held-out
deduction tasks from the instructions alone and in 79 of 80 after one example, so its
rewards can be about answers, not layout. It also copies the example's *type*: with only
the list example its abduction answers were lists even for `f(x) = x + 1` (0 of 24 scalar
held-out tasks solved, and scalar training tasks never had a correct sample to learn
from); a scalar and a list example give both kinds (78 of 80 blocks written)."""


def solver_example_turns(task_type: str) -> list[dict[str, str]]:
    """`SOLVER_EXAMPLES[task_type]` as chat turns, each user turn rendered from `SOLVER_USER`."""
    user = ENVIRONMENT.from_string(SOLVER_USER[task_type])
    turns: list[dict[str, str]] = []
    for ex in SOLVER_EXAMPLES[task_type]:
        turns += [{"role": "user", "content": user.render(**ex["task"])},
                  {"role": "assistant", "content": ex["answer"]}]
    return turns

# -- parsing the model's text ------------------------------------------------------------------

def _split_demo_calls(program: str) -> tuple[str, list[str]]:
    """Top-level calls `f(...)`, `print(f(...))` or `assert f(...) == ...` in a program: cut
    out, their arguments kept. Small models often show their input as a call under the
    definition instead of in an ```input block; that is the same proposal, written the
    other way."""
    try:
        tree = ast.parse(program)
    except SyntaxError:
        return program, []
    inputs: list[str] = []
    cut: set[int] = set()
    for node in tree.body:
        call = node.value if isinstance(node, ast.Expr | ast.Assign) else None
        if isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare):
            call = node.test.left  # `assert f(3) == 9`: the claimed output is not trusted, only the input
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "print" \
                and len(call.args) == 1:
            call = call.args[0]
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "f" \
                and call.args and not call.keywords:
            inputs.append(", ".join(ast.get_source_segment(program, a) or "" for a in call.args))
            cut.update(range(node.lineno - 1, node.end_lineno or node.lineno))
    kept = "".join(line for i, line in enumerate(program.splitlines(keepends=True)) if i not in cut)
    return kept.strip(), inputs


def parse_proposal(text: str) -> dict[str, Any]:
    """{"program", "inputs"} from the proposer's blocks; ValueError says what is missing.
    Inputs come from ```input blocks, else from demo calls of f in the program."""
    blocks = fenced_blocks(text)
    programs = [b for lang, b in blocks if lang in ("python", "py", "") and "def f" in b]
    if not programs:
        raise ValueError("no ```python block defining f")
    program, calls = _split_demo_calls(programs[0])
    inputs = [b for lang, b in blocks if lang == "input" and b] or calls
    if not inputs:
        raise ValueError("no ```input block and no call of f to take the input from")
    return {"program": program, "inputs": inputs}


def _answer_parser(task_type: str) -> Callable[[str], str]:
    lang = {"deduction": "output", "abduction": "input", "induction": "python"}[task_type]

    def parse(text: str) -> str:
        blocks = fenced_blocks(text)
        tagged = [b for tag, b in blocks if tag == lang or (lang == "python" and tag == "py")]
        found = tagged or [b for tag, b in blocks if tag == ""]
        if lang == "python":
            found = [b for b in found if "def f" in b]
        if not found or not found[-1]:
            raise ValueError(f"no ```{lang} block with the answer")
        return found[-1]

    return parse


# -- rewards -----------------------------------------------------------------------------------

def solve_rate(state: dict[str, Any], task_index: int) -> float | None:
    """Share of the checked solver answers to task `task_index` that were right (None: none checked)."""
    marks = [state["verdicts"][tid]["correct"] for tid, i in state.get("solver_task", {}).items()
             if i == task_index and tid in state.get("verdicts", {})]
    return sum(marks) / len(marks) if marks else None


def format_penalty(cfg: CodeSelfPlayConfig, parsed: bool) -> float:
    """AZR's format reward for a failed sample: -0.5 when it parsed, -1 when not (0 without `format_rewards`)."""
    return 0.0 if not cfg.format_rewards else -0.5 if parsed else -1.0


def well_formed(state: dict[str, Any], turn_id: str) -> bool:
    """The solver wrote an answer of the asked kind (`x + 9` in the block is not a value)."""
    return state["answers"].get(turn_id) is not None and state["verdicts"][turn_id]["well_formed"]


def proposer_reward(turn: RoleTurn, state: dict[str, Any], episode: EpisodeView | None, *,
                    cfg: CodeSelfPlayConfig) -> RewardRecord:
    """Learnability 1 - p of a valid task solved at rate 0 < p < 1 (else 0); a format penalty
    for a proposal that did not parse or did not validate."""
    prop = next(p for p in state["proposals"] if p["turn_id"] == turn.turn_id)
    if prop["error"] is not None:
        parsed = turn.parse_error is None  # else `error` is the validation's reason
        reason = prop["error"] if parsed else f"parse error: {prop['error']}"
        return RewardRecord(value=format_penalty(cfg, parsed), reason=reason, components={"valid": 0.0})
    rate = solve_rate(state, prop["task"])
    if rate is None:
        return RewardRecord(value=0.0, reason="valid, but no solver attempt was checked", components={"valid": 1.0})
    value = learnability(rate)
    return RewardRecord(value=value, reason=f"valid; solve rate {rate:.2f} -> learnability {value:.2f}",
                        components={"valid": 1.0, "solve_rate": rate})


def solver_reward(turn: RoleTurn, state: dict[str, Any], episode: EpisodeView | None, *,
                  cfg: CodeSelfPlayConfig) -> RewardRecord:
    """1 for an answer the sandbox confirmed; else the format penalty (plus
    `accepted_input_reward` when f returned for the wrong answer)."""
    verdict = state["verdicts"].get(turn.turn_id)
    if verdict is None:
        return RewardRecord(value=0.0, reason="answer was not checked")
    if verdict["correct"]:
        return RewardRecord(value=1.0, reason=verdict["reason"], components={"correct": 1.0, "formatted": 1.0})
    reason = verdict["reason"] if turn.parse_error is None else f"parse error: {turn.parse_error}"
    formatted = well_formed(state, turn.turn_id)
    ran = bool(verdict.get("ran"))  # absent from verdicts stored before the field existed
    return RewardRecord(value=format_penalty(cfg, formatted) + (cfg.accepted_input_reward if ran else 0.0),
                        reason=reason, components={"correct": 0.0, "formatted": float(formatted), "ran": float(ran)})


def proposer_repetition(turns: list[RoleTurn], *, cfg: CodeSelfPlayConfig) -> list[float]:
    """Near-duplicate valid programs in one episode share a penalty; invalid ones keep their 0."""
    valid = [t for t in turns if t.reward is not None and t.reward.components.get("valid") == 1.0]
    pen = dict(zip((t.turn_id for t in valid),
                   repetition_penalty([t.output["program"] for t in valid], cfg.repetition_threshold)))
    return [-cfg.repetition_weight * pen.get(t.turn_id, 0.0) for t in turns]


def solver_group(turn: RoleTurn, state: dict[str, Any], ctx: EpisodeContext) -> str:
    """The solver samples of one task in one episode form a GRPO group."""
    return f"ep{ctx.index}/task{state['solver_task'].get(turn.turn_id, -1)}"


def metrics(state: dict[str, Any], turns: list[RoleTurn], *, buffer: TaskBuffer) -> dict[str, float]:
    """Valid-proposal and solve rates, where the tasks came from, and the buffer's size."""
    props = state.get("proposals", [])
    verdicts = list(state.get("verdicts", {}).values())
    return {
        "valid_proposal": sum(p["error"] is None for p in props) / max(len(props), 1),
        "tasks": float(len(state.get("tasks", []))),
        "from_buffer": float(any(t["source"] == "buffer" for t in state.get("tasks", []))),
        "replayed": float(sum(t["source"] == "replay" for t in state.get("tasks", []))),
        "solve_rate": sum(v["correct"] for v in verdicts) / len(verdicts) if verdicts else 0.0,
        "solver_format": (sum(well_formed(state, tid) for tid in state["verdicts"]) / len(verdicts)
                          if verdicts else 0.0),
        "buffer_size": float(len(buffer)),
    }


# -- build: roles, nodes, graph ----------------------------------------------------------------

def solver_role(task_type: TaskType, model: str = DEFAULT_MODEL_SPEC,
                cfg: CodeSelfPlayConfig | None = None) -> Role:
    """The solver of one task type: prompt, worked examples, sampling and answer parser.
    Evaluations build their prompts from it so they ask exactly what training asks."""
    cfg = cfg or CodeSelfPlayConfig()
    return Role(name="solver", model=model, system_prompt=SOLVER_SYSTEM, user_template=SOLVER_USER[task_type],
                examples=solver_example_turns(task_type) if cfg.solver_examples else [],
                sampling=SamplingParams(max_tokens=cfg.solver_max_tokens, temperature=cfg.temperature),
                output_parser=_answer_parser(task_type))


def build(
    model: str = DEFAULT_MODEL_SPEC,
    *,
    sandbox: Any = None,
    buffer: TaskBuffer | None = None,
    **options: Any,
) -> Recipe:
    """The code self-play recipe. `sandbox`: an open `agentplay.sandbox.Sandbox` (its
    lifetime is yours); without one, a sandbox of `sandbox_backend` opens on first use.
    `buffer`: a shared TaskBuffer (default: a fresh one seeded with SEED_PROGRAMS)."""
    cfg = CodeSelfPlayConfig(**options)
    buffer = buffer if buffer is not None else TaskBuffer()
    box: dict[str, Any] = {"sandbox": sandbox}

    def get_sandbox() -> Any:
        if box["sandbox"] is None:
            box["sandbox"] = open_sandbox(cfg.sandbox_backend)
        return box["sandbox"]

    def limits() -> Limits:
        return Limits(wall_time_s=cfg.wall_time_s, memory_mb=cfg.memory_mb,
                      output_bytes=max(4 * cfg.max_output_chars, 65536))

    code_tool = CodeTool(limits=limits()) if cfg.proposer_tools else None
    proposer = Role(
        name="proposer", model=model, system_prompt=PROPOSER_SYSTEM,
        sampling=SamplingParams(max_tokens=cfg.proposer_max_tokens, temperature=cfg.temperature),
        output_parser=parse_proposal, tools=[code_tool] if code_tool else [],
        max_tool_turns=cfg.max_tool_turns,
    )
    solvers = {t: solver_role(t, model, cfg) for t in ("deduction", "abduction", "induction")}
    checkers: dict[str, Callable[..., Awaitable[Verdict]]] = {
        "deduction": check_deduction, "abduction": check_abduction, "induction": check_induction}

    def n_inputs(task_type: str) -> int:
        return cfg.induction_inputs if task_type == "induction" else 1

    def initial_state(ctx: EpisodeContext) -> CodeState:
        task_type = cfg.task_types[ctx.rng.randrange(len(cfg.task_types))]
        refs = buffer.sample(ctx.rng, cfg.n_references, n_inputs(task_type))
        return {"seed": ctx.seed, "task_type": task_type, "references": refs, "proposals": [],
                "tasks": [], "solver_task": {}, "answers": {}, "verdicts": {}}

    async def propose(state: CodeState) -> dict[str, Any]:
        if not cfg.propose:
            return {"proposals": []}
        t = state["task_type"]
        if code_tool is not None:
            code_tool.sandbox = get_sandbox()
        turns = await proposer.run_n(
            proposer_messages(t, state["references"], n_inputs(t)), n=cfg.n_proposals,
            variables={"tools": code_tool is not None, "n_inputs": n_inputs(t)})
        return {"proposals": [
            {"turn_id": turn.turn_id, "error": turn.parse_error, "task": None,
             **(turn.output or {"program": "", "inputs": []})}
            for turn in turns
        ]}

    async def _validate_one(program: str, inputs: list[str], task_type: str) -> CodeTask:
        need = n_inputs(task_type)
        if len(inputs) < need:
            raise ValueError(f"{task_type} needs {need} inputs, got {len(inputs)}")
        return await build_task(get_sandbox(), program, inputs[:need], limits=limits(),
                                max_repr=cfg.max_output_chars, require_input_dependence=cfg.require_input_dependence)

    async def validate(state: CodeState) -> dict[str, Any]:
        t = state["task_type"]
        proposals = [dict(p) for p in state["proposals"]]
        todo = [p for p in proposals if p["error"] is None]
        results = await asyncio.gather(
            *(_validate_one(p["program"], p["inputs"], t) for p in todo), return_exceptions=True)
        tasks: list[dict[str, Any]] = []
        for p, res in zip(todo, results, strict=True):
            if isinstance(res, ValueError):
                p["error"] = f"invalid proposal: {res}"
            elif isinstance(res, BaseException):
                raise res  # sandbox failure: the episode is an error, not the proposer's fault
            else:
                p["task"] = len(tasks)
                tasks.append({**res.model_dump(), "source": "proposal"})
                buffer.add(res.program, res.inputs)
        buffered = buffer.sample(random.Random(state["seed"]), 1, n_inputs(t)) if not tasks and cfg.fill_from_buffer else []
        replayed = (buffer.sample_seeds(random.Random(f"replay/{state['seed']}"), cfg.replay_tasks, n_inputs(t))
                    if cfg.replay_tasks else [])
        for source, items in (("buffer", buffered), ("replay", replayed)):
            for item in items:
                try:
                    res = await _validate_one(item["program"], item["inputs"], t)
                except ValueError:
                    continue  # a buffered program that stopped validating (e.g. a tighter limit)
                tasks.append({**res.model_dump(), "source": source})
        return {"proposals": proposals, "tasks": tasks}

    async def solve(state: CodeState) -> dict[str, Any]:
        t = state["task_type"]
        runs = await asyncio.gather(*(
            solvers[t].run_n(n=cfg.n_solvers, variables={
                **task, "shown_inputs": task["inputs"][: len(task["inputs"]) - cfg.held_out]})
            for task in state["tasks"]
        ))
        return {"solver_task": {turn.turn_id: i for i, turns in enumerate(runs) for turn in turns},
                "answers": {turn.turn_id: turn.output for turns in runs for turn in turns}}

    async def verify(state: CodeState) -> dict[str, Any]:
        check = checkers[state["task_type"]]
        answers = state["answers"]
        todo = [(tid, i, answers.get(tid)) for tid, i in state["solver_task"].items()]

        async def one(i: int, answer: str | None) -> Verdict:
            if answer is None:
                return Verdict(correct=False, reason="no parsable answer")
            task = CodeTask.model_validate({k: state["tasks"][i][k] for k in ("program", "inputs", "outputs")})
            return await check(get_sandbox(), task, answer, limits=limits(), max_repr=cfg.max_output_chars)

        verdicts = await asyncio.gather(*(one(i, a) for _, i, a in todo))
        return {"verdicts": {tid: v.model_dump() for (tid, _, _), v in zip(todo, verdicts, strict=True)}}

    graph = StateGraph(CodeState)
    graph.add_node("propose", propose)
    graph.add_node("validate", validate)
    graph.add_node("solve", solve)
    graph.add_node("verify", verify)
    graph.add_edge(START, "propose")
    graph.add_edge("propose", "validate")
    graph.add_conditional_edges("validate", lambda s: "solve" if s["tasks"] else END, ["solve", END])
    graph.add_edge("solve", "verify")
    graph.add_edge("verify", END)

    return Recipe(
        name="code-selfplay",
        graph=graph,
        roles={"propose": proposer, "solve": "solver"},
        rewards={"proposer": partial(proposer_reward, cfg=cfg), "solver": partial(solver_reward, cfg=cfg)},
        groups={"proposer": GroupBy.episode(), "solver": GroupBy.key(solver_group)},
        episode_rewards={"proposer": partial(proposer_repetition, cfg=cfg)},
        initial_state=initial_state,
        metrics=partial(metrics, buffer=buffer),
        headline_metrics=["valid_proposal", "solve_rate"],
        zero_on_parse_error=not cfg.format_rewards,  # the reward fns give format errors their -1
        options={"model": model, **cfg.model_dump()},
    )
