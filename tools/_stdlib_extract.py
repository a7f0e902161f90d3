"""Extract the standard library's documentation; run as a script in a clean interpreter.

Pure stdlib on purpose: `_stdlib.py` runs this file with ``python -P -S -s`` so that
no third-party import can monkeypatch what we read (transformers adds methods to
`logging.Logger`, for one) and importing ~120 modules leaves the host untouched.
Prints one JSON object per line: {"id", "title", "text"}.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
import warnings
from types import ModuleType

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


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _signature(name: str, obj: object) -> str:
    """`name(params)`; sentinel defaults lose their memory address (it changes every run)."""
    try:
        return name + _ADDRESS.sub("", str(inspect.signature(obj)))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return name


def _doc(obj: object) -> str:
    doc = obj.__doc__ if isinstance(getattr(obj, "__doc__", None), str) else None
    return inspect.cleandoc(doc) if doc else ""


def _public_members(mod: ModuleType) -> list[tuple[str, object]]:
    """Functions and classes the module means to export (its `__all__`, else those defined in it)."""
    names = getattr(mod, "__all__", None)
    out: list[tuple[str, object]] = []
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


def _class_methods(qual: str, cls: type) -> list[dict]:
    docs = []
    for name, member in sorted(vars(cls).items()):
        if name.startswith("_") or not (inspect.isroutine(member) or isinstance(member, property)):
            continue
        doc = _doc(member)
        if len(doc) < 20:
            continue
        full = f"{qual}.{name}"
        docs.append({"id": full, "title": full, "text": f"{_signature(full, member)}\n\n{doc}"})
    return docs


def _module_documents(modname: str, seen: set[int]) -> list[dict]:
    """Module doc, public members and (for classes) methods. `seen` holds ids of objects
    already documented under another name (`typing.Text` is `str`): documented once."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            mod = importlib.import_module(modname)
        except ImportError:
            return []
    docs = []
    mdoc = _doc(mod)
    if mdoc and modname != "builtins":
        docs.append({"id": modname, "title": f"{modname} module", "text": mdoc})
    for name, obj in _public_members(mod):
        qual = name if modname == "builtins" else f"{modname}.{name}"
        doc = _doc(obj)
        if not doc or id(obj) in seen:
            continue
        seen.add(id(obj))
        kind = "class" if inspect.isclass(obj) else "function"
        docs.append({"id": qual, "title": f"{qual} ({kind})", "text": f"{_signature(qual, obj)}\n\n{doc}"})
        if inspect.isclass(obj) and (modname != "builtins" or name in _BUILTIN_TYPES_WITH_METHODS):
            docs.extend(_class_methods(qual, obj))
    return docs


def _topic_documents() -> list[dict]:
    from pydoc_data.topics import topics

    docs = []
    for key in sorted(topics):
        text = topics[key].strip()
        title = text.splitlines()[0].strip() if text else key
        docs.append({"id": f"topic:{key}", "title": title, "text": text})
    return docs


def stdlib_documents() -> list[dict]:
    """The corpus, in a fixed order with unique ids (first occurrence of an id wins)."""
    docs: dict[str, dict] = {}
    seen: set[int] = set()
    for d in _topic_documents() + [d for m in MODULES for d in _module_documents(m, seen)]:
        docs.setdefault(d["id"], d)
    return list(docs.values())


if __name__ == "__main__":
    out = sys.stdout
    for doc in stdlib_documents():
        out.write(json.dumps(doc, ensure_ascii=False) + "\n")
