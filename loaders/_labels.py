"""The labels of a batch of :class:`~loaders.dataset.CubeBatchDataset`: where each sample is.

Each sample dim's coordinate values under the dim's name (a plate's ``well``
names and ``field`` numbers); with a time axis ``time`` as ISO strings (per
sample, or per step of a window) and with windows ``step``, the steps'
indices; each window dim's patch origin under its name. A dim named like one
of the batch's own keys gets a suffix (``sample_label``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from loaders._samples import CubeInfo
from loaders._space import Space

__all__ = ["BATCH_KEYS", "batch_labels", "iso", "window_offsets"]

BATCH_KEYS = ("inputs", "targets", "present", "padding", "cube", "sample", "stats", "step", "time")


def window_offsets(space: Space, cube: CubeInfo) -> np.ndarray:
    """A window's input then target steps, from its start, in ``cube`` (its lead in steps)."""
    w = space.windows
    assert w is not None
    return np.concatenate(
        [np.arange(w.input_steps), w.input_steps - 1 + cube.lead + np.arange(w.target_steps)]
    )


def iso(values: np.ndarray) -> list[str]:
    """Times as ISO strings (``datetime64`` or cftime); other labels as ``str``."""
    values = np.asarray(values)
    if np.issubdtype(values.dtype, np.datetime64):
        return [str(v) for v in np.datetime_as_string(values, unit="s")]
    return [v.isoformat() if hasattr(v, "isoformat") else str(v) for v in values]


def _time_labels(
    space: Space, cubes: Sequence[CubeInfo], dim: str, cube_of: np.ndarray, positions: np.ndarray
) -> dict[str, Any]:
    if space.windows is None:
        return {
            "time": [
                iso(cubes[k].labels[dim][[p]])[0]
                for k, p in zip(cube_of.tolist(), positions.tolist(), strict=True)
            ]
        }
    steps = np.stack(
        [
            p + window_offsets(space, cubes[k])
            for k, p in zip(cube_of.tolist(), positions.tolist(), strict=True)
        ]
    ).astype(np.int64)
    return {
        "step": torch.from_numpy(steps),
        "time": [
            iso(cubes[k].labels[dim][s]) for k, s in zip(cube_of.tolist(), steps, strict=True)
        ],
    }


def _values(values: list[Any]) -> Any:
    kind = np.asarray(values).dtype.kind
    if kind in "iub":
        return torch.tensor(np.asarray(values, dtype=np.int64))
    if kind == "f":
        return torch.tensor(np.asarray(values, dtype=np.float64))
    return [str(v) for v in values]


def batch_labels(
    space: Space, cubes: Sequence[CubeInfo], rows: np.ndarray, origin: np.ndarray
) -> dict[str, Any]:
    """The labels of the samples ``rows`` (sample table rows) with patches at ``origin``."""
    out: dict[str, Any] = {}
    cube_of = rows[:, 0]
    for d, dim in enumerate(space.sample_dims):
        positions = rows[:, 1 + d]
        if dim == space.layout.time_dim:
            out.update(_time_labels(space, cubes, dim, cube_of, positions))
            continue
        values = [
            cubes[k].labels[dim][p]
            for k, p in zip(cube_of.tolist(), positions.tolist(), strict=True)
        ]
        out[dim if dim not in BATCH_KEYS else f"{dim}_label"] = _values(values)
    for j, dim in enumerate(space.window):
        out[dim if dim not in BATCH_KEYS else f"{dim}_origin"] = torch.from_numpy(
            origin[:, j].copy()
        )
    return out
