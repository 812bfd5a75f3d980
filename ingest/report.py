"""The quality report of an ingest: what was expected, found and missing, and saturation.

It reads the cube's layout (the mask, the statistics groups), whatever the kind."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from cubes.layout import Layout

__all__ = ["quality_report", "quality_report_url", "summary_line"]

MAX_LISTED = 1000


def quality_report(
    template: xr.Dataset,
    layout: Layout,
    mask: np.ndarray,
    stats: dict[str, dict[str, np.ndarray]],
    *,
    unreadable: list[str] | None = None,
    mismatched: list[str] | None = None,
    unrecognized: list[str] | None = None,
) -> dict[str, Any]:
    """A JSON-able report: counts, the absent items (by coords), saturation per channel.

    ``mask`` is the layout's mask over the template's grid (a plate's ``(well,
    field, channel)``, a climate cube's ``time``); every position counts as
    expected. ``unreadable`` and ``mismatched`` are the inputs left out under
    ``--on-error skip``; the other absent ones are missing.
    """
    dims = template[layout.mask].dims if layout.mask else ()
    labels = [[_plain(v) for v in _labels(template, d)] for d in dims]
    missing = [
        {str(d): labels[k][i] for k, (d, i) in enumerate(zip(dims, idx, strict=True))}
        for idx in zip(*np.nonzero(~mask), strict=True)
    ]
    unreadable, mismatched = unreadable or [], mismatched or []
    absent = int(mask.size - mask.sum())
    counts = {  # found + missing + unreadable + mismatched == expected
        "expected": int(mask.size),
        "found": int(mask.sum()),
        "missing": absent - len(unreadable) - len(mismatched),
        "unreadable": len(unreadable),
        "mismatched": len(mismatched),
    }
    return {
        "name": str(template.attrs.get("plate") or template.attrs.get("name") or ""),
        "item": layout.mask_item,
        "counts": counts,
        "saturation_fraction": _saturation(template, layout, stats),
        "absent": missing[:MAX_LISTED],  # any reason: missing, unreadable, mismatched
        "absent_listed": min(len(missing), MAX_LISTED),
        "unreadable": unreadable[:MAX_LISTED],
        "mismatched": mismatched[:MAX_LISTED],
        "unrecognized_files": (unrecognized or [])[:MAX_LISTED],  # names the source ignored
    }


def _labels(template: xr.Dataset, dim: Any) -> Any:
    return template[dim].values if dim in template.coords else range(template.sizes[dim])


def _saturation(
    template: xr.Dataset, layout: Layout, stats: dict[str, dict[str, np.ndarray]]
) -> dict[str, float | None]:
    """Fraction of values at the dtype's maximum, per statistics group (integer data)."""
    out: dict[str, float | None] = {}
    for variable, values in stats.items():
        if "saturated" not in values or template[variable].dtype.kind not in "ui":
            continue
        spec = layout.statistics[variable]
        names = [str(v) for v in _labels(template, spec.dims[0])] if spec.dims else [variable]
        if len(stats) > 1 and spec.dims:
            names = [f"{variable}[{n}]" for n in names]
        for name, value in zip(names, np.atleast_1d(values["saturated"]), strict=True):
            out[name] = _finite(value)
    return out


def quality_report_url(dest: str) -> str:
    """Where the report of the cube at ``dest`` goes: ``plate.zarr`` -> ``plate.quality.json``.

    Not inside the cube: zarr treats unknown keys in a group as errors of the hierarchy.
    """
    stem = dest.rstrip("/")
    return (stem[: -len(".zarr")] if stem.endswith(".zarr") else stem) + ".quality.json"


def summary_line(report: dict[str, Any]) -> str:
    """One line for the terminal: counts and the most saturated channel."""
    n = report["counts"]
    line = (
        f"{report['name'] or 'cube'}: {n['found']}/{n['expected']} {report['item']}s, "
        f"{n['missing']} missing, {n['unreadable']} unreadable, {n['mismatched']} mismatched"
    )
    if report.get("unrecognized_files"):
        line += f"; {len(report['unrecognized_files'])} file(s) with unrecognized names left out"
    saturation = {c: v for c, v in report["saturation_fraction"].items() if v is not None}
    if saturation:
        worst = max(saturation, key=saturation.__getitem__)
        line += f"; most saturated: {worst} {100 * saturation[worst]:.3f}%"
    return line


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else str(value)


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
