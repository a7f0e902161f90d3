"""The code self-play verifier in the real Docker sandbox, fed known-good and known-bad
programs and answers: the false positives and false negatives reward checkers are known for."""

from __future__ import annotations

import pytest
import pytest_asyncio
from agentplay.graphs._code_exec import (
    RESULT_MARK,
    CodeTask,
    Verdict,
    build_task,
    check_abduction,
    check_arguments,
    check_deduction,
    check_induction,
    check_program,
    probe_arguments,
)
from agentplay.graphs.code_selfplay import (
    PROPOSER_AGAIN,
    SEED_PROGRAMS,
    SOLVER_EXAMPLES,
    TaskBuffer,
    _answer_parser,
    parse_proposal,
    proposer_messages,
    solver_example_turns,
)
from agentplay.sandbox import Limits, SandboxConfig, open_sandbox
from conftest import require_docker

FAST = Limits(wall_time_s=3, memory_mb=256)
module_loop = pytest.mark.asyncio(loop_scope="module")  # one warm sandbox pool for the module


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sandbox():
    require_docker()
    sb = open_sandbox(config=SandboxConfig(backend="docker", pool_min=1, pool_max=2))
    yield sb
    await sb.aclose()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sorted_task(sandbox) -> CodeTask:
    return await build_task(sandbox, "def f(xs):\n    return sorted(set(xs))\n", ["[3, 1, 2, 1]", "'ba'", "(2, 2)"],
                            limits=FAST)


@module_loop
async def test_valid_program_gives_canonical_outputs(sorted_task):
    assert sorted_task.outputs == ["[1, 2, 3]", "['a', 'b']", "[2]"]


@pytest.mark.parametrize(
    ("program", "inputs", "reason"),
    [
        # string hashing is salted per process: the order of this set changes between runs
        ("def f(n):\n    return ''.join({chr(97 + i) for i in range(26)})", ["0"], "not deterministic"),
        ("def f(x):\n    return 1 // x", ["0"], "ZeroDivisionError"),
        ("def f(x):\n    while True:\n        pass", ["1"], "timeout"),
        ("class T:\n    pass\ndef f(x):\n    return T()", ["1"], "not a plain value"),
        ("def f(n):\n    return 'x' * n", ["5000"], "longer than"),
        ("def f(x):\n    return x", ["y"], "non-literal"),
        ("def g(x):\n    return x", ["1"], "no top-level function f"),
        ("import random\ndef f(x):\n    return random.random()", ["1"], "banned module 'random'"),
        ("from os import path\ndef f(x):\n    return 1", ["1"], "banned module 'os'"),
        ("def f(x):\n    return eval(x)", ["'1'"], "banned builtin eval"),
        ("def f(x):\n    return x.__class__", ["1"], "dunder attribute"),
    ],
)
@module_loop
async def test_bad_proposals_are_rejected_with_a_reason(sandbox, program, inputs, reason):
    with pytest.raises(ValueError, match=reason):
        await build_task(sandbox, program, inputs, limits=FAST, max_repr=1000)


def test_probes_edit_one_argument_at_a_time_and_keep_types():
    assert probe_arguments("4") == ["5", "3", "-5", "19"]
    assert probe_arguments("[2, 7], 'ab'") == ["[2], 'ab'", "[2, 7, 7], 'ab'", "[3, 8], 'ab'", "[3, 7], 'ab'",
                                               "[2, 7], 'aba'", "[2, 7], 'b'", "[2, 7], 'baz'"]
    assert probe_arguments("True, None") == ["False, None", "True, 0"]
    assert probe_arguments("()") == ["(1,)"]  # the "drop the last item" edit is the input itself: left out
    assert len(probe_arguments("1, 2, 3")) == 8  # capped
    assert probe_arguments("x") == []  # not a literal: nothing to probe (check_arguments rejects it)


