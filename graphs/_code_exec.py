"""Program tasks checked by execution: the verifier half of code self-play.

Everything the model writes runs in the sandbox; the host only compares strings.
Values cross the boundary as canonical reprs built inside the sandbox from plain
types only (exact `type()` checks, so an `int` subclass with a lying `__eq__` or
`__repr__` is refused, not trusted), and expected outputs never enter the sandbox
that runs a solver's code, so a program that forges the result line still has to
know the held-out answers. Sets and dicts are canonicalised (sorted) because their
order is not part of their value and, for strings, changes with the hash seed.

Hand-written because no library checks "same program, same input, same output,
twice, in a sandbox" for self-play tasks; the static checks mirror AZR's banned list.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, Field

from agentplay.sandbox import SandboxUnavailable

TaskType = Literal["deduction", "abduction", "induction"]

BANNED_MODULES = frozenset({
    "asyncio", "builtins", "code", "codeop", "concurrent", "ctypes", "datetime", "faulthandler",
    "fcntl", "gc", "glob", "http", "importlib", "inspect", "io", "marshal", "mmap",
    "multiprocessing", "numpy.random", "os", "pathlib", "pickle", "platform", "pty", "random",
    "resource", "secrets", "select", "selectors", "shutil", "signal", "socket", "sqlite3",
    "subprocess", "sys", "sysconfig", "tempfile", "threading", "time", "urllib", "uuid",
})
"""Modules a task program may not import: nondeterminism (random, time, uuid...),
the outside world (os, socket...) or the interpreter's insides (sys, gc, inspect...)."""

BANNED_CALLS = frozenset({
    "__import__", "breakpoint", "compile", "eval", "exec", "exit", "globals", "hash", "id",
    "input", "locals", "open", "quit", "vars",
})
"""Builtins a task program may not call (`hash` and `id` differ between runs)."""

RESULT_MARK = "@@agentplay-code-result@@"

HARNESS = r'''
import ast, io, json, sys
_real_out = sys.stdout
_job = json.loads(sys.stdin.read())
_PLAIN = (type(None), bool, int, float, complex, str, bytes)

def _canon(v, depth=0):
    if depth > 40:
        raise ValueError("value nested deeper than 40 levels")
    t = type(v)
    if t in _PLAIN:
        return repr(v)
    if t is list:
        return "[" + ", ".join(_canon(x, depth + 1) for x in v) + "]"
    if t is tuple:
        inner = ", ".join(_canon(x, depth + 1) for x in v)
        return "(" + inner + ("," if len(v) == 1 else "") + ")"
    if t is dict:
        items = sorted(_canon(k, depth + 1) + ": " + _canon(x, depth + 1) for k, x in v.items())
        return "{" + ", ".join(items) + "}"
    if t is set or t is frozenset:
        items = sorted(_canon(x, depth + 1) for x in v)
        if not items:
            return t.__name__ + "()"
        body = "{" + ", ".join(items) + "}"
        return body if t is set else "frozenset(" + body + ")"
    raise TypeError("value of type " + t.__name__ + " is not a plain value")

def _args(text):
    node = ast.parse("f(" + text + ")", mode="eval").body
    if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
        raise ValueError("arguments must be plain positional literals")
    return [ast.literal_eval(a) for a in node.args]

def _item(fn):
    try:
        r = _canon(fn())
        if len(r) > _job["max_repr"]:
            return {"ok": False, "error": "value repr longer than %d chars" % _job["max_repr"]}
        return {"ok": True, "repr": r}
    except BaseException as e:
        return {"ok": False, "error": (type(e).__name__ + ": " + str(e))[:300]}

sys.stdout = io.StringIO()
_res = {"load_error": None, "calls": [], "literals": []}
_ns = {"__name__": "__task__"}
if _job["program"] is not None:
    try:
        exec(compile(_job["program"], "<program>", "exec"), _ns)
        if not callable(_ns.get("f")):
            raise NameError("the program defines no function f")
    except BaseException as e:
        _res["load_error"] = (type(e).__name__ + ": " + str(e))[:300]
if _res["load_error"] is None:
    _res["calls"] = [_item(lambda a=a: _ns["f"](*_args(a))) for a in _job["calls"]]
_res["literals"] = [_item(lambda t=t: ast.literal_eval(t.strip())) for t in _job["literals"]]
_real_out.write("\n" + MARK + json.dumps(_res) + "\n")
_real_out.flush()
'''.replace("MARK", repr(RESULT_MARK))


