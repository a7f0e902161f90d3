"""Search self-play (after SSP): one model writes search questions for a known answer and solves them.

Each episode samples a target from the corpus (a documented stdlib name such
as ``os.path.join``; the k episodes of one group block share it). The
proposer reads the target's documentation and searches: by default in
`query_turns` short turns, each answered with one line ``Query: <words>`` that
the recipe runs through the search tool and shows, with the earlier queries,
in the next turn. Then a write turn asks for the question; it sees the
target's kind, owner, documentation and what the searches found, with the
target's name hidden (`mask_name`). (`search_protocol="tool_calls"`: one
turn with free-form tool calls, and the write turn only when that turn ends
without a question.) Every proposer and solver token is model-written and
trainable: each turn is an ordinary `RoleTurn`. Then:

1. rule checks: the question has a sane length, does not contain the answer,
   and the proposer searched with at least `min_distinct_queries` distinct queries;
2. RAG check: the documents the proposer retrieved, shuffled with noise
   documents, go to a reader that must pick the answer *without searching*; the
   question is kept only if it picks the target (it proves the question is
   answerable from what was found). The reader is the corpus index's MiniLM by
   default (`rag_check="retriever"`: the target must rank first by similarity to
   the question), or a model that writes the name (`rag_check="model"`, SSP's);
3. `n_solvers` solver attempts, each a query turn then an answer turn shown the hits,
   which cites one (``Answer: [2]``, `answer_format`) (tool_calls: one turn with the
   search tool);
4. grading: normalised exact match, with an optional LLM-judge fallback.

Rewards (AZR's format rewards, `format_rewards=False` for plain 1/0): solver 1 right,
-0.5 wrong, -1 without a parsable answer; proposer 1 - solver success rate for a
valid proposal, -0.5 for a question that fails a check, -1 for no question. A small
model's proposals and answers mostly fail at first, and the graded failures still
tell a group's samples apart, so GRPO has a signal before the first valid one.
Groups: the n solver attempts of one episode; the k proposals for one target.

`python -m agentplay.graphs.search_selfplay_breakdown --store traces.db` says where
a run's proposals fail (format, length, leaked answer, searches, RAG check) and how many
solver groups had a right and a wrong attempt. The defaults are what made SmolLM2-135M's
loop produce signal (24 episodes, measured): with the model as RAG reader and solvers
writing names, 4% of proposals were valid and no solver group had a right attempt; with
the retriever check, cited answers and hybrid search, 29% were valid and 3 of 7 solver
groups had a right and a wrong attempt. The model reads at chance: it named the target
for 6 of 40 held-out template questions whose document it was shown, 9 of 40 when the
shown ids were scored by likelihood instead of generated (`rag_check` has the figures).

    recipe = build(n_solvers=4, group_k=4)
"""

from __future__ import annotations

import operator
import random
import re
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, Literal, TypedDict

