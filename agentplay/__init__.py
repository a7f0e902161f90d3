"""agentplay: self-play training of tool-using LLM agents."""

from agentplay._episode import run_episode
from agentplay._executors import Executor, ExecutorError, LocalExecutor, RayConfig, RayExecutor, RecipeRef
from agentplay._loading import load_recipe
from agentplay._recorder import EpisodeContext, current_episode
from agentplay._registry import close_models, override_models, register_model, resolve_model
from agentplay._role_loop import ToolRunner
from agentplay._train_spec import Advantage, SampleFilter
from agentplay.errors import AgentplayError, InfrastructureError
from agentplay.recipe import CompiledRecipe, EpisodeView, GroupBy, Recipe, RecipeError, RewardGroup
from agentplay.roles import Role
from agentplay.runner import RunConfig, RunSummary, run_recipe

__version__ = "0.1.0"

__all__ = [
    "Advantage",
    "AgentplayError",
    "CompiledRecipe",
    "EpisodeContext",
    "EpisodeView",
    "Executor",
    "ExecutorError",
    "GroupBy",
    "InfrastructureError",
    "LocalExecutor",
    "RayConfig",
    "RayExecutor",
    "Recipe",
    "RecipeError",
    "RecipeRef",
    "RewardGroup",
    "Role",
    "RunConfig",
    "RunSummary",
    "SampleFilter",
    "ToolRunner",
    "__version__",
    "close_models",
    "current_episode",
    "load_recipe",
    "override_models",
    "register_model",
    "resolve_model",
    "run_episode",
    "run_recipe",
]
