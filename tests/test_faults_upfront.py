"""An `openai:` model with no server to call fails before any episode (issue #19, item 5).

Before the fix, `agentplay run ... --model openai:NAME` without a URL stored a
connection-error traceback in every episode and exited 0. Now `run` and `train`
exit 2 naming `--base-url` (and the environment variables) and store nothing.
"""

from __future__ import annotations

import subprocess
import time

import pytest
from _fault_proxy import EXAMPLE
from _servers import AGENTPLAY, agentplay_env

from agentplay.models import ModelSpecError, load_model
from agentplay.traces import TraceStore


def _env_without_openai() -> dict[str, str]:
    return {k: v for k, v in agentplay_env().items() if k not in ("OPENAI_BASE_URL", "OPENAI_API_KEY")}


@pytest.mark.parametrize("args", [
    ["run", EXAMPLE, "--model", "openai:some-model", "--episodes", "2"],
    ["run", EXAMPLE, "--set", "model=openai:some-model", "--episodes", "2"],  # the recipe's own roles
    ["train", EXAMPLE, "--model", "openai:some-model", "--iterations", "1"],
])
def test_openai_model_without_a_url_is_an_error_before_any_episode(tmp_path, args):
    db = tmp_path / "t.db"
    out = subprocess.run([*AGENTPLAY, *args, "--store", str(db), *(["--output-dir", str(tmp_path / "o")]
                                                                     if args[0] == "train" else [])],
                         check=False, env=_env_without_openai(), capture_output=True, text=True, timeout=300)
    said = " ".join(out.stderr.split())
    assert out.returncode == 2, out.stderr[-2000:]
    assert "--base-url" in said and "OPENAI_BASE_URL" in said and "OPENAI_API_KEY" in said, said[-2000:]
    assert "Traceback" not in out.stderr
    assert not db.exists()  # not one episode ran


def test_base_url_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ModelSpecError, match="base_url: openai:m has no server to call"):
        load_model("openai:m")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert load_model("openai:m").urls == ["http://127.0.0.1:9/v1"]
    monkeypatch.delenv("OPENAI_BASE_URL")
    monkeypatch.setenv("OPENAI_API_KEY", "k")  # a key alone: the API's own default URL (never called here)
    assert load_model("openai:m").urls == ["https://api.openai.com/v1"]


def test_one_flag_name_for_the_serving_url(tmp_path):
    """`--base-url` on run and train; `--endpoints` is a hidden deprecated alias; not both at once."""
    for command in ("run", "train"):
        helped = subprocess.run([*AGENTPLAY, command, "--help"], check=False, env=agentplay_env(),
                                capture_output=True, text=True, timeout=120, )
        assert "--base-url" in helped.stdout and "--endpoints" not in helped.stdout, command
    out = subprocess.run([*AGENTPLAY, "run", EXAMPLE, "--model", "openai:m", "--base-url", "http://127.0.0.1:9/v1",
                          "--endpoints", "http://127.0.0.1:9/v1", "--store", str(tmp_path / "t.db")],
                         check=False, env=agentplay_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "not both" in " ".join(out.stderr.split()), out.stderr[-2000:]


def test_retry_deadline_bounds_the_wait_and_the_run_fails_loudly(tmp_path):
    """A URL where nothing answers: each model call gives up after --retry-deadline with
    NoLiveEndpointError (an infrastructure error), and the run exits non-zero saying so."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"  # closed again: connection refused
    started = time.monotonic()
    out = subprocess.run([*AGENTPLAY, "run", EXAMPLE, "--model", "openai:m", "--base-url", dead, "--retry-deadline",
                          "1", "--episodes", "2", "--episode-retries", "0", "--store", str(tmp_path / "t.db"),
                          "--run-id", "dead", "--no-progress"],
                         check=False, env=agentplay_env(), capture_output=True, text=True, timeout=300)
    said = " ".join(out.stderr.split())
    assert out.returncode != 0 and "infrastructure:NoLiveEndpointError x2" in said, said[-3000:]
    assert time.monotonic() - started < 120
    with TraceStore(tmp_path / "t.db") as store:
        episodes = list(store.episodes("dead"))
    assert len(episodes) == 2 and all(e.status == "error" for e in episodes)
    assert all("no endpoint answered within retry_deadline_s=1" in (e.error or "") and dead in e.error
               for e in episodes), episodes[0].error
