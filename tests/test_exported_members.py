"""The public surface, pinned: adding, removing or renaming an exported name is a decision,
made by editing `PUBLIC` here in the same change (as httpx's tests/test_exported_members.py).

Also pinned: every exception agentplay defines derives from `AgentplayError`; the package
ships `py.typed`; benches and tests import a name from its public home when it has one.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import types
from pathlib import Path

import pytest

import agentplay
from agentplay.errors import AgentplayError

ROOT = Path(__file__).resolve().parents[1]
MAPPED = ["graphs", "tools", "sandbox", "trainers"]
"""Top-level folders pyproject maps into the `agentplay` package."""

PUBLIC: dict[str, list[str]] = {
    "agentplay": [
        "Advantage", "AgentplayError", "CompiledRecipe", "EpisodeContext", "EpisodeView", "Executor",
        "ExecutorError", "GroupBy", "InfrastructureError", "LocalExecutor", "RayConfig", "RayExecutor",
        "Recipe", "RecipeError", "RecipeRef", "RewardGroup", "Role", "RunConfig", "RunSummary", "SampleFilter",
        "ToolRunner", "__version__", "close_models", "current_episode", "load_recipe", "override_models",
        "register_model", "resolve_model", "run_episode", "run_recipe"
    ],
    "agentplay.cli": [
        "app", "main"
    ],
    "agentplay.errors": [
        "AgentplayError", "InfrastructureError"
    ],
    "agentplay.games": [
        "FixedPolicy", "GAMES", "Game", "IllegalMove", "KuhnPoker", "KuhnState", "Match", "MoveRecord",
        "Negotiation", "NegotiationState", "Offer", "Outcome", "Policy", "RandomPolicy", "TicTacToe",
        "TicTacToeState", "parse_move"
    ],
    "agentplay.graphs": [
        "RECIPES", "get_recipe_builder"
    ],
    "agentplay.models": [
        "AgentplayChatModel", "ChatModel", "ChatResult", "Choice", "DEFAULT_MODEL_SPEC", "EndpointPool",
        "FinishReason", "LocalModel", "Message", "MissingModelPackageError", "ModelConfig", "ModelServerError",
        "ModelSpecError", "NoLiveEndpointError", "OpenAIModel", "SamplingParams", "SamplingRecord", "TextDelta",
        "ToolCall", "ToolCallParseFailure", "TopLogprob", "UpdatableModel", "Usage", "create_app",
        "default_model_dir", "load_model", "local_model_dir", "parse_model_spec"
    ],
    "agentplay.prompts": [
        "ENVIRONMENT", "PromptError", "load_prompt", "render_prompt"
    ],
    "agentplay.recipe": [
        "CompiledRecipe", "EpisodeRewardFn", "EpisodeView", "GroupBy", "GroupRewardFn", "Recipe", "RecipeError",
        "RewardFn", "RewardGroup"
    ],
    "agentplay.rewards": [
        "JudgeMode", "bleu_cluster_penalty", "bleu_clusters", "bleu_distance", "exact_match", "extract_number",
        "format_check", "learnability", "llm_judge", "majority_vote", "ngram_jaccard", "normalize_answer",
        "numeric_match", "parse_score", "parse_yes_no", "r_zero_uncertainty", "repetition_penalty",
        "uncertainty"
    ],
    "agentplay.roles": [
        "Role"
    ],
    "agentplay.runner": [
        "RewardFailedError", "RunConfig", "RunHealthError", "RunSummary", "episode_seeds", "run_recipe"
    ],
    "agentplay.sandbox": [
        "BackendCheck", "Limits", "Sandbox", "SandboxConfig", "SandboxError", "SandboxResult",
        "SandboxUnavailable", "Status", "build_image", "diagnose", "open_sandbox"
    ],
    "agentplay.tools": [
        "CodeTool", "CorpusIndex", "Document", "FunctionTool", "Hit", "LangChainTool", "MAX_K",
        "ReadDocumentTool", "RetrieveClient", "RetrieverServer", "SandboxedFunction", "SearchMode",
        "SearchTool", "Tool", "ToolError", "ToolServerMisconfigured", "ToolServerUnavailable", "Toolbox", "WebSearchTool", "default_corpus_index", "format_hits", "format_result",
        "load_documents", "parse_hits", "retriever_app", "serve_retriever", "stdlib_documents", "tool"
    ],
    "agentplay.traces": [
        "DuplicateEpisode", "Episode", "EpisodeStatus", "Generation", "MetricPoint", "RewardRecord", "RoleTurn",
        "RunInfo", "RunStatus", "SCHEMA_VERSION", "StoreError", "ToolCallRecord", "TraceStore", "new_id",
        "turn_rows"
    ],
    "agentplay.trainers": [
        "AdvantageStats", "CheckpointState", "GRPOLearner", "IterationVersions", "LossType", "MicroBatch",
        "NothingToTrainError", "SelfPlayTrainer", "TrainConfig", "TrainError", "TrainSample", "TrainSummary",
        "WeightSyncError", "checkpoint_history", "compute_advantages", "latest_checkpoint",
        "make_micro_batches", "rollout_run_id", "save_adapter", "sync_weights", "train", "version_history"
    ],
    "agentplay.ui": [
        "Chart", "ChartSet", "ReportResult", "Series", "SeriesCache", "create_app", "distinct_n", "write_report"
    ],
}
"""Every public module -> its `__all__`, sorted. Change a list only on purpose, in the same commit."""


def _package_modules() -> list[str]:
    """Every module of the package, private ones included (for the exception check)."""
    names = ["agentplay"]
    for pkg in ["agentplay", *(f"agentplay.{m}" for m in MAPPED)]:
        mod = importlib.import_module(pkg)
        names += [pkg] + [m.name for m in pkgutil.walk_packages(mod.__path__, f"{pkg}.")]
    return sorted(n for n in set(names) if not n.endswith("__main__"))  # a __main__ runs the CLI


def test_every_public_module_is_pinned():
    found = {"agentplay", *(f"agentplay.{m}" for m in MAPPED)}
    found |= {f"agentplay.{m.name}" for m in pkgutil.iter_modules(agentplay.__path__) if not m.name.startswith("_")}
    assert found == set(PUBLIC), "a public module appeared or went: add or remove it in PUBLIC"


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_exported_names_are_the_pinned_ones(module):
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == PUBLIC[module], f"{module}.__all__ changed: update PUBLIC if that is intended"
    assert len(set(mod.__all__)) == len(mod.__all__)
    assert [n for n in mod.__all__ if not hasattr(mod, n)] == []
    if Path(mod.__file__).name == "__init__.py":
        # a package re-exports on purpose: an agentplay class or function in its namespace is exported
        stray = [k for k, v in vars(mod).items() if not k.startswith("_") and not isinstance(v, types.ModuleType)
                 and (inspect.isclass(v) or inspect.isfunction(v))
                 and getattr(v, "__module__", "").startswith("agentplay") and k not in mod.__all__]
        assert stray == [], f"{module} holds unexported names {stray}: export them or import them privately"


def test_every_agentplay_exception_derives_from_agentplay_error():
    errors = {}
    for name in _package_modules():
        for obj in vars(importlib.import_module(name)).values():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__.startswith("agentplay"):
                errors[f"{obj.__module__}.{obj.__qualname__}"] = obj
    assert len(errors) >= 15  # the walk found the package's exceptions
    assert [n for n, e in errors.items() if not issubclass(e, AgentplayError)] == []
    # ... and each kept the builtin it used to be, so existing `except ValueError:` still catch it
    from agentplay.models import ModelSpecError, NoLiveEndpointError
    from agentplay.sandbox import SandboxError
    from agentplay.trainers import TrainError

    assert issubclass(agentplay.RecipeError, ValueError) and issubclass(ModelSpecError, ValueError)
    assert all(issubclass(e, RuntimeError) for e in (NoLiveEndpointError, SandboxError, TrainError))


def test_the_package_is_marked_typed():
    assert (Path(agentplay.__file__).parent / "py.typed").is_file()  # the wheel test checks it ships


def _private_imports_with_a_public_home(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("agentplay")):
            continue
        parts = node.module.split(".")
        private = [i for i, p in enumerate(parts) if p.startswith("_")]
        if not private:
            continue
        home = ".".join(parts[: private[0]])
        public = set(getattr(importlib.import_module(home), "__all__", []))
        found += [f"{path.name}:{node.lineno}: {a.name} from {home}" for a in node.names if a.name in public]
    return found


def test_benches_and_tests_import_public_names_from_their_public_home():
    files = sorted([*ROOT.glob("bench/*.py"), *ROOT.glob("tests/*.py"), *ROOT.glob("examples/**/*.py")])
    assert len(files) > 40
    assert [hit for f in files for hit in _private_imports_with_a_public_home(f)] == []
