"""The ``@task`` decorator, task types and their parameter schema.

A task is a function ``f(ctx, *, name: type = default, ...)``. Its keyword
parameters, type hints (``int``, ``float``, ``str``, ``bool``, ``X | None``)
and ``Annotated`` extras (``Range``, ``MaxLength``, a description string)
become the schema ``GET /api/task-types`` serves, and requests are checked
against that schema before a task is created.
"""
from __future__ import annotations

import inspect
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar, Union, overload

from .errors import InvalidParams, UnknownTaskType

#: Strings without a ``MaxLength`` are capped at this, so no request can hand
#: a task an unbounded string.
DEFAULT_MAX_LENGTH = 10_000

_TYPE_NAMES: dict[type, str] = {int: "integer", float: "number", str: "string", bool: "boolean"}


@dataclass(frozen=True)
class Range:
    """Inclusive bounds for an ``int`` or ``float`` parameter."""
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class MaxLength:
    """Longest accepted ``str`` parameter, in characters."""
    value: int


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: Any = None
    required: bool = False
    nullable: bool = False
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    description: str | None = None

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": self.type, "default": self.default,
                                  "required": self.required}
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        if self.max_length is not None:
            schema["maxLength"] = self.max_length
        if self.nullable:
            schema["nullable"] = True
        if self.description:
            schema["description"] = self.description
        return schema

    def check(self, value: Any) -> Any:
        """The value as the task will get it, or ``InvalidParams`` naming the field."""
        where = f"params.{self.name}"
        if value is None:
            if self.nullable:
                return None
            raise InvalidParams(f"{where}: must not be null")
        if self.type == "boolean":
            if not isinstance(value, bool):
                raise InvalidParams(f"{where}: must be true or false, got {_show(value)}")
            return value
        if self.type == "string":
            if not isinstance(value, str):
                raise InvalidParams(f"{where}: must be a string, got {_show(value)}")
            if self.max_length is not None and len(value) > self.max_length:
                raise InvalidParams(
                    f"{where}: must be at most {self.max_length} characters, got {len(value)}")
            return value
        return self._check_number(where, value)

    def _check_number(self, where: str, value: Any) -> Any:
        # bool is an int subclass; API.md: a boolean is never a number.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            kind = "an integer" if self.type == "integer" else "a number"
            raise InvalidParams(f"{where}: must be {kind}, got {_show(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidParams(f"{where}: must be a finite number, got {value}")
        if self.type == "integer":
            if isinstance(value, float):
                if not value.is_integer():
                    raise InvalidParams(f"{where}: must be an integer, got {value}")
                value = int(value)
        else:
            value = float(value)
        if self.minimum is not None and value < self.minimum:
            raise InvalidParams(f"{where}: must be at least {_num(self.minimum)}, got {_num(value)}")
        if self.maximum is not None and value > self.maximum:
            raise InvalidParams(f"{where}: must be at most {_num(self.maximum)}, got {_num(value)}")
        return value


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return "an array" if isinstance(value, list) else "an object"
    return repr(value)[:50]


TaskFunction = Callable[..., Any]
F = TypeVar("F", bound=TaskFunction)


@dataclass(frozen=True)
class TaskType:
    name: str
    title: str
    description: str
    func: TaskFunction
    params: dict[str, Param] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "description": self.description,
                "params": {name: p.schema() for name, p in self.params.items()}}

    def check_params(self, raw: Any) -> dict[str, Any]:
        """Every parameter, defaults filled in, or ``InvalidParams``."""
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise InvalidParams(f"params: must be an object, got {_show(raw)}")
        unknown = sorted(set(raw) - set(self.params))
        if unknown:
            expected = ", ".join(self.params) or "none"
            raise InvalidParams(f"params.{unknown[0]}: unknown parameter "
                                f"(task {self.name!r} takes: {expected})")
        checked: dict[str, Any] = {}
        for name, param in self.params.items():
            if name in raw:
                checked[name] = param.check(raw[name])
            elif param.required:
                raise InvalidParams(f"params.{name}: required")
            else:
                checked[name] = param.default
        return checked


