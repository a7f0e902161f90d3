"""The built-in recipes' rewards, parsers, checks and prompts, called directly on hand-made
states: no model, no sandbox. The end-to-end tests (test_search_selfplay.py,
test_code_selfplay.py, test_propose_solve_judge.py) prove the graphs feed them these states."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from agentplay.graphs import agent0, spice, spiral
from agentplay.graphs import code_selfplay as csp
from agentplay.graphs import propose_solve_judge as psj
from agentplay.graphs import r_zero as rz
from agentplay.graphs import search_selfplay as ssp
from agentplay.graphs._code_exec import Verdict
from agentplay.tools import CorpusIndex, Document

from agentplay import EpisodeContext, EpisodeView
from agentplay.prompts import ENVIRONMENT
from agentplay.traces import RewardRecord, RoleTurn

VIEW = EpisodeView(turns=[], state={}, ctx=EpisodeContext(index=3, seed=0, run_id="r"))
PROMPTS = Path(ssp.__file__).parent / "prompts"


def _turn(role: str, output=None, parse_error=None) -> RoleTurn:
    return RoleTurn(role=role, output=output, parse_error=parse_error)


# -- prompts -----------------------------------------------------------------------------------

def test_every_prompt_file_parses_and_is_used():
    files = sorted(PROMPTS.glob("*/*.jinja"))
    assert {f.parent.name for f in files} == {"search_selfplay", "code_selfplay", "propose_solve_judge", "r_zero",
                                              "spiral", "agent0", "spice"}
    texts = {f.read_text().rstrip("\n") for f in files}
    for f in files:
        ENVIRONMENT.parse(f.read_text())
    used = {ssp.PROPOSER_SYSTEM, ssp.PROPOSER_USER, ssp.PROPOSER_QUERY, ssp.PROPOSER_WRITE, ssp.SOLVER_SYSTEM,
            ssp.SOLVER_QUERY, ssp.SOLVER_ANSWER, ssp.RAG_SYSTEM, ssp.RAG_USER,
            csp.PROPOSER_SYSTEM, csp.PROPOSER_USER, csp.PROPOSER_AGAIN, csp.PROPOSER_REFERENCE, csp.SOLVER_SYSTEM,
            *csp.SOLVER_USER.values(), psj.PROPOSER_SYSTEM, psj.PROPOSER_USER, psj.SOLVER_SYSTEM, psj.SOLVER_USER,
            psj.JUDGE_SYSTEM, psj.QUALITY_USER, psj.ANSWER_USER, rz.CHALLENGER_SYSTEM, rz.CHALLENGER_USER,
            rz.CHALLENGER_EXAMPLE, rz.SOLVER_SYSTEM, rz.SOLVER_USER, spiral.PLAYER_SYSTEM, spiral.PLAYER_USER,
            agent0.CURRICULUM_SYSTEM, agent0.CURRICULUM_USER, agent0.EXECUTOR_SYSTEM, agent0.EXECUTOR_USER,
            spice.CHALLENGER_SYSTEM, spice.CHALLENGER_FREE, spice.CHALLENGER_MCQ, spice.REASONER_SYSTEM,
            spice.REASONER_FREE, spice.REASONER_MCQ}
    assert texts == used


def test_prompts_render_what_the_models_are_shown():
    # the search proposer's demo task is its own template, rendered for json.dumps
    assert ssp.PROPOSER_DEMO[0]["content"].startswith("Target answer: json.dumps\nIts documentation: json.dumps(obj")
    assert ssp.PROPOSER_DEMO[0]["content"].endswith("without writing json.dumps in the question.\n"
                                                    "Finish with one line: Question: <your question>")
    assert ENVIRONMENT.from_string(ssp.RAG_USER).render(documents="[1] a", question="Q?") == \
        "Documents:\n[1] a\n\nQuestion: Q?"
    system = ENVIRONMENT.from_string(csp.PROPOSER_SYSTEM)
    assert "run_python" in system.render(n_inputs=1, tools=True)
    assert "run_python" not in system.render(n_inputs=3, tools=False) and "with 3 input block(s)" in \
        system.render(n_inputs=3, tools=False)
    with pytest.raises(Exception, match="purpose|undefined|has no attribute"):  # an unknown task type fails loudly
        csp.proposer_messages("translation", [], 1)


# -- search self-play --------------------------------------------------------------------------

def test_search_rewards_read_the_checks_and_the_graded_attempts():
    turns = [_turn("solver") for _ in range(4)]
    state = {"question": "Which function joins paths?", "answer": "os.path.join", "rules_ok": True, "rag_ok": True,
             "attempts": [{"turn_id": t.turn_id, "answer": "x", "score": s, "reason": f"r{s}"}
                          for t, s in zip(turns, (1.0, 0.0, 0.0, 0.0), strict=True)]}
    assert [ssp.solver_reward(t, state, VIEW).value for t in turns] == [1.0, 0.0, 0.0, 0.0]
    assert ssp.solver_reward(turns[0], state, VIEW).reason == "r1.0"
    proposer = ssp.proposer_reward(_turn("proposer"), state, VIEW)
    assert proposer.value == pytest.approx(0.75) and proposer.components == {"solve_rate": 0.25}
    assert ssp.metrics(state | {"queries": ["join paths", "path parts"]}, []) == {
        "question_parsed": 1.0, "rules_pass": 1.0, "rag_pass": 1.0, "distinct_queries": 2.0, "valid_proposal": 1.0,
        "solve_rate": 0.25, "solver_attempts": 4.0, "solver_answered": 1.0}
    failed = state | {"rag_ok": False, "check_reason": "RAG check answered 'os.path', not the target"}
    reward = ssp.proposer_reward(_turn("proposer"), failed, VIEW)
    assert reward.value == 0.0 and reward.reason == "invalid proposal: RAG check answered 'os.path', not the target"
    assert ssp.proposer_reward(_turn("proposer"), {"rules_ok": False}, VIEW).reason == \
        "invalid proposal: failed a check"
    assert "solve_rate" not in ssp.metrics({"question": None, "attempts": []}, [])  # no solvers ran: no rate


async def test_search_grading_without_a_judge():
    right = await ssp.grade_attempt(_turn("solver", "OS.path.join"), "q", "os.path.join", judge_model=None)
    assert right["score"] == 1.0 and right["reason"] == "exact match"
    wrong = await ssp.grade_attempt(_turn("solver", "os.path.split"), "q", "os.path.join", judge_model=None)
    assert wrong["score"] == 0.0 and wrong["reason"] == "'os.path.split' does not match the target"
    none = await ssp.grade_attempt(_turn("solver", None, "output_parser: empty answer"), "q", "x", judge_model=None)
    assert none["score"] == 0.0 and none["reason"] == "no parsable answer: output_parser: empty answer"


def test_search_cited_answers_mean_the_result_shown_under_that_number():
    found = ("[1] id: json.dumps\ntitle: json.dumps (function)\nSerialize obj.\n\n"
             "[2] id: json.dump\ntitle: json.dump (function)\nSerialize obj to fp.")
    hits = ssp.hit_ids(found)
    assert hits == {1: "json.dumps", 2: "json.dump"}
    for text in ("Answer: [2]", "Answer: 2", "Answer: [2] json.dump is it", "I looked.\nAnswer: [2]."):
        assert ssp.parse_cited_answer(text, hits) == "json.dump", text
    assert ssp.parse_cited_answer("Answer: os.path.join", hits) == "os.path.join"  # a written name still counts
    with pytest.raises(ValueError, match=r"cited result \[3\], but 2 results were shown"):
        ssp.parse_cited_answer("Answer: [3]", hits)
    with pytest.raises(ValueError, match="cited result"):
        ssp.parse_cited_answer("Answer: [1]", {})  # no search results at all


def test_search_rag_verdict_and_documents(tmp_path):
    assert ssp.rag_verdict("os.path.join", "os.path.join", rules_ok=True) == {"rag_ok": True, "rag_answer": "os.path.join"}
    failed = ssp.rag_verdict("json.dumps", "os.path.join", rules_ok=True)
    assert failed["rag_ok"] is False and failed["check_reason"] == "RAG check answered 'json.dumps', not the target"
    assert "check_reason" not in ssp.rag_verdict(None, "os.path.join", rules_ok=False)  # keeps the rule's reason
    docs = [Document(id=f"m.f{i}", title=f"m.f{i}", text=f"function number {i} " + "word " * i) for i in range(12)]
    docs.append(Document(id="os.path.join", title="os.path.join", text="Join one or more path components."))
    index = CorpusIndex.build(docs, tmp_path / "idx", dense=False)
    cfg = ssp.SearchSelfPlayConfig(search_k=1, noise_docs=2, search_mode="bm25")
    shown = ssp.rag_documents(index, cfg, ["join path components"], "os.path.join", seed=0, rng=random.Random(1))
    lines = shown.splitlines()
    assert len(lines) == 3 and sorted(ln[:4] for ln in lines) == ["[1] ", "[2] ", "[3] "]
    assert sum("Join one or more path components." in ln for ln in lines) == 1  # retrieved once, plus 2 noise
    assert ssp.rag_documents(index, cfg.model_copy(update={"noise_docs": 0}), [], "x", seed=0, rng=None) == \
        "(no documents)"
    index.close()


# -- code self-play ----------------------------------------------------------------------------

def _code_state(proposals, verdicts=(), answers=None):
    return {"proposals": proposals, "solver_task": {tid: task for tid, task, _ in verdicts},
            "verdicts": {tid: v.model_dump() for tid, _, v in verdicts},
            "answers": answers if answers is not None else {tid: "1" for tid, _, _ in verdicts},
            "tasks": [{"source": "proposal"}]}


@pytest.mark.parametrize("format_rewards", [True, False])
def test_code_proposer_reward_is_learnability_or_the_format_penalty(format_rewards):
    cfg = csp.CodeSelfPlayConfig(format_rewards=format_rewards)
    valid, invalid, unparsed = _turn("proposer", {"program": "p", "inputs": ["1"]}), _turn("proposer"), \
        _turn("proposer", parse_error="no ```python block defining f")
    verdicts = [("a", 0, Verdict(correct=True, reason="ok")), ("b", 0, Verdict(correct=False, reason="no")),
                ("c", 0, Verdict(correct=False, reason="no")), ("d", 0, Verdict(correct=False, reason="no"))]
    state = _code_state([{"turn_id": valid.turn_id, "error": None, "task": 0},
                         {"turn_id": invalid.turn_id, "error": "invalid proposal: timeout", "task": None},
                         {"turn_id": unparsed.turn_id, "error": unparsed.parse_error, "task": None}], verdicts)
    r = csp.proposer_reward(valid, state, VIEW, cfg=cfg)
    assert r.value == pytest.approx(0.75) and r.components == {"valid": 1.0, "solve_rate": 0.25}
    r = csp.proposer_reward(invalid, state, VIEW, cfg=cfg)
    assert r.value == (-0.5 if format_rewards else 0.0) and r.reason == "invalid proposal: timeout"
    r = csp.proposer_reward(unparsed, state, VIEW, cfg=cfg)
    assert r.value == (-1.0 if format_rewards else 0.0) and r.reason.startswith("parse error: no ```python")
    all_right = _code_state(state["proposals"], [("a", 0, Verdict(correct=True, reason="ok"))])
    assert csp.proposer_reward(valid, all_right, VIEW, cfg=cfg).value == 0.0  # p = 1: nothing to learn
    unchecked = _code_state(state["proposals"])
    assert csp.proposer_reward(valid, unchecked, VIEW, cfg=cfg).reason == "valid, but no solver attempt was checked"


def test_code_solver_reward_tells_right_wrong_and_malformed_apart():
    cfg = csp.CodeSelfPlayConfig()
    right, wrong, malformed, unparsed, unchecked = (_turn("solver") for _ in range(5))
    unparsed.parse_error = "output_parser: no ```output block with the answer"
    state = _code_state([], [(right.turn_id, 0, Verdict(correct=True, reason="f(1) == 2")),
                             (wrong.turn_id, 0, Verdict(correct=False, reason="f(1) == 2, not 3")),
                             (malformed.turn_id, 0, Verdict(correct=False, reason="not a literal", well_formed=False)),
                             (unparsed.turn_id, 0, Verdict(correct=False, reason="no parsable answer"))],
                        answers={right.turn_id: "2", wrong.turn_id: "3", malformed.turn_id: "x + 1", unparsed.turn_id: None})
    rewards = [csp.solver_reward(t, state, VIEW, cfg=cfg) for t in (right, wrong, malformed, unparsed, unchecked)]
    assert [r.value for r in rewards] == [1.0, -0.5, -1.0, -1.0, 0.0]
    assert rewards[0].components == {"correct": 1.0, "formatted": 1.0}
    assert rewards[3].reason.startswith("parse error: output_parser: no ```output")
    assert rewards[4].reason == "answer was not checked"
    m = csp.metrics(state, [], buffer=csp.TaskBuffer())
    assert m["solve_rate"] == 0.25 and m["solver_format"] == 0.5 and m["buffer_size"] == len(csp.SEED_PROGRAMS)
    assert m["valid_proposal"] == 0.0 and m["tasks"] == 1.0 and m["from_buffer"] == 0.0


def test_code_repetition_penalty_and_groups():
    cfg = csp.CodeSelfPlayConfig(repetition_weight=0.5)
    program = "def f(xs):\n    return sorted(xs)[::-1]"
    turns = [_turn("proposer", {"program": p}) for p in (program, program, "def f(s):\n    return s.upper()")]
    turns.append(_turn("proposer", parse_error="x"))
    for t in turns:
        valid = t.parse_error is None
        t.reward = RewardRecord(value=0.0, reason="", components={"valid": float(valid)})
    deltas = csp.proposer_repetition(turns, cfg=cfg)
    assert deltas[0] == deltas[1] < 0 and deltas[2:] == [0.0, 0.0]
    solver = _turn("solver")
    assert csp.solver_group(solver, {"solver_task": {solver.turn_id: 2}}, VIEW.ctx) == "ep3/task2"


# -- propose-solve-judge -----------------------------------------------------------------------

def test_psj_parsers_and_judge_verdicts():
    assert psj.parse_question("<question>What is 2 + 2?</question>") == {"question": "What is 2 + 2?", "format": 1.0}
    assert psj.parse_question("What is three plus four?") == {"question": "What is three plus four?", "format": 0.0}
    with pytest.raises(ValueError, match="at least 30 chars"):
        psj.parse_question("<question>What is 2 + 2?</question>", min_chars=30)
    assert psj.parse_answer("so <answer>4</answer> or <answer> 5 </answer>") == "5"
    with pytest.raises(ValueError, match="empty"):
        psj.parse_answer("<answer> </answer>")
    assert psj.parse_score_strict("Score: 7") == 7.0
    with pytest.raises(ValueError, match="no score"):
        psj.parse_score_strict("Score: 12")
    assert psj.judge_verdict(_turn("judge", 7.0)) == {"score": 7.0, "reason": "judge score 7/10"}
    assert psj.judge_verdict(_turn("judge", parse_error="no score"))["score"] is None


def test_psj_rewards_and_metrics_on_a_known_state():
    cfg = psj.ProposeSolveJudgeConfig(n_questions=2)
    p = _turn("proposer", {"question": "What is 2 + 2?", "format": 0.0})
    solvers = [_turn("solver", a) for a in ("4", "5")]
    judge = _turn("judge", 8.0)
    state = {"questions": [{"text": "What is 2 + 2?", "format": 0.0, "source": "proposal", "turn_id": p.turn_id}],
             "solver_question": {s.turn_id: 0 for s in solvers}, "answers": {s.turn_id: s.output for s in solvers},
             "quality": {0: {"score": 8.0, "reason": "judge score 8/10"}},
             "answer_scores": {solvers[0].turn_id: {"score": 10.0, "reason": "judge score 10/10"}},
             "judge_kind": {judge.turn_id: "quality"}, "admitted": [0], "pooled": []}
    r = psj.proposer_reward(p, state, VIEW, cfg=cfg)
    # quality 0.8; scored answers: 1.0 (the other was not judged) -> difficulty 0; format 0
    assert r.value == pytest.approx(0.5 * 0.8) and r.components["admitted"] == 1.0
    assert [psj.solver_reward(s, state, VIEW, cfg=cfg).value for s in solvers] == [1.0, 0.0]
    assert psj.solver_reward(solvers[1], state, VIEW, cfg=cfg).reason == "answer was not judged"
    assert psj.judge_reward(judge, state, VIEW).reason == "quality score parsed"
    assert psj.judge_group(judge, state, VIEW.ctx) == "ep3/quality"
    assert psj.solver_group(solvers[1], state, VIEW.ctx) == "ep3/q0"
    pool = psj.QuestionPool()
    pool.add("What is 2 + 2?", 8.0)
    assert psj.metrics(state, [], cfg=cfg, pool=pool) == {"valid_proposal": 0.5, "mean_quality": 8.0,
                                                          "solve_rate": 1.0, "admitted": 1.0, "pool_size": 1.0,
                                                          "pooled": 0.0}
