"""The default corpus: the running interpreter's own standard-library documentation.

It installs with Python itself, so every machine has it offline, and no one on
this project wrote it. Built deterministically: a fixed, sorted module list
(importable without side effects; no GUI, test or deprecated modules), pydoc
topics, and public functions/classes/methods with their docstrings. Ids are
dotted names (``os.path.join``, ``str.split``) and ``topic:<name>`` for the
language-reference topics.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import warnings
from pathlib import Path
from types import ModuleType

from ._documents import Document

CORPUS_VERSION = "1"
"""Bump when the build below changes, so cached indexes are rebuilt."""

MODULES: tuple[str, ...] = tuple(sorted((
    "abc", "argparse", "array", "ast", "asyncio", "base64", "bisect", "builtins", "bz2",
    "calendar", "cmath", "codecs", "collections", "collections.abc", "colorsys",
    "concurrent.futures", "configparser", "contextlib", "contextvars", "copy", "csv",
    "ctypes", "dataclasses", "datetime", "decimal", "difflib", "dis", "email", "enum",
    "errno", "filecmp", "fileinput", "fnmatch", "fractions", "functools", "gc", "getpass",
    "gettext", "glob", "graphlib", "gzip", "hashlib", "heapq", "hmac", "html", "html.parser",
    "http", "http.client", "http.server", "importlib", "inspect", "io", "ipaddress",
    "itertools", "json", "keyword", "linecache", "locale", "logging", "lzma", "math",
    "mimetypes", "multiprocessing", "numbers", "operator", "os", "os.path", "pathlib",
    "pickle", "pkgutil", "platform", "pprint", "queue", "random", "re", "reprlib",
    "sched", "secrets", "select", "selectors", "shelve", "shlex", "shutil", "signal",
    "socket", "sqlite3", "ssl", "stat", "statistics", "string", "struct", "subprocess",
    "sys", "sysconfig", "tarfile", "tempfile", "textwrap", "threading", "time", "timeit",
    "tokenize", "tomllib", "traceback", "types", "typing", "unicodedata", "unittest",
    "urllib.parse", "urllib.request", "uuid", "warnings", "weakref", "xml.etree.ElementTree",
    "zipfile", "zlib", "zoneinfo",
)))

_BUILTIN_TYPES_WITH_METHODS = ("bytes", "dict", "float", "int", "list", "set", "str", "tuple")


def _signature(name: str, obj: object) -> str:
    try:
        return f"{name}{inspect.signature(obj)}"  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return name


def _doc(obj: object) -> str:
    doc = obj.__doc__ if isinstance(getattr(obj, "__doc__", None), str) else None
    return inspect.cleandoc(doc) if doc else ""


def _public_members(mod: ModuleType) -> list[tuple[str, object]]:
    """Functions and classes the module means to export (its `__all__`, else those defined in it)."""
    names = getattr(mod, "__all__", None)
    out = []
    for name in sorted(names if names is not None else vars(mod)):
        if name.startswith("_") or not hasattr(mod, name):
            continue
        obj = getattr(mod, name)
        if not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        if names is None and getattr(obj, "__module__", None) != mod.__name__:
            continue
        out.append((name, obj))
    return out


def _class_methods(qual: str, cls: type) -> list[Document]:
    docs = []
    for name, member in sorted(vars(cls).items()):
        if name.startswith("_") or not (inspect.isroutine(member) or isinstance(member, property)):
            continue
        doc = _doc(member)
        if len(doc) < 20:
            continue
        full = f"{qual}.{name}"
        docs.append(Document(id=full, title=full, text=f"{_signature(full, member)}\n\n{doc}"))
    return docs


def _module_documents(modname: str) -> list[Document]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            mod = importlib.import_module(modname)
        except ImportError:
            return []
    docs = []
    mdoc = _doc(mod)
    if mdoc and modname != "builtins":
        docs.append(Document(id=modname, title=f"{modname} module", text=mdoc))
    for name, obj in _public_members(mod):
        qual = name if modname == "builtins" else f"{modname}.{name}"
        doc = _doc(obj)
        if not doc:
            continue
        kind = "class" if inspect.isclass(obj) else "function"
        docs.append(Document(id=qual, title=f"{qual} ({kind})", text=f"{_signature(qual, obj)}\n\n{doc}"))
        if inspect.isclass(obj) and (modname != "builtins" or name in _BUILTIN_TYPES_WITH_METHODS):
            docs.extend(_class_methods(qual, obj))
    return docs


def _topic_documents() -> list[Document]:
    from pydoc_data.topics import topics

    docs = []
    for key in sorted(topics):
        text = topics[key].strip()
        title = text.splitlines()[0].strip() if text else key
        docs.append(Document(id=f"topic:{key}", title=title, text=text))
    return docs


def stdlib_documents() -> list[Document]:
    """The corpus, in a fixed order with unique ids (first occurrence of an id wins)."""
    docs: dict[str, Document] = {}
    for d in _topic_documents() + [d for m in MODULES for d in _module_documents(m)]:
        docs.setdefault(d.id, d)
    return list(docs.values())


def stdlib_cache_dir() -> Path:
    """Keyed by interpreter version and corpus version: docstrings differ between Pythons."""
    from platformdirs import user_cache_dir

    ver = f"py{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    return Path(user_cache_dir("agentplay")) / "corpora" / f"stdlib-{ver}-v{CORPUS_VERSION}"
