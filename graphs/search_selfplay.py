"""Search self-play (after SSP): one model writes search questions for a known answer and solves them.

Each episode samples a target from the corpus (a documented stdlib name such
as ``os.path.join``; the k episodes of one group block share it). The
proposer reads the target's documentation, searches, and writes a question
whose answer is the target; when its searching turn ends without a question,
one more short turn asks it for the question alone (a 135M model that searched
rarely also stops to write; `write_turn=False` leaves that out). Then:

1. rule checks: the question has a sane length, does not contain the answer,
   and the proposer searched with at least `min_distinct_queries` distinct queries;
2. RAG check: the documents the proposer retrieved, shuffled with noise
   documents, go to a model that must answer *without searching*; the question
   is kept only if that answer matches (it proves the question is answerable
   from what was found);
3. `n_solvers` solver attempts, each with the search tool;
4. grading: normalised exact match, with an optional LLM-judge fallback.

Rewards (AZR's format rewards, `format_rewards=False` for plain 1/0): solver 1 right,
-0.5 wrong, -1 without a parsable answer; proposer 1 - solver success rate for a
valid proposal, -0.5 for a question that fails a check, -1 for no question. A small
model's proposals and answers mostly fail at first, and the graded failures still
tell a group's samples apart, so GRPO has a signal before the first valid one.
Groups: the n solver attempts of one episode; the k proposals for one target.

`python -m agentplay.graphs.search_selfplay_breakdown --store traces.db` says where
a run's proposals fail (format, length, leaked answer, searches, RAG check).

    recipe = build(n_solvers=4, group_k=4)
"""

from __future__ import annotations

import operator
import random
import re
from functools import partial
from typing import Annotated, Any, TypedDict

from agentplay.tools import CorpusIndex, SearchMode, SearchTool, default_corpus_index
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send
from pydantic import BaseModel, ConfigDict, Field

from agentplay import EpisodeContext, EpisodeView, GroupBy, Recipe, Role, current_episode
from agentplay.models import DEFAULT_MODEL_SPEC, SamplingParams
from agentplay.prompts import load_prompt, render_prompt
from agentplay.rewards import exact_match, llm_judge, normalize_answer
from agentplay.traces import RewardRecord, RoleTurn

__all__ = [
    "PROPOSER_DEMO",
    "PROPOSER_SYSTEM",
    "PROPOSER_USER",
    "PROPOSER_WRITE",
    "RAG_DEMO",
    "WRITE_DEMO",
    "RAG_SYSTEM",
    "RAG_USER",
    "SOLVER_DEMO",
    "SOLVER_SYSTEM",
    "SearchSelfPlayConfig",
    "SearchState",
    "build",
    "grade_attempt",
    "metrics",
    "parse_answer",
    "parse_question",
    "proposer_reward",
    "rag_documents",
    "rag_verdict",
    "rule_check",
    "search_findings",
    "solver_reward",
    "solver_role",
    "target_kind",
]


# -- config ------------------------------------------------------------------------------------

