"""``Checkpoints``: training checkpoints and a metrics log, on local disk or S3.

Layout under the URL::

    step-000000120/model.pt, optimizer.pt, loader.json, extra.json, manifest.json
    step-000000240/...
    latest                      {"step": 240, "prefix": "step-000000240"}
    metrics/000001.jsonl        one JSON object per line, in segments

A step prefix is immutable. Its ``manifest.json`` (sizes, sha256) is written
after its files and ``latest`` after the manifest, each in one PUT (atomic on
S3; write-then-rename locally): a ``kill -9`` at any moment leaves the previous
``latest`` and its step whole. Nothing is deleted before the new state is in
place (``torch.distributed.checkpoint`` on S3 deletes its marker, then renames).

The metrics log: S3 has no append, so each :meth:`Checkpoints.log` rewrites its
segment whole, in one PUT. A segment holds at most ``segment_lines`` lines, so a
call costs a bounded PUT (not the whole history), and a kill loses at most the
line being logged. Each process starts a new segment: runs never overwrite.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import logging
import os
import re
import uuid
import warnings
from collections.abc import Mapping
from typing import Any, Protocol

import torch

import cubes
from cubes.errors import CubeExistsError, SchemaError, SourceNotFoundError, StorageError
from cubes.store import (
    check_location,
    filesystem,
    is_local,
    join_url,
    resolve_storage_options,
    storage_errors,
    translate_storage_error,
)

__all__ = ["Checkpoints", "DamagedCheckpointWarning"]

logger = logging.getLogger(__name__)

FORMAT = 1
_STEP = re.compile(r"^step-(\d+)$")
_SEGMENT = re.compile(r"^(\d+)\.jsonl$")


class DamagedCheckpointWarning(UserWarning):
    """The checkpoint ``latest`` names is damaged or incomplete; an older one was loaded."""


class Stateful(Protocol):
    """Anything with ``state_dict()`` / ``load_state_dict()`` (modules, optimizers, loaders)."""

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> Any: ...


class _Damaged(Exception):
    """A step that is not whole; ``missing`` when a file is absent (not just different)."""

    def __init__(self, reason: str, *, missing: bool) -> None:
        super().__init__(reason)
        self.missing = missing


def _prefix(step: int) -> str:
    return f"step-{step:09d}"


def _torch_bytes(obj: Stateful) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj.state_dict(), buffer)
    return buffer.getvalue()


def _json_value(value: Any) -> Any:
    """Scalars of torch and numpy (``loss.item()`` forgotten) as Python numbers."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _json_bytes(value: Any, what: str) -> bytes:
    try:
        return json.dumps(value, default=_json_value, sort_keys=True).encode()
    except (TypeError, ValueError) as exc:
        raise SchemaError(
            f"Cannot write {what} as JSON ({exc}). Give plain numbers, strings, lists and dicts."
        ) from exc


