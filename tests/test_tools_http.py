"""Tools over real HTTP on 127.0.0.1: the /retrieve protocol (both ends) and web search.

The hand-written servers below follow the protocols from their documentation
alone (Search-R1's retrieval_server.py; SearxNG's JSON API), so the clients are
checked against the protocol, not against our own server.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from agentplay.tools import (
    CorpusIndex,
    Document,
    ReadDocumentTool,
    RetrieveClient,
    SearchTool,
    Toolbox,
    ToolError,
    ToolServerMisconfigured,
    ToolServerUnavailable,
    WebSearchTool,
    serve_retriever,
)

from agentplay._health import error_cause
from agentplay.errors import InfrastructureError
from agentplay.models import ToolCall

DOCS = [
    Document(id="d1", title="Volcano", text="A volcano is a rupture in the crust where lava and ash escape."),
    Document(id="d2", title="Glacier", text="A glacier is a persistent body of dense ice moving under its own weight."),
    Document(id="d3", title="Desert", text="A desert is a barren area where little precipitation occurs."),
    Document(id="d4", title="Coral reef", text="A coral reef is an underwater ecosystem built by reef-building corals."),
    Document(id="d5", title="Tornado", text="A tornado is a rotating column of air touching the ground and a cloud."),
]


@pytest.fixture(scope="module")
def small_index(tmp_path_factory) -> CorpusIndex:
    return CorpusIndex.build(DOCS, tmp_path_factory.mktemp("idx") / "geo", dense=True)


@pytest.fixture(scope="module")
def server(small_index):
    with serve_retriever(small_index, mode="hybrid", default_topk=2) as srv:
        yield srv


class _Handler(BaseHTTPRequestHandler):
    """Base for protocol-only test servers; subclasses set `respond`."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, status: int, payload, content_type="application/json"):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _start(handler_cls) -> tuple[str, ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_cls)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}", httpd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- our server, spoken to raw and through our client ---------------------------------------

def test_server_speaks_the_search_r1_protocol(server):
    with_scores = httpx.post(f"{server.url}/retrieve",
                             json={"queries": ["frozen ice river", "lava eruption"], "topk": 2,
                                   "return_scores": True}).json()
    assert set(with_scores) == {"result"} and len(with_scores["result"]) == 2
    first = with_scores["result"][0][0]
    assert set(first) == {"document", "score"} and set(first["document"]) == {"id", "contents"}
    assert first["document"]["id"] == "d2"
    assert first["document"]["contents"].startswith('"Glacier"\nA glacier is')
    assert with_scores["result"][1][0]["document"]["id"] == "d1"
    plain = httpx.post(f"{server.url}/retrieve", json={"queries": ["desert with no rain"]}).json()
    assert len(plain["result"][0]) == 2  # server default topk
    assert set(plain["result"][0][0]) == {"id", "contents"} and plain["result"][0][0]["id"] == "d3"
    assert httpx.get(f"{server.url}/status").json() == "ok"
    bad = httpx.post(f"{server.url}/retrieve", json={"queries": ["ok", "  "], "topk": 2})
    assert bad.status_code == 422 and bad.json()["detail"].startswith("queries[1]: query is empty")
    huge = httpx.post(f"{server.url}/retrieve", json={"queries": ["ice"], "topk": 10**6})
    assert huge.status_code == 422 and "exceeds the limit of 1000" in huge.json()["detail"]


async def test_client_round_trip_and_read_document(server):
    client = RetrieveClient(server.url, timeout_s=10)
    hits = await client.search("rotating column of air", k=3)
    assert hits[0].doc_id == "d5" and hits[0].title == "Tornado" and hits[0].text.startswith("A tornado")
    assert len(hits) == 3 and hits[0].score >= hits[1].score
    batch = await client.search_batch(["underwater corals", "barren dry land"], k=1)
    assert [[h.doc_id for h in row] for row in batch] == [["d4"], ["d3"]]
    tb = Toolbox([SearchTool(client, k=2), ReadDocumentTool(client)])
    found, opened, missing = await tb.execute([
        ToolCall(id="1", name="search", arguments={"query": "glacier ice"}),
        ToolCall(id="2", name="read_document", arguments={"doc_id": "d5"}),
        ToolCall(id="3", name="read_document", arguments={"doc_id": "never-seen"}),
    ])
    assert found.error is None and "[1] id: d2\ntitle: Glacier" in found.result
    assert opened.error is None and "title: Tornado" in opened.result
    assert missing.error.startswith("not_found: no document with id 'never-seen'")


