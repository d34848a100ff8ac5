"""Optional heavy dependencies (MONAI, torchgeo, PyG, ...) are imported only when used."""

from __future__ import annotations

import importlib
from types import ModuleType

from modfuse.errors import MissingExtraError

__all__ = ["require"]


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise an error naming the ``pip install`` command that provides it.

    Args:
        module: dotted module name, e.g. ``"monai.networks.nets"``.
        extra: the modfuse extra that installs it, e.g. ``"med"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{module!r} is needed for this feature but could not be imported ({exc}). "
            f'Install it with: pip install "modfuse[{extra}]"'
        ) from exc
