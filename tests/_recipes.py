"""The example recipes the trainer tests train on: one copy, in examples/ (bench/async.py runs it too)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentplay import Recipe, load_recipe

ROOT = Path(__file__).resolve().parents[1]
SHORT_ANSWERS = f"{ROOT / 'examples' / 'short_answers.py'}:build"
"""`examples/short_answers.py:build`, as `agentplay train` takes it."""


def short_answers(**options: Any) -> Recipe:
    """The short-answers recipe built in process with `options` (n=..., model=...)."""
    return load_recipe(SHORT_ANSWERS, options=options)[0]