from agentplay.tools import CorpusIndex, SearchMode, SearchTool, ToolError, default_corpus_index, parse_hits
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
    "PROPOSER_QUERY",
    "PROPOSER_SYSTEM",
    "PROPOSER_USER",
    "PROPOSER_WRITE",
    "QUERY_DEMO",
    "RAG_DEMO",
    "RAG_SYSTEM",
    "RAG_USER",
    "SOLVER_ANSWER",
    "SOLVER_ANSWER_DEMO",
    "SOLVER_DEMO",
    "SOLVER_QUERY",
    "SOLVER_QUERY_DEMO",
    "SOLVER_SYSTEM",
    "WRITE_DEMO",
    "write_demo",
    "description",
    "shared_descriptions",
    "build",
    "grade_attempt",
    "mask_name",
    "metrics",
    "parse_answer",
    "parse_query",
    "parse_question",
    "proposer_reward",
    "hit_ids",
    "parse_cited_answer",
    "rag_candidates",
    "rag_documents",
    "retriever_verdict",
    "solver_answer_demo",
    "rag_verdict",
    "rule_check",
    "run_search",
    "search_findings",
    "SearchSelfPlayConfig",
    "SearchSolver",
    "SearchState",
    "solver",
    "solver_reward",
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
    search_protocol: Literal["query_turns", "tool_calls"] = "query_turns"
    """How the proposer and the solvers search. ``query_turns``: each search is a short turn
    whose one line ``Query: <words>`` the recipe runs through the same search tool, showing the
    hits in the next turn (the proposer: `query_turns` queries, then the write turn; a solver:
    one query, then its answer). ``tool_calls``: free-form tool-call JSON in one multi-round
    turn. Default query_turns because on SmolLM2-135M tool calls never worked: the proposer
    made 0 search calls in 49 of 49 measured episodes (it called made-up tools or rambled) and
    the solver searched in 0 of 240 held-out questions, while a "Query:" line is a format it
    copies from its worked example: proposals with >= 2 distinct queries went from 0/32 to 19/24
    and leaked answers from 10/32 to 0-1/24 (24-episode runs at the defaults, measured)."""
    query_turns: int = Field(3, ge=0, le=8)
    """Query turns of the proposer (query_turns protocol); each asks for a query unlike the earlier
    ones. One more than `min_distinct_queries`: with 2, SmolLM2 repeated its first query in 9 of 24
    proposals (measured)."""
    query_max_tokens: int = Field(24, ge=1)
    """Token budget of one query turn: one short line."""
    max_tool_turns: int = Field(3, ge=0, le=16)
    """Tool rounds of one turn (tool_calls protocol)."""
    proposer_max_tokens: int = Field(192, ge=1)
    solver_max_tokens: int = Field(128, ge=1)
    """The solver's searching turn (tool_calls protocol)."""
    answer_max_tokens: int = Field(32, ge=1)
    """The solver's answer turn (query_turns protocol): one line. At 128 SmolLM2 went on after its
    answer line in most attempts (measured), which cost time and buried the answer."""
    rag_max_tokens: int = Field(32, ge=1)
    temperature: float = Field(0.7, ge=0.0, le=5.0)
    """Of the proposer and solvers. At 1.0 SmolLM2-135M rambled instead of calling a tool in 8 of
    8 proposals (measured); lower temperatures keep it closer to its worked examples."""
    search_k: int = Field(3, ge=1, le=20)
    """Hits per search call."""
    search_mode: SearchMode = "hybrid"
    """Ranking of the search tool (and of the RAG check's replay of the proposer's queries).
    Hybrid (BM25 + MiniLM, fused) because SmolLM2's queries are loose paraphrases: on 40 held-out
    template questions x 4 sampled solver attempts the target was among the 3 hits 67 times with
    hybrid against 51 with BM25, and the attempts were right 19 times against 10 (measured)."""
    answer_format: Literal["number", "name"] = "number"
    """How a solver's answer turn (query_turns protocol) names its answer. ``number``: it cites a
    search result, ``Answer: [2]``, and the recipe reads that result's id (a written name is
    still accepted); ``name``: it writes the name. Default number because SmolLM2-135M, asked for
    the name, wrote one that none of its hits had in 96 of 160 sampled attempts (made-up or
    spliced names, the prompt's placeholder), while a citation is one of the hits by
    construction: 19/160 attempts right and 16 of 40 groups of 4 with a right and a wrong
    attempt, against 2/160 and 2 of 40 (measured, hybrid search)."""
    rag_check: Literal["retriever", "model"] = "retriever"
    """Who reads the RAG check's documents. ``retriever``: the corpus index's MiniLM ranks the
    documents the proposer's queries retrieved (plus `noise_docs` others) by similarity to the
    question, and the question passes when its target ranks first, i.e. the question picks its
    target out of the evidence the proposer gathered; ``model``: `judge_model` (default: the
    policy) reads them and must write the target's name, as in SSP. Default retriever because
    SmolLM2-135M reads at chance: with the target's document shown among about 9, it named the
    target for 6 of 40 held-out template questions, and 9 of 40 when scored by likelihood
    instead of generating (chance is about 4.5), Gemma 3 270M for 9 of 40; MiniLM ranked the
    target first for 32 of 40, and for 27 of the 71 stored SmolLM2 proposals that did not leak
    their answer (measured)."""
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
    """tool_calls: when the proposer's searching turn ends without a question, ask for it in one
    more turn (query_turns always ends with the write turn: it is where the question is written)."""
    write_shows_findings: bool = False
    """Show the write turn what the searches found (hits, name hidden). Off by default: on 24
    stored query-turn proposals (2 write samples each) SmolLM2 wrote 2/48 valid questions with
    the hits and 4/48 without, copying a hit's name ("... returns os.utime?" for os.times)."""
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
"""The searching turn (tool_calls protocol). Variables: `answer` (the target) and `doc` (its documentation excerpt)."""
PROPOSER_QUERY = load_prompt(__file__, "search_selfplay/proposer_query.jinja")
"""A query turn (query_turns protocol). Variables: `answer`, `doc`, and `searches`: the
(query, what it found) pairs of the earlier query turns."""
PROPOSER_WRITE = load_prompt(__file__, "search_selfplay/proposer_write.jinja")
"""The write turn. Variables: `kind` (function, class, method or name), `owner` (the module
or class it belongs to), `doc` and `found` (what the searches returned, see `search_findings`),
both with the target's name hidden (`mask_name`): shown its name, SmolLM2 copied it into the
question ('What is the purpose of os.times?': 10 of 32 measured proposals)."""
SOLVER_SYSTEM = load_prompt(__file__, "search_selfplay/solver_system.jinja")
SOLVER_QUERY = load_prompt(__file__, "search_selfplay/solver_query.jinja")
"""The solver's query turn (query_turns protocol). Variable: `question`."""
SOLVER_ANSWER = load_prompt(__file__, "search_selfplay/solver_answer.jinja")
"""The solver's answer turn (query_turns protocol). Variables: `question`, `found` (the search
results) and `cite` (ask for a result number, `answer_format="number"`, instead of the name)."""
RAG_SYSTEM = load_prompt(__file__, "search_selfplay/rag_system.jinja")
RAG_USER = load_prompt(__file__, "search_selfplay/rag_user.jinja")
"""Variables: `documents` (numbered, see `rag_documents`) and `question`."""


