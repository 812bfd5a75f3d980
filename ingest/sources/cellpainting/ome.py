"""OME-NGFF 0.5 HCS plates (Zarr v3) from the same plan as a cube (``--ome``).

Layout: ``<row>/<column>/<field>/`` image groups, each with the multiscale
levels ``0`` ``(c, y, x)`` (the pixels; chunk = one image, shard = the field,
as in cubes) and ``1`` (the thumbnail level, 8x smaller). Plate, well and
multiscales metadata follow the 0.5 spec and validate with ``ome-zarr-models``.
Our own state (completeness, ``present``, statistics) sits under the root's
``cellcubes`` attribute; the metadata is consolidated last, so a viewer opens
a plate in one read (vizarr#118).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import zarr

from cubes import conventions as cv
from cubes.preview import COLOURS
from cubes.store import storage_errors, zarr_store
from ingest.plan import IngestPlan
from ingest.sources.cellpainting.layout import IMAGES, THUMBNAIL
from ingest.sources.cellpainting.plate import THUMBNAIL_FACTOR

__all__ = ["OmeOutput", "channel_colours", "create_ome", "finalize_ome", "ome_locator"]

OME_VERSION = "0.5"
_CONSOLIDATED_WARNING = "Consolidated metadata is currently not part in the Zarr format 3"

# The omero channel colours (hex RRGGBB) of the stains: those of `python -m cubes preview`
# (cubes.preview.COLOURS), so that a viewer shows the export as the preview does. DNA
# blue, ER green, AGP red (phalloidin) and Mito magenta as RxRx1's composites colour
# Hoechst, concanavalin A, phalloidin and MitoTracker (github.com/recursionpharma/
# rxrx1-utils, rxrx/io.py RGB_MAP); RNA yellow, where RxRx1 has SYTO 14 cyan and WGA
# yellow (AGP's red already holds the phalloidin/WGA channel). The stain is found from
# the channel's name or its dye ("HOECHST 33342", "OrigDNA", "ER/RNA": the first).
STAIN_COLOURS = {
    stain: "".join(f"{round(255 * v):02X}" for v in rgb) for stain, rgb in COLOURS.items()
}
_DYES = {
    "DNA": ("hoechst", "dapi"),
    "ER": ("cona", "concanavalin"),
    "RNA": ("syto",),
    "AGP": ("phalloidin", "wga"),
    "Mito": ("mitotracker",),
}
# Brightfield planes (Brightfield, HighZBF, LowZBF, "Brightfield High"): greys, as
# transmitted light is shown; then distinct hues for channels of other names.
BRIGHTFIELD_GREYS = ("FFFFFF", "C0C0C0", "808080")
PALETTE = ("00FFFF", "FF8000", "8000FF", "00FF80", "FF0080", "0080FF", "80FF00", "804000")


def channel_colours(names: Sequence[str]) -> list[str]:
    """omero colours (hex ``RRGGBB``) of the channels ``names``, distinct while they last.

    Known stains get their colour (:data:`STAIN_COLOURS`; a stain's second channel is
    treated as unknown), brightfield planes the greys, every other channel the first
    colour of :data:`PALETTE` (then of the stain colours and greys) that no channel
    has; only past those 16 colours do they repeat.

    Examples
    --------
    >>> channel_colours(["Mito", "DNA", "HighZBF", "Brightfield", "Actin"])
    ['FF00FF', '0000FF', 'FFFFFF', 'C0C0C0', '00FFFF']
    """
    colours: list[str | None] = [None] * len(names)
    for i, name in enumerate(names):
        stain = _stain(name)
        if stain is not None and STAIN_COLOURS[stain] not in colours:
            colours[i] = STAIN_COLOURS[stain]
    greys = [g for g in BRIGHTFIELD_GREYS if g not in colours]
    for i, name in enumerate(names):
        if colours[i] is None and _is_brightfield(name) and greys:
            colours[i] = greys.pop(0)
    every = list(dict.fromkeys([*PALETTE, *STAIN_COLOURS.values(), *BRIGHTFIELD_GREYS]))
    free = [c for c in every if c not in colours] or every
    rest = [i for i, c in enumerate(colours) if c is None]
    for k, i in enumerate(rest):
        colours[i] = free[k % len(free)]
    return [str(c) for c in colours]


def _stain(name: str) -> str | None:
    """The Cell Painting stain a channel name means, or None."""
    word = name.split("/")[0].strip().lower().removeprefix("orig")
    for stain, dyes in _DYES.items():
        if word == stain.lower() or word.startswith(dyes):
            return stain
    return None


def _is_brightfield(name: str) -> bool:
    word = name.strip().lower().removeprefix("orig")
    return "brightfield" in word or word.startswith("bf") or word.endswith("bf")


def _field_paths(plan: IngestPlan) -> dict[tuple[int, ...], str]:
    t = plan.template
    rows, cols = t["row"].values, t["column"].values
    return {
        (w, f): f"{rows[w]}/{int(cols[w])}/{f}"
        for w in range(t.sizes["well"])
        for f in range(t.sizes["field"])
    }


def ome_locator(plan: IngestPlan) -> Any:
    """Where a task's block and its derived levels go: ``(array path, selection)``."""
    return functools.partial(_locate, _field_paths(plan))