class Checkpoints:
    """Save and restore model, optimizer and loader position under one URL.

    Parameters
    ----------
    url
        Local path, ``file://`` or ``s3://bucket/prefix``.
    keep_last
        Keep this many complete steps (the newest); ``None`` keeps all.
    storage_options, endpoint_url, anon
        As in :func:`cubes.store.resolve_storage_options` (default: the
        standard AWS variables and files).

    Raises
    ------
    StorageError, SourceNotFoundError
        The endpoint or bucket cannot be used.

    Examples
    --------
    >>> ckpt = Checkpoints("s3://bucket/runs/r1", keep_last=3)  # doctest: +SKIP
    >>> resumed = ckpt.load_latest(model=model, optimizer=opt, loader=loader)  # doctest: +SKIP
    >>> start = resumed["step"] + 1 if resumed else 0  # doctest: +SKIP
    >>> ckpt.save(step, model=model, optimizer=opt, loader=loader)  # doctest: +SKIP
    >>> ckpt.log(step=step, loss=loss.item())  # doctest: +SKIP
    """

    segment_lines = 1000

    def __init__(
        self,
        url: str,
        *,
        keep_last: int | None = None,
        storage_options: dict[str, Any] | None = None,
        endpoint_url: str | None = None,
        anon: bool | None = None,
    ) -> None:
        if keep_last is not None and (not isinstance(keep_last, int) or keep_last < 1):
            raise SchemaError(f"keep_last={keep_last!r}: give a count of steps >= 1, or None.")
        self.url = url.rstrip("/") if not is_local(url) else url
        self.keep_last = keep_last
        self.storage_options = resolve_storage_options(
            url, storage_options, endpoint_url=endpoint_url, anon=anon
        )
        self.fs, self._root = filesystem(url, self.storage_options)
        check_location(url, self.storage_options)
        self._segment: int | None = None
        self._lines: list[str] = []

    # --- storage ------------------------------------------------------------------------

    def _where(self, name: str) -> str:
        return join_url(self.url, name)

    def _path(self, name: str) -> str:
        return f"{self._root}/{name}" if name else self._root

    def _put(self, name: str, data: bytes) -> None:
        """One atomic write: a single PUT on S3, write-then-rename on local disk."""
        path = self._path(name)
        with storage_errors(self._where(name), self.storage_options):
            if not is_local(self.url):
                self.fs.pipe_file(path, data)
                return
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{uuid.uuid4().hex}"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)

    def _get(self, name: str) -> bytes | None:
        """The bytes of ``name``, or ``None`` when it does not exist (a missing bucket raises)."""
        where = self._where(name)
        with storage_errors(where, self.storage_options):
            try:
                data: bytes = self.fs.cat_file(self._path(name))
                return data
            except FileNotFoundError as exc:
                if translate_storage_error(exc, where, self.storage_options) is not None:
                    raise
                return None

    def _files(self, under: str = "") -> list[str]:
        """Every object below the URL (or its folder ``under``), relative to the URL."""
        with storage_errors(self._where(under), self.storage_options):
            self.fs.invalidate_cache(self._root)
            try:
                found = self.fs.find(self._path(under))
            except FileNotFoundError:
                return []
        start = len(self._root.rstrip("/")) + 1
        return [str(p)[start:] for p in found]

    def _remove(self, prefix: str) -> None:
        with storage_errors(self._where(prefix), self.storage_options):
            self.fs.rm(self._path(prefix), recursive=True)

    def _prefixes(self) -> dict[int, bool]:
        """Step number → whether its prefix is complete (has a manifest)."""
        out: dict[int, bool] = {}
        for name in self._files():
            head, _, rest = name.partition("/")
            match = _STEP.match(head)
            if match:
                step = int(match.group(1))
                out[step] = out.get(step, False) or rest == "manifest.json"
        return out

    # --- saving -------------------------------------------------------------------------

    def save(
        self,
        step: int,
        *,
        model: Stateful | None = None,
        optimizer: Stateful | None = None,
        loader: Stateful | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        """Write step ``step``, then point ``latest`` at it; apply ``keep_last``.

        Parameters
        ----------
        step
            Training step (>= 0); names the prefix ``step-000000123``.
        model, optimizer, loader
            ``torch.save`` of the model's and optimizer's ``state_dict()``; the
            loader's (a :class:`~loaders.loader.CubeLoader` or its dataset) as JSON.
        extra
            JSON-able values (epoch, best score …), returned by the loads.

        Returns
        -------
        str
            The URL of the step prefix.

        Raises
        ------
        CubeExistsError
            Step ``step`` is already saved (checkpoints are immutable).
        SchemaError
            ``step`` is not an integer >= 0, or ``extra`` is not JSON-able.
        """
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise SchemaError(f"step={step!r}: give the training step as an integer >= 0.")
        # Every file in memory first: nothing is written if one cannot be made.
        torch_objects = {"model.pt": model, "optimizer.pt": optimizer}
        files = {n: _torch_bytes(o) for n, o in torch_objects.items() if o is not None}
        if loader is not None:
            files["loader.json"] = _json_bytes(loader.state_dict(), "the loader state")
        if extra is not None:
            files["extra.json"] = _json_bytes(dict(extra), "extra")
        prefix = _prefix(step)
        self._clear_unfinished(step, prefix)
        for name, data in files.items():
            self._put(f"{prefix}/{name}", data)
        self._put(f"{prefix}/manifest.json", self._manifest(step, files))
        self._put("latest", _json_bytes({"step": step, "prefix": prefix}, "latest"))
        logger.info("Saved checkpoint step %d at %s", step, self._where(prefix))
        if self.keep_last is not None:
            self._retain(step)
        return self._where(prefix)

    def _manifest(self, step: int, files: Mapping[str, bytes]) -> bytes:
        manifest = {
            "format": FORMAT,
            "step": step,
            "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "software": {"cellcubes": cubes.__version__, "torch": torch.__version__},
            "files": {
                name: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                for name, data in files.items()
            },
        }
        return _json_bytes(manifest, "the manifest")

    def _clear_unfinished(self, step: int, prefix: str) -> None:
        """Refuse a committed step; remove what an interrupted save of it left.

        A step is committed once ``latest`` names it or a later step. A complete
        step after ``latest`` (killed before ``latest`` was written) was never
        loaded by anyone: the resumed run that reaches it again replaces it.
        """
        if self._get(f"{prefix}/manifest.json") is not None:
            latest = self.latest_step()
            if latest is None or step <= latest:
                raise CubeExistsError(
                    f"Checkpoint step {step} already exists at {self._where(prefix)}; "
                    "checkpoints are immutable. Save under another step, or delete it first."
                )
        if self._files(prefix):
            logger.info("Removing the unfinished save at %s", self._where(prefix))
            self._remove(prefix)

    def _retain(self, latest: int) -> None:
        """Keep the newest ``keep_last`` complete steps up to ``latest``; drop the rest."""
        prefixes = self._prefixes()
        complete = sorted(s for s, done in prefixes.items() if done and s <= latest)
        keep = set(complete[-(self.keep_last or len(complete)) :]) | {latest}
        for step in sorted(prefixes):
            if step in keep or step > latest:
                continue
            logger.info("Removing checkpoint step %d (keep_last=%s)", step, self.keep_last)
            self._remove(_prefix(step))

    # --- loading ------------------------------------------------------------------------

    def steps(self) -> list[int]:
        """The steps with a manifest (complete saves; verified when loaded), oldest first."""
        return sorted(s for s, done in self._prefixes().items() if done)

    def latest_step(self) -> int | None:
        """The step ``latest`` names (``None`` if there is none, or it is unreadable)."""
        raw = self._get("latest")
        if raw is None:
            return None
        try:
            pointer = json.loads(raw)
            step = pointer["step"]
            if not isinstance(step, int) or pointer.get("prefix") != _prefix(step):
                raise ValueError(pointer)
        except (ValueError, KeyError, TypeError):
            why = f"{self._where('latest')} is unreadable; using the newest complete step."
            warnings.warn(why, DamagedCheckpointWarning, stacklevel=3)
            return None
        return step

    def load_latest(
        self,
        *,
        model: Stateful | None = None,
        optimizer: Stateful | None = None,
        loader: Stateful | None = None,
        map_location: Any = "cpu",
    ) -> dict[str, Any] | None:
        """Restore the step ``latest`` names into the objects given.

        If that step is damaged (a file missing, or unlike its manifest), the
        newest older whole step is loaded, with a :class:`DamagedCheckpointWarning`.

        Parameters
        ----------
        model, optimizer, loader
            Their ``load_state_dict`` receives the saved states; the loader's
            first, so a refused loader state leaves the others untouched.
        map_location
            Passed to ``torch.load``.

        Returns
        -------
        dict or None
            ``{"step": int, "extra": dict | None}``; ``None`` when nothing was saved yet.

        Raises
        ------
        SchemaError
            The loader state is of another cube or dataset configuration (the
            message names what differs), or the checkpoint lacks a state asked for.
        SourceNotFoundError
            Checkpoints exist, but none is whole.
        """
        latest = self.latest_step()
        complete = self.steps()
        candidates = [] if latest is None else [latest]
        candidates += [s for s in reversed(complete) if latest is None or s < latest]
        if not candidates:
            return None
        reasons = []
        for step in candidates:
            try:
                files = self._read_step(step)
            except _Damaged as exc:
                reasons.append(f"step {step}: {exc}")
                continue
            if step != latest:
                warnings.warn(
                    f"Checkpoint {self.url}: {'; '.join(reasons) or 'no readable latest'}. "
                    f"Loading step {step} instead.",
                    DamagedCheckpointWarning,
                    stacklevel=2,
                )
            return self._restore(step, files, (loader, model, optimizer), map_location)
        raise SourceNotFoundError(
            f"No whole checkpoint at {self.url}: {'; '.join(reasons)}. Restore the files, or "
            "start afresh in another location."
        )

    def load(
        self,
        step: int,
        *,
        model: Stateful | None = None,
        optimizer: Stateful | None = None,
        loader: Stateful | None = None,
        map_location: Any = "cpu",
    ) -> dict[str, Any]:
        """Restore step ``step`` (see :meth:`load_latest`), without fallback.

        Raises :class:`SourceNotFoundError` if the step or a file of it is missing,
        :class:`StorageError` if a file does not match its manifest.
        """
        try:
            files = self._read_step(step)
        except _Damaged as exc:
            where = self._where(_prefix(step))
            if exc.missing:
                raise SourceNotFoundError(
                    f"No whole checkpoint step {step} at {where}: {exc}. Saved steps: "
                    f"{self.steps()}."
                ) from None
            raise StorageError(
                f"Checkpoint step {step} at {where} is damaged: {exc}. Load another step."
            ) from None
        return self._restore(step, files, (loader, model, optimizer), map_location)

    def _read_step(self, step: int) -> dict[str, bytes]:
        """The files of step ``step``, checked against its manifest; :class:`_Damaged` if not."""
        prefix = _prefix(step)
        raw = self._get(f"{prefix}/manifest.json")
        if raw is None:
            raise _Damaged("no manifest.json (the save did not finish)", missing=True)
        try:
            manifest = json.loads(raw)
            entries = {n: (int(e["size"]), str(e["sha256"])) for n, e in manifest["files"].items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            raise _Damaged("manifest.json is unreadable", missing=False) from None
        files: dict[str, bytes] = {}
        for name, (size, digest) in entries.items():
            data = self._get(f"{prefix}/{name}")
            if data is None:
                raise _Damaged(f"{name} is missing", missing=True)
            if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
                why = f"{name} has {len(data)} bytes, not the {size} with the sha256 recorded"
                raise _Damaged(why, missing=False)
            files[name] = data
        return files

    def _restore(
        self, step: int, files: Mapping[str, bytes], objects: tuple[Any, ...], map_location: Any
    ) -> dict[str, Any]:
        """Load ``(loader, model, optimizer)``; the loader state first (checked, then set)."""
        where = self._where(_prefix(step))
        loader, model, optimizer = objects
        wanted = dict(zip(("loader.json", "model.pt", "optimizer.pt"), objects, strict=True))
        absent = [name for name, obj in wanted.items() if obj is not None and name not in files]
        if absent:
            raise SchemaError(
                f"Checkpoint {where} holds no {', '.join(absent)}: do not ask for it."
            )
        if loader is not None:
            try:
                loader.load_state_dict(json.loads(files["loader.json"]))
            except SchemaError as exc:
                raise SchemaError(f"Checkpoint {where}/loader.json: {exc}") from exc
        for name, obj in (("model.pt", model), ("optimizer.pt", optimizer)):
            if obj is not None:
                buffer = io.BytesIO(files[name])
                obj.load_state_dict(torch.load(buffer, map_location=map_location))
        extra = json.loads(files["extra.json"]) if "extra.json" in files else None
        logger.info("Loaded checkpoint step %d from %s", step, where)
        return {"step": step, "extra": extra}

    # --- metrics log --------------------------------------------------------------------

    def log(self, **metrics: Any) -> None:
        """Append one JSON line (``metrics``) to the log; durable when this returns.

        Examples
        --------
        >>> ckpt.log(step=10, loss=0.25, lr=1e-3)  # doctest: +SKIP
        """
        line = _json_bytes(metrics, "the metrics").decode()
        if self._segment is None or len(self._lines) >= self.segment_lines:
            self._segment = (self._segment or max(self._segments(), default=0)) + 1
            self._lines = []
        self._lines.append(line)
        self._put(
            f"metrics/{self._segment:06d}.jsonl", "".join(f"{x}\n" for x in self._lines).encode()
        )

    def _segments(self) -> list[int]:
        names = [n.removeprefix("metrics/") for n in self._files("metrics")]
        return sorted(int(m.group(1)) for m in map(_SEGMENT.match, names) if m)

    def read_log(self) -> list[dict[str, Any]]:
        """Every logged line, oldest first, across runs (a dead run's last lines included)."""
        out: list[dict[str, Any]] = []
        for segment in self._segments():
            raw = self._get(f"metrics/{segment:06d}.jsonl") or b""
            out += [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
        return out