class SandboxFailure(SandboxUnavailable):
    """The sandbox itself failed: an infrastructure fault, not the model's (the episode is
    retried, never scored)."""


class CodeTask(BaseModel):
    """A validated program with inputs and the outputs it deterministically gives."""

    program: str
    inputs: list[str] = Field(min_length=1)
    """Argument lists as written in a call, e.g. ``"[1, 2], 3"``."""
    outputs: list[str] = Field(min_length=1)
    """Canonical reprs of f(*input), one per input, computed in the sandbox."""


class Verdict(BaseModel):
    correct: bool
    reason: str
    well_formed: bool = True
    """False when the answer is not the kind of thing asked for (a non-literal prediction,
    arguments that are not literals, a program without f): a format error, not a wrong answer."""
    ran: bool = False
    """Abduction: f returned for the answer instead of raising (an input of the kind f takes),
    whether or not it gave the target."""


_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.DOTALL)


def fenced_blocks(text: str | None) -> list[tuple[str, str]]:
    """(language, body) of every closed ```fence``` in text, in order."""
    return [(lang.lower(), body.strip()) for lang, body in _FENCE.findall(text or "")]


def check_program(program: str) -> None:
    """Static checks on a task program; ValueError names what is wrong."""
    if len(program) > 4000:
        raise ValueError(f"program is {len(program)} chars, the limit is 4000")
    try:
        tree = ast.parse(program)
    except SyntaxError as exc:
        raise ValueError(f"program does not parse: {exc.msg} (line {exc.lineno})") from None
    if not any(isinstance(n, ast.FunctionDef) and n.name == "f" for n in tree.body):
        raise ValueError("program defines no top-level function f")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                parts = name.split(".")
                if any(".".join(parts[: i + 1]) in BANNED_MODULES for i in range(len(parts))):
                    raise ValueError(f"program imports banned module {name!r}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in BANNED_CALLS:
            raise ValueError(f"program calls banned builtin {node.func.id}()")
        elif isinstance(node, ast.Attribute) and node.attr.startswith("__"):
            raise ValueError(f"program touches dunder attribute {node.attr!r}")
        elif isinstance(node, ast.Name) and node.id.startswith("__") and node.id != "__name__":
            raise ValueError(f"program uses dunder name {node.id!r}")


def check_arguments(text: str) -> str:
    """An argument list ("[1, 2], 3") made of literals only; returns it stripped."""
    text = text.strip()
    if not text:
        raise ValueError("empty input")
    if len(text) > 1000:
        raise ValueError(f"input is {len(text)} chars, the limit is 1000")
    try:
        call = ast.parse(f"f({text})", mode="eval").body
    except SyntaxError:
        raise ValueError(f"input {text[:60]!r} is not an argument list") from None
    if not isinstance(call, ast.Call) or call.keywords or any(
        isinstance(a, ast.Starred) for a in call.args
    ):
        raise ValueError(f"input {text[:60]!r} must be positional arguments only")
    for arg in call.args:
        try:
            ast.literal_eval(arg)
        except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):
            raise ValueError(f"input {text[:60]!r} holds a non-literal argument") from None
    return text


