"""The suite's own settings (tests/conftest.py): torch threads per process, and the xdist
groups that keep modules sharing a resource on one worker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import FIRST, SERIAL_GROUPS

HERE = Path(__file__).resolve().parent


def test_every_module_named_in_the_groups_exists():
    """A renamed module would silently leave its group (and run beside what it must not)."""
    named = [m for modules in SERIAL_GROUPS.values() for m in modules]
    assert len(named) == len(set(named)), "a module is in two groups"
    missing = [m for m in named if not (HERE / m).is_file()]
    assert not missing, f"SERIAL_GROUPS names modules that do not exist: {missing}"
    unknown = [s for s in FIRST if s not in SERIAL_GROUPS and not (HERE / s).is_file()]
    assert not unknown, f"FIRST names scopes that are neither a group nor a module: {unknown}"


def test_torch_threads_follow_the_worker_count():
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if os.environ.get("_AGENTPLAY_SUITE_SET_TORCH_THREADS"):  # not exported by whoever started pytest
        assert os.environ["AGENTPLAY_TORCH_THREADS"] == ("2" if workers <= 1 else "1")
    import torch

    assert torch.get_num_threads() == int(os.environ["AGENTPLAY_TORCH_THREADS"])


def _collect_in_subprocess(tmp_path: Path, *args: str, env: dict[str, str]) -> str:
    """The AGENTPLAY_TORCH_THREADS a pytest run (with `args`) gives its test processes."""
    probe = tmp_path / "test_probe.py"
    seen = tmp_path / "threads.txt"  # written by the test process (an xdist worker's output is not relayed)
    probe.write_text(f"import os\n\ndef test_probe():\n    open({str(seen)!r}, 'w').write(os.environ['AGENTPLAY_TORCH_THREADS'])\n")
    (tmp_path / "conftest.py").write_text(  # runs the suite's conftest.py, as every pytest process of the suite does
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('suite_conftest', {str(HERE / 'conftest.py')!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n")
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                          str(probe), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return seen.read_text()


def test_xdist_workers_get_one_thread_and_a_user_setting_wins(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("AGENTPLAY_TORCH_THREADS", "_AGENTPLAY_SUITE_SET_TORCH_THREADS")
           and not k.startswith("PYTEST_XDIST")}
    assert _collect_in_subprocess(tmp_path, env=env) == "2"
    assert _collect_in_subprocess(tmp_path, "-n", "2", env=env) == "1"  # not the controller's 2
    assert _collect_in_subprocess(tmp_path, "-n", "2", env={**env, "AGENTPLAY_TORCH_THREADS": "3"}) == "3"
