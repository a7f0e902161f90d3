"""Search self-play end to end on SmolLM2 with the real stdlib-docs corpus and search tool."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from _trace_checks import check_token_exact
from agentplay.graphs import RECIPES
from agentplay.graphs import search_selfplay_breakdown as sb
from agentplay.graphs.search_selfplay import (
    WRITE_DEMO,
    SearchSelfPlayConfig,
    parse_answer,
    parse_question,
    proposer_reward,
    rule_check,
    search_findings,
    solver_reward,
    target_kind,
)

from agentplay import EpisodeContext, EpisodeView, resolve_model, run_episode
from agentplay.models import DEFAULT_MODEL_SPEC
from agentplay.traces import Episode, Generation, RewardRecord, RoleTurn, ToolCallRecord, TraceStore

BENCH = Path(__file__).resolve().parents[1] / "bench" / "learning_search.py"
VIEW = EpisodeView(turns=[], state={}, ctx=EpisodeContext(index=0, seed=0, run_id="r"))

TINY = {
    "n_solvers": 2,
    "group_k": 2,
    "max_tool_turns": 1,
    "proposer_max_tokens": 48,
    "solver_max_tokens": 32,
    "rag_max_tokens": 12,
    "temperature": 0.0,
    "gate_solvers": False,
    "min_distinct_queries": 1,
}


def test_parsers_and_rule_checks():
    assert parse_question("I searched.\nQuestion: Which function joins paths?\nThanks") == "Which function joins paths?"
    assert parse_question("Which module reads CSV files?") == "Which module reads CSV files?"
    with pytest.raises(ValueError, match="no question"):
        parse_question('<tool_call>{"name": "search"}')
    assert parse_answer("Let me think.\nAnswer: `os.path.join`.") == "os.path.join"
    # the first dotted name of the answer line: small models copy a document line's "id: text"
    assert parse_answer("Answer: inspect.getdoc: getdoc(object)") == "inspect.getdoc"
    assert parse_answer("Answer: SystemExit") == "SystemExit"
    with pytest.raises(ValueError, match="empty"):
        parse_answer("Answer: ``")
    cfg = SearchSelfPlayConfig()
    assert rule_check(cfg, "Which function joins path parts?", "os.path.join", ["join paths", "path parts"]) == ""
    assert rule_check(cfg, "What does os.path.join return?", "os.path.join", ["a", "b"]) == "question leaks the answer"
    assert "need 2" in rule_check(cfg, "Which function joins path parts?", "os.path.join", ["q", "q"])
    assert "length" in rule_check(cfg, "Why?", "os.path.join", ["a", "b"])
    with pytest.raises(ValueError, match="n_solvers"):
        SearchSelfPlayConfig(n_solvers=0)


async def test_episode_end_to_end_records_tool_calls_rewards_and_exact_tokens():
    """Pinned by greedy sampling: on this target (group seed of index 0) SmolLM2 calls made-up
    tools instead of `search` until its tool turns run out, so the write turn asks it for the
    question alone, and it writes one; having searched 0 times, the proposal fails the rule
    check, and (gate_solvers=False) the RAG check and both solvers still run."""
    recipe = RECIPES["search-selfplay"](**TINY).compile()
    episode = await run_episode(recipe, index=0, seed=0, run_id="s")
    assert episode.status == "ok", episode.error
    tokenizer = (await resolve_model(DEFAULT_MODEL_SPEC)).tokenizer
    by_role: dict[str, list] = {}
    for turn in episode.turns:
        by_role.setdefault(turn.role, []).append(turn)
        glue = check_token_exact(turn, tokenizer)
        for call in turn.tool_calls:  # whatever the tool said sits in a mask-0 span
            assert any((call.result or call.error or "")[:60] in g for g in glue), call
    searching, writing = by_role["proposer"]
    assert searching.group_id == writing.group_id == "s/block0/proposer"
    assert searching.generations[0].text.startswith("<tool_call>")  # the demo taught the call format...
    assert searching.tool_calls and all(c.name != "search" and c.error for c in searching.tool_calls)  # ...not the name
    assert searching.output is None and "still calling tools" in searching.parse_error
    # the write turn: a fresh prompt (its worked example, then the target and what was found), no tools
    assert writing.messages[1:3] == WRITE_DEMO and not writing.tool_calls
    target_line = [m for m in searching.messages if m["role"] == "user"][-1]["content"].splitlines()[0]
    assert target_line.startswith("Target answer: ") and writing.messages[3]["content"].splitlines()[0] == target_line
    assert writing.output == "Which function of the tarfile module creates a tarfile object?"
    for turn in (searching, writing):  # one proposal, one reward: -0.5 for a question that failed a check
        assert turn.reward.value == -0.5 and turn.reward.reason == \
            "invalid proposal: searched with 0 distinct queries, need 1"
    assert episode.metrics["question_parsed"] == 1.0 and episode.metrics["rules_pass"] == 0.0
    assert len(by_role["rag_checker"]) == 1 and len(by_role["solver"]) == 2
    for solver in by_role["solver"]:  # a wrong answer, not a missing one: -0.5 (AZR's format rewards)
        assert solver.output == "json.dumps" and solver.reward.value == -0.5


async def test_malformed_proposal_gets_recorded_minus_one():
    recipe = RECIPES["search-selfplay"](**(TINY | {"proposer_max_tokens": 1, "write_turn": False})).compile()
    episode = await run_episode(recipe, index=1, seed=1, run_id="m")
    assert episode.status == "ok", episode.error
    (proposer,) = episode.turns  # no question, no write turn -> no checks with a model, no solvers
    assert proposer.output is None and "no question found" in proposer.parse_error
    assert proposer.reward.value == -1.0 and proposer.reward.reason == "invalid proposal: no question"
    assert episode.metrics["valid_proposal"] == 0.0 and episode.metrics["question_parsed"] == 0.0


GROUP_SEED = 1155229566  # the target block the probe found (derive_seed("group", "p", 1))


async def test_question_reaches_rag_check_and_solvers():
    """Greedy SmolLM2 on this target writes a question at once (found by probing seeds at these
    budgets), so the RAG check and both solvers run and every branch's rewards are recorded."""
    options = TINY | {"max_tool_turns": 2, "proposer_max_tokens": 96, "solver_max_tokens": 48, "rag_max_tokens": 16}
    recipe = RECIPES["search-selfplay"](**options).compile()
    episode = await run_episode(recipe, index=2, seed=2, run_id="q", group_seed=GROUP_SEED)
    assert episode.status == "ok", episode.error
    tokenizer = (await resolve_model(DEFAULT_MODEL_SPEC)).tokenizer
    roles = [t.role for t in episode.turns]
    assert roles.count("proposer") == 1 and roles.count("rag_checker") == 1 and roles.count("solver") == 2
    proposer = next(t for t in episode.turns if t.role == "proposer")
    assert proposer.output and proposer.output.endswith("?")
    assert episode.metrics["question_parsed"] == 1.0
    rag = next(t for t in episode.turns if t.role == "rag_checker")
    assert rag.reward is None and not rag.tool_calls
    assert any(proposer.output in (m.get("content") or "") for m in rag.messages)
    solvers = [t for t in episode.turns if t.role == "solver"]
    assert {t.group_id for t in solvers} == {"q/ep2/solver"}
    for t in solvers:
        check_token_exact(t, tokenizer)
        assert t.reward is not None and t.reward.value in (1.0, -0.5, -1.0) and t.reward.reason
        assert any(proposer.output in (m.get("content") or "") for m in t.messages)
    rate = sum(t.reward.value == 1.0 for t in solvers) / len(solvers)
    assert episode.metrics["solve_rate"] == pytest.approx(rate)
    # the RAG checker copied a document's "id: text" line; the parser keeps the name
    assert rag.output == "inspect.get_line_number"
    # pinned (greedy): this question comes without a search, so it fails the rule check and gets
    # -0.5 with the reason (1 - solve rate for a valid one: tests/test_recipe_rewards.py)
    assert episode.metrics["valid_proposal"] == 0.0 and episode.metrics["rules_pass"] == 0.0
    assert proposer.reward.value == -0.5
    assert proposer.reward.reason == "invalid proposal: searched with 0 distinct queries, need 1"


