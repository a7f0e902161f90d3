"""Tools roles act through: corpus search and reading, web search, sandboxed code.

    from agentplay.tools import Toolbox, SearchTool, ReadDocumentTool, default_corpus_index

    idx = default_corpus_index()              # Python stdlib docs, BM25 + MiniLM + hybrid
    tb = Toolbox([SearchTool(idx), ReadDocumentTool(idx)], max_result_chars=4000)
    records = await tb.execute(choice.tool_calls)   # concurrent, never raises
    messages += [tb.tool_message(r) for r in records]

Any LangChain `BaseTool` can join a `Toolbox`; any of our tools becomes one with
`.as_langchain()` (LangGraph `ToolNode` ready).
"""

from ._base import FunctionTool, LangChainTool, Tool, ToolError, tool
from ._code import CodeTool, format_result
from ._documents import Document, Hit, load_documents
from ._http import ToolServerMisconfigured, ToolServerUnavailable
from ._index import MAX_K, CorpusIndex, SearchMode
from ._retrieve import RetrieveClient, RetrieverServer, retriever_app, serve_retriever
from ._sandboxed import SandboxedFunction
from ._search import ReadDocumentTool, SearchTool, format_hits, parse_hits
from ._stdlib import default_corpus_index, stdlib_documents
from ._toolbox import Toolbox
from ._web import WebSearchTool

__all__ = [
    "MAX_K",
    "CodeTool",
    "CorpusIndex",
    "Document",
    "FunctionTool",
    "Hit",
    "LangChainTool",
    "ReadDocumentTool",
    "RetrieveClient",
    "RetrieverServer",
    "SandboxedFunction",
    "SearchMode",
    "SearchTool",
    "Tool",
    "ToolError",
    "ToolServerMisconfigured",
    "ToolServerUnavailable",
    "Toolbox",
    "WebSearchTool",
    "default_corpus_index",
    "format_hits",
    "format_result",
    "load_documents",
    "parse_hits",
    "retriever_app",
    "serve_retriever",
    "stdlib_documents",
    "tool",
]
