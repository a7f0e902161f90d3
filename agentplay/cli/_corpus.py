"""`agentplay corpus ...`: build, inspect, query and serve local search indexes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from agentplay.tools import CorpusIndex, SearchMode

corpus_app = typer.Typer(
    name="corpus",
    help="Build, query and serve local search indexes (BM25 + dense + hybrid).",
    no_args_is_help=True,
)
_console = Console()

IndexArg = Annotated[str, typer.Argument(help="An index folder, or 'default' for the Python stdlib docs.")]
ModeOpt = Annotated[str, typer.Option("--mode", "-m", help="bm25, dense or hybrid.")]


def _open(index: str) -> CorpusIndex:
    from agentplay.tools import CorpusIndex, default_corpus_index

    if index == "default":
        return default_corpus_index()
    try:
        return CorpusIndex.load(index)
    except (FileNotFoundError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="INDEX") from None


def _check_mode(mode: str) -> SearchMode:
    if mode not in ("bm25", "dense", "hybrid"):
        raise typer.BadParameter(f"must be bm25, dense or hybrid, got {mode!r}", param_hint="--mode")
    return cast("SearchMode", mode)


@corpus_app.command("index")
def index_cmd(
    path: Annotated[Path, typer.Argument(help="A folder of UTF-8 text files (any name; binary files "
                                              "are skipped), or a JSONL of "
                                              "{id, title, text} or Search-R1 {id, contents} rows.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Index folder (default: PATH.index).")] = None,
    dense: Annotated[bool, typer.Option("--dense/--no-dense", help="Also embed with MiniLM.")] = True,
) -> None:
    """Build a persisted index from documents."""
    from agentplay.tools import CorpusIndex, load_documents

    skipped: list[Path] = []
    try:
        docs = load_documents(path, skipped)
    except (FileNotFoundError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="PATH") from None
    if skipped:
        shown = ", ".join(p.relative_to(path).as_posix() for p in skipped[:3])
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        _console.print(f"[yellow]skipped {len(skipped)} binary or non-UTF-8 file{'s' if len(skipped) > 1 else ''}[/]"
                       f" ({shown}{more})", highlight=False)
    target = out or path.with_name(path.stem + ".index")
    start = time.perf_counter()
    with _console.status(f"indexing {len(docs)} documents{' (with dense embeddings)' if dense else ''}"):
        idx = CorpusIndex.build(docs, target, dense=dense, source=str(path.resolve()))
    _console.print(f"[green]indexed {len(idx)} documents[/] into {target} in {time.perf_counter() - start:.1f} s")


@corpus_app.command("search")
def search_cmd(
    index: IndexArg,
    query: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int, typer.Option("-k", min=1, max=1000, help="Results to show.")] = 5,
    mode: ModeOpt = "hybrid",
) -> None:
    """Query an index and print the ranked hits."""
    idx = _open(index)
    try:
        hits = idx.search(query, k=k, mode=_check_mode(mode))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="QUERY") from None
    table = Table("rank", "id", "score", "text")
    for i, h in enumerate(hits, 1):
        table.add_row(str(i), h.doc_id, f"{h.score:.3f}", " ".join(h.text.split())[:100])
    _console.print(table)


@corpus_app.command("info")
def info_cmd(index: IndexArg) -> None:
    """Show what an index holds."""
    idx = _open(index)
    _console.print({"path": str(idx.path), "documents": len(idx), "dense": idx.has_dense, **idx.meta})


@corpus_app.command("serve")
def serve_cmd(
    index: IndexArg,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 = any free one).")] = 8000,
    mode: ModeOpt = "hybrid",
    topk: Annotated[int, typer.Option(min=1, max=1000, help="Results when a request gives no topk.")] = 3,
) -> None:
    """Serve an index with the Search-R1 `POST /retrieve` protocol."""
    from agentplay.tools import RetrieverServer, retriever_app

    idx = _open(index)
    server = RetrieverServer(retriever_app(idx, mode=_check_mode(mode), default_topk=topk), host, port)
    _console.print(f"serving {len(idx)} documents at {server.url}/retrieve ({mode})")
    server.run()
