"""Search self-play end to end on SmolLM2 with the real stdlib-docs corpus and search tool."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from _trace_checks import check_token_exact
from agentplay.graphs import RECIPES
from agentplay.graphs import search_selfplay_breakdown as sb
from agentplay.graphs.search_selfplay import (
    PROPOSER_DEMO,
    QUERY_DEMO,
    WRITE_DEMO,
    SearchSelfPlayConfig,
    parse_answer,
    parse_question,
    proposer_reward,
    rule_check,
    mask_name,
    parse_query,
    build,
    search_findings,
    hit_ids,
    rag_candidates,
    retriever_verdict,
    solver_answer_demo,
    solver_reward,
    target_kind,
    write_demo,
)

from agentplay import EpisodeContext, EpisodeView, resolve_model, run_episode
from agentplay.models import DEFAULT_MODEL_SPEC
from agentplay.tools import CorpusIndex, Document, SearchTool, default_corpus_index
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
MODEL_READS = {"rag_check": "model", "answer_format": "name", "search_mode": "bm25"}
"""SSP's own setup, the defaults before the measured ones: the policy model reads the RAG check's
documents and the solvers write names; BM25 search. The pinned episodes below were recorded under it."""


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
    # a query turn's one line (the first 'Query:'; the prompt's placeholder is no query)
    assert parse_query('Query: "json indent sort_keys"\nQuery: another') == "json indent sort_keys"
    assert parse_query("I will search.\nquery:  join path parts  ") == "join path parts"
    for text, match in (("json indent", "no query"), ("Query:\njson", "empty query"),
                        ("Query: <a few words>", "empty query")):
        with pytest.raises(ValueError, match=match):
            parse_query(text)
    assert parse_query("Query: " + "word " * 60) == ("word " * 24).strip()  # cut at 120 characters
    cfg = SearchSelfPlayConfig()
    assert rule_check(cfg, "Which function joins path parts?", "os.path.join", ["join paths", "path parts"]) == ""
    assert rule_check(cfg, "What does os.path.join return?", "os.path.join", ["a", "b"]) == "question leaks the answer"
    assert "need 2" in rule_check(cfg, "Which function joins path parts?", "os.path.join", ["q", "q"])
    assert "length" in rule_check(cfg, "Why?", "os.path.join", ["a", "b"])
    with pytest.raises(ValueError, match="n_solvers"):
        SearchSelfPlayConfig(n_solvers=0)


async def test_query_turn_episode_end_to_end_records_queries_hits_rewards_and_exact_tokens():
    """The default protocol on greedy SmolLM2: two query turns whose `Query:` lines the recipe
    searches, the write turn (name hidden), the RAG check over the replayed queries, and two
    solver attempts of a query turn and an answer turn each; every turn token-exact."""
    episode, by_role, _ = await _token_exact_episode(TINY | MODEL_READS | {"query_turns": 2})
    assert not any(turn.tool_calls for turn in episode.turns)  # the recipe searched, not the model
    first, second, writing = by_role["proposer"]
    assert first.group_id == second.group_id == writing.group_id == "s/block0/proposer"
    assert first.messages[1:5] == QUERY_DEMO
    target = _last_user(first).splitlines()[0].removeprefix("Target answer: ")
    assert target == "tarfile.TarFile.makefile"
    # pinned (greedy): the same query twice, although the second turn asks for a different one
    assert first.output == second.output == "makefile.TarFile.makefile(self, tarinfo, targetpath) Make a file named"
    # the second query turn is shown the first query and what the search tool returned for it
    hits = await SearchTool(default_corpus_index(), k=3, mode="bm25", snippet_chars=160).ainvoke({"query": first.output})
    assert f"Your searches so far:\nQuery: {first.output}\n{hits}\n" in _last_user(second)
    assert episode.metrics["distinct_queries"] == len({first.output, second.output})
    # the write turn: kind and owner, the target's name nowhere in what it sees
    shown = _last_user(writing)
    assert shown.startswith("The target is a method of the tarfile.TarFile class. Its name is hidden: ___.\n")
    assert target not in shown and "makefile" not in shown.lower()
    assert writing.output == "Which function of the tarfile.TarFile class creates a tar file?"
    # the RAG check read the documents the two queries retrieve
    (rag,) = by_role["rag_checker"]
    assert rag.reward is None and hits.split("\n")[0].removeprefix("[1] id: ") in _last_user(rag)
    assert rag.output == "html.parser.HTMLParser.close"
    # two attempts (gate_solvers=False) of two turns each; an attempt's turns share its reward
    solvers = by_role["solver"]
    assert len(solvers) == 4 and {t.group_id for t in solvers} == {"s/ep0/solver"}
    queries = [t for t in solvers if _last_user(t).endswith("Query: <a few words>")]
    answers = [t for t in solvers if t not in queries]
    assert len(queries) == len(answers) == 2
    for query, answer in zip(queries, answers, strict=True):
        assert query.reward.value == answer.reward.value and query.reward.reason == answer.reward.reason
        found = await SearchTool(default_corpus_index(), k=3, mode="bm25", snippet_chars=160).ainvoke(
            {"query": query.output})
        assert f"Search results:\n{found}\n" in _last_user(answer)
    assert [t.output for t in answers] == ["tarfile.TarFile.chmod"] * 2  # pinned: the hits' name, not the target's
    assert {t.reward.value for t in solvers} == {-0.5}
    assert episode.metrics["solver_attempts"] == 2.0
    for turn in by_role["proposer"]:  # one proposal, one reward
        assert turn.reward == writing.reward
    # the RAG check failed: -0.5 for a question that failed a check, +0.25 for its one distinct query (of 1)
    assert writing.reward.value == -0.25
    assert writing.reward.reason == "invalid proposal: RAG check answered 'html.parser.HTMLParser.close', not the target"


async def test_default_episode_checks_with_the_retriever_and_solvers_cite_their_hits():
    """The defaults on greedy SmolLM2: hybrid search, the retriever RAG check (no model turn;
    its verdict is the index's ranking of the replayed queries' documents) and solver answers
    that cite a result number, read back as that result's id; every turn token-exact."""
    options = TINY | {"query_turns": 2}
    episode, by_role, _ = await _token_exact_episode(options)
    cfg = SearchSelfPlayConfig(**options)
    assert "rag_checker" not in by_role  # the retriever read the documents, not a model
    *searches, writing = by_role["proposer"]
    target = _last_user(searches[0]).splitlines()[0].removeprefix("Target answer: ")
    index = default_corpus_index()
    queries = list(dict.fromkeys(t.output for t in searches if t.output))
    candidates = list(rag_candidates(index, cfg, queries, target, seed=0, rng=None))
    verdict = retriever_verdict(index, writing.output, candidates, target, rules_ok=True)
    assert episode.metrics["rag_pass"] == float(verdict["rag_ok"])
    assert (verdict.get("check_reason") or "") in writing.reward.reason
    answers = [t for t in by_role["solver"] if _last_user(t).endswith("Answer: [result number]")]
    assert len(answers) == 2
    for answer in answers:
        assert answer.messages[1:3] == solver_answer_demo(cite=True)
        cited = re.search(r"Answer:\s*\[?(\d+)", answer.generations[-1].text)
        hits = hit_ids(_last_user(answer))
        assert cited and answer.output == hits[int(cited.group(1))]  # the id shown under that number
    assert [t.output for t in answers] == ["tarfile.TarFile.makeunknown"] * 2  # pinned: greedy cites the same hit
    # pinned: the question fits another method of the class better, and the check says which
    assert writing.reward.reason == "invalid proposal: RAG check ranked 'tarfile.TarFile.makeunknown' first, not the target"


