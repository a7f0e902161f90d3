"""`agentplay ui` driven by a real headless Chromium over a store written by a real recipe run.

The store comes from `agentplay run search-selfplay` with the real SmolLM2
(conftest.py's session fixture `recipe_store`, shared with test_report.py). The browser is Debian's
`chromium` launched through Playwright with an explicit executable path;
every request that leaves 127.0.0.1 is refused and fails the test.
Screenshots go to $AGENTPLAY_ARTIFACTS_DIR (default: artifacts/ui/ in the repo).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from _servers import cli_env

from agentplay.models import default_model_dir
from agentplay.traces import Episode, TraceStore

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("AGENTPLAY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
pytestmark = pytest.mark.timeout(1800)  # the first test to ask for recipe_store (conftest.py) pays for the real run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def ui_server(recipe_store: tuple[Path, str]) -> Iterator[str]:
    """`agentplay ui` as a user starts it (the console entry in a subprocess)."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentplay.cli", "ui", "--store", str(recipe_store[0]), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cli_env(),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"agentplay ui exited {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}")
            try:
                if httpx.get(base + "/api/runs", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "agentplay ui did not answer within 120 s"
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _require_chromium() -> str:
    if Path(CHROMIUM).exists() and shutil.which(CHROMIUM):
        return CHROMIUM
    msg = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if os.environ.get("CI") or os.environ.get("AGENTPLAY_REQUIRE_DOCKER", "") not in ("", "0", "false"):
        pytest.fail(f"browser tests are required here but {msg}")
    pytest.skip(msg)


@pytest.fixture
def page(tmp_path: Path):
    executable = _require_chromium()
    from playwright.sync_api import sync_playwright

    outside: list[str] = []

    def only_local(route, request) -> None:  # nothing may load from outside the server
        if request.url.startswith(("http://127.0.0.1", "data:", "about:")):
            route.continue_()
        else:
            outside.append(request.url)
            route.abort()

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=executable, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000},
        )
        context.route("**/*", only_local)
        try:
            yield context.new_page()
        finally:
            context.close()
    assert not outside, f"the UI requested outside resources: {outside}"


def _shot(page, name: str) -> Path:
    folder = Path(os.environ.get("AGENTPLAY_ARTIFACTS_DIR", REPO / "artifacts")) / "ui"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000
    return path


def _narrowing_word(store: TraceStore, run_id: str, episodes: list[Episode]) -> tuple[str, int]:
    """A word some but not all episodes contain, and how many match it (the store decides)."""
    total = len(episodes)
    for ep in episodes:
        for turn in ep.turns:
            for msg in turn.messages:
                if msg.get("role") != "assistant" or not isinstance(msg.get("content"), str):
                    continue
                for word in msg["content"].split():
                    if word.isalnum() and len(word) > 3:
                        n = store.count_episodes(run_id, text=word)
                        if 0 < n < total:
                            return word, n
    pytest.fail("no word narrows the episode list; the run produced identical episodes")


@pytest.mark.browser
def test_ui_shows_runs_charts_episodes_and_filters(recipe_store: tuple[Path, str], ui_server: str, page) -> None:
    path, run_id = recipe_store
    with TraceStore(path, read_only=True) as store:
        episodes = list(store.episodes(run_id))
        word, matching = _narrowing_word(store, run_id, episodes)
        matching_ids = {ep.episode_id for ep in store.episodes(run_id, text=word)}

    # runs list: the run with its status and episode count
    page.goto(ui_server + "/")
    row = page.locator(f'#runs tr[data-run-id="{run_id}"]')
    row.wait_for()
    assert "search-selfplay" in row.inner_text() and "finished" in row.inner_text()
    assert row.locator("td").nth(3).inner_text() == "3"
    _shot(page, "01-runs")

    # run page: charts with data points, the three episodes listed
    row.locator("a").click()
    page.wait_for_selector('figure.chart[data-chart="reward"] circle.point')
    assert page.locator('figure.chart[data-chart="reward"] circle.point').count() >= 3
    assert page.locator('figure.chart[data-chart="headline-valid_proposal"] circle.point').count() == 3
    assert page.locator("figure.chart").count() == 6
    page.wait_for_function("document.querySelectorAll('#episodes tr.episode').length === 3")
    _shot(page, "02-run")

    # a filter narrows the list to exactly what the store query returns
    page.fill('#filters input[name="q"]', word)
    page.click('#filters button[type="submit"]')
    page.wait_for_function(f"document.querySelectorAll('#episodes tr.episode').length === {matching}")
    shown = set(page.locator("#episodes tr.episode").evaluate_all("rows => rows.map(r => r.dataset.episodeId)"))
    assert shown == matching_ids
    assert f"{matching} match" in page.inner_text("#episodes-count")
    _shot(page, "03-filtered")

    # an episode: each role's turns as a conversation, with rewards and reasons
    ep_id = min(matching_ids)
    page.click(f'#episodes tr[data-episode-id="{ep_id}"] a')
    page.wait_for_selector("section.turn")
    episode = next(ep for ep in episodes if ep.episode_id == ep_id)
    sections = page.locator("section.turn")
    assert sections.count() == len(episode.turns)
    for i, turn in enumerate(episode.turns):
        section = sections.nth(i)
        assert section.get_attribute("data-role") == turn.role
        assert section.locator(".msg-assistant").count() >= 1, "model-written text is shown"
        text = section.inner_text()
        if turn.reward is not None:
            assert f"{turn.reward.value:.3f}" in text and turn.reward.reason in text
        assert f"{sum(turn.mask or [])} model-written" in text
    if any(t.tool_calls for t in episode.turns):
        assert page.locator(".msg-tool").count() >= 1, "tool results are shown inline"
    _shot(page, "04-episode")


