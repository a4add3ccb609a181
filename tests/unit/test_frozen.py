"""`build_frozen` makes what a frozen dataclass's own `__init__` makes, or refuses."""

import dataclasses
from dataclasses import dataclass, fields

import pytest

from reconciler.core.diagnostics import Location
from reconciler.core.frozen import build_frozen
from reconciler.core.model import Strategy, Task


def _task_values() -> dict:
    values = {field.name: None for field in fields(Task)}
    values.update(
        name="web",
        team="ops",
        machines=("m1",),
        strategy=Strategy.ONE,
        after=(),
        env=(("A", "1"),),
        idempotent=True,
        params=(),
        location=Location("tasks/ops/web.yaml", 1, 1),
        field_locations={"name": Location("tasks/ops/web.yaml", 1, 7)},
    )
    return values


def test_it_makes_the_instance_the_constructor_makes():
    values = _task_values()
    built, constructed = build_frozen(Task, **values), Task(**values)

    assert type(built) is Task
    assert built == constructed and hash(built) == hash(constructed)
    assert repr(built) == repr(constructed) and vars(built) == vars(constructed)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.name = "db"  # type: ignore[misc]


def test_a_missing_or_unknown_field_is_refused():
    values = _task_values()
    del values["field_locations"]
    with pytest.raises(TypeError, match=r"missing \['field_locations'\]"):
        build_frozen(Task, **values)
    with pytest.raises(TypeError, match=r"unknown \['colour'\]"):
        build_frozen(Task, **_task_values(), colour="red")


@dataclass(frozen=True)
class _Checked:
    value: int

    def __post_init__(self) -> None:
        if self.value < 0:
            raise ValueError("negative")


@dataclass
class _Mutable:
    value: int


@dataclass(frozen=True, slots=True)
class _Slotted:
    value: int


@dataclass(frozen=True)
class _Derived:
    value: int
    twice: int = dataclasses.field(init=False, default=0)


@pytest.mark.parametrize("cls", [_Checked, _Mutable, _Slotted, _Derived, dict])
def test_classes_it_would_not_build_alike_are_refused(cls):
    with pytest.raises(TypeError):
        build_frozen(cls, value=1)