async def execute(
    sandbox: Any,
    program: str | None,
    *,
    calls: list[str] = (),  # type: ignore[assignment]
    literals: list[str] = (),  # type: ignore[assignment]
    limits: Any = None,
    max_repr: int = 2000,
    fresh: bool = False,
) -> dict[str, Any]:
    """Run the harness once: f(*args) for each call and the canonical repr of each literal.
    `fresh`: in a newly started interpreter (its own string-hash seed), not a forked one.

    Returns {"status", "load_error", "calls", "literals"}; a non-ok run (error,
    timeout, oom, output_limit) comes back with an empty result and its status.
    """
    job = {"program": program, "calls": list(calls), "literals": list(literals), "max_repr": max_repr}
    res = await sandbox.run_python(HARNESS, stdin=json.dumps(job), limits=limits, fresh_interpreter=fresh)
    if res.status == "sandbox_error":
        raise SandboxFailure(f"sandbox failed: {res.detail or res.stderr[-300:]}")
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith(RESULT_MARK)]
    if res.status != "ok" or not lines:
        tail = (res.stderr or "").strip().splitlines()[-1:] or [""]
        return {"status": res.status if res.status != "ok" else "error",
                "load_error": f"run ended {res.status} without a result {tail[0][:200]}".strip(),
                "calls": [], "literals": []}
    out = json.loads(lines[-1][len(RESULT_MARK):])
    out["status"] = "ok"
    return out


def _nearby(value: Any) -> list[Any]:
    """Small edits of one literal value, of the same type where there is one."""
    t = type(value)
    if t is bool:
        return [not value]
    if t is int:
        return [value + 1, value - 1, -value - 1, 3 * value + 7]
    if t is float:
        return [value + 1.5, -value - 2.0]
    if t is str:
        return [value + "a", value[1:] or "b", value[::-1] + "z"]
    if t is list or t is tuple:
        edits = [list(value[:-1]), list(value) + list(value[-1:] or [1]),
                 [(_nearby(v) or [v])[0] for v in value]]  # every item edited: catches xs[1], xs[-1]
        if value:
            edits.append([(_nearby(value[0]) or [value[0]])[0], *value[1:]])
        return [t(e) for e in edits]
    if t is dict:
        return [{}, {**value, "zz": 0}] if value else [{"a": 1}]
    if t is set or t is frozenset:
        return [t(), t({*value, 99})]
    if value is None:
        return [0]
    return []


def probe_arguments(arguments: str, limit: int = 8) -> list[str]:
    """Argument lists one small edit away from `arguments` (one argument changed at a
    time), to ask whether f's output depends on its input at all."""
    try:
        call = ast.parse(f"f({arguments})", mode="eval").body
        if not isinstance(call, ast.Call):  # "1), g(2" parses as a tuple of two calls
            return []
        args = [ast.literal_eval(a) for a in call.args]
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return []
    probes = []
    for i, arg in enumerate(args):
        for edit in _nearby(arg):
            probes.append(", ".join(repr(a) for a in (*args[:i], edit, *args[i + 1:])))
    return [p for p in dict.fromkeys(probes) if p != arguments][:limit]


