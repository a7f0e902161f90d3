"""The public surface: every exception agentplay defines derives from `AgentplayError`; the
package ships `py.typed`; benches and tests import a name from its public home when it has one.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import agentplay
from agentplay.errors import AgentplayError

ROOT = Path(__file__).resolve().parents[1]
MAPPED = ["graphs", "tools", "sandbox", "trainers"]
"""Top-level folders pyproject maps into the `agentplay` package."""


def _package_modules() -> list[str]:
    """Every module of the package, private ones included (for the exception check)."""
    names = ["agentplay"]
    for pkg in ["agentplay", *(f"agentplay.{m}" for m in MAPPED)]:
        mod = importlib.import_module(pkg)
        names += [pkg] + [m.name for m in pkgutil.walk_packages(mod.__path__, f"{pkg}.")]
    return sorted(n for n in set(names) if not n.endswith("__main__"))  # a __main__ runs the CLI


def test_every_agentplay_exception_derives_from_agentplay_error():
    errors = {}
    for name in _package_modules():
        for obj in vars(importlib.import_module(name)).values():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__.startswith("agentplay"):
                errors[f"{obj.__module__}.{obj.__qualname__}"] = obj
    assert len(errors) >= 15  # the walk found the package's exceptions
    assert [n for n, e in errors.items() if not issubclass(e, AgentplayError)] == []
    # ... and each kept the builtin it used to be, so existing `except ValueError:` still catch it
    from agentplay.models import ModelSpecError, NoLiveEndpointError
    from agentplay.sandbox import SandboxError
    from agentplay.trainers import TrainError

    assert issubclass(agentplay.RecipeError, ValueError) and issubclass(ModelSpecError, ValueError)
    assert all(issubclass(e, RuntimeError) for e in (NoLiveEndpointError, SandboxError, TrainError))


def test_the_package_is_marked_typed():
    assert (Path(agentplay.__file__).parent / "py.typed").is_file()  # the wheel test checks it ships


def _private_imports_with_a_public_home(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("agentplay")):
            continue
        parts = node.module.split(".")
        private = [i for i, p in enumerate(parts) if p.startswith("_")]
        if not private:
            continue
        home = ".".join(parts[: private[0]])
        public = set(getattr(importlib.import_module(home), "__all__", []))
        found += [f"{path.name}:{node.lineno}: {a.name} from {home}" for a in node.names if a.name in public]
    return found


def test_benches_and_tests_import_public_names_from_their_public_home():
    files = sorted([*ROOT.glob("bench/*.py"), *ROOT.glob("tests/*.py"), *ROOT.glob("examples/**/*.py")])
    assert len(files) > 40
    assert [hit for f in files for hit in _private_imports_with_a_public_home(f)] == []
