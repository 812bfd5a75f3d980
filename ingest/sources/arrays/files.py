"""Whole-file reads of ``arrays`` files, and the refusals of what is not plain data.

:func:`read_file` reads every variable of one ``.npy``, ``.npz`` or ``.pt``/``.pth``
file (one GET for a remote file). Nothing is ever unpickled beyond plain data:
``np.load(allow_pickle=False)`` and ``torch.load(weights_only=True)``; a file that would
need more is refused, not executed. :func:`load_pt` and :func:`tensor_to_numpy` also
serve :mod:`.headers`, since a ``.pt`` has no header apart from its pickle.
"""

from __future__ import annotations

import contextlib
import io
import pickle
from collections.abc import Iterator, Mapping
from typing import IO, Any

import numpy as np

from cubes.errors import CubeError, SchemaError
from cubes.store import filesystem, is_local
from ingest.sources.arrays.formats import (
    DATA_VARIABLE,
    REFUSED,
    object_dtype_error,
    reading,
    suffix,
    zip_errors,
)

__all__ = ["load_pt", "open_whole", "read_file", "tensor_to_numpy"]


def read_file(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Every variable of one array file, read whole (one GET for a remote file).

    Parameters
    ----------
    url
        The file's path or URL (``.npy``, ``.npz``, ``.pt`` or ``.pth``).
    storage_options
        fsspec options for ``url``.

    Returns
    -------
    dict
        ``{variable: array}`` as stored (a batch keeps its first axis).

    Raises
    ------
    SchemaError
        The file is damaged, or would need unpickling arbitrary objects (refused, never
        executed), or a ``.pt`` holds something other than a tensor or a dict of tensors.
    SourceNotFoundError
        The file does not exist.
    CubeError
        A ``.pt`` file and no torch installed.

    Examples
    --------
    >>> read_file("s3://bkt/samples/sample_7.npz")["image"].shape  # doctest: +SKIP
    (3, 32, 32)
    """
    fs, path = filesystem(url, storage_options)
    if suffix(url) in (".pt", ".pth"):
        with reading(url, storage_options):
            tensors = load_pt(fs, path, url)
        return {key: tensor_to_numpy(value, url, key) for key, value in tensors.items()}
    with reading(url, storage_options), open_whole(fs, path, url) as fh:
        return _load_numpy(fh, url)


@contextlib.contextmanager
def open_whole(fs: Any, path: str, url: str) -> Iterator[IO[bytes]]:
    """The file itself where local; else its bytes from one GET."""
    if is_local(url):
        with open(path, "rb") as fh:
            yield fh
    else:
        yield io.BytesIO(_cat_whole(fs, path))


def _cat_whole(fs: Any, path: str) -> bytes:
    """One object in one GET: with ``max_concurrency`` > 1 s3fs would first HEAD it."""
    if getattr(fs, "max_concurrency", 1) > 1:
        return bytes(fs.cat_file(path, max_concurrency=1))
    return bytes(fs.cat_file(path))


# --- .npy / .npz -----------------------------------------------------------------------


def _load_numpy(fh: IO[bytes], url: str) -> dict[str, np.ndarray]:
    with zip_errors(url), _numpy_errors(url, None):
        loaded = np.load(fh, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return {DATA_VARIABLE: loaded}
    with loaded, zip_errors(url):
        return {key: _npz_member(loaded, key, url) for key in loaded.files}


def _npz_member(npz: Any, key: str, url: str) -> np.ndarray:
    with _numpy_errors(url, key):
        value = npz[key]
    if not isinstance(value, np.ndarray):
        raise SchemaError(
            f"{url} holds a member '{key}' that is not a .npy array. An .npz must hold only "
            "arrays (numpy.savez); remove the member or the file."
        )
    return value


@contextlib.contextmanager
def _numpy_errors(url: str, key: str | None) -> Iterator[None]:
    """``np.load``'s refusals and parse errors as :class:`SchemaError` naming the file."""
    where = url if key is None else f"{url} (member {key})"
    try:
        yield
    except ValueError as exc:
        if "Object arrays" in str(exc):
            raise object_dtype_error(where) from exc
        if "pickle" in str(exc):
            raise SchemaError(
                f"{where} is neither a .npy nor an .npz file; numpy would have to unpickle it: "
                f"{REFUSED}. Write it again with numpy.save / numpy.savez, or remove it."
            ) from exc
        raise SchemaError(
            f"{where} is not a readable .npy/.npz array ({exc}). Is it truncated? "
            "Write it again with numpy.save / numpy.savez, or remove it."
        ) from exc


# --- .pt / .pth ------------------------------------------------------------------------


def _import_torch(url: str) -> Any:
    try:
        import torch
    except ImportError as exc:
        raise CubeError(
            f"{url} is a PyTorch file, and reading it needs torch, which is not installed. "
            "Run `pip install torch`, or convert the files to .npy/.npz."
        ) from exc
    return torch


def load_pt(fs: Any, path: str, url: str) -> dict[str, Any]:
    """The tensors of a .pt file, loaded with ``weights_only=True`` (no arbitrary objects)."""
    torch = _import_torch(url)
    with open_whole(fs, path, url) as fh:
        try:
            obj = torch.load(fh, weights_only=True, map_location="cpu")
        except pickle.UnpicklingError as exc:
            if "weights only" in str(exc).lower() or "weights_only" in str(exc):
                raise SchemaError(
                    f"{url} holds objects other than tensors, containers and numbers, which "
                    f"torch.load(weights_only=True) does not unpickle: {REFUSED}. Save plain "
                    "tensors or a dict of tensors (torch.save({'image': t, ...}))."
                ) from exc
            raise _corrupt_pt(url, exc) from exc
        except (RuntimeError, EOFError, ValueError, OSError) as exc:
            raise _corrupt_pt(url, exc) from exc
    return _tensor_dict(obj, url, torch)


def _corrupt_pt(url: str, exc: BaseException) -> SchemaError:
    return SchemaError(
        f"{url} is not a readable PyTorch file ({type(exc).__name__}: {exc}). Is it truncated? "
        "Save it again with torch.save, or remove it."
    )


def _tensor_dict(obj: Any, url: str, torch: Any) -> dict[str, Any]:
    if isinstance(obj, torch.Tensor):
        return {DATA_VARIABLE: obj}
    if not isinstance(obj, Mapping):
        raise SchemaError(
            f"{url} holds a {type(obj).__name__}; a .pt file must hold a tensor or a dict of "
            "tensors. Save it again as torch.save({'name': tensor, ...})."
        )
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise SchemaError(
                f"{url} holds entry {key!r} of type {type(value).__name__}; a .pt file must "
                "hold a tensor or a dict of tensors with string keys. Convert the entry to a "
                "tensor or drop it."
            )
    return dict(obj)


def tensor_to_numpy(tensor: Any, url: str, key: str) -> np.ndarray:
    """``tensor`` (entry ``key`` of ``url``) as a NumPy array; a :class:`SchemaError` if none."""
    try:
        return np.asarray(tensor.detach().numpy(force=True))
    except (TypeError, RuntimeError) as exc:
        raise SchemaError(
            f"{url}: tensor '{key}' ({tensor.dtype}, {tensor.layout}) has no NumPy equivalent "
            f"({exc}). Convert it before saving (e.g. t.float() for bfloat16, t.to_dense())."
        ) from exc