def _call(query: str) -> dict[str, Any]:
    return {"role": "assistant", "content": f'<tool_call>\n{{"name": "search", "arguments": {{"query": "{query}"}}}}\n</tool_call>'}


def _result(text: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": "demo", "name": "search", "content": text}


def _user(content: str) -> dict[str, Any]:
    return {"role": "user", "content": content}


def _assistant(content: str) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


def mask_name(text: str, name: str, mask: str = "___") -> str:
    """`text` with the documented `name` hidden from the write turn: the dotted name, its dotted
    tails (``Path.resolve`` of ``pathlib.Path.resolve``) and its last part where it is called
    (``resolve(``). The leak rule still checks the question; this keeps the name out of sight."""
    parts = name.split(".")
    for tail in (".".join(parts[i:]) for i in range(len(parts) - 1)):  # longest first
        text = re.sub(rf"(?<![\w.]){re.escape(tail)}\b", mask, text)
    return re.sub(rf"(?<![\w.]){re.escape(parts[-1])}(?=\()", mask, text)


# The worked examples' target and what the search tool returns for it (in its own format).
_DEMO_DOC = "json.dumps(obj, *, indent=None, sort_keys=False) Serialize obj to a JSON formatted str."
_DEMO_QUESTION = "Which function of the json module turns a Python object into a JSON formatted string?"
_DEMO_HITS = ("[1] id: json.dumps\ntitle: json.dumps (function)\njson.dumps(obj, *, skipkeys=False, ...) "
              "Serialize obj to a JSON formatted str.\n\n[2] id: json.dump\ntitle: json.dump (function)\n"
              "json.dump(obj, fp, *, indent=None, ...) Serialize obj as a JSON formatted stream to fp.")
_DEMO_HITS_2 = ("[1] id: json.JSONEncoder\ntitle: json.JSONEncoder (class)\njson.JSONEncoder(*, skipkeys=False, "
                "indent=None, ...) Extensible JSON encoder for Python data structures.")

# Worked examples: small models learn a format from a demo far better than from instructions
# (SmolLM2-135M ignores the instructions alone). Each turn kind gets its own.
PROPOSER_DEMO: list[dict[str, Any]] = [
    _user(render_prompt(PROPOSER_USER, answer="json.dumps", doc=_DEMO_DOC)),
    _call("serialize object to JSON string"),
    _result(_DEMO_HITS),
    _call("json indent sort_keys"),
    _result(_DEMO_HITS_2),
    _assistant(f"Question: {_DEMO_QUESTION}"),
]
"""The searching turn's (tool_calls protocol)."""
QUERY_DEMO: list[dict[str, Any]] = [
    _user(render_prompt(PROPOSER_QUERY, answer="json.dumps", doc=_DEMO_DOC, searches=[])),
    _assistant("Query: serialize object to JSON string"),
    _user(render_prompt(PROPOSER_QUERY, answer="json.dumps", doc=_DEMO_DOC,
                        searches=[("serialize object to JSON string", _DEMO_HITS)])),
    _assistant("Query: json indent sort_keys"),
]
"""The query turns' (query_turns protocol): a first query, then one unlike it."""
# The write turn is a fresh prompt, not the searching conversation continued: after a few
# tool calls SmolLM2-135M answers "write the question" with one more tool call (measured).
def write_demo(shows_findings: bool) -> list[dict[str, Any]]:
    """The write turn's worked example, with or without what the searches found."""
    found = "json.dumps: Serialize obj to a JSON formatted str.\njson.dump: Serialize obj as a JSON formatted stream to fp."
    return [_user(render_prompt(PROPOSER_WRITE, kind="function", owner="json", doc=mask_name(_DEMO_DOC, "json.dumps"),
                                found=mask_name(found, "json.dumps") if shows_findings else "")),
            _assistant(f"Question: {_DEMO_QUESTION}")]


WRITE_DEMO = write_demo(shows_findings=False)
RAG_DEMO: list[dict[str, Any]] = [
    _user(render_prompt(RAG_USER, question=_DEMO_QUESTION, documents=(
        "[1] json.dump: json.dump(obj, fp, *, indent=None, ...) Serialize obj as a JSON formatted stream to fp.\n"
        "[2] os.getcwd: os.getcwd() Return a unicode string representing the current working directory.\n"
        "[3] json.dumps: json.dumps(obj, *, skipkeys=False, ...) Serialize obj to a JSON formatted str."))),
    _assistant("Answer: json.dumps"),
]
SOLVER_DEMO: list[dict[str, Any]] = [
    _user(_DEMO_QUESTION),
    _call("json object to formatted string"),
    _result(_DEMO_HITS),
    _assistant("Answer: json.dumps"),
]
"""The solver's (tool_calls protocol)."""
SOLVER_QUERY_DEMO: list[dict[str, Any]] = [
    _user(render_prompt(SOLVER_QUERY, question=_DEMO_QUESTION)),
    _assistant("Query: json object to formatted string"),
]
def solver_answer_demo(cite: bool) -> list[dict[str, Any]]:
    """The answer turn's worked example: it cites result [1] (`answer_format="number"`) or
    writes the name."""
    return [_user(render_prompt(SOLVER_ANSWER, question=_DEMO_QUESTION, found=_DEMO_HITS, cite=cite)),
            _assistant("Answer: [1]" if cite else "Answer: json.dumps")]


SOLVER_ANSWER_DEMO = solver_answer_demo(cite=True)


# -- parsers and checks ------------------------------------------------------------------------

_QUERY = re.compile(r"query\s*:[ \t]*([^\n]*)", re.IGNORECASE)
_QUESTION = re.compile(r"question\s*:\s*(.+)", re.IGNORECASE | re.DOTALL)
_ANSWER = re.compile(r"answer\s*:\s*(.+)", re.IGNORECASE)
_DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")


def parse_question(text: str) -> str:
    """The text after the last 'Question:'; else a last line ending in '?'. ValueError if none
    or if it is the prompt's placeholder ``<your question>`` (copied by SmolLM2, measured)."""
    found = _QUESTION.findall(text)
    if found:
        question = found[-1].strip().splitlines()[0].strip() if found[-1].strip() else ""
        if question.startswith("<"):
            raise ValueError(f"the prompt's placeholder, not a question: {question[:40]!r}")
        if question:
            return question
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().endswith("?")]
    if lines:
        return lines[-1]
    raise ValueError("no question found (expected a line 'Question: ...')")