async def test_client_errors_are_tool_errors(server):
    client = RetrieveClient(server.url)
    with pytest.raises(ToolError, match="bad_arguments: query is empty"):
        await client.search("   ")
    with pytest.raises(ToolError, match="bad_arguments: k=5000 exceeds the limit of 1000"):
        await client.search("ice", k=5000)
    down = RetrieveClient(f"http://127.0.0.1:{_free_port()}", timeout_s=2, retries=1)
    with pytest.raises(ToolServerUnavailable, match=r"retrieval server http://127.0.0.1:\d+/retrieve failed 2 attempts; "
                                                    r"last: unreachable \(ConnectError"):
        await down.search("ice")


async def test_server_down_ends_the_call_as_infrastructure_not_a_tool_answer(small_index):
    """A dead server is the machinery's fault: the Toolbox raises instead of recording an answer
    (the model's own mistakes in the same batch are still records)."""
    down = SearchTool(RetrieveClient(f"http://127.0.0.1:{_free_port()}", timeout_s=2, retries=1),
                      name="remote_search")
    tb = Toolbox([down, SearchTool(small_index, k=1)])
    with pytest.raises(ToolServerUnavailable) as caught:
        await tb.execute([ToolCall(id="1", name="remote_search", arguments={"query": "ice"}),
                          ToolCall(id="2", name="search", arguments={"query": "ice"})])
    assert isinstance(caught.value, InfrastructureError)
    assert error_cause(caught.value) == "infrastructure:ToolServerUnavailable"
    worked, empty, malformed = await tb.execute([
        ToolCall(id="2", name="search", arguments={"query": "ice"}),
        ToolCall(id="3", name="search", arguments={"query": ""}),
        ToolCall(id="4", name="search", arguments={"q": "ice"}),
    ])
    assert worked.error is None and "id: d2" in worked.result
    assert empty.error == "bad_arguments: query is empty: write a few words describing what to find"
    assert malformed.error == "bad_arguments: query: Field required; q: Extra inputs are not permitted"


# ---- our client against servers written from the protocol alone -----------------------------

class _SearchR1Dense(_Handler):
    """Like Search-R1's dense server: corpus rows {id, contents}; scores only when asked."""

    ROWS: ClassVar[list[dict]] = [{"id": "17", "contents": '"Ada Lovelace"\nAda Lovelace wrote the first published algorithm.'},
            {"id": "42", "contents": '"Charles Babbage"\nBabbage designed the Analytical Engine.'}]

    def do_POST(self):
        if self.path != "/retrieve":
            return self._send(404, {"detail": "Not Found"})
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        out = []
        for _ in req["queries"]:
            rows = self.ROWS[: req.get("topk") or 3]
            out.append([{"document": r, "score": 0.9 - i / 10} for i, r in enumerate(rows)]
                       if req.get("return_scores") else rows)
        self._send(200, {"result": out})


class _SearchR1Bm25NoScores(_Handler):
    """Like its pyserini BM25 path with return_scores ignored: {title, text, contents}, no id."""

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        doc = {"title": "Alan Turing", "text": "Turing formalised computation.",
               "contents": '"Alan Turing"\nTuring formalised computation.'}
        self._send(200, {"result": [[doc] for _ in req["queries"]]})


async def test_client_against_protocol_only_servers():
    url, httpd = _start(_SearchR1Dense)
    try:
        hits = await RetrieveClient(url + "/retrieve/").search("who wrote the first algorithm", k=2)
        assert [(h.doc_id, h.title, round(h.score, 2)) for h in hits] == [
            ("17", "Ada Lovelace", 0.9), ("42", "Charles Babbage", 0.8)]
        assert hits[0].text == "Ada Lovelace wrote the first published algorithm."
    finally:
        httpd.shutdown()
    url, httpd = _start(_SearchR1Bm25NoScores)
    try:
        client = RetrieveClient(url)
        hits = await client.search("computation", k=1)
        assert hits[0].doc_id == "Alan Turing" and hits[0].score == 0.0
        assert client.get("Alan Turing").text == "Turing formalised computation."
    finally:
        httpd.shutdown()


# ---- web search -------------------------------------------------------------------------------