@pytest.mark.parametrize(
    ("program", "inputs", "constant"),
    [
        ("def f(xs):\n    return 10 if len(xs) == 2 else 10", ["[1, 2]"], True),
        ("def f(s):\n    return len({100000000})", ["'abc'"], True),
        ("def f(x):\n    return 'dog'", ["3"], True),
        ("def f(a, b):\n    return a * 0 + b * 0", ["4, 5"], True),
        ("def f(x):\n    return x // 100", ["5"], False),  # 0 for 4, 6 and 22, but -1 for -6
        ("def f(x):\n    return x[0]", ["[6, 2]"], False),
        ("def f(x):\n    return x[1]\ndef g():\n    return 10", ["[7, 10]"], False),  # only items past the first matter
        ("def f(x):\n    return [v + 1 for v in range(1, 9) if v % 2 == 0]", ["[2, 4]"], True),
        ("def f(x):\n    return x > 3", ["10"], False),
        ("def f(x, y):\n    return y", ["1, 2"], False),  # ignores x but not y
        ("def f(x):\n    return 1 if x == 7 else 1 // 0", ["7"], False),  # every edit raises: kept
        ("def f(n):\n    while n != 3:\n        n += 1\n    return 0", ["1"], False),  # edit 3n+7 loops: kept
        ("def f(x):\n    return 0", ["1", "2"], True),
    ],
)
@module_loop
async def test_programs_whose_output_ignores_the_input_are_rejected(sandbox, program, inputs, constant):
    if constant:
        with pytest.raises(ValueError, match="does not depend on the input"):
            await build_task(sandbox, program, inputs, limits=FAST, require_input_dependence=True)
    else:
        task = await build_task(sandbox, program, inputs, limits=FAST, require_input_dependence=True)
        assert task.inputs == inputs and len(task.outputs) == len(inputs)
    # off by default (AZR has no such check): the same program is a valid task
    assert (await build_task(sandbox, program, inputs, limits=FAST)).inputs == inputs


@module_loop
async def test_seed_programs_are_all_valid(sandbox):
    tasks = [await build_task(sandbox, s["program"], s["inputs"], limits=FAST, require_input_dependence=True)
             for s in SEED_PROGRAMS]
    assert all(len(t.outputs) == 3 for t in tasks)
    assert tasks[4].outputs[0] == "{'a': 3, 'b': 1, 'n': 2}"  # dict keys canonically sorted


@pytest.mark.parametrize(
    ("prediction", "correct", "well_formed"),
    [
        ("[1, 2, 3]", True, True),
        ("[1,2,3]", True, True),  # spacing is not part of the value
        ("[3, 2, 1]", False, True),
        ("[1.0, 2, 3]", False, True),  # a float is not the int f returns
        ("(1, 2, 3)", False, True),
        ("__import__('os').system('true')", False, False),  # not a literal: never executed
        ("sorted(v)", False, False),  # an expression where a value was asked: a format error
        ("[1, 2, 3", False, False),
    ],
)
@module_loop
async def test_deduction(sandbox, sorted_task, prediction, correct, well_formed):
    verdict = await check_deduction(sandbox, sorted_task, prediction, limits=FAST)
    assert verdict.correct is correct, verdict.reason
    assert verdict.well_formed is well_formed, verdict.reason
    assert verdict.reason


@module_loop
async def test_deduction_sets_and_dicts_compare_by_value(sandbox):
    task = await build_task(sandbox, "def f(s):\n    return {c: s.count(c) for c in set(s)}, set(s)",
                            ["'abca'"], limits=FAST)
    good = await check_deduction(sandbox, task, "({'c': 1, 'b': 1, 'a': 2}, {'c', 'a', 'b'})", limits=FAST)
    assert good.correct, good.reason
    bad = await check_deduction(sandbox, task, "({'c': 1, 'b': 1, 'a': 1}, {'c', 'a', 'b'})", limits=FAST)
    assert not bad.correct


@module_loop
async def test_abduction_accepts_any_input_that_gives_the_output(sandbox, sorted_task):
    # the proposer's input was [3, 1, 2, 1]; these differ but give [1, 2, 3]
    for other in ("[1, 2, 3]", "(3, 3, 2, 1)", "{1: 0, 2: 0, 3: 0}"):
        verdict = await check_abduction(sandbox, sorted_task, other, limits=FAST)
        assert verdict.correct and verdict.ran, (other, verdict.reason)
    wrong = await check_abduction(sandbox, sorted_task, "[1, 2]", limits=FAST)
    assert not wrong.correct and wrong.ran and "target [1, 2, 3]" in wrong.reason
    crash = await check_abduction(sandbox, sorted_task, "5", limits=FAST)
    assert not crash.correct and crash.well_formed and not crash.ran and "TypeError" in crash.reason
    code = await check_abduction(sandbox, sorted_task, "open('/etc/passwd').read()", limits=FAST)
    assert not code.correct and not code.well_formed and "non-literal" in code.reason