def parse_query(text: str) -> str:
    """The words after the first 'Query:' on its line (quotes and backticks stripped, at most
    120 characters). ValueError when there is none, it is empty, or it is the prompt's
    placeholder ``<a few words>``."""
    found = _QUERY.search(text)
    if not found:
        raise ValueError("no query found (expected a line 'Query: ...')")
    query = found.group(1).strip().strip("`*'\" ")[:120].strip()
    if not query or query.startswith("<"):
        raise ValueError(f"empty query: {found.group(0)[:60]!r}")
    return query


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


_CITATION = re.compile(r"^\[?(\d+)\]?(?:\W|$)")


def hit_ids(found: str) -> dict[int, str]:
    """The search results' ids by the number they are shown under (``[2] id: json.dump``)."""
    return {n: doc_id for n, doc_id, _ in parse_hits(found)}


def parse_cited_answer(text: str, hits: dict[int, str]) -> str:
    """`parse_answer`, where an answer that cites a result (``Answer: [2]``, ``Answer: 2``)
    means that result's id. ValueError for a number no result is shown under."""
    answer = parse_answer(text)
    cited = _CITATION.match(answer)
    if cited is None:
        return answer
    number = int(cited.group(1))
    if number not in hits:
        raise ValueError(f"cited result [{number}], but {len(hits)} results were shown")
    return hits[number]


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