class SearchSelfPlayConfig(BaseModel):
    """Options of `build()`; every one can be passed as a keyword (or `--set name=value`)."""

    model_config = ConfigDict(extra="forbid")

    n_solvers: int = Field(4, ge=1, le=64)
    """Solver attempts per question: the solver's GRPO group and the solve-rate estimate."""
    group_k: int = Field(4, ge=1, le=64)
    """Episodes sharing one target: the proposer's GRPO group."""
    max_tool_turns: int = Field(3, ge=0, le=16)
    proposer_max_tokens: int = Field(192, ge=1)
    solver_max_tokens: int = Field(128, ge=1)
    rag_max_tokens: int = Field(32, ge=1)
    temperature: float = Field(0.7, ge=0.0, le=5.0)
    """Of the proposer and solvers. At 1.0 SmolLM2-135M rambled instead of calling a tool in 8 of
    8 proposals (measured); lower temperatures keep it closer to its worked examples."""
    search_k: int = Field(3, ge=1, le=20)
    """Hits per search call."""
    search_mode: SearchMode = "bm25"
    """Ranking of the search tool (and of the RAG check's replay of the proposer's queries)."""
    snippet_chars: int = Field(160, ge=20)
    """Characters of each search hit the proposer and solvers see."""
    noise_docs: int = Field(3, ge=0, le=20)
    """Unrelated documents mixed into the RAG check."""
    doc_chars: int = Field(400, ge=50)
    """Characters of each document shown to the proposer and to the RAG checker."""
    min_question_chars: int = Field(12, ge=1)
    max_question_chars: int = Field(400, ge=1)
    min_distinct_queries: int = Field(2, ge=0)
    """The proposer must have searched with at least this many distinct queries."""
    llm_judge: bool = False
    """When exact match fails, ask a model (yes/no) whether the answer is right."""
    judge_model: str | None = None
    """Model of the judge and the RAG checker; default: the policy model."""
    gate_solvers: bool = True
    """Only questions that pass every check go to the solvers (False: solve anyway, e.g. to debug)."""
    write_turn: bool = True
    """When the proposer's searching turn ends without a question, ask for it in one more turn."""
    question_max_tokens: int = Field(48, ge=1)
    """Token budget of that turn: one line."""
    format_rewards: bool = True
    """AZR's graded failures (-0.5 failed check or wrong answer, -1 no question or no answer); False: 0."""


# -- state -------------------------------------------------------------------------------------

class SearchState(TypedDict, total=False):
    answer: str
    """The target the question must lead to (a documented name)."""
    target_doc: str
    kind: str
    """function, class, method or name (see `target_kind`)."""
    owner: str
    """The module or class the target belongs to."""
    question: str | None
    queries: list[str]
    """Distinct search queries the proposer made."""
    rules_ok: bool
    rag_ok: bool
    check_reason: str
    """Why the proposal failed a check ('' when it passed)."""
    rag_answer: str | None
    attempts: Annotated[list[dict[str, Any]], operator.add]
    """One entry per solver attempt: turn_id, answer, score, reason."""


class SolveTask(TypedDict):
    """What `to_solvers` sends each solver (a `Send` payload): the question, which exists, and its answer."""

    question: str
    answer: str


# -- prompts -----------------------------------------------------------------------------------

PROPOSER_SYSTEM = load_prompt(__file__, "search_selfplay/proposer_system.jinja")
PROPOSER_USER = load_prompt(__file__, "search_selfplay/proposer_user.jinja")
"""Variables: `answer` (the target) and `doc` (its documentation excerpt)."""
PROPOSER_WRITE = load_prompt(__file__, "search_selfplay/proposer_write.jinja")
"""The write turn, when the searching turn ended without a question. Variables: `answer`,
`doc`, `kind` (function, class, method or name), `owner` (the module or class it belongs
to) and `found` (what the searches returned, see `search_findings`)."""
SOLVER_SYSTEM = load_prompt(__file__, "search_selfplay/solver_system.jinja")
RAG_SYSTEM = load_prompt(__file__, "search_selfplay/rag_system.jinja")
RAG_USER = load_prompt(__file__, "search_selfplay/rag_user.jinja")
"""Variables: `documents` (numbered, see `rag_documents`) and `question`."""


def _call(query: str) -> dict[str, Any]:
    return {"role": "assistant", "content": f'<tool_call>\n{{"name": "search", "arguments": {{"query": "{query}"}}}}\n</tool_call>'}