def _locate(paths: dict[tuple[int, ...], str], name: str, index: tuple[int, ...]) -> tuple:
    level = "1" if name == THUMBNAIL else "0"
    return f"{paths[index]}/{level}", ...


def create_ome(plan: IngestPlan, options: dict[str, Any], *, threads: int = 16) -> None:
    """Create the plate, well and image groups and empty arrays (no pixels)."""
    t = plan.template
    store = zarr_store(plan.dest, options, read_only=False)
    rows = sorted({str(r) for r in t["row"].values}, key=lambda r: (len(r), r))
    cols = sorted({int(c) for c in t["column"].values})
    wells = [
        {
            "path": f"{r}/{int(c)}",
            "rowIndex": rows.index(str(r)),
            "columnIndex": cols.index(int(c)),
        }
        for r, c in zip(t["row"].values, t["column"].values, strict=True)
    ]
    plate = {
        "version": OME_VERSION,
        "name": t.attrs.get("plate", "") or "plate",
        "rows": [{"name": r} for r in rows],
        "columns": [{"name": str(c)} for c in cols],
        "wells": wells,
        "field_count": t.sizes["field"],
        "acquisitions": [{"id": 0}],
    }
    ours = {cv.ATTR_KIND: "ome-ngff-hcs-plate", cv.ATTR_COMPLETE: False, **plan.attrs}
    with storage_errors(plan.dest, options):
        root = zarr.create_group(
            store,
            zarr_format=3,
            overwrite=True,
            attributes={"ome": {"version": OME_VERSION, "plate": plate}, "cellcubes": ours},
        )
        for row in rows:
            root.create_group(row)
        for well in wells:
            images = [{"path": str(f), "acquisition": 0} for f in range(t.sizes["field"])]
            root.create_group(
                str(well["path"]),
                attributes={"ome": {"version": OME_VERSION, "well": {"images": images}}},
            )
        make = functools.partial(_create_image, root, plan)
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(make, _field_paths(plan).values()))