def search_findings(results: list[str], chars: int = 600) -> str:
    """What the proposer's searches returned (the search tool's texts), one "id: start of text"
    line per distinct hit, cut at `chars` (shown in the write turn)."""
    lines: dict[str, str] = {}
    for result in results:
        for _, doc_id, snippet in parse_hits(result):
            lines.setdefault(doc_id, f"{doc_id}: {_excerpt(snippet, 120)}")
    return "\n".join(lines.values())[:chars]


def target_kind(doc_id: str, title: str) -> tuple[str, str]:
    """(kind, owner) of a corpus name for the write turn: ``("function", "os.path")`` for
    ``os.path.join``; a dotted name without a "(function)"/"(class)" title is a method."""
    owner = doc_id.rsplit(".", 1)[0] if "." in doc_id else ""
    for kind in ("function", "class"):
        if title.endswith(f"({kind})"):
            return kind, owner
    return ("method" if doc_id.count(".") >= 2 else "name"), owner


def description(text: str, chars: int = 160) -> str:
    """What a document says after its signature line, normalised (the part a question can describe)."""
    text = " ".join(text.split())
    return text.split(") ", 1)[-1][:chars].casefold()


def shared_descriptions(index: CorpusIndex) -> set[str]:
    """Ids of documents whose `description` another document repeats word for word
    (``asyncio.Protocol.eof_received`` and ``asyncio.BufferedProtocol.eof_received``): no
    question tells them apart, so they are never targets (measured: every RAG check failed on one)."""
    by_text: dict[str, list[str]] = {}
    for doc_id in index.ids:
        by_text.setdefault(description(index.get(doc_id).text), []).append(doc_id)
    return {doc_id for ids in by_text.values() if len(ids) > 1 for doc_id in ids}


def rag_candidates(index: CorpusIndex, cfg: SearchSelfPlayConfig, queries: list[str], answer: str,
                   seed: int, rng: random.Random | None) -> dict[str, str]:
    """The RAG check's documents, id -> text in the order shown: every document the
    proposer's queries retrieve, plus `noise_docs` unrelated ones (never the target),
    shuffled by `rng`."""
    seen = {hit.doc_id: hit.text
            for query in queries for hit in index.search(query, cfg.search_k, cfg.search_mode)}
    noise = [d for d in index.sample_documents(cfg.noise_docs + len(seen) + 1, seed=seed)
             if d.id not in seen and d.id != answer][: cfg.noise_docs]
    docs = list(seen.items()) + [(d.id, d.text) for d in noise]
    if rng is not None:
        rng.shuffle(docs)
    return dict(docs)