@pytest.mark.browser
def test_ui_follows_a_run_that_is_still_writing(recipe_store: tuple[Path, str], tmp_path: Path, page) -> None:
    """New episodes and a new run appear on open pages without a reload or a restart."""
    live = tmp_path / "live.db"
    with TraceStore(recipe_store[0], read_only=True) as src:
        episodes = list(src.episodes(recipe_store[1]))
    with TraceStore(live) as store:
        store.create_run("search-selfplay", {}, run_id="growing")
        store.append_episode(episodes[0].model_copy(update={"run_id": "growing", "index": 0, "seq": None}))
        port = _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "agentplay.cli", "ui", "--store", str(live), "--port", str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cli_env(),
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(base + "/api/runs", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    assert proc.poll() is None and time.monotonic() < deadline, "agentplay ui did not start"
                    time.sleep(0.3)
            page.goto(base + "/runs/growing")
            page.wait_for_function("document.querySelectorAll('#episodes tr.episode').length === 1")
            for i, ep in enumerate(episodes[1:], start=1):
                store.append_episode(ep.model_copy(update={"run_id": "growing", "index": i,
                                                           "episode_id": f"live{i}", "seq": None}))
            page.wait_for_function("document.querySelectorAll('#episodes tr.episode').length === 3",
                                   timeout=15_000)
            page.wait_for_function(
                "document.querySelectorAll('figure.chart[data-chart=\"reward\"] circle.point').length >= 3"
                " && document.querySelector('[data-field=\"episodes\"]').textContent === '3'",
                timeout=15_000,
            )
            page.goto(base + "/")
            store.create_run("code-selfplay", {}, run_id="second")
            page.wait_for_selector('#runs tr[data-run-id="second"]', timeout=15_000)
            _shot(page, "05-live")
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def test_api_filters_agree_with_the_store(recipe_store: tuple[Path, str], ui_server: str) -> None:
    """Each filter of the episode list returns exactly the store's answer, over real HTTP."""
    path, run_id = recipe_store
    with TraceStore(path, read_only=True) as store:
        episodes = list(store.episodes(run_id))
        roles = sorted({t.role for ep in episodes for t in ep.turns})
        word, _ = _narrowing_word(store, run_id, episodes)
        cases: list[tuple[dict[str, str], set[str]]] = [
            ({}, {ep.episode_id for ep in episodes}),
            ({"q": word}, {ep.episode_id for ep in store.episodes(run_id, text=word)}),
            ({"status": "ok"}, {ep.episode_id for ep in store.episodes(run_id, status="ok")}),
            ({"role": roles[0], "min_reward": "0.5"},
             {ep.episode_id for ep in store.episodes(run_id, role=roles[0], min_reward=0.5)}),
            ({"status": "valid"}, {ep.episode_id for ep in episodes if ep.metrics["valid_proposal"] >= 0.5}),
            ({"status": "not-valid"}, {ep.episode_id for ep in episodes if ep.metrics["valid_proposal"] < 0.5}),
        ]
    with httpx.Client(base_url=ui_server) as client:
        for params, expected in cases:
            got = client.get(f"/api/runs/{run_id}/episodes", params=params).json()
            assert {row["episode_id"] for row in got["episodes"]} == expected, params
            assert got["total"] == len(expected), params
        newest = max(ep.seq for ep in episodes)
        assert client.get(f"/api/runs/{run_id}/episodes", params={"since_seq": newest}).json()["episodes"] == []
        one = client.get(f"/api/episodes/{episodes[0].episode_id}").json()
        assert [t["role"] for t in one["turns"]] == [t.role for t in episodes[0].turns]
        turn = one["turns"][0]
        assert turn["tokens"]["model"] == sum(episodes[0].turns[0].mask or [])
        first = episodes[0].turns[0]
        assert {g.tokenizer for g in first.generations} == {str(default_model_dir(create=False))}  # named
        assert turn["pieces"] is not None  # decoded token by token with the tokenizer the trace names
        assert [m for m, _ in turn["pieces"]] == (first.mask or [])[: len(turn["pieces"])]
        ascii_only = lambda t: t.encode("ascii", "ignore").decode()  # a multi-byte char spans tokens
        text = ascii_only("".join(piece for _, piece in turn["pieces"]))
        assert ascii_only(first.generations[0].text[:40]) in text  # the model's own words read back
        missing = client.get("/api/runs/no-such-run/episodes")
        assert missing.status_code == 404 and "no run 'no-such-run'" in missing.json()["detail"]


def test_wheel_ships_the_templates_and_static_files(tmp_path: Path) -> None:
    """Package data is per folder: a wheel without templates/ or static/ serves only 500s."""
    import zipfile

    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(REPO)], check=True, timeout=600)
    (wheel,) = tmp_path.glob("agentplay-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    here = REPO / "agentplay" / "ui"
    shipped = [p.relative_to(REPO).as_posix() for p in [*here.glob("templates/*"), *here.glob("static/*")]]
    assert shipped and all(name in names for name in shipped), sorted(set(shipped) - names)
