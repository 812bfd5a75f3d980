"""What one cube holds (``python -m cubes describe``): layout, variables, statistics, provenance.

Reads the root metadata (every array's shape, chunks, shards and codecs are in
it), the coordinates and the statistics variables (small, one object each),
and the quality report beside the cube when it is there; never the pixels.
"""

from __future__ import annotations

import json
import logging
import warnings
from typing import Any

import numpy as np

from cubes import conventions as cv
from cubes.errors import IncompleteCubeWarning
from cubes.metadata import RootMetadata, codecs_summary, iso_time
from cubes.open import open_cube, read_cube_root
from cubes.store import filesystem, storage_errors

__all__ = ["describe_cube", "format_description"]

logger = logging.getLogger(__name__)

_ABSENT_SHOWN = 5


def describe_cube(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON-able description of the cube at ``url``.

    Parameters
    ----------
    url
        Local path or URL of the cube.
    storage_options
        fsspec options, completed by :func:`cubes.store.resolve_storage_options`.

    Returns
    -------
    dict
        ``url``, ``kind``, ``complete``, ``layout``, ``dims``, ``variables``
        (name, role, dims, shape, dtype, chunks, shards, codecs), ``coords``,
        ``statistics`` (``columns`` and one row per channel / variable / level),
        ``provenance``, ``inputs_sha256``, ``software``, ``created`` and
        ``quality`` (counts, the report's URL, the first absent items).

    Raises
    ------
    SourceNotFoundError, SchemaError, StorageError
        As :func:`cubes.open_cube`: no cube there, or not a cube.
    """
    root = read_cube_root(url, storage_options)
    with warnings.catch_warnings():  # completeness is part of the description
        warnings.simplefilter("ignore", IncompleteCubeWarning)
        ds = open_cube(url, storage_options=storage_options)
    layout = root.layout()
    stat_vars = {spec.var(name) for spec in layout.statistics.values() for name in spec.names}
    provenance = dict(root.attrs.get(cv.ATTR_PROVENANCE) or {})
    return {
        "url": url,
        "kind": root.kind,
        "complete": root.complete,
        "convention": root.attrs.get(cv.ATTR_VERSION),
        "layout": layout.to_attrs(),
        "dims": {str(k): int(v) for k, v in ds.sizes.items()},
        "channels": layout.channels(ds),
        "time_range": _time_range(ds, layout.time_dim),
        "variables": [
            _variable(root, str(name), ds, layout.variables, layout.mask)
            for name in ds.data_vars
            if name not in stat_vars
        ],
        "coords": {str(n): list(map(str, ds[n].dims)) for n in ds.coords},
        "statistics": _statistics(ds, layout),
        "provenance": provenance,
        "inputs_sha256": root.attrs.get(cv.ATTR_INPUTS),
        "software": provenance.get("software"),
        "created": provenance.get("created"),
        "quality": _quality(root, storage_options),
    }


def _time_range(ds: Any, dim: str | None) -> list[str] | None:
    """The first and last time of a time series, as ISO text."""
    if dim is None or dim not in ds.coords or not ds.sizes.get(dim):
        return None
    values = ds[dim].values
    return [iso_time(values[0]), iso_time(values[-1])]


def _variable(
    root: RootMetadata, name: str, ds: Any, data: tuple[str, ...], mask: str | None
) -> dict[str, Any]:
    meta = root.arrays.get(name) or {}
    inner, codecs = codecs_summary(meta) if meta else (None, "?")
    grid = (meta.get("chunk_grid") or {}).get("configuration", {}).get("chunk_shape")
    role = "data" if name in data else "mask" if name == mask else "derived"
    return {
        "name": name,
        "role": role,
        "dims": list(map(str, ds[name].dims)),
        "shape": [int(n) for n in ds[name].shape],
        "dtype": str(meta.get("data_type") or ds[name].dtype),
        "chunks": list(inner) if inner else grid,
        "shards": grid if inner else None,
        "codecs": codecs,
    }


def _statistics(ds: Any, layout: Any) -> dict[str, Any]:
    """One row per statistics group (a channel, a variable, a variable's level)."""
    columns: list[str] = []
    for spec in layout.statistics.values():
        columns += [n for n in spec.names if n not in columns]
    rows = []
    several = len(layout.statistics) > 1
    for variable, spec in layout.statistics.items():
        groups = _groups(ds, spec.dims)
        for position, label in groups:
            row: dict[str, Any] = {
                "variable": variable,
                "group": label,
                "label": _label(variable, label, several),
            }
            for stat in spec.names:
                if spec.var(stat) in ds:
                    values = np.asarray(ds[spec.var(stat)].values)
                    value = values[position] if position is not None else values
                    row[stat] = _number(value)
            rows.append(row)
    return {"columns": columns, "rows": rows}


def _groups(ds: Any, dims: tuple[str, ...]) -> list[tuple[Any, str | None]]:
    if not dims:
        return [(None, None)]
    dim = dims[0]
    labels = ds[dim].values if dim in ds.coords else range(ds.sizes[dim])
    return [(i, str(v)) for i, v in enumerate(labels)]


def _label(variable: str, group: str | None, several: bool) -> str:
    if group is None:
        return variable
    return f"{variable}[{group}]" if several else group


def _number(value: Any) -> float | None:
    value = float(np.asarray(value).reshape(-1)[0]) if np.size(value) else float("nan")
    return value if np.isfinite(value) else None


def _quality(root: RootMetadata, options: dict[str, Any] | None) -> dict[str, Any]:
    """The quality counts from the attributes; the first absent items from the report."""
    quality = dict(root.attrs.get("quality") or {})
    out: dict[str, Any] = {"counts": quality.get("counts"), "report": None}
    url = _report_url(root.url)
    fs, path = filesystem(url, options)
    try:
        with storage_errors(url, options):
            report = json.loads(fs.cat_file(path))
    except (OSError, ValueError):  # no report beside the cube: the counts still say
        logger.info("No quality report at %s", url)
        return out
    out["report"] = url
    out["item"] = report.get("item")
    out["absent"] = list(report.get("absent") or [])[:_ABSENT_SHOWN]
    saturation = {k: v for k, v in (report.get("saturation_fraction") or {}).items() if v}
    if saturation:
        worst = max(saturation, key=saturation.__getitem__)
        out["most_saturated"] = {"group": worst, "fraction": saturation[worst]}
    out["unrecognized_files"] = len(report.get("unrecognized_files") or [])
    return out


def _report_url(url: str) -> str:
    """The quality report beside the cube (``plate.zarr`` -> ``plate.quality.json``)."""
    stem = url.rstrip("/\\")
    return stem.removesuffix(".zarr") + ".quality.json"


def format_description(d: dict[str, Any]) -> str:
    """The text of ``describe``: sections of aligned lines."""
    layout = d["layout"]
    lines = [
        f"{d['url']}: {d['kind']} cube, {'complete' if d['complete'] else 'INCOMPLETE'}"
        f" (convention {d['convention']})",
        "",
        "layout",
    ]
    sizes = d["dims"]
    samples = " × ".join(f"{dim} {sizes.get(dim, '?')}" for dim in layout["sample_dims"])
    n = int(np.prod([sizes.get(dim, 0) for dim in layout["sample_dims"]]))
    lines += _pairs(
        [
            ("samples", f"{samples} = {n}"),
            (
                "windows",
                " × ".join(f"{w} {sizes.get(w, '?')}" for w in layout["window_dims"])
                or "whole samples",
            ),  # fmt: skip
            ("channels", _channels(d)),
            ("mask", f"{layout['mask']} ({layout['mask_item']}s)" if layout["mask"] else "none"),
            ("time", _time(d)),
        ]
    )
    lines += ["", "dims", "  " + ", ".join(f"{k} {v}" for k, v in sizes.items()), ""]
    lines += ["variables"] + _table(
        ["name", "role", "dims", "dtype", "chunks", "shards", "codecs"],
        [
            [
                v["name"],
                v["role"],
                "×".join(v["dims"]) or "()",
                v["dtype"],
                _shape(v["chunks"]),
                _shape(v["shards"]),
                v["codecs"],
            ]  # fmt: skip
            for v in d["variables"]
        ],
    )
    lines += ["", "coords", "  " + ", ".join(d["coords"]) or "  -", ""]
    stats = d["statistics"]
    lines += ["statistics"] + _table(
        ["", *stats["columns"]],
        [[r["label"], *(_fmt(r.get(c)) for c in stats["columns"])] for r in stats["rows"]],
    )
    prov = d["provenance"]
    lines += ["", "provenance"] + _pairs(
        [
            ("source", f"{prov.get('source_format', '?')} {prov.get('src', '?')}"),
            ("inputs sha256", str(d["inputs_sha256"])),
            ("written by", f"{d['software']} at {d['created']}"),
        ]
        + [(k, str(v)) for k, v in prov.items() if k not in _SHOWN_PROVENANCE]
    )
    lines += ["", "quality"] + _quality_lines(d["quality"], layout["mask_item"])
    return "\n".join(lines)


_SHOWN_PROVENANCE = {"source_format", "src", "software", "created"}


def _channels(d: dict[str, Any]) -> str:
    dim = d["layout"]["channel_dim"]
    what = f"{dim} {d['dims'].get(dim)}" if dim else "variables"
    return f"{what}: {' '.join(d['channels'])}"


def _time(d: dict[str, Any]) -> str:
    dim = d["layout"]["time_dim"]
    if not dim:
        return "-"
    if not d["time_range"]:
        return dim
    first, last = d["time_range"]
    return f"{dim}: {first} – {last}"


def _quality_lines(q: dict[str, Any], item: str) -> list[str]:
    counts = q.get("counts") or {}
    if not counts:
        return ["  no quality counts recorded (the ingest has not finished)"]
    line = (
        f"  {counts.get('found')}/{counts.get('expected')} {item}s found, "
        f"{counts.get('missing')} missing, {counts.get('unreadable')} unreadable, "
        f"{counts.get('mismatched')} mismatched"
    )
    out = [line]
    for absent in q.get("absent") or []:
        out.append("  absent: " + ", ".join(f"{k} {v}" for k, v in absent.items()))
    if q.get("most_saturated"):
        s = q["most_saturated"]
        out.append(f"  most saturated: {s['group']} {100 * s['fraction']:.3f}%")
    out.append(f"  report: {q['report'] or 'not found beside the cube'}")
    return out


def _pairs(items: list[tuple[str, str]]) -> list[str]:
    width = max(len(k) for k, _ in items)
    return [f"  {k.ljust(width)}  {v}" for k, v in items]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return ["  (none)"]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]


def _shape(shape: list[int] | None) -> str:
    return "×".join(str(n) for n in shape) if shape else "-"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