def test_search_findings_lists_each_hit_once_for_the_write_turn():
    hits = ("[1] id: os.path.join\ntitle: os.path.join (function)\nos.path.join(a, *p) Join two or more pathname "
            "components.\n\n[2] id: os.path.split\ntitle: os.path.split (function)\nSplit a pathname.")
    turn = RoleTurn(role="proposer", tool_calls=[
        ToolCallRecord(call_id="a", name="search", result=hits),
        ToolCallRecord(call_id="b", name="search", result=hits.split("\n\n")[0]),  # the same hit again
        ToolCallRecord(call_id="c", name="search", error="bad_arguments: query is empty")])
    assert search_findings(turn) == ("os.path.join: os.path.join(a, *p) Join two or more pathname components.\n"
                                     "os.path.split: Split a pathname.")
    assert search_findings(turn, chars=20) == "os.path.join: os.pat"
    assert search_findings(RoleTurn(role="proposer")) == ""
    # the write turn's worked example is its own template, rendered with what a search found
    assert WRITE_DEMO[0]["content"].startswith("Target answer: json.dumps\nIts documentation: json.dumps(obj")
    assert "Your searches found:\njson.dumps: Serialize obj" in WRITE_DEMO[0]["content"]
    assert WRITE_DEMO[1]["content"].startswith("Question: ")


