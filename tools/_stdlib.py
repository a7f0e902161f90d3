"""The default corpus: the running interpreter's own standard-library documentation.

It installs with Python itself, so every machine has it offline, and no one on
this project wrote it. Built deterministically by `_stdlib_extract` (a fixed,
sorted module list importable without side effects; pydoc topics; public
functions, classes and methods with their docstrings). Ids are
dotted names (``os.path.join``, ``str.split``) and ``topic:<name>`` for the
language-reference topics.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ._documents import Document
from ._index import CorpusIndex

CORPUS_VERSION = "2"
"""Bump when the build below changes, so cached indexes are rebuilt."""


def stdlib_documents() -> list[Document]:
    """Run the extractor in a clean, isolated interpreter (see `_stdlib_extract`)."""
    script = Path(__file__).with_name("_stdlib_extract.py")
    # -P -S -s: no script dir, site-packages or user site on sys.path; fixed hash seed so
    # any set or dict rendered in a signature comes out in the same order every time.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")} | {"PYTHONHASHSEED": "0"}
    proc = subprocess.run(
        [sys.executable, "-P", "-S", "-s", str(script)],
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"stdlib corpus extraction failed: {proc.stderr[-2000:]}")
    return [Document.model_validate_json(line) for line in proc.stdout.splitlines() if line]


def stdlib_cache_dir() -> Path:
    """Keyed by interpreter version and corpus version: docstrings differ between Pythons."""
    from platformdirs import user_cache_dir

    ver = f"py{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    return Path(user_cache_dir("agentplay")) / "corpora" / f"stdlib-{ver}-v{CORPUS_VERSION}"


_default: CorpusIndex | None = None


def default_corpus_index(*, rebuild: bool = False) -> CorpusIndex:
    """The stdlib-docs index, built on first use and cached on disk and in the process.

    A file lock keeps concurrent first uses (parallel test workers, several
    engineers' runs) from building it twice.
    """
    global _default
    if _default is not None and not rebuild:
        return _default
    import fcntl

    path = stdlib_cache_dir()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if rebuild or not (path / "meta.json").exists():
            CorpusIndex.build(stdlib_documents(), path, source=f"python {sys.version.split()[0]} stdlib docs")
    _default = CorpusIndex.load(path)
    return _default