def _last_user(turn: RoleTurn) -> str:
    return [m for m in turn.messages if m["role"] == "user"][-1]["content"]


async def _token_exact_episode(options: dict) -> tuple[Episode, dict[str, list[RoleTurn]], dict[str, list[str]]]:
    """One greedy search-selfplay episode run on SmolLM2 under `options`, checked `ok` and
    token-exact turn by turn: (episode, its turns by role, each turn's mask-0 glue by turn id)."""
    episode = await run_episode(RECIPES["search-selfplay"](**options).compile(), index=0, seed=0, run_id="s")
    assert episode.status == "ok", episode.error
    tokenizer = (await resolve_model(DEFAULT_MODEL_SPEC)).tokenizer
    by_role: dict[str, list[RoleTurn]] = {}
    glue: dict[str, list[str]] = {}
    for turn in episode.turns:
        by_role.setdefault(turn.role, []).append(turn)
        glue[turn.turn_id] = check_token_exact(turn, tokenizer)
    return episode, by_role, glue


async def test_tool_call_protocol_episode_records_tool_calls():
    """Pinned by greedy sampling: under `search_protocol="tool_calls"` SmolLM2 calls a made-up
    tool instead of `search` (why query turns are the default), then writes its question in the
    same turn; having searched 0 times it fails the rule check. The solvers call tools too."""
    episode, by_role, glue = await _token_exact_episode(TINY | MODEL_READS | {"search_protocol": "tool_calls"})
    for turn in episode.turns:
        for call in turn.tool_calls:  # whatever the tool said sits in a mask-0 span
            assert any((call.result or call.error or "")[:60] in g for g in glue[turn.turn_id]), call
    (searching,) = by_role["proposer"]  # it wrote a question: no write turn
    assert searching.group_id == "s/block0/proposer" and searching.messages[1:7] == PROPOSER_DEMO
    assert searching.generations[0].text.startswith("<tool_call>")  # the demo taught the call format...
    assert [c.name for c in searching.tool_calls] == ["makefile"] and searching.tool_calls[0].error  # ...not the name
    assert searching.output == "Which function of the make command returns a file named `targetfile.tar.bz2`?"
    assert searching.reward.value == -0.5
    assert searching.reward.reason == "invalid proposal: searched with 0 distinct queries, need 1"
    assert episode.metrics["distinct_queries"] == 0.0 and episode.metrics["rules_pass"] == 0.0
    assert len(by_role["rag_checker"]) == 1 and len(by_role["solver"]) == 2  # one turn per attempt
    for solver in by_role["solver"]:
        assert solver.tool_calls and solver.output == "json.dump" and solver.reward.value == -0.5


