"""`make typecheck` checks the package as it is installed, mapped folders included.

pyproject maps graphs/, tools/, sandbox/, trainers/ into `agentplay`; mypy cannot read that
mapping, so .ci/typecheck.py builds the installed layout as symlinks and runs mypy there. CI runs
the real check over the whole package (`make typecheck` in .ci/run); these tests run the same
script on a two-folder project of the same shape (no model, no third-party imports: seconds), so
they show that an error inside a mapped folder is found, and named by its checkout path.
"""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("agentplay_ci_typecheck", ROOT / ".ci" / "typecheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


typecheck = _load_script()


def _project(root: Path, calc_tail: str) -> None:
    """agentplay/ plus extra/ mapped to agentplay.extra; extra/_calc.py imports through the mapping."""
    (root / "pyproject.toml").write_text(
        '[tool.setuptools]\n'
        'package-dir = { "agentplay" = "agentplay", "agentplay.extra" = "extra" }\n'
        '[tool.mypy]\npython_version = "3.11"\n'
    )
    (root / "agentplay").mkdir()
    (root / "agentplay" / "__init__.py").write_text("")
    (root / "extra").mkdir()
    (root / "extra" / "__init__.py").write_text("")
    (root / "extra" / "_units.py").write_text("def metres(x: float) -> float:\n    return x\n")
    (root / "extra" / "_calc.py").write_text(
        "from agentplay.extra._units import metres\n\n\n"
        "def double(x: float) -> float:\n    return metres(x) * 2\n\n\n" + calc_tail + "\n"
    )


def test_view_holds_every_package_pyproject_installs():
    subpackages = typecheck.package_dirs(ROOT)
    view = typecheck.build_view(ROOT, subpackages)
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    for name in packages:
        path = view.parent.joinpath(*name.split("."))
        assert (path / "__init__.py").is_file(), f"{name} missing from the typecheck view"
    assert (view / "graphs").resolve() == ROOT / "graphs"
    assert (view / "trainers" / "__init__.py").resolve() == ROOT / "trainers" / "__init__.py"


def test_an_error_in_a_mapped_folder_fails_and_names_the_checkout_file(tmp_path, capsys):
    _project(tmp_path, 'HALF: float = double("two")')
    status = typecheck.main([], root=tmp_path)
    out = capsys.readouterr().out
    assert status == 1, out
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert len(errors) == 1, out
    assert errors[0].startswith("extra/_calc.py:8: error: Argument 1 to \"double\""), out
    assert "import" not in out  # agentplay.extra._units resolved through the mapping


def test_a_clean_project_passes(tmp_path, capsys):
    _project(tmp_path, "HALF: float = double(2.0)")
    status = typecheck.main([], root=tmp_path)
    out = capsys.readouterr().out
    assert status == 0, out
    assert "Success: no issues found in 4 source files" in out
