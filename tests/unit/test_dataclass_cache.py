"""reconciler.adapters.dataclass_cache: the methods `@dataclass` generates are compiled once and kept
across starts; a class made from cached code behaves exactly as one compiled afresh."""

from __future__ import annotations

import dataclasses
import sys

import pytest

from reconciler.adapters import dataclass_cache
from reconciler.adapters.dataclass_cache import MethodCache


@pytest.fixture
def through(monkeypatch):
    """Make `dataclasses` run its generated methods through a given cache (restored after)."""

    def use(cache: MethodCache) -> MethodCache:
        monkeypatch.setattr(dataclasses, "exec", cache.exec, raising=False)
        return cache

    return use


def make_point():
    @dataclasses.dataclass(frozen=True)
    class Point:
        x: int
        y: int = 0
        tags: tuple[str, ...] = ()

    return Point


def behaviour(cls) -> tuple:
    a, b = cls(1, 2, ("t",)), cls(1, 2, ("t",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.x = 3
    return (repr(a), a == b, hash(a) == hash(b), a == cls(2), cls(5).y)


def test_a_class_made_from_the_saved_cache_behaves_as_one_compiled_afresh(
    tmp_path, through, monkeypatch
):
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # as a plain `python` writes
    path = str(tmp_path / "cache.marshal")
    fresh = behaviour(make_point())
    first = through(MethodCache(path))
    assert behaviour(make_point()) == fresh
    assert first.added >= 5  # __init__, __repr__, __eq__, __hash__, __setattr__, ...
    first.save()
    second = through(MethodCache(path))
    assert behaviour(make_point()) == fresh
    assert second.added == 0 and second.used  # every method came from the file


def test_nothing_is_written_where_python_writes_no_bytecode(tmp_path, through, monkeypatch):
    path = tmp_path / "cache.marshal"
    cache = through(MethodCache(str(path)))
    make_point()
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    cache.save()
    assert not path.exists()


@pytest.mark.parametrize("content", [b"", b"garbage", b"\x00\x01\x02\x03" + b"x" * 40])
def test_an_unreadable_or_foreign_file_is_ignored(tmp_path, through, content):
    path = tmp_path / "cache.marshal"
    path.write_bytes(content)
    cache = through(MethodCache(str(path)))
    assert behaviour(make_point()) == behaviour(make_point())
    assert cache.added >= 5  # compiled, as without a file


def test_the_package_installs_it_before_its_modules_define_their_dataclasses():
    assert isinstance(getattr(dataclasses, "exec", None).__self__, MethodCache)
    assert dataclass_cache.default_path().endswith(
        f"dataclass-methods.{sys.implementation.cache_tag}.marshal"
    )
