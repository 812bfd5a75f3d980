"""The quality report of an ingest: what was expected, found and missing, and saturation."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from cubes import conventions as cv

__all__ = ["quality_report", "quality_report_url", "summary_line"]

MAX_LISTED = 1000


def quality_report(
    template: xr.Dataset,
    mask: np.ndarray,
    stats: dict[str, np.ndarray],
    *,
    unreadable: list[str] | None = None,
    mismatched: list[str] | None = None,
    unrecognized: list[str] | None = None,
) -> dict[str, Any]:
    """A JSON-able report: counts, the absent images (by coords), per-channel saturation.

    ``mask`` is the ``present`` mask over the template's ``(well, field, channel)``
    grid; every grid position counts as expected. ``unreadable`` and ``mismatched``
    are the URLs left out under ``--on-error skip``; the other absent ones are missing.
    """
    dims = template[cv.PRESENT].dims
    labels = [[_plain(v) for v in template[d].values] for d in dims]
    missing = [
        {str(d): labels[k][i] for k, (d, i) in enumerate(zip(dims, idx, strict=True))}
        for idx in zip(*np.nonzero(~mask), strict=True)
    ]
    channels = [str(c) for c in template["channel"].values]
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
        "plate": template.attrs.get("plate", ""),
        "counts": counts,
        "saturation_fraction": {
            c: _finite(v) for c, v in zip(channels, stats["saturated"], strict=True)
        },
        "absent_images": missing[:MAX_LISTED],  # any reason: missing, unreadable, mismatched
        "absent_listed": min(len(missing), MAX_LISTED),
        "unreadable_images": unreadable[:MAX_LISTED],
        "mismatched_images": mismatched[:MAX_LISTED],
        "unrecognized_files": (unrecognized or [])[:MAX_LISTED],  # names not rRRcCCfFF…
    }


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
        f"{report['plate'] or 'plate'}: {n['found']}/{n['expected']} images, {n['missing']} "
        f"missing, {n['unreadable']} unreadable, {n['mismatched']} mismatched"
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
