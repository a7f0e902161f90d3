"""agentplay: self-play training of tool-using LLM agents."""

from agentplay._episode import run_episode
from agentplay._recorder import EpisodeContext, current_episode
from agentplay._train_spec import Advantage, SampleFilter
from agentplay.recipe import CompiledRecipe, EpisodeView, GroupBy, Recipe, RecipeError, RewardGroup
from agentplay.roles import Role
from agentplay.runner import RunConfig, RunSummary, run_recipe

__version__ = "0.1.0"

__all__ = [
    "Advantage",
    "CompiledRecipe",
    "EpisodeContext",
    "EpisodeView",
    "GroupBy",
    "Recipe",
    "RecipeError",
    "RewardGroup",
    "Role",
    "RunConfig",
    "RunSummary",
    "SampleFilter",
    "__version__",
    "current_episode",
    "run_episode",
    "run_recipe",
]