@module_loop
async def test_induction_checks_held_out_pairs_and_resists_forgery(sandbox, sorted_task):
    good = await check_induction(sandbox, sorted_task, "def f(v):\n    return sorted(list(set(v)))", limits=FAST)
    assert good.correct, good.reason
    # right on the pairs shown to the solver, wrong on the held-out (2, 2)
    memorised = ("def f(v):\n    if v == 'ba':\n        return ['a', 'b']\n    return [1, 2, 3]")
    held = await check_induction(sandbox, sorted_task, memorised, limits=FAST)
    assert not held.correct and "(2, 2)" in held.reason
    hostile_eq = ("class Yes(list):\n    def __eq__(self, other):\n        return True\n"
                  "    def __repr__(self):\n        return '[1, 2, 3]'\n"
                  "def f(v):\n    return Yes()")
    assert not (await check_induction(sandbox, sorted_task, hostile_eq, limits=FAST)).correct
    subclass = ("class Fake(list):\n    pass\ndef f(v):\n    return Fake(sorted(set(v)))")
    verdict = await check_induction(sandbox, sorted_task, subclass, limits=FAST)
    assert not verdict.correct and "not a plain value" in verdict.reason
    forged = ("print('" + RESULT_MARK + '{"load_error": null, "calls": [{"ok": true, "repr": "[1, 2, 3]"}], '
              '"literals": []}' + "')\ndef f(v):\n    return 0")
    assert not (await check_induction(sandbox, sorted_task, forged, limits=FAST)).correct


def test_static_checks_and_argument_lists():
    check_program("import math\nfrom collections import Counter\ndef f(x):\n    return math.floor(x)")
    with pytest.raises(ValueError, match="banned module 'os.path'"):
        check_program("import os.path\ndef f(x):\n    return 1")
    with pytest.raises(ValueError, match="does not parse"):
        check_program("def f(x) return x")
    assert check_arguments(" [1, 2], 'a' ") == "[1, 2], 'a'"
    for bad, why in (("", "empty"), ("x=1", "positional"), ("*[1]", "positional"), ("len([])", "non-literal"),
                     ("1)", "not an argument list")):
        with pytest.raises(ValueError, match=why):
            check_arguments(bad)


def test_parsers_read_the_fenced_layout():
    text = "Sure!\n```python\ndef f(x):\n    return x + 1\n```\n```input\n3\n```\n```input\n[1]\n```"
    assert parse_proposal(text) == {"program": "def f(x):\n    return x + 1", "inputs": ["3", "[1]"]}
    with pytest.raises(ValueError, match="no ```python block"):
        parse_proposal("def f(x): return x")
    with pytest.raises(ValueError, match="no ```input block and no call of f"):
        parse_proposal("```python\ndef f(x):\n    return x\n```")
    # a demo call under the definition is the input written the other way; it leaves the program
    shown = ("```python\ndef f(xs, k):\n    return xs[:k]\n\nprint(f([3, 1], 2))\nf('a', 0)\ng(1)\n"
             "assert f([], 1) == [9]\n```")
    assert parse_proposal(shown) == {"program": "def f(xs, k):\n    return xs[:k]\n\ng(1)",
                                     "inputs": ["[3, 1], 2", "'a', 0", "[], 1"]}
    # an ```input block wins over demo calls, which still leave the program
    both = "```python\ndef f(x):\n    return x\nf(1)\n```\n```input\n7\n```"
    assert parse_proposal(both) == {"program": "def f(x):\n    return x", "inputs": ["7"]}
    assert _answer_parser("deduction")("so\n```output\n[1, 2]\n```") == "[1, 2]"
    assert _answer_parser("abduction")("```\n4, 5\n```") == "4, 5"  # an untagged block is accepted
    with pytest.raises(ValueError, match="no ```python block"):
        _answer_parser("induction")("```python\nprint(1)\n```")
    with pytest.raises(ValueError):
        _answer_parser("deduction")("The answer is 4")


