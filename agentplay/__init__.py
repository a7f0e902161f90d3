"""agentplay: self-play training of tool-using LLM agents."""

from agentplay._episode import run_episode
from agentplay._recorder import EpisodeContext, current_episode
from agentplay.recipe import CompiledRecipe, EpisodeView, GroupBy, Recipe, RecipeError
from agentplay.roles import Role
from agentplay.runner import RunConfig, RunSummary, run_recipe

__version__ = "0.1.0"

__all__ = [
    "CompiledRecipe",
    "EpisodeContext",
    "EpisodeView",
    "GroupBy",
    "Recipe",
    "RecipeError",
    "Role",
    "RunConfig",
    "RunSummary",
    "__version__",
    "current_episode",
    "run_episode",
    "run_recipe",
]
