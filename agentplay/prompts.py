"""Prompt templates: one Jinja environment for the whole package, templates as files.

A recipe keeps its prompts in ``.jinja`` files beside it (built-ins in
``graphs/prompts/<recipe>/``), so a prompt reads as the model sees it and can be
edited without touching code. `Role.system_prompt` / `user_template` take the
template text; they and every other renderer in the package render through
`ENVIRONMENT`, so a missing variable fails the same way everywhere (StrictUndefined).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from agentplay.errors import AgentplayError

__all__ = ["ENVIRONMENT", "PromptError", "load_prompt", "render_prompt"]

ENVIRONMENT = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
"""The package's one Jinja environment: StrictUndefined, no HTML escaping (prompts are not HTML)."""


class PromptError(AgentplayError, ValueError):
    """A prompt file that cannot be found or rendered; the message names the file and the variable."""


def _folder(anchor: str | Path) -> Path:
    path = Path(anchor)
    return path.parent / "prompts" if path.suffix == ".py" else path


@cache
def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").rstrip("\n")
    except FileNotFoundError:
        raise PromptError(f"prompt: no template file {path}") from None


def load_prompt(anchor: str | Path, name: str) -> str:
    """The text of template `name` (e.g. ``"search_selfplay/proposer.jinja"``).

    `anchor` is the recipe's ``__file__`` (templates are read from the ``prompts/``
    folder beside it) or a folder. The text is what `Role(system_prompt=...)` takes.
    """
    return _read((_folder(anchor) / name).resolve())


def render_prompt(template: str, **variables: Any) -> str:
    """Render template text with the package's environment; a missing variable names itself."""
    try:
        return ENVIRONMENT.from_string(template).render(**variables)
    except jinja2.UndefinedError as exc:
        raise PromptError(f"prompt: needs a variable: {exc.message}") from None