def _create_image(root: zarr.Group, plan: IngestPlan, path: str) -> None:
    t = plan.template
    images, thumbs = t[IMAGES], t[THUMBNAIL]
    step = float(t["x"].values[1] - t["x"].values[0]) if t.sizes["x"] > 1 else 1.0
    unit = "micrometer" if t["x"].attrs.get("units") == "µm" else None
    axes: list[dict[str, Any]] = [{"name": "c", "type": "channel"}]
    axes += [{"name": d, "type": "space", **({"unit": unit} if unit else {})} for d in "yx"]
    datasets = [
        {
            "path": str(level),
            "coordinateTransformations": [{"type": "scale", "scale": [1.0, s, s]}],
        }
        for level, s in ((0, step), (1, step * THUMBNAIL_FACTOR))
    ]
    group = root.create_group(
        path,
        attributes={
            "ome": {
                "version": OME_VERSION,
                "multiscales": [{"name": path, "axes": axes, "datasets": datasets}],
            }
        },
    )
    encoding = plan.encoding[IMAGES]
    c, y, x = images.shape[2:]
    group.create_array(
        "0",
        shape=(c, y, x),
        dtype=images.dtype,
        chunks=(1, y, x),
        shards=(c, y, x),
        compressors=encoding["compressors"],
        dimension_names=["c", "y", "x"],
        fill_value=0,
    )
    group.create_array(
        "1",
        shape=thumbs.shape[2:],
        dtype=thumbs.dtype,
        chunks=thumbs.shape[2:],
        compressors=encoding["compressors"],
        dimension_names=["c", "y", "x"],
        fill_value=0,
    )


def finalize_ome(
    plan: IngestPlan, options: dict[str, Any], mask: np.ndarray, stats: dict[str, np.ndarray]
) -> None:
    """Record completeness, the mask and statistics; add omero channel windows; consolidate."""
    stats = stats[IMAGES]  # type: ignore[assignment]
    t = plan.template
    store = zarr_store(plan.dest, options, read_only=False)
    names = [str(name) for name in t["channel"].values]
    channels = [
        {
            "label": name,
            "active": True,
            "color": colour,
            "window": _window(stats, i, t[IMAGES].dtype),
        }
        for i, (name, colour) in enumerate(zip(names, channel_colours(names), strict=True))
    ]
    with storage_errors(plan.dest, options):
        root = zarr.open_group(store, mode="r+", zarr_format=3)
        for path in _field_paths(plan).values():
            image = root[path]
            ome: dict[str, Any] = dict(image.attrs["ome"])  # type: ignore[arg-type]
            ome["omero"] = {"channels": channels}
            image.attrs["ome"] = ome
        ours = dict(root.attrs["cellcubes"])  # type: ignore[arg-type]
        ours.update(
            {
                "channels": names,
                "present": mask.tolist(),
                "statistics": {k: [_finite(v) for v in vals] for k, vals in stats.items()},
                cv.ATTR_COMPLETE: True,
            }
        )
        root.attrs["cellcubes"] = ours
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_CONSOLIDATED_WARNING)
            zarr.consolidate_metadata(store)


def _window(stats: dict[str, np.ndarray], i: int, dtype: np.dtype) -> dict[str, float]:
    """Display window of channel ``i``: p01..p99 within min..max (the dtype's range if empty)."""
    info = np.iinfo(dtype) if dtype.kind in "ui" else np.finfo(dtype)
    low, high = float(info.min), float(info.max)
    values = {k: stats[k][i] for k in ("min", "max", "p01", "p99")}
    if not all(np.isfinite(v) for v in values.values()):
        return {"min": low, "max": high, "start": low, "end": high}
    return {
        k2: float(values[k1])
        for k1, k2 in (("min", "min"), ("max", "max"), ("p01", "start"), ("p99", "end"))
    }


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


class OmeOutput:
    """The plate as an OME-NGFF 0.5 HCS plate instead of a cube (``--ome``).

    No journal (a plate is written in one run; an interrupted one is re-run
    with ``--overwrite``); each field's task writes its own thumbnail level.
    """

    journal = False
    gather = False

    def create(self, plan: IngestPlan, options: dict[str, Any]) -> None:
        """Plate, well and image groups, empty arrays."""
        create_ome(plan, options)

    def locator(self, plan: IngestPlan) -> Any:
        """Each field's image group."""
        return ome_locator(plan)

    def finalize(
        self,
        plan: IngestPlan,
        options: dict[str, Any],
        mask: np.ndarray,
        stats: dict[str, Any],
        quality: dict[str, Any],
    ) -> None:
        """Mask, statistics and channel windows; completion; consolidation."""
        finalize_ome(plan, options, mask, stats)