def rag_documents(index: CorpusIndex, cfg: SearchSelfPlayConfig, queries: list[str], answer: str,
                  seed: int, rng: random.Random | None) -> str:
    """What the RAG checker model reads (`rag_check="model"`): `rag_candidates`, numbered from
    1, each starting with its id, the exact name an answer has to give."""
    docs = rag_candidates(index, cfg, queries, answer, seed, rng)
    return "\n".join(f"[{i}] {d}: {_excerpt(text, cfg.doc_chars)}"
                     for i, (d, text) in enumerate(docs.items(), 1)) or "(no documents)"


def retriever_verdict(index: CorpusIndex, question: str, candidates: list[str], answer: str,
                      rules_ok: bool) -> dict[str, Any]:
    """The state update of the retriever RAG check (`rag_check="retriever"`): passed when the
    target is among `candidates` and ranks first by similarity to the question."""
    if answer not in candidates:
        update: dict[str, Any] = {"rag_ok": False, "rag_answer": None}
        if rules_ok:
            update["check_reason"] = "RAG check: the proposer's searches never retrieved the target"
        return update
    best = index.rank(question, candidates)[0][0]
    update = {"rag_ok": best == answer, "rag_answer": best}
    if best != answer and rules_ok:
        update["check_reason"] = f"RAG check ranked {best!r} first, not the target"
    return update


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
    """The score `grade_attempt` gave this attempt (each of its turns, the query turn too):
    1/0 (or the judge's verdict). With
    `format_rewards`, a miss is -0.5 when the attempt answered and -1 when it did not."""
    attempt = next(a for a in state["attempts"] if turn.turn_id in a.get("turn_ids", [a["turn_id"]]))
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
    """Which checks the proposal passed, its distinct queries, and the solvers' success rate when they ran."""
    scores = [a["score"] for a in state.get("attempts", [])]
    out = {"question_parsed": float(bool(state.get("question"))), "rules_pass": float(bool(state.get("rules_ok"))),
           "rag_pass": float(bool(state.get("rag_ok"))), "distinct_queries": float(len(set(state.get("queries", [])))),
           "valid_proposal": float(bool(state.get("rules_ok") and state.get("rag_ok")))}
    if scores:
        out["solve_rate"] = sum(scores) / len(scores)
        out["solver_attempts"] = float(len(scores))
        out["solver_answered"] = sum(a["answer"] is not None for a in state["attempts"]) / len(scores)
    return out


# -- build: roles, nodes, graph ----------------------------------------------------------------

@dataclass
class SearchSolver:
    """One solver attempt as training runs it: under query_turns a query turn (its `Query:` line
    runs through the search tool) then an answer turn shown the hits; under tool_calls one turn
    with the search tool. Both kinds of turn are role "solver". `solver()` builds it, so
    evaluations (bench/learning_search.py) ask exactly what training asks."""

    cfg: SearchSelfPlayConfig
    search: SearchTool
    answerer: Role
    querier: Role | None = None
    """None under tool_calls."""

    async def attempt(self, question: str, sampling: dict[str, Any] | None = None) -> list[RoleTurn]:
        """The attempt's turns, the answer turn last; `sampling` overrides the roles' own
        (e.g. ``{"temperature": 0.0}`` for a greedy evaluation)."""
        def params(role: Role) -> SamplingParams:
            return role.sampling.model_copy(update=sampling or {})

        if self.querier is None:
            return [await self.answerer.run([*SOLVER_DEMO, _user(question)], sampling=params(self.answerer))]
        asked = await self.querier.run(render_prompt(SOLVER_QUERY, question=question), sampling=params(self.querier))
        found = await run_search(self.search, asked.output) if asked.output else "(no search: the query line was missing)"
        cite = self.cfg.answer_format == "number"
        # a citation means the result shown under its number in this attempt's own hits
        answerer = (self.answerer.model_copy(update={"output_parser": partial(parse_cited_answer, hits=hit_ids(found))})
                    if cite else self.answerer)
        answered = await answerer.run(render_prompt(SOLVER_ANSWER, question=question, found=found, cite=cite),
                                      sampling=params(self.answerer))
        return [asked, answered]


