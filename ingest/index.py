"""The index of the plates of a batch: one row per cube, merged with what is already there."""

from __future__ import annotations

import io
from typing import Any

import pandas as pd

from cubes.store import filesystem, join_url, storage_errors
from ingest.plan import IngestPlan
from ingest.writer import IngestResult

__all__ = ["INDEX_NAME", "write_plate_index"]

INDEX_NAME = "plates.csv"
COLUMNS = ["plate", "batch", "source", "wells", "fields", "channels", "images", "missing", "url"]


def write_plate_index(
    dest: str, plans: list[IngestPlan], results: list[IngestResult], options: dict[str, Any]
) -> str:
    """Write ``DEST/plates.csv``; rows of plates written before (other runs) are kept.

    A plate written again replaces its row, so re-running never duplicates.
    """
    rows = []
    for plan, result in zip(plans, results, strict=True):
        t = plan.template
        rows.append(
            {
                "plate": t.attrs.get("plate", ""),
                "batch": t.attrs.get("batch", ""),
                "source": t.attrs.get("source", ""),
                "wells": t.sizes["well"],
                "fields": t.sizes["field"],
                "channels": " ".join(str(c) for c in t["channel"].values),
                "images": result.quality["counts"]["found"],
                "missing": result.quality["counts"]["missing"],
                "url": plan.dest,
            }
        )
    url = join_url(dest, INDEX_NAME)
    fs, path = filesystem(url, options)
    with storage_errors(url, options):
        old = pd.read_csv(io.BytesIO(fs.cat_file(path)), dtype=str) if fs.exists(path) else None
        new = pd.DataFrame(rows, columns=COLUMNS)
        if old is not None:
            new = pd.concat([old[~old["url"].isin(new["url"])], new.astype(str)])
        fs.pipe_file(path, new.sort_values("plate").to_csv(index=False).encode())
    return url
