"""Token-id honesty (issue #19, item 4): a server that answers without token ids.

The server is a real `agentplay serve` behind tests/_fault_proxy.py with
`strip_token_ids`, so it answers exactly like llama.cpp's server: text, no ids,
no logprobs. Before the fix such turns were stored `token_exact = 1` with no ids,
nothing warned, and `agentplay train` would have had nothing to train on.
"""

from __future__ import annotations

import logging
import subprocess

import pytest
from _fault_proxy import EXAMPLE, FaultProxy, run_episodes
from _servers import AGENTPLAY, SERVED, agentplay_env

from agentplay.models._token_ids import MISSING_IDS_FIX
from agentplay.trainers._token_ids import token_id_problem


@pytest.fixture
def server(smollm2_server):
    return smollm2_server  # the session's `agentplay serve` (conftest.py): only sampled from here


@pytest.fixture
def no_ids(server):
    with FaultProxy(server, rate=0.0, strip_token_ids=True) as proxy:
        yield proxy.url


def test_turns_without_server_ids_are_not_token_exact_and_warned_once(no_ids, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="agentplay.models")
    episodes = run_episodes(no_ids, tmp_path / "t.db", "noids", episodes=2)
    turns = [t for e in episodes for t in e.turns]
    assert [e.status for e in episodes] == ["ok", "ok"] and len(turns) == 4
    assert all(t.token_ids is None and t.prompt_token_ids is None and not t.token_exact for t in turns)
    warnings = [r.getMessage() for r in caplog.records if "returns no token ids" in r.getMessage()]
    assert len(warnings) == 1, warnings  # once per endpoint, not once per call
    assert MISSING_IDS_FIX in warnings[0] and no_ids in warnings[0]
    problem = token_id_problem(episodes, 0)
    assert problem is not None and "only 0 of 4 model turns" in problem and MISSING_IDS_FIX in problem


def test_tokenizer_rebuilds_ids_recorded_as_not_exact(no_ids, server, tmp_path):
    """`--tokenizer default`: ids rebuilt from text; the prompt ids equal what the server itself
    conditioned on (same template), but the turn says token_exact = false and is not trainable."""
    rebuilt = run_episodes(no_ids, tmp_path / "r.db", "rebuilt", episodes=2, tokenizer="default")
    exact = run_episodes(server, tmp_path / "e.db", "exact", episodes=2)
    pairs = [(a, b) for ea, eb in zip(rebuilt, exact, strict=True) for a, b in zip(ea.turns, eb.turns, strict=True)]
    assert len(pairs) == 4
    for r, e in pairs:
        assert r.token_ids and r.prompt_token_ids and not r.token_exact
        assert e.token_ids and e.token_exact
        assert r.prompt_token_ids == e.prompt_token_ids and r.output == e.output
    assert token_id_problem(rebuilt, 0) is not None and token_id_problem(exact, 0) is None


def test_train_refuses_an_endpoint_without_ids(no_ids, tmp_path):
    out = subprocess.run(
        [*AGENTPLAY, "train", EXAMPLE, "--model", SERVED, "--base-url", no_ids, "--iterations", "1",
         "--episodes-per-iteration", "2", "--concurrency", "2", "--store", str(tmp_path / "t.db"),
         "--output-dir", str(tmp_path / "out"), "--set", "max_tokens=4", "--set", "n_solvers=1"],
        check=False, env=agentplay_env(), capture_output=True, text=True, timeout=900)
    said = " ".join(out.stderr.split())
    assert out.returncode == 2, out.stderr[-3000:]
    assert "carry token ids" in said and MISSING_IDS_FIX in said, said[-2000:]
    assert not list((tmp_path / "out").glob("**/adapter_config.json"))  # no optimizer step was published
