"""Error classes. Every user-facing input problem is a `ModfuseError` (a ``ValueError``)."""

from __future__ import annotations

__all__ = ["IncompatibleError", "InputTypeError", "MissingExtraError", "ModfuseError", "ReadError"]


class ModfuseError(ValueError):
    """Bad input: names the modality, the sample id where known, and expected versus found.

    Args:
        message: what is wrong.
        modality: the modality concerned, if any.
        sample_id: the sample concerned, if any.
    """

    def __init__(self, message: str, *, modality: str | None = None, sample_id: object | None = None) -> None:
        self.message = message
        self.modality = modality
        self.sample_id = sample_id
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.modality is not None:
            where.append(f"modality {self.modality!r}")
        if self.sample_id is not None:
            where.append(f"sample {self.sample_id!r}")
        return f"[{', '.join(where)}] {self.message}" if where else self.message

    def located(self, *, modality: str | None = None, sample_id: object | None = None) -> ModfuseError:
        """Return a copy of this error with the location filled in where it was unknown."""
        return type(self)(
            self.message,
            modality=self.modality if self.modality is not None else modality,
            sample_id=self.sample_id if self.sample_id is not None else sample_id,
        )


class IncompatibleError(ModfuseError):
    """Models or blocks that cannot be combined (different latent shapes, tasks, ...)."""


class InputTypeError(ModfuseError, TypeError):
    """Input of a type that cannot be read as numbers (a ``TypeError`` as well, as NumPy's)."""


class ReadError(ModfuseError):
    """A file or record could not be read. ``path`` names the file."""

    def __init__(
        self,
        message: str,
        *,
        path: object | None = None,
        modality: str | None = None,
        sample_id: object | None = None,
    ) -> None:
        self.path = path
        super().__init__(message, modality=modality, sample_id=sample_id)

    def _format(self) -> str:
        base = super()._format()
        return f"{base} (file: {self.path})" if self.path is not None else base

    def located(self, *, modality: str | None = None, sample_id: object | None = None) -> ReadError:
        return ReadError(
            self.message,
            path=self.path,
            modality=self.modality if self.modality is not None else modality,
            sample_id=self.sample_id if self.sample_id is not None else sample_id,
        )


class MissingExtraError(ImportError):
    """A feature needs an optional dependency that is not installed."""