class _SearxNG(_Handler):
    """SearxNG's JSON API: GET /search?q=...&format=json -> {"query", "results": [...]}."""

    hits: ClassVar[list[float]] = []

    def do_GET(self):
        url = urlparse(self.path)
        qs = parse_qs(url.query)
        type(self).hits.append(time.monotonic())
        if url.path != "/search":
            return self._send(404, {"detail": "not found"})
        if qs.get("format") != ["json"]:
            return self._send(403, b"Forbidden", "text/html")
        q = qs["q"][0]
        if q == "html please":
            return self._send(200, b"<html>not json</html>", "text/html")
        results = [{"title": f"{q} result {i}", "url": f"https://example.org/{i}", "content": f"About {q}, part {i}.",
                    "engine": "test"} for i in range(8)]
        self._send(200, {"query": q, "number_of_results": 8, "results": results})


async def test_web_search_against_searxng_style_server():
    url, httpd = _start(_SearxNG)
    try:
        web = WebSearchTool(url, max_results=3, min_interval_s=0.3, params={"language": "en"})
        tb = Toolbox([web])
        _SearxNG.hits.clear()
        start = time.monotonic()
        records = await tb.execute([ToolCall(id=str(i), name="web_search", arguments={"query": f"tide {i}"})
                                    for i in range(3)])
        elapsed = time.monotonic() - start
        assert all(r.error is None for r in records)
        assert records[0].result.startswith("[1] tide 0 result 0\nurl: https://example.org/0\nAbout tide 0, part 0.")
        assert "[3]" in records[0].result and "[4]" not in records[0].result
        gaps = [b - a for a, b in zip(_SearxNG.hits, _SearxNG.hits[1:])]
        assert len(_SearxNG.hits) == 3 and min(gaps) >= 0.25, f"requests not spaced: {gaps}"
        assert elapsed >= 0.55
        # an answer that is not the JSON API (a proxy's page, another service) is the setup's fault
        with pytest.raises(ToolServerMisconfigured, match=r"web search engine .* does not speak SearxNG's JSON API"):
            await tb.execute([ToolCall(id="x", name="web_search", arguments={"query": "html please"})])
    finally:
        httpd.shutdown()


async def test_web_search_errors_are_clear():
    url, httpd = _start(_SearxNG)
    try:
        _SearxNG.hits.clear()
        with pytest.raises(ToolServerMisconfigured, match=r"answered 404 for .*/nothing/search: .*check the URL"):
            await WebSearchTool(url + "/nothing", min_interval_s=0).ainvoke({"query": "x"})
        assert len(_SearxNG.hits) == 1  # a wrong URL answers the same every time: not retried
    finally:
        httpd.shutdown()
    down = WebSearchTool(f"http://127.0.0.1:{_free_port()}", timeout_s=2, retries=0, min_interval_s=0)
    with pytest.raises(ToolServerUnavailable, match=r"web search engine http://127.0.0.1:\d+ failed 1 attempts; "
                                                    r"last: unreachable"):
        await down.ainvoke({"query": "x"})
    with pytest.raises(ToolError, match="bad_arguments: query is empty"):
        await down.ainvoke({"query": " "})


# ---- a failing tool server: retried, then infrastructure (never a tool answer) -------------------

class _Flaky(_Handler):
    """A /retrieve server whose next answers are scripted: a status (500, 503, 429, 422) or None
    (a real answer); `seen` lists the status of every request that reached it."""

    script: ClassVar[list[int | None]] = []
    seen: ClassVar[list[int]] = []

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status = type(self).script.pop(0) if type(self).script else None
        type(self).seen.append(status or 200)
        if status is not None:
            return self._send(status, {"detail": f"injected {status}"})
        doc = {"id": "7", "contents": '"Kilauea"\nKilauea is an active shield volcano.'}
        self._send(200, {"result": [[{"document": doc, "score": 1.0}] for _ in req["queries"]]})


@pytest.fixture
def flaky():
    _Flaky.script, _Flaky.seen = [], []
    url, httpd = _start(_Flaky)
    yield url
    httpd.shutdown()


async def test_server_answering_5xx_is_retried_a_bounded_number_of_times_then_infrastructure(flaky):
    _Flaky.script = [500] * 10
    with pytest.raises(ToolServerUnavailable, match=r"failed 3 attempts; last: answered HTTP 500: .*injected 500"):
        await RetrieveClient(flaky, retries=2).search("volcano")
    assert _Flaky.seen == [500, 500, 500]  # bounded: first try + 2 retries, then it stops


