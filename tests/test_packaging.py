"""The one-namespace layout must survive both install modes.

Top-level folders (graphs/, tools/, sandbox/, trainers/) are mapped into the
`agentplay` package by pyproject; a wheel that forgot one would only fail for
users, so build a real wheel and import from it.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ["graphs", "tools", "sandbox", "trainers"]


def test_editable_install_maps_top_level_folders():
    import agentplay

    for name in SUBPACKAGES:
        mod = __import__(f"agentplay.{name}", fromlist=["_"])
        assert Path(mod.__file__).resolve().parent == ROOT / name, mod.__file__
    assert Path(agentplay.__file__).resolve().parent == ROOT / "agentplay"


def test_top_level_folders_are_not_importable_bare():
    code = "import importlib.util,sys; print([n for n in ('graphs','tools','sandbox','trainers') if importlib.util.find_spec(n)])"
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
    )
    (whl,) = out.glob("agentplay-*.whl")
    return whl


def test_wheel_contains_every_subpackage_under_agentplay(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ["agentplay", *(f"agentplay/{s}" for s in SUBPACKAGES)]:
        assert f"{name}/__init__.py" in names, f"{name} missing from wheel"
    assert not any(n.split("/")[0] in SUBPACKAGES for n in names), "a bare top-level package leaked"
    py_files = {p.relative_to(ROOT).as_posix() for s in SUBPACKAGES for p in (ROOT / s).glob("*.py")}
    for rel in py_files:
        assert f"agentplay/{rel}" in names, f"{rel} not shipped"
    prompts = {p.relative_to(ROOT).as_posix() for p in (ROOT / "graphs" / "prompts").glob("*/*.jinja")}
    assert len(prompts) >= 20  # the recipes' prompt templates (graphs/prompts/<recipe>/*.jinja)
    assert not {f"agentplay/{rel}" for rel in prompts} - names, "a prompt template is not shipped"
    assert "agentplay/py.typed" in names  # PEP 561: type checkers read the package's annotations


def test_wheel_install_imports_from_its_own_files(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], check=True)
    code = (
        "import agentplay.graphs, agentplay.tools, agentplay.sandbox, agentplay.trainers, agentplay.models;"
        "from agentplay.graphs import code_selfplay, propose_solve_judge, search_selfplay;"  # read their templates
        "assert search_selfplay.PROPOSER_USER.startswith('Target answer:');"
        "print(agentplay.graphs.__file__)"
    )
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith(str(target)), out.stdout