async def test_malformed_proposal_gets_recorded_minus_one():
    """Query and write turns cut at one token: no query, no question; every proposer turn gets
    -1 with the reason, and nothing else runs."""
    recipe = RECIPES["search-selfplay"](**(TINY | {"query_max_tokens": 1, "question_max_tokens": 1})).compile()
    episode = await run_episode(recipe, index=1, seed=1, run_id="m")
    assert episode.status == "ok", episode.error
    assert [t.role for t in episode.turns] == ["proposer"] * 4  # query_turns=3, then the write turn
    *queries, writing = episode.turns
    assert all(t.output is None and "no query found" in t.parse_error for t in queries)
    assert writing.output is None and "no question found" in writing.parse_error
    for turn in episode.turns:
        assert turn.reward.value == -1.0 and turn.reward.reason == "invalid proposal: no question"
    assert episode.metrics["valid_proposal"] == 0.0 and episode.metrics["distinct_queries"] == 0.0


def test_search_findings_lists_each_hit_once_for_the_write_turn():
    hits = ("[1] id: os.path.join\ntitle: os.path.join (function)\nos.path.join(a, *p) Join two or more pathname "
            "components.\n\n[2] id: os.path.split\ntitle: os.path.split (function)\nSplit a pathname.")
    results = [hits, hits.split("\n\n")[0]]  # the same hit again in the second search
    assert search_findings(results) == ("os.path.join: os.path.join(a, *p) Join two or more pathname components.\n"
                                        "os.path.split: Split a pathname.")
    assert search_findings(results, chars=20) == "os.path.join: os.pat"
    assert search_findings([]) == "" and search_findings(["No results for 'x'. Try other words."]) == ""


def test_write_turn_sees_the_target_described_with_its_name_hidden():
    assert mask_name(search_findings([
        "[1] id: os.path.join\ntitle: os.path.join (function)\nos.path.join(a, *p) Join two or more pathname "
        "components.\n\n[2] id: os.path.joinpath\ntitle: t\nSee path.join and joined."]), "os.path.join") == (
        "___: ___(a, *p) Join two or more pathname components.\nos.path.joinpath: See ___ and joined.")
    # a method: its class-qualified tail and its call are hidden; a plain word "resolve" is not
    assert mask_name("pathlib.Path.resolve(self) Path.resolve() will resolve symlinks", "pathlib.Path.resolve") == \
        "___(self) ___() will resolve symlinks"
    # the write turn's worked example is its own template: kind and owner, the name nowhere
    demo = WRITE_DEMO[0]["content"]
    assert demo.startswith("The target is a function of the json module. Its name is hidden: ___.\n"
                           "Its documentation: ___(obj")
    assert "Your searches found" not in demo and "json.dumps" not in demo  # write_shows_findings=False
    assert "Your searches found:\n___: Serialize obj" in write_demo(True)[0]["content"]
    assert "json.dumps" not in write_demo(True)[0]["content"]
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
    query_turn = RoleTurn(role="solver")  # an attempt of two turns: both get its reward
    attempts["attempts"][0]["turn_ids"] = [query_turn.turn_id, solver.turn_id]
    assert solver_reward(query_turn, attempts, VIEW, format_rewards=True).value == 1.0
    with pytest.raises(StopIteration):
        solver_reward(RoleTurn(role="solver"), attempts, VIEW)

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


