"""Built-in self-play recipes, one readable file each.

`RECIPES` maps the CLI names to build functions; modules are imported on first
use so that `agentplay run code-selfplay` does not pay for the search corpus.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentplay.recipe import Recipe

__all__ = ["RECIPES", "get_recipe_builder"]


def _lazy(module: str) -> Callable[..., Recipe]:
    def build(**options: Any) -> Recipe:
        return importlib.import_module(f"agentplay.graphs.{module}").build(**options)

    build.__name__ = f"build_{module}"
    build.__doc__ = f"`agentplay.graphs.{module}.build`, imported on first call."
    return build


RECIPES: dict[str, Callable[..., Recipe]] = {
    "agent0": _lazy("agent0"),
    "code-selfplay": _lazy("code_selfplay"),
    "propose-solve-judge": _lazy("propose_solve_judge"),
    "r-zero": _lazy("r_zero"),
    "search-selfplay": _lazy("search_selfplay"),
    "spice": _lazy("spice"),
    "spiral": _lazy("spiral"),
}
"""CLI name -> build(model=..., **options) -> Recipe."""


def get_recipe_builder(name: str) -> Callable[..., Recipe]:
    """The build function of a built-in recipe; the error lists the names that exist."""
    try:
        return RECIPES[name]
    except KeyError:
        raise KeyError(f"recipe: no built-in recipe {name!r}; built-ins: {', '.join(sorted(RECIPES))}"
                       " (or pass path/to/file.py:attr)") from None
