"""A small name -> factory registry with a decorator, used wherever users extend modfuse
(encoders, fusion strategies, merge methods, readers).

A registry resolves, in order:

1. a name registered with the ``@register("name")`` decorator (or ``add``);
2. a lazy entry ``"package.module:Attr"`` (imported on first use, so built-ins cost nothing
   until used) or ``"package.module"`` (a module whose import registers the name);
3. an ``importlib.metadata`` entry point of the registry's group (e.g. ``modfuse.encoders``),
   so a package declaring ``[project.entry-points."modfuse.encoders"] mine = "pkg.mod:Mine"``
   is known in every new process without being imported first;
4. where the registry has a ``base`` class, a dotted path ``"package.module.Attr"`` to a
   subclass of it (imported on demand). Registries of functions (merge methods) take no
   dotted paths: a name read from a saved model file must never reach an arbitrary function.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import Any, Generic, TypeVar, cast

from modfuse.errors import ModfuseError

__all__ = ["Registry", "import_path"]

T = TypeVar("T")


def import_path(path: str) -> Any:
    """The object at ``"pkg.mod:Attr.sub"`` or ``"pkg.mod.Attr"`` (the module is imported).

    Raises:
        ModfuseError: naming the path when the module or attribute does not exist.
    """
    if ":" in path:
        module_name, _, attr = path.partition(":")
    else:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ModfuseError(f"expected a dotted path 'package.module.Attr' or 'package.module:Attr', found {path!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModfuseError(f"cannot import {path!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ModfuseError(f"cannot import {path!r}: {module_name!r} has no attribute {attr!r}") from None
    return obj


class Registry(Generic[T]):
    """Maps names to factories (classes or functions).

    Args:
        kind: what is registered, used in error messages ("encoder", "merge method", ...).
        group: the ``importlib.metadata`` entry-point group read for names not registered in
            this process (e.g. ``"modfuse.encoders"``); None for none.
        lazy: built-in name -> ``"module:Attr"`` (the object) or ``"module"`` (a module whose
            import registers the name), imported on first use.
        base: when given, a dotted path to a subclass of ``base`` also resolves (e.g.
            ``nn.Module`` for encoders); anything else at a dotted path is refused.

    Example:
        >>> encoders = Registry("encoder")
        >>> @encoders.register("mine")
        ... class Mine: ...
    """

    def __init__(
        self, kind: str, group: str | None = None, lazy: Mapping[str, str] | None = None, base: type | None = None
    ) -> None:
        self.kind = kind
        self.group = group
        self.base = base
        self._items: dict[str, T] = {}
        self._lazy: dict[str, str] = dict(lazy or {})
        self._entry_points_read = False

    # ------------------------------------------------------------------ registering
    def register(self, name: str, *, overwrite: bool = False) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; refuses to shadow a name unless asked."""

        def decorator(obj: T) -> T:
            self.add(name, obj, overwrite=overwrite)
            return obj

        return decorator

    def add(self, name: str, obj: T, *, overwrite: bool = False) -> None:
        """Register ``obj`` as ``name`` (what the decorator does)."""
        if name in self._items and not overwrite and self._items[name] != obj:
            raise ModfuseError(
                f"a {self.kind} named {name!r} is already registered ({self._items[name]!r}); "
                "pass overwrite=True to replace it"
            )
        spec = self._lazy.get(name)
        if spec is not None and not overwrite and not self._lazy_target_is(spec, obj):
            raise ModfuseError(
                f"a {self.kind} named {name!r} is already declared ({spec!r}); pass overwrite=True to replace it"
            )
        self._lazy.pop(name, None)
        self._items[name] = obj

    def add_lazy(self, name: str, spec: str) -> None:
        """Declare ``name`` as ``"module:Attr"`` or ``"module"``, imported on first use."""
        self._lazy.setdefault(name, spec)

    @staticmethod
    def _lazy_target_is(spec: str, obj: Any) -> bool:
        # the lazily declared module registering its own object while it is being imported
        return spec.partition(":")[0] == getattr(obj, "__module__", None)

    # ------------------------------------------------------------------ resolving
    def _read_entry_points(self) -> None:
        if self._entry_points_read or self.group is None:
            return
        self._entry_points_read = True
        for ep in metadata.entry_points(group=self.group):
            if ep.name not in self._items:
                self._lazy.setdefault(ep.name, ep.value)

    def _resolve_lazy(self, name: str) -> bool:
        spec = self._lazy.get(name)
        if spec is None:
            return False
        if ":" in spec:
            obj = import_path(spec)
            self._lazy.pop(name, None)
            self._items.setdefault(name, obj)
        else:
            importlib.import_module(spec)  # registers ``name`` through the decorator
            self._lazy.pop(name, None)
        return name in self._items

    def get(self, name: str) -> T:
        """The factory registered as ``name``, declared lazily or by entry point, or at a dotted path.

        Raises:
            ModfuseError: listing the known names when ``name`` resolves to nothing.
        """
        if name in self._items:
            return self._items[name]
        if name not in self._lazy:
            self._read_entry_points()
        if self._resolve_lazy(name):
            return self._items[name]
        if self.base is not None and ("." in name or ":" in name):
            obj = import_path(name)
            if not (isinstance(obj, type) and issubclass(obj, self.base)):
                raise ModfuseError(f"{name!r} is not a {self.kind}: expected a subclass of {self.base.__qualname__}")
            return cast(T, obj)
        raise ModfuseError(
            f"unknown {self.kind} {name!r}; expected one of {self.available()}"
            + (f", a dotted path to a {self.base.__qualname__} subclass" if self.base is not None else "")
            + (f", or a name a package declares in the entry-point group {self.group!r}" if self.group else "")
        )

    def build(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call the factory registered as ``name`` with the given arguments."""
        return self.get(name)(*args, **kwargs)  # type: ignore[operator]

    def name_of(self, obj: Any) -> str | None:
        """The name ``obj`` is registered under in this process (None when it is not)."""
        return next((name for name, item in self._items.items() if item == obj), None)

    def available(self) -> list[str]:
        """Registered, lazily declared and entry-point names, sorted (nothing is imported)."""
        self._read_entry_points()
        return sorted({*self._items, *self._lazy})

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        self._read_entry_points()
        return name in self._items or name in self._lazy
