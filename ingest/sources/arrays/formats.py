"""What the ``arrays`` source reads, and how a failed read is reported.

The names shared by :mod:`.listing`, :mod:`.headers` and :mod:`.files`: the file
suffixes read as arrays, the variable of a single-array file, and the context managers
and error builders that turn storage, zip and numpy failures into the platform's
errors (:class:`SchemaError`, :class:`SourceNotFoundError`) naming the file.
"""

from __future__ import annotations

import contextlib
import posixpath
import zipfile
import zlib
from collections.abc import Iterator
from typing import Any

from cubes.errors import CubeError, SchemaError, SourceNotFoundError
from cubes.store import storage_errors

__all__ = [
    "ARRAY_SUFFIXES",
    "DATA_VARIABLE",
    "REFUSED",
    "object_dtype_error",
    "reading",
    "suffix",
    "zip_errors",
]

DATA_VARIABLE = "data"
"""The variable of a ``.npy`` file or of a ``.pt`` file holding one tensor."""

ARRAY_SUFFIXES = (".npy", ".npz", ".pt", ".pth")
"""File name endings read as arrays (case-insensitive); other files are ignored."""

REFUSED = "refused, not executed"
"""How a message says that a file needing arbitrary unpickling was not loaded."""


def suffix(url: str) -> str:
    """The lower-cased file name ending of ``url`` (``".npz"``), or ``""``."""
    return posixpath.splitext(url.replace("\\", "/"))[1].lower()


def object_dtype_error(where: str) -> SchemaError:
    """The refusal of an array of Python objects (``dtype=object``) at ``where``."""
    return SchemaError(
        f"{where} holds Python objects (dtype=object), which need unpickling: {REFUSED}. "
        "Store numeric or fixed-width string arrays (e.g. arr.astype('U') or a numeric dtype)."
    )


@contextlib.contextmanager
def zip_errors(url: str) -> Iterator[None]:
    """A truncated or damaged .npz becomes a :class:`SchemaError` naming it."""
    try:
        yield
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise SchemaError(
            f"{url} is not a readable .npz archive ({exc}). Is it truncated (an interrupted "
            "copy)? Copy or write it again with numpy.savez, or remove it."
        ) from exc


@contextlib.contextmanager
def reading(url: str, storage_options: dict[str, Any] | None) -> Iterator[None]:
    """Storage errors as the platform's errors; a missing file as :class:`SourceNotFoundError`."""
    try:
        with storage_errors(url, storage_options):
            yield
    except CubeError:
        raise
    except FileNotFoundError as exc:
        raise SourceNotFoundError(
            f"{url} does not exist (was it removed since SRC was listed?). List SRC again."
        ) from exc