class Registry:
    """Named task types; ``Registry.task`` is the decorator."""

    def __init__(self) -> None:
        self._types: dict[str, TaskType] = {}

    @overload
    def task(self, func: F, /) -> F: ...

    @overload
    def task(self, /, *, name: str | None = None, title: str | None = None,
             description: str | None = None) -> Callable[[F], F]: ...

    def task(self, func: Any = None, /, *, name: str | None = None,
             title: str | None = None, description: str | None = None) -> Any:
        """Register ``func`` as a task type: ``@registry.task`` or
        ``@registry.task(name=..., title=..., description=...)``."""
        def register(fn: TaskFunction) -> TaskFunction:
            task_type = build_task_type(fn, name=name, title=title, description=description)
            if task_type.name in self._types and self._types[task_type.name].func is not fn:
                raise ValueError(f"a task type named {task_type.name!r} is already registered")
            self._types[task_type.name] = task_type
            return fn
        return register(func) if func is not None else register

    def get(self, name: Any) -> TaskType:
        if not isinstance(name, str) or name not in self._types:
            known = ", ".join(sorted(self._types))
            raise UnknownTaskType(f"name: unknown task type {str(name)[:100]!r} (known: {known})")
        return self._types[name]

    def all(self) -> list[TaskType]:
        return sorted(self._types.values(), key=lambda t: t.name)


def build_task_type(func: TaskFunction, *, name: str | None = None, title: str | None = None,
                    description: str | None = None) -> TaskType:
    name = name or func.__name__
    doc = inspect.getdoc(func) or ""
    return TaskType(
        name=name,
        title=title or name.replace("_", " ").capitalize(),
        description=description or doc.split("\n\n")[0].replace("\n", " "),
        func=func,
        params=_params_of(func),
    )


def _params_of(func: TaskFunction) -> dict[str, Param]:
    signature = inspect.signature(func)
    hints = typing.get_type_hints(func, include_extras=True)
    params: dict[str, Param] = {}
    for position, parameter in enumerate(signature.parameters.values()):
        if position == 0:
            continue  # the context object
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD,
                              parameter.POSITIONAL_ONLY):
            raise TypeError(f"task {func.__name__}: parameter {parameter.name!r} must be "
                            "a plain keyword parameter")
        if parameter.name not in hints:
            raise TypeError(f"task {func.__name__}: parameter {parameter.name!r} needs a type hint")
        params[parameter.name] = _param(func.__name__, parameter, hints[parameter.name])
    return params


def _param(task_name: str, parameter: inspect.Parameter, hint: Any) -> Param:
    extras: tuple[Any, ...] = ()
    if typing.get_origin(hint) is typing.Annotated:
        hint, *rest = typing.get_args(hint)
        extras = tuple(rest)
    nullable = False
    if typing.get_origin(hint) in (Union, types.UnionType):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        nullable = len(members) < len(typing.get_args(hint))
        if len(members) != 1:
            raise TypeError(f"task {task_name}: parameter {parameter.name!r} may have one type")
        hint = members[0]
    if hint not in _TYPE_NAMES:
        raise TypeError(f"task {task_name}: parameter {parameter.name!r} has type {hint!r}; "
                        "use int, float, str or bool")
    required = parameter.default is inspect.Parameter.empty
    bounds = next((e for e in extras if isinstance(e, Range)), Range())
    max_length = next((e.value for e in extras if isinstance(e, MaxLength)), None)
    if hint is str and max_length is None:
        max_length = DEFAULT_MAX_LENGTH
    param = Param(
        name=parameter.name, type=_TYPE_NAMES[hint],
        default=None if required else parameter.default, required=required,
        nullable=nullable, minimum=bounds.minimum, maximum=bounds.maximum,
        max_length=max_length,
        description=next((e for e in extras if isinstance(e, str)), None),
    )
    if not required:
        param.check(parameter.default)  # a default outside its own bounds is a bug
    return param


#: The registry ``@task`` adds to; ``tasks.builtin`` fills it with the shipped types.
default_registry = Registry()
task = default_registry.task