def _result(text: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": "demo", "name": "search", "content": text}


# One worked example each: small models learn the tool-call and answer format from a demo far
# better than from instructions (SmolLM2-135M ignores the instructions alone).
PROPOSER_DEMO: list[dict[str, Any]] = [
    {"role": "user", "content": render_prompt(PROPOSER_USER, answer="json.dumps", doc="json.dumps(obj, *, indent=None, "
                                              "sort_keys=False) Serialize obj to a JSON formatted str.")},
    _call("serialize object to JSON string"),
    _result("[1] id: json.dumps\ntitle: json.dumps (function)\njson.dumps(obj, *, skipkeys=False, ...) "
            "Serialize obj to a JSON formatted str."),
    _call("json indent sort_keys"),
    _result("[1] id: json.dump\ntitle: json.dump (function)\njson.dump(obj, fp, *, indent=None, ...) "
            "Serialize obj as a JSON formatted stream to fp."),
    {"role": "assistant", "content": "Question: Which function of the json module turns a Python object into a "
     "JSON formatted string?"},
]
# The write turn is a fresh prompt, not the searching conversation continued: after a few
# tool calls SmolLM2-135M answers "write the question" with one more tool call (measured).
WRITE_DEMO: list[dict[str, Any]] = [
    {"role": "user", "content": render_prompt(
        PROPOSER_WRITE, answer="json.dumps", kind="function", owner="json",
        doc="json.dumps(obj, *, indent=None, sort_keys=False) Serialize obj to a JSON formatted str.",
        found="json.dumps: Serialize obj to a JSON formatted str.\njson.dump: Serialize obj as a JSON formatted "
              "stream to fp.")},
    {"role": "assistant", "content": "Question: Which function of the json module turns a Python object into a "
     "JSON formatted string?"},
]
RAG_DEMO: list[dict[str, Any]] = [
    {"role": "user", "content": render_prompt(RAG_USER, question="Which function of the json module turns a Python "
                                              "object into a JSON formatted string?", documents=(
        "[1] json.dump: json.dump(obj, fp, *, indent=None, ...) Serialize obj as a JSON formatted stream to fp.\n"
        "[2] os.getcwd: os.getcwd() Return a unicode string representing the current working directory.\n"
        "[3] json.dumps: json.dumps(obj, *, skipkeys=False, ...) Serialize obj to a JSON formatted str."))},
    {"role": "assistant", "content": "Answer: json.dumps"},
]
SOLVER_DEMO: list[dict[str, Any]] = [
    {"role": "user", "content": "Which function of the json module turns a Python object into a JSON formatted string?"},
    _call("json object to formatted string"),
    _result("[1] id: json.dumps\ntitle: json.dumps (function)\njson.dumps(obj, *, skipkeys=False, ...) "
            "Serialize obj to a JSON formatted str."),
    {"role": "assistant", "content": "Answer: json.dumps"},
]


# -- parsers and checks ------------------------------------------------------------------------

_QUESTION = re.compile(r"question\s*:\s*(.+)", re.IGNORECASE | re.DOTALL)
_ANSWER = re.compile(r"answer\s*:\s*(.+)", re.IGNORECASE)
_DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")


def parse_question(text: str) -> str:
    """The text after the last 'Question:'; else a last line ending in '?'. ValueError if none."""
    found = _QUESTION.findall(text)
    if found:
        question = found[-1].strip().splitlines()[0].strip() if found[-1].strip() else ""
        if question:
            return question
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().endswith("?")]
    if lines:
        return lines[-1]
    raise ValueError("no question found (expected a line 'Question: ...')")


def parse_answer(text: str) -> str:
    """The text after the last 'Answer:', else the last non-empty line; of that, the first
    dotted name when there is one (answers are documented names: "Answer: json.dumps: ..."
    and "Answer: `json.dumps` is it" both mean json.dumps). ValueError if empty."""
    found = _ANSWER.findall(text)
    answer = found[-1] if found else next((ln for ln in reversed(text.splitlines()) if ln.strip()), "")
    answer = answer.strip().rstrip(".").strip("`*'\" ")
    if not answer:
        raise ValueError("empty answer")
    name = _DOTTED_NAME.search(answer)
    return name.group(0) if name else answer


def rule_check(cfg: SearchSelfPlayConfig, question: str | None, answer: str, queries: list[str]) -> str:
    """Why a proposal fails the rule checks ('' when it passes): length, leaked answer, too few searches."""
    if not question:
        return "no question"
    if not cfg.min_question_chars <= len(question) <= cfg.max_question_chars:
        return f"question length {len(question)} outside {cfg.min_question_chars}..{cfg.max_question_chars}"
    if normalize_answer(answer) in normalize_answer(question):
        return "question leaks the answer"
    if len(set(queries)) < cfg.min_distinct_queries:
        return f"searched with {len(set(queries))} distinct queries, need {cfg.min_distinct_queries}"
    return ""


