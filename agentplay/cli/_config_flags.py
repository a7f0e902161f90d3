"""CLI flags generated from the pydantic config models: one source of truth for options.

`agentplay train` and `agentplay run` take their options from `TrainConfig`,
`RunConfig` and `ScaleOptions`: every field becomes `--field-name`, its docstring
the help text, its default the shown default, a `Literal` a choice list (a wrong
value names the accepted ones) and a bool a `--x/--no-x` switch. A flag that is
not given is not passed, so the model's own default applies: the CLI keeps no
second list of defaults. Adding a documented field to a config model adds the flag.

Written here because typer builds options from a function signature only; the
decorator below writes that signature from the model's fields.
"""

from __future__ import annotations

import enum
import functools
import inspect
import json
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from agentplay.errors import AgentplayError

__all__ = ["CLI_DEFAULT", "ConfigFlagError", "build_config", "config_flags", "flag_name"]

CLI_DEFAULT = "cli_default"
"""Key in a field's `json_schema_extra` for a value the CLI uses when the flag is not given
and the Python default differs (e.g. `RunConfig.store`: None in the API, traces.db on the CLI)."""


class ConfigFlagError(AgentplayError, TypeError):
    """A config field cannot become a flag (its name clashes with a hand-written option)."""


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _default_of(field: FieldInfo) -> Any:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if CLI_DEFAULT in extra:
        return extra[CLI_DEFAULT]
    if field.default_factory is not None:
        return field.default_factory()  # type: ignore[call-arg]
    return None if field.default is PydanticUndefined else field.default


def _shown(value: Any) -> str:
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def _json_parser(name: str, kind: type) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise typer.BadParameter(f"expected a JSON {kind.__name__}, got {raw!r} ({exc.msg})",
                                     param_hint=flag_name(name)) from None
        if not isinstance(value, kind):
            raise typer.BadParameter(f"expected a JSON {kind.__name__}, got {raw!r}", param_hint=flag_name(name))
        return value

    parse.__name__ = f"parse_{name}"
    return parse


def _enum_value(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def _list_parser(name: str) -> Callable[[str], Any]:
    def parse(raw: str) -> list[str]:
        raw = raw.strip()
        if raw.startswith("["):
            return _json_parser(name, list)(raw)
        return [part.strip() for part in raw.split(",") if part.strip()]

    parse.__name__ = f"parse_{name}"
    return parse


def _option(name: str, field: FieldInfo) -> tuple[inspect.Parameter, Callable[[Any], Any] | None]:
    """The typer parameter for one field (type, switch or choice, help, shown default) and the
    converter its raw string goes through (lists and JSON objects), if any."""
    inner, _ = _unwrap_optional(field.annotation)
    default = _default_of(field)
    help_text = (field.description or "").strip().replace("\n", " ")
    flag = flag_name(name)
    show = _shown(default) if default is not None else False
    kwargs: dict[str, Any] = {"help": help_text, "show_default": show}
    annotation: Any
    convert: Callable[[Any], Any] | None = None
    origin = typing.get_origin(inner)
    if inner is bool:
        annotation = bool | None
        decl: tuple[str, ...] = (f"{flag}/--no-{flag[2:]}",)
    elif origin is Literal:
        # an Enum is the choice type every typer version reads; the command gets the value back
        values = {str(v): str(v) for v in typing.get_args(inner)}
        # ignore: mypy reads only Enum("Name", ...) with literal members; these are the Literal's, at run time
        choices = enum.Enum(f"{name}_choices", values, type=str)  # type: ignore[misc]
        annotation = choices | None
        decl = (flag,)
        convert = _enum_value
    elif inner in (int, float, str, Path):
        annotation = inner | None
        decl = (flag,)
    elif origin is list or inner is list:
        annotation = str | None
        decl = (flag,)
        convert = _list_parser(name)
        kwargs["metavar"] = "A,B,..."
        kwargs["help"] = f"{help_text} (comma-separated, or a JSON list)"
    elif origin is dict or inner is dict:
        annotation = str | None
        decl = (flag,)
        convert = _json_parser(name, dict)
        kwargs["metavar"] = "JSON"
        kwargs["help"] = f"{help_text} (a JSON object)"
    else:
        raise ConfigFlagError(f"{name}: no flag for a field of type {field.annotation!r}; "
                              "give it a scalar, Literal, list or dict type, or exclude it")
    param = inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                              annotation=Annotated[annotation, typer.Option(*decl, **kwargs)])
    return param, convert


def config_flags(model: type[BaseModel], *, into: str, exclude: Iterable[str] = ()) -> Callable[..., Any]:
    """Give a typer command one flag per field of `model` (minus `exclude`).

    The command receives the flags the user gave as a dict in its parameter `into`
    (field name -> parsed value); turn it into the model with `build_config`.
    Decorators stack (one per model). A field whose flag a hand-written parameter
    already has is an error here, at import: drop the hand-written one.
    """
    skip = set(exclude)

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        own = inspect.signature(fn, eval_str=True)
        if into not in own.parameters:
            raise ConfigFlagError(f"{fn.__name__}: has no parameter {into!r} to receive the {model.__name__} flags")
        kept = [p for p in own.parameters.values() if p.name != into]
        taken = {p.name for p in kept}
        generated: list[inspect.Parameter] = []
        converters: dict[str, Callable[[Any], Any]] = {}
        for name, field in model.model_fields.items():
            if name in skip:
                continue
            if name in taken:
                raise ConfigFlagError(
                    f"{fn.__name__}: {flag_name(name)} is both a hand-written option and a {model.__name__} field; "
                    "remove the hand-written one (the field's flag is generated)")
            param, convert = _option(name, field)
            generated.append(param)
            if convert is not None:
                converters[name] = convert
        names = [p.name for p in generated]
        defaults = {n: _default_of(model.model_fields[n]) for n in names
                    if isinstance(extra := model.model_fields[n].json_schema_extra, dict)
                    and CLI_DEFAULT in extra}

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            given = {n: kwargs.pop(n) for n in names if kwargs.get(n) is not None}
            for n in names:
                kwargs.pop(n, None)
            for n, convert in converters.items():
                if n in given and (convert is _enum_value or isinstance(given[n], str)):
                    given[n] = convert(given[n])  # from the command line; Python callers may pass values
            values = defaults | given
            kwargs[into] = values
            return fn(**kwargs)

        positional = [p for p in kept if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        keyword = [p.replace(kind=p.KEYWORD_ONLY) for p in kept if p not in positional]
        command.__signature__ = own.replace(parameters=positional + keyword + generated)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in positional + keyword + generated}
        command.config_fields = {**getattr(fn, "config_fields", {}), into: model}  # type: ignore[attr-defined]
        return command

    return decorate


def build_config(model: type[BaseModel], values: dict[str, Any]) -> Any:
    """`model(**values)`; a validation error becomes a `typer.BadParameter` naming the flag."""
    try:
        return model(**values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"]]
            where = flag_name(loc[0]) + (f"[{']['.join(loc[1:])}]" if len(loc) > 1 else "") if loc else model.__name__
            problems.append(f"{where}: {err['msg']}")
        raise typer.BadParameter("; ".join(problems)) from None