async def test_server_that_recovers_within_the_retries_loses_nothing(flaky):
    _Flaky.script = [503, 500]
    hits = await RetrieveClient(flaky, retries=2).search("volcano")
    assert [(h.doc_id, h.title) for h in hits] == [("7", "Kilauea")]
    assert _Flaky.seen == [503, 500, 200]


async def test_retry_after_is_honoured_and_a_bad_query_is_not_retried(flaky):
    class _SlowDown(_Flaky):
        def _send(self, status, payload, content_type="application/json"):
            if status != 429:
                return super()._send(status, payload, content_type)
            self.send_response(429)
            self.send_header("Retry-After", "1")
            self.send_header("Content-Length", "0")
            self.end_headers()

    url, httpd = _start(_SlowDown)
    try:
        _Flaky.script = [429]
        start = time.monotonic()
        hits = await RetrieveClient(url, retries=1).search("volcano")
        assert hits[0].doc_id == "7" and time.monotonic() - start >= 0.95  # not our 0.5 s backoff
    finally:
        httpd.shutdown()
    _Flaky.script, _Flaky.seen = [422], []
    with pytest.raises(ToolError, match=r"server_error: retrieval server answered 422: injected 422"):
        await RetrieveClient(flaky, retries=3).search("volcano")
    assert _Flaky.seen == [422]  # the model's query was refused: its answer to read, sent once


async def test_a_dead_server_is_not_a_tool_message_through_langgraph_either():
    """The same tool as a LangChain tool in LangGraph's own `ToolNode`: the infrastructure error
    ends the node (and so the episode); it is not turned into a ToolMessage."""
    from langchain_core.messages import AIMessage
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode

    down = SearchTool(RetrieveClient(f"http://127.0.0.1:{_free_port()}", timeout_s=2, retries=0))
    graph = StateGraph(MessagesState)
    graph.add_node("tools", ToolNode([down.as_langchain()]))
    graph.add_edge(START, "tools")
    graph.add_edge("tools", END)
    call = AIMessage(content="", tool_calls=[{"name": "search", "args": {"query": "ice"}, "id": "1"}])
    with pytest.raises(ToolServerUnavailable, match="retrieval server .* failed 1 attempts"):
        await graph.compile().ainvoke({"messages": [call]})


async def test_a_misconfigured_retrieval_server_is_neither_retried_nor_shown_to_the_model(flaky, small_index):
    """A wrong path (404) or a server that answers something else than the protocol: the tool is
    pointed at the wrong place. Raised from the Toolbox (the episode fails, the run's error
    fraction counts it), sent once, never recorded as the model's tool result."""
    tb = Toolbox([SearchTool(RetrieveClient(flaky + "/v1", retries=3)), SearchTool(small_index, name="local")])
    _Flaky.script = [404]
    with pytest.raises(ToolServerMisconfigured, match=r"retrieval server .*/v1/retrieve answered 404: .*check the URL"):
        await tb.execute([ToolCall(id="1", name="search", arguments={"query": "volcano"})])
    assert _Flaky.seen == [404]

    class _NotRetrieval(_Handler):
        def do_POST(self):
            self._send(200, {"choices": [{"text": "I am a chat server"}]})

    url, httpd = _start(_NotRetrieval)
    try:
        with pytest.raises(ToolServerMisconfigured, match=r"does not speak the /retrieve protocol \(KeyError\('result'\)"):
            await Toolbox([SearchTool(RetrieveClient(url))]).execute(
                [ToolCall(id="1", name="search", arguments={"query": "volcano"})])
    finally:
        httpd.shutdown()
    assert not isinstance(ToolServerMisconfigured("x"), InfrastructureError)  # rerunning would not help
    assert error_cause(ToolServerMisconfigured("x")) == "recipe:ToolServerMisconfigured"