def search_findings(turn: RoleTurn, chars: int = 600) -> str:
    """What the proposer's searches returned, one "id: start of text" line per distinct hit,
    cut at `chars` (shown in the write turn)."""
    lines: dict[str, str] = {}
    for call in turn.tool_calls:
        if call.error is None:
            for hit in re.split(r"\n(?=\[\d+\] id: )", call.result):
                found = re.match(r"\[\d+\] id: (\S+)\n(?:title: [^\n]*\n)?(.*)", hit, re.DOTALL)
                if found:
                    lines.setdefault(found.group(1), f"{found.group(1)}: {_excerpt(found.group(2), 120)}")
    return "\n".join(lines.values())[:chars]


def target_kind(doc_id: str, title: str) -> tuple[str, str]:
    """(kind, owner) of a corpus name for the write turn: ``("function", "os.path")`` for
    ``os.path.join``; a dotted name without a "(function)"/"(class)" title is a method."""
    owner = doc_id.rsplit(".", 1)[0] if "." in doc_id else ""
    for kind in ("function", "class"):
        if title.endswith(f"({kind})"):
            return kind, owner
    return ("method" if doc_id.count(".") >= 2 else "name"), owner


def rag_documents(index: CorpusIndex, cfg: SearchSelfPlayConfig, queries: list[str], answer: str,
                  seed: int, rng: random.Random | None) -> str:
    """What the RAG checker reads: every document the proposer's queries retrieve, plus
    `noise_docs` unrelated ones (never the target), shuffled by `rng`, numbered from 1.
    Each starts with its id, the exact name an answer has to give."""
    seen: dict[str, str] = {}
    for query in queries:
        for hit in index.search(query, cfg.search_k, cfg.search_mode):
            seen.setdefault(hit.doc_id, f"{hit.doc_id}: {_excerpt(hit.text, cfg.doc_chars)}")
    noise = [d for d in index.sample_documents(cfg.noise_docs + len(seen) + 1, seed=seed)
             if d.id not in seen and d.id != answer][: cfg.noise_docs]
    docs = list(seen.values()) + [f"{d.id}: {_excerpt(d.text, cfg.doc_chars)}" for d in noise]
    if rng is not None:
        rng.shuffle(docs)
    return "\n".join(f"[{i}] {d}" for i, d in enumerate(docs, 1)) or "(no documents)"


def rag_verdict(rag_answer: str | None, answer: str, rules_ok: bool) -> dict[str, Any]:
    """The state update of the RAG check: passed when its answer matches the target exactly."""
    ok = bool(rag_answer) and exact_match(rag_answer, answer) == 1.0
    update: dict[str, Any] = {"rag_ok": ok, "rag_answer": rag_answer}
    if not ok and rules_ok:
        update["check_reason"] = f"RAG check answered {rag_answer!r}, not the target"
    return update


async def grade_attempt(turn: RoleTurn, question: str, answer: str, judge_model: str | None) -> dict[str, Any]:
    """One solver attempt as stored in `SearchState.attempts`: normalised exact match, and
    when that fails and `judge_model` is set, the LLM judge's yes/no."""
    score, reason = 0.0, f"no parsable answer: {turn.parse_error}"
    if turn.output:
        score, reason = exact_match(turn.output, answer), "exact match"
        if score == 0.0 and judge_model is not None:
            verdict = await llm_judge(judge_model, question, turn.output, answer)
            score, reason = verdict.value, f"LLM judge fallback: {verdict.reason}"
        elif score == 0.0:
            reason = f"{turn.output!r} does not match the target"
    return {"turn_id": turn.turn_id, "answer": turn.output, "score": score, "reason": reason}