def solver(model: Any, cfg: SearchSelfPlayConfig, search: SearchTool | None = None) -> SearchSolver:
    """The solver's roles: prompts, worked examples, search tool, sampling and parsers."""
    search = search or SearchTool(default_corpus_index(), k=cfg.search_k, mode=cfg.search_mode,
                                  snippet_chars=cfg.snippet_chars)
    if cfg.search_protocol == "tool_calls":
        return SearchSolver(cfg, search, Role(
            name="solver", model=model, system_prompt=SOLVER_SYSTEM, tools=[search],
            sampling=SamplingParams(max_tokens=cfg.solver_max_tokens, temperature=cfg.temperature),
            max_tool_turns=cfg.max_tool_turns, output_parser=parse_answer))
    answer_sampling = SamplingParams(max_tokens=cfg.answer_max_tokens, temperature=cfg.temperature)
    querier = Role(name="solver", model=model, system_prompt=SOLVER_SYSTEM, examples=SOLVER_QUERY_DEMO,
                   sampling=SamplingParams(max_tokens=cfg.query_max_tokens, temperature=cfg.temperature),
                   output_parser=parse_query)
    answerer = Role(name="solver", model=model, system_prompt=SOLVER_SYSTEM,
                    examples=solver_answer_demo(cite=cfg.answer_format == "number"),
                    sampling=answer_sampling, output_parser=parse_answer)
    return SearchSolver(cfg, search, answerer, querier)


async def run_search(search: SearchTool, query: str) -> str:
    """What the search tool returns for `query` (its error text when it refuses the query),
    as a query turn's hits: the same tool, k and snippets as a tool call gets."""
    try:
        return await search.ainvoke({"query": query})
    except ToolError as exc:
        return f"error: {exc}"