async def build_task(
    sandbox: Any, program: str, inputs: list[str], *, limits: Any = None, max_repr: int = 2000,
    require_input_dependence: bool = False,
) -> CodeTask:
    """Validate a proposal: static checks, then two independent runs that must both
    succeed on every input and agree exactly. ValueError carries the rejection reason.

    `require_input_dependence` also runs f on small edits of the first input and rejects
    a program whose output never changes (`return 10 if len(xs) == 2 else 10`): every
    input solves such an abduction task and every prediction of it is a constant, so a
    solver trained on them learns a shortcut, not how to read code. Edits that raise are
    ignored; a program none of whose edits run (or whose probe run times out) is kept."""
    check_program(program)
    inputs = [check_arguments(i) for i in inputs]
    if not inputs:
        raise ValueError("no input given")
    probes = probe_arguments(inputs[0]) if require_input_dependence else []
    # fresh interpreters: two forks of one warm zygote share a hash seed, so a program whose
    # output follows set or dict order of strings would pass as deterministic. The probes
    # run on their own, so one that loops or crashes the run cannot reject the proposal.
    first, second, probed = await asyncio.gather(
        execute(sandbox, program, calls=inputs, limits=limits, max_repr=max_repr, fresh=True),
        execute(sandbox, program, calls=inputs, limits=limits, max_repr=max_repr, fresh=True),
        execute(sandbox, program, calls=probes, limits=limits, max_repr=max_repr) if probes else asyncio.sleep(0),
    )
    for run in (first, second):
        if run["load_error"]:
            raise ValueError(f"program failed: {run['load_error']}")
        for arg, item in zip(inputs, run["calls"], strict=True):
            if not item["ok"]:
                raise ValueError(f"f({arg[:60]}) failed: {item['error']}")
    a = [c["repr"] for c in first["calls"]]
    b = [c["repr"] for c in second["calls"]]
    if a != b:
        raise ValueError("program is not deterministic: two runs gave different outputs")
    nearby = [c["repr"] for c in (probed or {}).get("calls", []) if c["ok"]]
    if len(set(a)) == 1 and nearby and set(nearby) == {a[0]}:
        raise ValueError(f"output does not depend on the input: f gives {a[0][:60]} for "
                         f"{len(nearby) + len(inputs)} different inputs")
    return CodeTask(program=program, inputs=inputs, outputs=a)


async def check_deduction(sandbox: Any, task: CodeTask, predicted: str, **kw: Any) -> Verdict:
    """Is `predicted` (a literal) the value f returns on the task's first input?"""
    run = await execute(sandbox, None, literals=[predicted], **kw)
    item = run["literals"][0] if run["literals"] else {"ok": False, "error": run["load_error"]}
    if not item["ok"]:
        return Verdict(correct=False, reason=f"prediction is not a plain literal: {item['error']}",
                       well_formed=False)
    if item["repr"] == task.outputs[0]:
        return Verdict(correct=True, reason="predicted output matches")
    return Verdict(correct=False, reason=f"predicted {item['repr'][:80]}, f returns {task.outputs[0][:80]}")


async def check_abduction(sandbox: Any, task: CodeTask, arguments: str, **kw: Any) -> Verdict:
    """Does f(*arguments) give the task's target output? Any such input counts, not
    only the proposer's."""
    try:
        arguments = check_arguments(arguments)
    except ValueError as exc:
        return Verdict(correct=False, reason=str(exc), well_formed=False)
    run = await execute(sandbox, task.program, calls=[arguments], **kw)
    item = run["calls"][0] if run["calls"] else {"ok": False, "error": run["load_error"]}
    if not item["ok"]:
        return Verdict(correct=False, reason=f"f({arguments[:60]}) failed: {item['error']}")
    if item["repr"] == task.outputs[0]:
        return Verdict(correct=True, reason="f(input) gives the target output", ran=True)
    return Verdict(correct=False, reason=f"f(input) gives {item['repr'][:80]}, target {task.outputs[0][:80]}",
                   ran=True)


async def check_induction(sandbox: Any, task: CodeTask, program: str, **kw: Any) -> Verdict:
    """Does the solver's program reproduce every pair, the held-out ones included?"""
    try:
        check_program(program)
    except ValueError as exc:
        return Verdict(correct=False, reason=str(exc), well_formed=False)
    run = await execute(sandbox, program, calls=task.inputs, **kw)
    if run["load_error"]:
        return Verdict(correct=False, reason=f"program failed: {run['load_error']}")
    for arg, want, item in zip(task.inputs, task.outputs, run["calls"], strict=True):
        if not item["ok"]:
            return Verdict(correct=False, reason=f"f({arg[:60]}) failed: {item['error']}")
        if item["repr"] != want:
            return Verdict(correct=False, reason=f"f({arg[:60]}) gives {item['repr'][:60]}, want {want[:60]}")
    return Verdict(correct=True, reason=f"program reproduces all {len(task.inputs)} pairs")
