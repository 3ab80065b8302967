"""`mapped_on_first_use`: an attribute computed on its first read, then a plain instance attribute."""

from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class mapped_on_first_use(Generic[T]):
    """Like `functools.cached_property`, but the value is stored with ``setattr``, never through the instance's
    ``__dict__``: on CPython 3.11+, touching ``__dict__`` turns an object's attributes into a real dict and every
    later attribute read of it takes the slow path (a ragged map's ``m[i]`` cost ~35 % more instructions after its
    first padded batch had mapped the shape columns this way). A non-data descriptor, so the stored attribute
    shadows it."""

    def __init__(self, compute: Callable[[Any], T]) -> None:
        self.compute = compute
        self.name = compute.__name__
        self.__doc__ = compute.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: Any = None) -> T:
        if instance is None:
            return self  # type: ignore[return-value]
        value = self.compute(instance)
        setattr(instance, self.name, value)
        return value
