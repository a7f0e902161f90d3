"""A recipe given as ``path/to/file.py:build`` can import the modules beside it."""

from __future__ import annotations

import sys
import textwrap

from agentplay import load_recipe

RECIPE = """
from langgraph.graph import END, START, StateGraph
from typing import TypedDict

from agentplay import GroupBy, Recipe
from shared_rewards import always_one  # a sibling module, not on sys.path before loading


class S(TypedDict, total=False):
    x: int


def build():
    graph = StateGraph(S)
    graph.add_node("act", lambda s: {})
    graph.add_edge(START, "act")
    graph.add_edge("act", END)
    return Recipe(name="sibling", graph=graph, roles={"act": "actor"}, rewards={"actor": always_one},
                  groups={"actor": GroupBy.episode()}, initial_state=lambda ctx: {})
"""


def test_a_recipe_file_imports_its_siblings(tmp_path, monkeypatch):
    folder = tmp_path / "my_recipes"
    folder.mkdir()
    (folder / "shared_rewards.py").write_text("def always_one(turn, state, episode):\n    return 1.0\n")
    (folder / "game.py").write_text(textwrap.dedent(RECIPE))
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(folder)])
    monkeypatch.delitem(sys.modules, "shared_rewards", raising=False)
    recipe, applied = load_recipe(f"{folder / 'game.py'}:build")
    assert applied and recipe.name == "sibling"
    assert recipe.rewards["actor"](None, {}, None) == 1.0
    assert sys.modules["shared_rewards"].__file__ == str(folder / "shared_rewards.py")