def build(model: str = DEFAULT_MODEL_SPEC, *, index: CorpusIndex | None = None, **options: Any) -> Recipe:
    """The search self-play recipe on `index` (default: the stdlib-docs corpus)."""
    cfg = SearchSelfPlayConfig(**options)
    index = index or default_corpus_index()
    if cfg.rag_check == "retriever" and not index.has_dense:
        raise ValueError(f"rag_check: the retriever check ranks by the index's dense embeddings and {index.path} "
                         "has none; rebuild it with dense=True or pass rag_check='model'")
    search = SearchTool(index, k=cfg.search_k, mode=cfg.search_mode, snippet_chars=cfg.snippet_chars)
    checker_model = cfg.judge_model or model

    def sampling(max_tokens: int, temperature: float | None = None) -> SamplingParams:
        return SamplingParams(max_tokens=max_tokens, temperature=cfg.temperature if temperature is None else temperature)

    proposer = Role(name="proposer", model=model, system_prompt=PROPOSER_SYSTEM,  # the tool_calls searching turn
                    tools=[search], sampling=sampling(cfg.proposer_max_tokens),
                    max_tool_turns=cfg.max_tool_turns, output_parser=parse_question)
    querier = Role(name="proposer", model=model, system_prompt=PROPOSER_SYSTEM, examples=QUERY_DEMO,
                   sampling=sampling(cfg.query_max_tokens), output_parser=parse_query)  # a query turn
    writer = Role(name="proposer", model=model, system_prompt=PROPOSER_SYSTEM,
                  examples=write_demo(cfg.write_shows_findings),
                  sampling=sampling(cfg.question_max_tokens), output_parser=parse_question)  # the write turn
    solving = solver(model, cfg, search)
    rag_checker = Role(name="rag_checker", model=checker_model, system_prompt=RAG_SYSTEM,
                       sampling=sampling(cfg.rag_max_tokens, temperature=0.0), max_tool_turns=0,
                       output_parser=parse_answer, trainable=False)

    shared: set[str] = set()  # documents whose description another one repeats: no answerable question

    def initial_state(ctx: EpisodeContext) -> SearchState:
        # Same group seed -> same target for the k episodes of a block (the proposer's group).
        if not shared:
            shared.update(shared_descriptions(index) or {""})
        docs = index.sample_documents(16, seed=ctx.group_seed or 0, min_chars=80)
        target = next((d for d in docs if ":" not in d.id and "." in d.id and d.id not in shared), docs[0])
        kind, owner = target_kind(target.id, target.title)
        return {"answer": target.id, "target_doc": _excerpt(target.text, cfg.doc_chars), "kind": kind,
                "owner": owner, "attempts": []}

    async def search_by_query_turns(state: SearchState) -> tuple[list[str], list[str]]:
        """`cfg.query_turns` query turns, each shown the earlier queries and their hits."""
        searches: list[tuple[str, str]] = []
        for _ in range(cfg.query_turns):
            turn = await querier.run([*QUERY_DEMO, _user(render_prompt(
                PROPOSER_QUERY, answer=state["answer"], doc=state["target_doc"], searches=searches))])
            if turn.output:
                searches.append((turn.output, await run_search(search, turn.output)))
        ok = [(q, found) for q, found in searches if not found.startswith("error: ")]
        return [q for q, _ in ok], [found for _, found in ok]

    async def propose(state: SearchState) -> dict[str, Any]:
        question = None
        if cfg.search_protocol == "query_turns":
            queries, results = await search_by_query_turns(state)
        else:
            user = render_prompt(PROPOSER_USER, answer=state["answer"], doc=state["target_doc"])
            turn = await proposer.run([*PROPOSER_DEMO, _user(user)])
            calls = [c for c in turn.tool_calls if c.name == search.name and c.error is None and c.arguments]
            queries = [str((c.arguments or {}).get("query", "")).strip() for c in calls]
            results = [c.result for c in calls]
            question = turn.output
        if question is None and (cfg.write_turn or cfg.search_protocol == "query_turns"):
            # the question, from the target's description (and what the searches found), name hidden
            found = search_findings(results) if cfg.write_shows_findings else ""
            written = await writer.run(render_prompt(
                PROPOSER_WRITE, kind=state.get("kind", "name"), owner=state.get("owner", ""),
                doc=mask_name(state["target_doc"], state["answer"]), found=mask_name(found, state["answer"])))
            question = written.output
        return {"question": question, "queries": list(dict.fromkeys(q for q in queries if q))}

    def check_rules(state: SearchState) -> dict[str, Any]:
        reason = rule_check(cfg, state.get("question"), state["answer"], state.get("queries", []))
        return {"rules_ok": not reason, "check_reason": reason}

    async def rag_check(state: SearchState) -> dict[str, Any]:
        question = state.get("question")
        if not question:
            return {"rag_ok": False}
        ctx = current_episode()
        seed, rng = (ctx.seed, ctx.rng) if ctx else (0, None)
        if cfg.rag_check == "retriever":
            candidates = list(rag_candidates(index, cfg, state.get("queries", []), state["answer"],
                                             seed=seed, rng=rng))
            return retriever_verdict(index, question, candidates, state["answer"], bool(state.get("rules_ok")))
        shown = rag_documents(index, cfg, state.get("queries", []), state["answer"], seed=seed, rng=rng)
        turn = await rag_checker.run([*RAG_DEMO, _user(render_prompt(RAG_USER, documents=shown,
                                                                     question=question))])
        return rag_verdict(turn.output, state["answer"], bool(state.get("rules_ok")))

    def to_solvers(state: SearchState) -> list[Send] | str:
        valid = state.get("rules_ok") and state.get("rag_ok")
        if not state.get("question") or (cfg.gate_solvers and not valid):
            return END
        return [Send("solve", {"question": state["question"], "answer": state["answer"]})
                for _ in range(cfg.n_solvers)]

    async def solve(state: SolveTask) -> dict[str, Any]:
        turns = await solving.attempt(state["question"])
        judge = checker_model if cfg.llm_judge else None
        attempt = await grade_attempt(turns[-1], state["question"], state["answer"], judge)
        return {"attempts": [attempt | {"turn_ids": [t.turn_id for t in turns]}]}

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
        roles={"propose": writer, "rag_check": rag_checker, "solve": solving.answerer},
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
