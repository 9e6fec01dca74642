from typing import Annotated

import pytest

from tasks import Range, Registry, TaskContext
from tasks.errors import InvalidParams, UnknownTaskType
from tasks.registry import MaxLength, default_registry


def test_demo_schema_is_what_api_md_describes():
    params = default_registry.get("demo").describe()["params"]
    assert params["steps"] == {"type": "integer", "default": 20, "required": False,
                               "minimum": 1, "maximum": 1_000_000,
                               "description": "How many steps to count"}
    assert params["delay"]["type"] == "number" and params["delay"]["maximum"] == 60
    assert params["fail_at"]["nullable"] is True and params["fail_at"]["default"] is None
    assert params["message"]["maxLength"] == 200


@pytest.fixture
def sample():
    registry = Registry()

    @registry.task
    def sample(ctx: TaskContext, *, count: Annotated[int, Range(1, 10)],
               ratio: float = 0.5, name: Annotated[str, MaxLength(5)] = "x",
               flag: bool = False, maybe: int | None = None) -> None:
        """Does nothing.

        More text that is not part of the description."""

    return registry.get("sample")


def test_a_task_type_takes_its_schema_from_the_signature(sample):
    described = sample.describe()
    assert described["title"] == "Sample" and described["description"] == "Does nothing."
    assert described["params"]["count"]["required"] is True
    assert sample.check_params({"count": 3}) == {
        "count": 3, "ratio": 0.5, "name": "x", "flag": False, "maybe": None}


@pytest.mark.parametrize("params, message", [
    ({}, "params.count: required"),
    ({"count": 11}, "params.count: must be at most 10, got 11"),
    ({"count": 0}, "params.count: must be at least 1, got 0"),
    ({"count": True}, "params.count: must be an integer, got true"),
    ({"count": 2.5}, "params.count: must be an integer, got 2.5"),
    ({"count": "3"}, "params.count: must be an integer, got a string"),
    ({"count": None}, "params.count: must not be null"),
    ({"count": 1, "ratio": False}, "params.ratio: must be a number, got false"),
    ({"count": 1, "ratio": float("nan")}, "params.ratio: must be a finite number, got nan"),
    ({"count": 1, "name": "toolong"}, "params.name: must be at most 5 characters, got 7"),
    ({"count": 1, "flag": 1}, "params.flag: must be true or false, got 1"),
    ({"count": 1, "extra": 1}, "params.extra: unknown parameter"),
])
def test_bad_params_are_refused_naming_the_field(sample, params, message):
    with pytest.raises(InvalidParams) as caught:
        sample.check_params(params)
    assert caught.value.message.startswith(message)


def test_an_integer_is_a_number_and_a_whole_float_an_integer(sample):
    checked = sample.check_params({"count": 2.0, "ratio": 1, "maybe": None})
    assert checked["count"] == 2 and type(checked["count"]) is int
    assert checked["ratio"] == 1.0 and type(checked["ratio"]) is float


def test_params_must_be_an_object(sample):
    with pytest.raises(InvalidParams, match="params: must be an object"):
        sample.check_params([1])


def test_unknown_type_lists_the_known_ones():
    with pytest.raises(UnknownTaskType, match="known: demo"):
        default_registry.get("nope")


def test_a_parameter_needs_a_supported_type_hint():
    registry = Registry()
    with pytest.raises(TypeError, match="needs a type hint"):
        @registry.task
        def untyped(ctx, *, n=1):  # type: ignore[no-untyped-def]
            pass
    with pytest.raises(TypeError, match="use int, float, str or bool"):
        @registry.task
        def listy(ctx: TaskContext, *, items: list = []) -> None:  # noqa: B006
            pass


def test_a_default_outside_its_own_range_is_a_bug():
    registry = Registry()
    with pytest.raises(InvalidParams):
        @registry.task
        def bad(ctx: TaskContext, *, n: Annotated[int, Range(1, 5)] = 9) -> None:
            pass
