"""Type-check the `agentplay` package as it is installed, with mypy (config: pyproject's [tool.mypy]).

Why a view: pyproject's `package-dir` maps the top-level folders (graphs/, tools/, sandbox/,
trainers/) into the `agentplay` package. mypy cannot read that mapping, and the editable install
reaches those folders through an import hook mypy does not run, so `mypy -p agentplay` from the
checkout would miss them or name them wrongly. This script builds the installed layout as a tree of
symlinks under build/typecheck/ (from the mapping itself, so a new mapped folder is picked up),
runs mypy on it, and prints each error under its path in the checkout (graphs/x.py, not
agentplay/graphs/x.py), so an editor can jump to it. The view's path is stable so mypy's cache
(.mypy_cache/) makes a second run fast.

Usage: python .ci/typecheck.py [extra mypy arguments]; exits with mypy's status.
"""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "agentplay"


def package_dirs(root: Path) -> dict[str, str]:
    """Subpackage name -> checkout folder, from pyproject's [tool.setuptools] package-dir."""
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    mapping: dict[str, str] = pyproject["tool"]["setuptools"]["package-dir"]
    subpackages: dict[str, str] = {}
    for name, folder in mapping.items():
        if name == PACKAGE:
            if folder != PACKAGE:
                raise SystemExit(f"typecheck: package-dir maps {PACKAGE} to {folder!r}; expected {PACKAGE!r}")
            continue
        parent, _, child = name.rpartition(".")
        if parent != PACKAGE:
            raise SystemExit(f"typecheck: package-dir entry {name!r} is not a direct subpackage of {PACKAGE}")
        subpackages[child] = folder
    return subpackages


def build_view(root: Path, subpackages: dict[str, str]) -> Path:
    """build/typecheck/agentplay/: a symlink to each entry of agentplay/ plus one per mapped folder."""
    view_package = root / "build" / "typecheck" / PACKAGE
    view_package.mkdir(parents=True, exist_ok=True)
    wanted: dict[str, Path] = {
        entry.name: entry
        for entry in (root / PACKAGE).iterdir()
        if entry.name not in ("__pycache__",)
    }
    for child, folder in subpackages.items():
        if child in wanted:
            raise SystemExit(f"typecheck: {PACKAGE}/{child} exists and package-dir also maps {folder}/ there")
        wanted[child] = root / folder
    for existing in view_package.iterdir():
        if existing.name not in wanted or not existing.is_symlink() or existing.resolve() != wanted[existing.name]:
            existing.unlink()
    for name, target in wanted.items():
        link = view_package / name
        if not link.is_symlink():
            link.symlink_to(target)
    return view_package


def to_checkout_path(line: str, subpackages: dict[str, str]) -> str:
    """agentplay/graphs/x.py:3: error ... -> graphs/x.py:3: error ..."""
    for child, folder in subpackages.items():
        prefix = f"{PACKAGE}/{child}/"
        if line.startswith(prefix):
            return folder + "/" + line[len(prefix):]
    return line


def main(argv: list[str], root: Path = ROOT) -> int:
    from mypy import api  # imported here so a missing mypy is one clear line, not a traceback

    subpackages = package_dirs(root)
    view = build_view(root, subpackages).parent
    # Run from the view so `agentplay` resolves to it (the current folder comes first on mypy's
    # search path, before the editable install in site-packages).
    cwd = os.getcwd()
    os.chdir(view)
    try:
        stdout, stderr, status = api.run([
            "--config-file", str(root / "pyproject.toml"),
            "--cache-dir", str(root / ".mypy_cache"),
            "--python-executable", sys.executable,
            "-p", PACKAGE,
            *argv,
        ])
    finally:
        os.chdir(cwd)
    for line in stdout.splitlines():
        print(to_checkout_path(line, subpackages))
    sys.stderr.write(stderr)
    return status


if __name__ == "__main__":
    try:
        import mypy  # noqa: F401
    except ImportError:
        raise SystemExit("typecheck: mypy is not installed; run `make install` (it is in the test extra)")
    sys.exit(main(sys.argv[1:]))