def test_task_buffer_dedupes_and_filters_by_inputs():
    import random

    buf = TaskBuffer(seeds=[], max_size=3)
    buf.add("def f(x):\n    return x", ["1"])
    buf.add("def f(x):\n    return x", ["2"])
    assert len(buf) == 1
    buf.add("def f(x):\n    return -x", ["1", "2", "3"])
    assert buf.sample(random.Random(0), k=5, min_inputs=3)[0]["program"].endswith("-x")
    for i in range(5):
        buf.add(f"def f(x):\n    return {i}", ["0"])
    assert len(buf) == 3


def test_worked_examples_are_in_the_layout_the_parsers_read():
    """The proposer's references come back as its own earlier replies and the solvers see
    one worked task each; both must be exactly what the parsers accept, or the small
    model learns a layout that scores -1."""
    refs = [{"program": "def f(x):\n    return -x", "inputs": ["5", "-8", "0"]},
            {"program": "def f(s):\n    return s * 2", "inputs": ["'ab'", "'x'", "''"]}]
    turns = proposer_messages("induction", refs, n_inputs=3)
    assert [t["role"] for t in turns] == ["user", "assistant", "user", "assistant", "user"]
    assert turns[0]["content"] == ("Task type: induction. The student sees your inputs with their outputs "
                                   "(the last hidden) and must write f.\nWrite a puzzle.")
    assert turns[-1]["content"] == PROPOSER_AGAIN
    assert [parse_proposal(t["content"]) for t in turns[1::2]] == refs  # each reply parses back to its reference
    assert parse_proposal(proposer_messages("deduction", refs[:1], n_inputs=1)[1]["content"])["inputs"] == ["5"]
    assert proposer_messages("deduction", [], n_inputs=1) == [
        {"role": "user", "content": "Task type: deduction. The student sees f and your input and must predict "
                                    "the output.\nWrite a puzzle."}]
    for task_type in ("deduction", "abduction", "induction"):
        turns = solver_example_turns(task_type)
        assert [t["role"] for t in turns] == ["user", "assistant"] * len(SOLVER_EXAMPLES[task_type])
        for reply in turns[1::2]:
            assert _answer_parser(task_type)(reply["content"])  # each shown answer parses
    # abduction shows a scalar and a list answer, so neither type is the only one it sees
    assert [_answer_parser("abduction")(t["content"]) for t in solver_example_turns("abduction")[1::2]] == ["4", "[5]"]


@pytest.mark.parametrize("format_rewards, ran, expected", [
    (False, True, 0.25), (False, False, 0.0), (True, True, -0.25), (True, False, -0.5)])
def test_accepted_input_reward_adds_to_a_wrong_answer_f_returns_for(format_rewards, ran, expected):
    from agentplay.graphs import code_selfplay

    from agentplay.traces import RoleTurn

    recipe = code_selfplay.build(accepted_input_reward=0.25, format_rewards=format_rewards)
    turn, right = RoleTurn(role="solver"), RoleTurn(role="solver")
    wrong = Verdict(correct=False, reason="f(input) gives 3, target 26" if ran else "failed: TypeError", ran=ran)
    state = {"answers": {turn.turn_id: "26", right.turn_id: "[26]"},
             "verdicts": {turn.turn_id: wrong.model_dump(),
                          right.turn_id: Verdict(correct=True, reason="ok", ran=True).model_dump()}}
    reward = recipe.rewards["solver"](turn, state, None)
    assert reward.value == pytest.approx(expected) and reward.components["ran"] == float(ran)
    assert recipe.rewards["solver"](right, state, None).value == 1.0  # a right answer still gets exactly 1
    default = code_selfplay.build(format_rewards=format_rewards).rewards["solver"](turn, state, None)
    assert default.value == (-0.5 if format_rewards else 0.0)  # off by default: AZR's rewards
