"""From what a user types (`search-selfplay`, `my_recipe.py:build`) to a Recipe."""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

from agentplay.recipe import Recipe

__all__ = ["load_recipe"]


def load_recipe(ref: str, *, model: str | None = None, options: dict[str, Any] | None = None) -> tuple[Recipe, bool]:
    """(recipe, model_applied): a built-in name or ``path/to/file.py:attr`` (a Recipe or a build fn).

    `model` and `options` go to the build function; `model_applied` is False when
    `ref` names a ready Recipe, so the caller must override role models itself.
    """
    options = dict(options or {})
    if ":" in ref and ref.split(":", 1)[0].endswith(".py"):
        path_s, attr = ref.rsplit(":", 1)
        target = _attr_from_file(Path(path_s), attr)
    elif ref.endswith(".py"):
        raise ValueError(f"recipe: {ref!r} names a file but no attribute; write {ref}:build (or :recipe)")
    else:
        from agentplay.graphs import get_recipe_builder

        target = get_recipe_builder(ref)
    if isinstance(target, Recipe):
        if options:
            raise ValueError(f"recipe: {ref!r} is a ready Recipe; --set options need a build function")
        return target, False
    if not callable(target):
        raise TypeError(f"recipe: {ref!r} is a {type(target).__name__}, expected a Recipe or a build function")
    if model is not None:
        options["model"] = model
    try:
        inspect.signature(target).bind(**options)
    except TypeError as exc:
        raise ValueError(f"recipe: options do not fit {ref!r}: {exc}") from None
    recipe = target(**options)
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe: {ref!r} returned {type(recipe).__name__}, expected a Recipe")
    return recipe, True


def _attr_from_file(path: Path, attr: str) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"recipe: no file {path}")
    # the file's folder goes on sys.path (and stays: build fns and Ray workers import lazily),
    # so a recipe file can import its sibling modules as a script run from there would
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = f"agentplay_user_recipe_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    if not hasattr(module, attr):
        public = ", ".join(n for n in vars(module) if not n.startswith("_"))
        raise AttributeError(f"recipe: {path} has no attribute {attr!r} (it defines: {public})")
    return getattr(module, attr)
