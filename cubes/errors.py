"""The errors and warnings of the platform.

Every error derives from :class:`CubeError` and from the builtin that matches
it, so that callers may catch either. Messages name the offending path or URL,
say what was expected and suggest a remedy.
"""

from __future__ import annotations

__all__ = [
    "ArgumentError",
    "CubeError",
    "CubeExistsError",
    "IncompleteCubeError",
    "IncompleteCubeWarning",
    "InvalidImageError",
    "SchemaError",
    "SourceNotFoundError",
    "StorageError",
]


class CubeError(Exception):
    """Root of every error raised on purpose by ``cubes``, ``ingest`` and ``loaders``."""


class ArgumentError(CubeError, ValueError):
    """An argument or option value that cannot be used (checked before reading or writing).

    A command-line value that does not parse, or one that does not fit what it
    names: a variable, a channel or a time a cube lacks. ``ingest.sources.base``
    names it too (``ingest.sources.ArgumentError``).
    """


class SourceNotFoundError(CubeError, FileNotFoundError):
    """A source, cube or bucket that should exist does not."""


class CubeExistsError(CubeError, FileExistsError):
    """The destination already holds data that would be overwritten."""


class SchemaError(CubeError, ValueError):
    """Input whose structure does not fit what is expected (names, shapes, dims)."""


class InvalidImageError(SchemaError):
    """An image file that cannot be read, or that does not match the plate."""


class StorageError(CubeError, OSError):
    """The storage cannot be reached, or refuses the request."""


class IncompleteCubeError(CubeError, RuntimeError):
    """A cube whose ingest has not finished (refused on request)."""


class IncompleteCubeWarning(UserWarning):
    """A cube whose ingest has not finished was opened."""
