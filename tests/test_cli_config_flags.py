"""`agentplay train` / `run` flags come from TrainConfig / RunConfig / ScaleOptions: one
source of truth for names, help, defaults and accepted values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pytest
import typer
import typer.main
from pydantic import BaseModel, ConfigDict, Field
from typer.testing import CliRunner

from agentplay.cli import app
from agentplay.cli._config_flags import build_config, config_flags, flag_name
from agentplay.cli._scale import ScaleOptions
from agentplay.runner import RunConfig
from agentplay.trainers import TrainConfig


def _params(command: str) -> dict[str, Any]:
    cmd = typer.main.get_command(app).commands[command]
    return {p.name: p for p in cmd.params}


@pytest.mark.parametrize(("command", "models", "excluded"), [
    # hand-written: run_name is --run-id, endpoints is --base-url; train's served model takes no --tokenizer
    ("train", (TrainConfig, ScaleOptions), {"recipe", "recipe_options", "run_name", "endpoints", "tokenizer"}),
    ("run", (RunConfig, ScaleOptions), {"endpoints"}),
])
def test_every_config_field_is_a_flag_with_its_docstring_as_help(command, models, excluded):
    params = _params(command)
    for model in models:
        for name, field in model.model_fields.items():
            if name in excluded:
                continue
            assert name in params, f"{command}: no flag for {model.__name__}.{name}"
            param = params[name]
            assert flag_name(name) in param.opts
            assert field.description, f"{model.__name__}.{name} has no docstring to be its help"
            assert param.help.startswith(field.description.strip().replace("\n", " ")[:40])
            assert param.default is None, f"{flag_name(name)} keeps a second default: {param.default!r}"


def test_a_wrong_choice_names_the_accepted_values():
    result = CliRunner().invoke(app, ["train", "code-selfplay", "--loss-type", "ppo"])
    assert result.exit_code == 2
    for accepted in ("grpo", "dr_grpo", "dapo", "cispo", "sapo"):
        assert accepted in result.output
    result = CliRunner().invoke(app, ["run", "code-selfplay", "--executor", "slurm"])
    assert result.exit_code == 2 and "local" in result.output and "ray" in result.output


class Toy(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    steps: int = Field(3, ge=1)
    """How many steps."""
    mode: Literal["fast", "slow"] = "fast"
    """Speed."""
    names: list[str] = Field(default_factory=lambda: ["a"])
    """Some names."""
    weights: dict[str, float] = Field(default_factory=dict)
    """Per-name weights."""
    flag: bool | None = None
    """A tri-state switch."""
    out: Path = Path("out")
    """Where to write."""


def _toy_app(seen: list[Toy]) -> typer.Typer:
    toy = typer.Typer()

    @toy.command()
    @config_flags(Toy, into="values")
    def main(values: dict[str, Any]) -> None:
        seen.append(build_config(Toy, values))

    return toy


def test_flags_not_given_leave_the_model_defaults_and_given_ones_are_parsed():
    seen: list[Toy] = []
    runner = CliRunner()
    assert runner.invoke(_toy_app(seen), []).exit_code == 0
    assert seen[-1] == Toy()
    result = runner.invoke(_toy_app(seen), ["--steps", "5", "--mode", "slow", "--names", "x,y",
                                            "--weights", json.dumps({"x": 0.5}), "--no-flag", "--out", "o"])
    assert result.exit_code == 0, result.output
    assert seen[-1] == Toy(steps=5, mode="slow", names=["x", "y"], weights={"x": 0.5}, flag=False, out=Path("o"))


def test_a_value_the_model_rejects_is_an_error_naming_the_flag():
    seen: list[Toy] = []
    result = CliRunner().invoke(_toy_app(seen), ["--steps", "0"])
    assert result.exit_code == 2 and "--steps" in result.output and not seen
    result = CliRunner().invoke(_toy_app(seen), ["--weights", "[1]"])
    assert result.exit_code == 2 and "--weights" in result.output and "JSON dict" in result.output