# -- format rewards (AZR-style) ----------------------------------------------------------------

def test_format_rewards_grade_failed_proposals_and_answers():
    solver = RoleTurn(role="solver")
    attempts = {"attempts": [{"turn_id": solver.turn_id, "answer": None, "score": 0.0, "reason": "no parsable answer"}]}
    assert solver_reward(solver, attempts, VIEW).value == 0.0  # plain 1/0
    assert solver_reward(solver, attempts, VIEW, format_rewards=True).value == -1.0
    attempts["attempts"][0]["answer"] = "os.path.split"
    assert solver_reward(solver, attempts, VIEW, format_rewards=True).value == -0.5
    attempts["attempts"][0].update(answer="os.path.join", score=1.0)
    assert solver_reward(solver, attempts, VIEW, format_rewards=True).value == 1.0

    proposer = RoleTurn(role="proposer")
    none = {"question": None, "queries": [], "rules_ok": False, "check_reason": "no question"}
    assert proposer_reward(proposer, none, VIEW).value == 0.0
    assert proposer_reward(proposer, none, VIEW, format_rewards=True, min_distinct_queries=2).value == -1.0
    searched_once = none | {"queries": ["join paths"]}
    assert proposer_reward(proposer, searched_once, VIEW, format_rewards=True,
                           min_distinct_queries=2).value == pytest.approx(-0.875)
    leaked = {"question": "What is os.path.join?", "queries": ["a", "b", "c"], "rules_ok": False,
              "check_reason": "question leaks the answer"}
    reward = proposer_reward(proposer, leaked, VIEW, format_rewards=True, min_distinct_queries=2)
    assert reward.value == pytest.approx(-0.25) and reward.reason == "invalid proposal: question leaks the answer"
    valid = {"question": "q?", "queries": ["a", "b"], "rules_ok": True, "rag_ok": True,
             "attempts": [{"score": 1.0}, {"score": 0.0}]}
    assert proposer_reward(proposer, valid, VIEW, format_rewards=True, min_distinct_queries=2).value == 0.5


def test_target_kind_reads_the_corpus_title():
    assert target_kind("os.path.join", "os.path.join (function)") == ("function", "os.path")
    assert target_kind("json.JSONDecoder", "json.JSONDecoder (class)") == ("class", "json")
    assert target_kind("pathlib.Path.resolve", "pathlib.Path.resolve") == ("method", "pathlib.Path")
    assert target_kind("str.split", "str.split") == ("name", "str")


# -- failure breakdown -------------------------------------------------------------------------

def _proposer(output=None, parse_error=None, queries=(), finish="stop", reason=""):
    return RoleTurn(role="proposer", group_id="r/block0/proposer", output=output, parse_error=parse_error,
                    generations=[Generation(text="...", finish_reason=finish)],
                    tool_calls=[ToolCallRecord(call_id=f"c{i}", name="search", arguments={"query": q},
                                               result="[1] id: x") for i, q in enumerate(queries)],
                    reward=RewardRecord(value=0.0, reason=reason))


def _episode(proposer, metrics, solver_rewards=(), status="ok"):
    solvers = [RoleTurn(role="solver", group_id="r/ep/solver", output=None if v == -1.0 else "x",
                        reward=RewardRecord(value=v)) for v in solver_rewards]
    return Episode(run_id="r", recipe="search-selfplay", status=status, turns=[proposer, *solvers], metrics=metrics)