def _search_recipe(url: str, before_search=None):
    """One searcher turn (the real model), then its search through a real /retrieve server; the
    reward reads what the search returned, as a search recipe's would."""
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph

    from agentplay import GroupBy, Recipe, Role
    from agentplay.models import DEFAULT_MODEL_SPEC, SamplingParams

    class State(TypedDict, total=False):
        observation: str

    searcher = Role(name="searcher", model=DEFAULT_MODEL_SPEC, sampling=SamplingParams(max_tokens=2))
    toolbox = Toolbox([SearchTool(RetrieveClient(url, timeout_s=2, retries=3), k=1)])

    async def search(state: State) -> State:
        await searcher.run("Name a volcano.")
        if before_search is not None:
            before_search()
        (record,) = await toolbox.execute([ToolCall(id="s", name="search", arguments={"query": "lava eruption"})])
        return {"observation": toolbox.tool_message(record)["content"]}

    def reward(turn, state, episode) -> float:
        return 1.0 if "title: Volcano" in state["observation"] else 0.0

    graph = StateGraph(State)
    graph.add_node("search", search)
    graph.add_edge(START, "search")
    graph.add_edge("search", END)
    return Recipe(name="search-infra", graph=graph, roles={"search": searcher}, rewards={"searcher": reward},
                  groups={"searcher": GroupBy.seed(k=1)}, initial_state=lambda ctx: {})


async def test_dead_retrieval_server_fails_episodes_as_infrastructure_never_scored(small_index, tmp_path):
    from agentplay.trainers import compute_advantages

    from agentplay import RunConfig, run_recipe
    from agentplay.runner import RunHealthError
    from agentplay.traces import TraceStore

    port = _free_port()
    config = {"episodes": 2, "concurrency": 2, "seed": 1, "progress": False, "episode_retries": 1}
    with TraceStore(tmp_path / "t.db") as store:
        with serve_retriever(small_index, port=port, mode="bm25"):
            await run_recipe(_search_recipe(f"http://127.0.0.1:{port}"), RunConfig(run_id="up", **config),
                             store=store)
        # the server is gone (killed with the block): the search must not become an observation
        with pytest.raises(RunHealthError, match=r"infrastructure:ToolServerUnavailable x2"):
            await run_recipe(_search_recipe(f"http://127.0.0.1:{port}"), RunConfig(run_id="down", **config),
                             store=store)
        up, down = list(store.episodes("up")), list(store.episodes("down"))
    assert [t.reward.value for e in up for t in e.turns] == [1.0, 1.0]
    for e in down:
        assert e.status == "error" and e.error_cause == "infrastructure:ToolServerUnavailable"
        assert e.metadata["attempts"] == 2  # rerun once, as infrastructure failures are
        assert f"retrieval server http://127.0.0.1:{port}/retrieve failed 4 attempts" in e.error
        assert e.turns and all(t.reward is None for t in e.turns)  # the model spoke; nobody scored it
    samples, stats = compute_advantages(down)
    assert samples == [] and stats.skipped_episode_error == 2


async def test_retrieval_server_restarted_within_the_retry_window_loses_no_episode(small_index, tmp_path):
    from agentplay import RunConfig, run_recipe
    from agentplay.traces import TraceStore

    port = _free_port()
    holder: list = []
    searching = threading.Event()

    def restart_later() -> None:
        if searching.wait(timeout=300):
            time.sleep(1.0)
        holder.append(serve_retriever(small_index, port=port, mode="bm25"))

    thread = threading.Thread(target=restart_later)
    thread.start()  # the server is down when the episodes search, back within the client's retries
    try:
        with TraceStore(tmp_path / "t.db") as store:
            summary = await run_recipe(_search_recipe(f"http://127.0.0.1:{port}", searching.set),
                                       RunConfig(run_id="r", episodes=2, concurrency=2, seed=1, progress=False,
                                                 episode_retries=0), store=store)
            episodes = list(store.episodes("r"))
    finally:
        thread.join()
        for srv in holder:
            srv.close()
    assert summary.errors == 0 and summary.retried == 0
    assert [e.status for e in episodes] == ["ok", "ok"] and all("attempts" not in e.metadata for e in episodes)
    assert [t.reward.value for e in episodes for t in e.turns] == [1.0, 1.0]


def test_retriever_cli_serves_an_index(tmp_path: Path, small_index):
    """`agentplay corpus serve` in a real subprocess, queried over HTTP."""
    import subprocess
    import sys

    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentplay.cli", "corpus", "serve", str(small_index.path), "--port", str(port), "--mode", "bm25"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                resp = httpx.post(f"http://127.0.0.1:{port}/retrieve", json={"queries": ["lava"], "topk": 1})
                break
            except httpx.ConnectError:
                assert proc.poll() is None, proc.stdout.read().decode()
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.2)
        assert resp.json()["result"][0][0]["id"] == "d1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
