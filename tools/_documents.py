"""Documents and search hits, and reading them from the formats users already have.

Two input shapes are accepted so that existing corpora work without conversion:
our own ``{"id", "title", "text"}`` rows and the Search-R1 / FlashRAG rows
``{"id", "contents"}`` where ``contents`` is ``"Title"\\ntext`` (wiki-18.jsonl).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst")
"""Suffixes named in messages; a folder is read by content, so any UTF-8 text file counts."""


class Document(BaseModel):
    """One retrievable unit of a corpus."""

    id: str
    """Stable identifier (e.g. ``os.path.join``, ``topic:assert``, a file's relative path)."""
    title: str = ""
    text: str = ""

    def contents(self) -> str:
        """The Search-R1 ``contents`` field: quoted title on the first line, then the text."""
        return f'"{self.title}"\n{self.text}'


class Hit(BaseModel):
    """A document returned by a search, with the score of the ranking that found it."""

    doc_id: str
    title: str
    text: str
    score: float


def split_contents(contents: str) -> tuple[str, str]:
    """Inverse of `Document.contents` (tolerates a missing or unquoted title line)."""
    first, _, rest = contents.partition("\n")
    return first.strip().strip('"'), rest


def document_from_row(row: dict, line_no: int) -> Document:
    """Read one JSONL row in either accepted shape; errors name the line and the field."""
    if not isinstance(row, dict):
        raise ValueError(f"line {line_no}: expected a JSON object, got {type(row).__name__}")  # noqa: TRY004
    doc_id = row.get("id", row.get("doc_id", row.get("_id")))
    if doc_id is None:
        raise ValueError(f"line {line_no}: missing field 'id'")
    if "text" in row or "title" in row:
        title, text = str(row.get("title", "")), str(row.get("text", ""))
    elif "contents" in row:
        title, text = split_contents(str(row["contents"]))
    else:
        raise ValueError(f"line {line_no}: need 'text' (and optional 'title') or 'contents'")
    return Document(id=str(doc_id), title=title, text=text)


def iter_jsonl(path: Path) -> Iterator[Document]:
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{line_no}: invalid JSON ({exc.msg})") from None
                yield document_from_row(row, line_no)


def read_text_file(path: Path) -> str | None:
    """The file's text when it is UTF-8 text, else None (binary: a NUL byte or invalid UTF-8).

    Decided by content, not by name: notes, READMEs and man pages often have no
    extension, and a `.txt` holding a PDF is still binary.
    """
    data = path.read_bytes()
    if b"\x00" in data:
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


def iter_folder(root: Path, skipped: list[Path] | None = None) -> Iterator[Document]:
    """Every UTF-8 text file under `root` (hidden files and folders aside), id = relative path,
    title = first heading or name. Binary files are skipped and appended to `skipped`."""
    files = (p for p in root.rglob("*")
             if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))
    for path in sorted(files):
        text = read_text_file(path)
        if text is None:
            if skipped is not None:
                skipped.append(path)
            continue
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
        title = first.lstrip("#").strip() if first.startswith("#") else path.stem
        yield Document(id=path.relative_to(root).as_posix(), title=title, text=text)


def load_documents(path: str | Path, skipped: list[Path] | None = None) -> list[Document]:
    """Documents from a folder of UTF-8 text files or a JSONL file, duplicates rejected.

    Binary files in a folder are skipped (and appended to `skipped` when given)."""
    path = Path(path)
    passed_over: list[Path] = []
    if path.is_dir():
        docs = list(iter_folder(path, passed_over))
    elif path.is_file() and path.suffix in (".jsonl", ".json"):
        docs = list(iter_jsonl(path))
    elif path.exists():
        raise ValueError(f"{path}: expected a folder of UTF-8 text files (e.g. {', '.join(TEXT_SUFFIXES)} "
                         "or no extension) or a .jsonl")
    else:
        raise FileNotFoundError(f"{path}: no such file or folder")
    if skipped is not None:
        skipped.extend(passed_over)
    if not docs:
        extra = f" ({len(passed_over)} binary or non-UTF-8 files skipped)" if passed_over else ""
        raise ValueError(f"{path}: no documents found: no UTF-8 text file{extra}")
    seen: set[str] = set()
    for d in docs:
        if d.id in seen:
            raise ValueError(f"{path}: duplicate document id {d.id!r}")
        seen.add(d.id)
    return docs