def _excerpt(text: str, chars: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= chars else text[:chars].rstrip() + " ..."


# -- rewards -----------------------------------------------------------------------------------

def solver_reward(turn: RoleTurn, state: SearchState, episode: EpisodeView, *,
                  format_rewards: bool = False) -> RewardRecord:
    """The score `grade_attempt` gave this attempt: 1/0 (or the judge's verdict). With
    `format_rewards`, a miss is -0.5 when the attempt answered and -1 when it did not."""
    attempt = next(a for a in state["attempts"] if a["turn_id"] == turn.turn_id)
    value = attempt["score"]
    if format_rewards and value <= 0.0:
        value = -0.5 if attempt["answer"] is not None else -1.0
    return RewardRecord(value=value, reason=attempt["reason"])


def proposer_reward(turn: RoleTurn, state: SearchState, episode: EpisodeView, *,
                    format_rewards: bool = False, min_distinct_queries: int = 0) -> RewardRecord:
    """1 - solver success rate for a proposal that passed every check; for one that failed,
    0 with the failed check. With `format_rewards` a failed one gets -1 without a question and
    -0.5 with one, plus up to 0.25 for its distinct searches (of `min_distinct_queries`): a
    small model first learns to search and to write the question line, as AZR's proposer
    first learns to write a program that runs."""
    if not (state.get("rules_ok") and state.get("rag_ok")):
        value = 0.0
        if format_rewards:
            searched = min(len(set(state.get("queries", []))), min_distinct_queries)
            value = (-1.0 if not state.get("question") else -0.5) + (
                0.25 * searched / min_distinct_queries if min_distinct_queries else 0.0)
        return RewardRecord(value=value, reason=f"invalid proposal: {state.get('check_reason') or 'failed a check'}")
    scores = [a["score"] for a in state.get("attempts", [])]
    rate = sum(scores) / len(scores) if scores else 0.0
    return RewardRecord(value=1.0 - rate, reason=f"1 - solve rate {rate:.2f} over {len(scores)} attempts",
                        components={"solve_rate": rate})


def metrics(state: SearchState, turns: list[RoleTurn]) -> dict[str, float]:
    """Which checks the proposal passed, and the solvers' success rate when they ran."""
    scores = [a["score"] for a in state.get("attempts", [])]
    out = {"question_parsed": float(bool(state.get("question"))), "rules_pass": float(bool(state.get("rules_ok"))),
           "rag_pass": float(bool(state.get("rag_ok"))),
           "valid_proposal": float(bool(state.get("rules_ok") and state.get("rag_ok")))}
    if scores:
        out["solve_rate"] = sum(scores) / len(scores)
    return out


# -- build: roles, nodes, graph ----------------------------------------------------------------

def solver_role(model: Any, cfg: SearchSelfPlayConfig, search: SearchTool | None = None) -> Role:
    """The solver: prompt, search tool, sampling and parser (its worked example, `SOLVER_DEMO`,
    goes before the question). Evaluations build it here so they ask exactly what training asks."""
    search = search or SearchTool(default_corpus_index(), k=cfg.search_k, mode=cfg.search_mode,
                                  snippet_chars=cfg.snippet_chars)
    return Role(name="solver", model=model, system_prompt=SOLVER_SYSTEM, tools=[search],
                sampling=SamplingParams(max_tokens=cfg.solver_max_tokens, temperature=cfg.temperature),
                max_tool_turns=cfg.max_tool_turns, output_parser=parse_answer)


def build(model: str = DEFAULT_MODEL_SPEC, *, index: CorpusIndex | None = None, **options: Any) -> Recipe:
    """The search self-play recipe on `index` (default: the stdlib-docs corpus)."""
    cfg = SearchSelfPlayConfig(**options)
    index = index or default_corpus_index()
    search = SearchTool(index, k=cfg.search_k, mode=cfg.search_mode, snippet_chars=cfg.snippet_chars)
    checker_model = cfg.judge_model or model

    def sampling(max_tokens: int, temperature: float | None = None) -> SamplingParams:
        return SamplingParams(max_tokens=max_tokens, temperature=cfg.temperature if temperature is None else temperature)

    proposer = Role(name="proposer", model=model, system_prompt=PROPOSER_SYSTEM,
                    tools=[search], sampling=sampling(cfg.proposer_max_tokens),
                    max_tool_turns=cfg.max_tool_turns, output_parser=parse_question)
    writer = Role(name="proposer", model=model, system_prompt=PROPOSER_SYSTEM, examples=WRITE_DEMO,
                  sampling=sampling(cfg.question_max_tokens), output_parser=parse_question)  # the write turn
    solver = solver_role(model, cfg, search)
    rag_checker = Role(name="rag_checker", model=checker_model, system_prompt=RAG_SYSTEM,
                       sampling=sampling(cfg.rag_max_tokens, temperature=0.0), max_tool_turns=0,
                       output_parser=parse_answer, trainable=False)

    def initial_state(ctx: EpisodeContext) -> SearchState:
        # Same group seed -> same target for the k episodes of a block (the proposer's group).
        docs = index.sample_documents(16, seed=ctx.group_seed or 0, min_chars=80)
        target = next((d for d in docs if ":" not in d.id and "." in d.id), docs[0])
        kind, owner = target_kind(target.id, target.title)
        return {"answer": target.id, "target_doc": _excerpt(target.text, cfg.doc_chars), "kind": kind,
                "owner": owner, "attempts": []}

    async def propose(state: SearchState) -> dict[str, Any]:
        user = render_prompt(PROPOSER_USER, answer=state["answer"], doc=state["target_doc"])
        turn = await proposer.run([*PROPOSER_DEMO, {"role": "user", "content": user}])
        queries = [str(c.arguments.get("query", "")).strip() for c in turn.tool_calls
                   if c.name == search.name and c.error is None and c.arguments]
        question = turn.output
        if question is None and cfg.write_turn:  # searched (or rambled) without a question: ask for it
            written = await writer.run(render_prompt(
                PROPOSER_WRITE, answer=state["answer"], doc=state["target_doc"], kind=state.get("kind", "name"),
                owner=state.get("owner", ""), found=search_findings(turn)))
            question = written.output
        return {"question": question, "queries": list(dict.fromkeys(q for q in queries if q))}

    def check_rules(state: SearchState) -> dict[str, Any]:
        reason = rule_check(cfg, state.get("question"), state["answer"], state.get("queries", []))
        return {"rules_ok": not reason, "check_reason": reason}

    async def rag_check(state: SearchState) -> dict[str, Any]:
        if not state.get("question"):
            return {"rag_ok": False}
        ctx = current_episode()
        shown = rag_documents(index, cfg, state.get("queries", []), state["answer"],
                              seed=ctx.seed if ctx else 0, rng=ctx.rng if ctx else None)
        turn = await rag_checker.run([*RAG_DEMO, {"role": "user", "content": render_prompt(
            RAG_USER, documents=shown, question=state["question"])}])
        return rag_verdict(turn.output, state["answer"], bool(state.get("rules_ok")))

    def to_solvers(state: SearchState) -> list[Send] | str:
        valid = state.get("rules_ok") and state.get("rag_ok")
        if not state.get("question") or (cfg.gate_solvers and not valid):
            return END
        return [Send("solve", {"question": state["question"], "answer": state["answer"]})
                for _ in range(cfg.n_solvers)]

    async def solve(state: SolveTask) -> dict[str, Any]:
        turn = await solver.run([*SOLVER_DEMO, {"role": "user", "content": state["question"]}])
        judge = checker_model if cfg.llm_judge else None
        return {"attempts": [await grade_attempt(turn, state["question"], state["answer"], judge)]}

    graph = StateGraph(SearchState)
    graph.add_node("propose", propose)
    graph.add_node("check_rules", check_rules)
    graph.add_node("rag_check", rag_check)
    graph.add_node("solve", solve)
    graph.add_edge(START, "propose")
    graph.add_edge("propose", "check_rules")
    graph.add_edge("check_rules", "rag_check")
    graph.add_conditional_edges("rag_check", to_solvers, ["solve", END])
    graph.add_edge("solve", END)

    return Recipe(
        name="search-selfplay",
        graph=graph,
        roles={"propose": proposer, "rag_check": rag_checker, "solve": solver},
        rewards={"proposer": partial(proposer_reward, format_rewards=cfg.format_rewards,
                                     min_distinct_queries=cfg.min_distinct_queries),
                 "solver": partial(solver_reward, format_rewards=cfg.format_rewards)},
        groups={"proposer": GroupBy.seed(cfg.group_k), "solver": GroupBy.episode()},
        initial_state=initial_state,
        zero_on_parse_error=False,  # the rewards grade a missing question or answer themselves
        metrics=metrics,
        headline_metrics=["valid_proposal", "solve_rate"],
        options={"model": model, **cfg.model_dump()},
    )
