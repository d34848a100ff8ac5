"""A small name -> factory registry with a decorator, used wherever users extend modfuse
(encoders, fusion strategies, merge methods, readers)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from modfuse.errors import ModfuseError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories (classes or functions).

    Args:
        kind: what is registered, used in error messages ("encoder", "merge method", ...).

    Example:
        >>> encoders = Registry("encoder")
        >>> @encoders.register("mine")
        ... class Mine: ...
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, *, overwrite: bool = False) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; refuses to shadow a name unless asked."""

        def decorator(obj: T) -> T:
            if name in self._items and not overwrite and self._items[name] is not obj:
                raise ModfuseError(
                    f"a {self.kind} named {name!r} is already registered ({self._items[name]!r}); "
                    "pass overwrite=True to replace it"
                )
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """The factory registered as ``name``; the error lists the known names."""
        try:
            return self._items[name]
        except KeyError:
            raise ModfuseError(f"unknown {self.kind} {name!r}; expected one of {sorted(self._items)}") from None

    def build(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call the factory registered as ``name`` with the given arguments."""
        return self.get(name)(*args, **kwargs)  # type: ignore[operator]

    def available(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
