"""Every command answers --help, and the console script is the same app."""

from __future__ import annotations

import subprocess
import sys

import typer.main
from typer.testing import CliRunner

from agentplay.cli import app


def _command_paths(cmd, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for name, sub in (getattr(cmd, "commands", None) or {}).items():
        paths += _command_paths(sub, (*prefix, name))
    return paths


def test_every_command_has_help():
    root = typer.main.get_command(app)
    paths = _command_paths(root)
    names = {p[0] for p in paths if p}
    # The commands the README and the issues promise.
    assert {"demo", "run", "train", "serve", "traces", "sandbox", "corpus", "ui", "report"} <= names
    runner = CliRunner()
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.output, path
        assert len(result.output.strip().splitlines()) > 3, path


def test_console_script_module_entry():
    out = subprocess.run([sys.executable, "-m", "agentplay.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "traces" in out.stdout and "train" in out.stdout


def test_unknown_command_is_a_clear_error():
    result = CliRunner().invoke(app, ["no-such-command"])
    assert result.exit_code != 0
    assert "No such command" in result.output


def test_run_and_train_name_a_run_with_the_same_flag():
    runner = CliRunner()
    for command in ("run", "train"):
        result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert "--run-id" in result.output, command
    # train's old flag still works (test_trainer_resume uses it) but is not advertised
    assert "--run-name" not in runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    clash = runner.invoke(app, ["train", "x.py:build", "--run-id", "a", "--run-name", "b"])
    assert clash.exit_code == 2
    assert "--run-id" in clash.output and "--run-name" in clash.output