def test_breakdown_reads_query_turn_episodes_from_their_metrics():
    """Query turns are proposer turns with an output (the query), and a solver attempt is two
    turns: the cause is the write turn's, searches and solver outcomes come from the metrics."""
    queries = [_proposer("join paths"), _proposer("path parts")]
    leaked = Episode(run_id="r", recipe="search-selfplay", turns=[
        *queries, _proposer("What is os.path.join?", reason="invalid proposal: question leaks the answer")],
        metrics={"valid_proposal": 0.0, "distinct_queries": 2.0})
    solvers = [RoleTurn(role="solver", group_id="r/ep1/solver", output=o, reward=RewardRecord(value=v))
               for o, v in (("join path", 1.0), ("os.path.join", 1.0), ("split path", -0.5), ("os.path.split", -0.5))]
    valid = Episode(run_id="r", recipe="search-selfplay", turns=[*queries, _proposer("Which joins paths?"), *solvers],
                    metrics={"valid_proposal": 1.0, "distinct_queries": 2.0, "solver_attempts": 2.0,
                             "solve_rate": 0.5, "solver_answered": 1.0})
    assert [sb.proposal_cause(e) for e in (leaked, valid)] == ["leaked answer", "valid"]
    b = sb.breakdown([leaked, valid], examples=1)
    assert b.distinct_queries == {2: 2} and b.solver == {"right": 1, "wrong": 1}
    assert b.mixed_solver_groups == (1, 1)  # one right and one wrong attempt
    assert "solver groups with a right and a wrong attempt: 1/1 (100%)" in sb.format_breakdown(b)
    unanimous = valid.model_copy(update={"metrics": valid.metrics | {"solve_rate": 0.0}})
    assert sb.breakdown([unanimous]).mixed_solver_groups == (0, 1)
    assert b.examples["leaked answer"] == ["'What is os.path.join?' <- '...'"]
    assert sb.solver_outcomes({"solver_attempts": 4.0, "solve_rate": 0.25, "solver_answered": 0.5}) == \
        {"right": 1, "wrong": 1, "no answer": 2}


def test_search_retriever_check_passes_when_the_question_picks_its_target(tmp_path):
    """On a real dense index (MiniLM): the question must rank its target first among the
    candidates, and the target must have been retrieved at all."""
    docs = [Document(id="os.path.join", title="os.path.join (function)", text="Join one or more path components."),
            Document(id="json.dumps", title="json.dumps (function)", text="Serialize an object to a JSON string."),
            Document(id="math.sqrt", title="math.sqrt (function)", text="Return the square root of x.")]
    index = CorpusIndex.build(docs, tmp_path / "idx", dense=True)
    ids = ["json.dumps", "math.sqrt", "os.path.join"]
    ranked = index.rank("Which function computes a square root?", ids)
    assert [d for d, _ in ranked][0] == "math.sqrt" and ranked[0][1] > ranked[1][1] >= ranked[2][1]
    assert retriever_verdict(index, "Which function computes a square root?", ids, "math.sqrt", True) == \
        {"rag_ok": True, "rag_answer": "math.sqrt"}
    failed = retriever_verdict(index, "Which function writes JSON text?", ids, "math.sqrt", True)
    assert failed == {"rag_ok": False, "rag_answer": "json.dumps",
                      "check_reason": "RAG check ranked 'json.dumps' first, not the target"}
    unseen = retriever_verdict(index, "Which function computes a square root?", ids[:2], "os.path.join", True)
    assert unseen["rag_ok"] is False and "never retrieved the target" in unseen["check_reason"]
    assert "check_reason" not in retriever_verdict(index, "q?", ids, "os.path.join", rules_ok=False)
    with pytest.raises(KeyError, match="no document with id 'nope'"):
        index.rank("q", ["nope"])
    index.close()
    sparse = CorpusIndex.build(docs, tmp_path / "sparse", dense=False)
    with pytest.raises(ValueError, match="without dense embeddings"):
        sparse.rank("q", ids)
    with pytest.raises(ValueError, match="rag_check: the retriever check ranks by the index's dense embeddings"):
        build(index=sparse)  # refused when built, not in every episode
    assert build(index=sparse, rag_check="model").name == "search-selfplay"
    sparse.close()