BREAKDOWN_EPISODES = [
    _episode(_proposer(parse_error="output_parser: no question found (the model was still calling tools)",
                       queries=["a"]), {"valid_proposal": 0.0}),
    _episode(_proposer(parse_error="output_parser: no question found", finish="length"), {"valid_proposal": 0.0}),
    _episode(_proposer(parse_error="output_parser: no question found"), {"valid_proposal": 0.0}),
    _episode(_proposer("What is os.path.join?", reason="invalid proposal: question leaks the answer"),
             {"valid_proposal": 0.0}),
    _episode(_proposer("Which joins?", queries=["a"], reason="invalid proposal: searched with 1 distinct queries, "
                       "need 2"), {"valid_proposal": 0.0}),
    _episode(_proposer("Which joins paths?", queries=["a", "b"], reason="invalid proposal: RAG check answered 'x'"),
             {"valid_proposal": 0.0, "rules_pass": 1.0, "rag_pass": 0.0}),
    _episode(_proposer("Which joins paths?", queries=["a", "b"]), {"valid_proposal": 1.0},
             solver_rewards=(1.0, -0.5, -1.0)),
    _episode(_proposer("Which splits?", queries=["a", "b"]), {"valid_proposal": 1.0}, solver_rewards=(-0.5, -0.5)),
    _episode(_proposer(), {}, status="error"),
    # a searching turn without a question, then the write turn's question: judged by the question
    Episode(run_id="r", recipe="search-selfplay", metrics={"valid_proposal": 0.0}, turns=[
        _proposer(parse_error="output_parser: no question found", finish="length", queries=["a"]),
        _proposer("What is os.times?", reason="invalid proposal: question leaks the answer")]),
]


def test_breakdown_names_one_cause_per_proposal():
    causes = [sb.proposal_cause(e) for e in BREAKDOWN_EPISODES]
    assert causes == ["format: still calling tools at the last turn", "format: cut off by max_tokens",
                      "format: no question line", "leaked answer", "too few distinct queries", "RAG check",
                      "valid", "valid", "episode error", "leaked answer"]
    b = sb.breakdown(BREAKDOWN_EPISODES)
    assert b.episodes == 10 and b.valid_rate == pytest.approx(2 / 10)
    assert b.solver == {"right": 1, "wrong": 3, "no answer": 1}
    assert b.distinct_queries == {0: 4, 1: 3, 2: 3}  # per episode: the last one searched once over two turns
    # both solver groups share one group id here: 5 rewards, not all equal -> 1 group with variance
    assert b.groups["solver"] == (1, 1)
    # the proposer turns of the block all scored 0.0: no variance
    assert b.groups["proposer"] == (0, 1)


def test_breakdown_cli_reads_a_real_store(tmp_path, capsys):
    path = tmp_path / "traces.db"
    with TraceStore(path) as store:
        run_id = store.create_run("search-selfplay", {}, run_id="r")
        for i, e in enumerate(BREAKDOWN_EPISODES[:7]):
            store.append_episode(e.model_copy(update={"index": i, "run_id": run_id}))
    sb.main(["--store", str(path), "--examples", "1"])
    out = capsys.readouterr().out
    assert out.startswith("run r\n7 episodes; valid proposals 1 (14%)")
    assert "1   14.3%  leaked answer" in out and "e.g. 'What is os.path.join?'" in out
    assert "solver attempts: 3; right 1; wrong 1; no answer 1" in out


# -- held-out QA set of bench/learning_search.py ------------------------------------------------

@pytest.fixture(scope="module")
def learning_search():
    spec = importlib.util.spec_from_file_location("bench_learning_search", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_search_heldout_set_is_what_the_generator_writes(learning_search, tmp_path):
    rows = learning_search.write_heldout(tmp_path / "heldout.jsonl")
    assert (tmp_path / "heldout.jsonl").read_bytes() == learning_search.HELDOUT.read_bytes()
    assert len(rows) >= 200 and len({r["answer"] for r in rows}) == len(rows)
    from agentplay.rewards import normalize_answer
    from agentplay.tools import default_corpus_index

    index = default_corpus_index()
    for r in rows:  # every answer is a corpus document, and no question names it
        assert index.get(r["answer"]).id == r["answer"]
        assert normalize_answer(r["answer"]) not in normalize_answer(r["question"])
    assert learning_search.summary_sentence("m.f", "m.f(x)\n\nReturn x twice over, as a list. More.") == \
        "Return x twice over, as a list."
    assert learning_search.summary_sentence("m.f", "no signature line here") is None
