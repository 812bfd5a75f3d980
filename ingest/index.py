"""The index of a batch of cubes (a plate batch's ``plates.csv``): one row per cube, merged
with what is already there."""

from __future__ import annotations

import io
from typing import Any

import pandas as pd

from cubes.store import filesystem, join_url, storage_errors
from ingest.plan import IngestPlan
from ingest.writer import IngestResult

__all__ = ["ATTR_INDEX", "batch_index", "write_batch_index"]

ATTR_INDEX = "batch_index"  # {"file": "plates.csv", "row": {...}}: set by the source


def batch_index(plan: IngestPlan) -> dict[str, Any] | None:
    """The plan's entry in its batch's index, as its source describes it (or None)."""
    entry = plan.attrs.get(ATTR_INDEX) or plan.template.attrs.get(ATTR_INDEX)
    return dict(entry) if entry else None


def write_batch_index(
    dest: str, plans: list[IngestPlan], results: list[IngestResult], options: dict[str, Any]
) -> str | None:
    """Write ``DEST/<file>`` (a plate batch's ``plates.csv``): one row per cube.

    The row is what the cube's source said of it (:data:`ATTR_INDEX`), then the
    counts of found and missing items and its URL. Rows of cubes written before
    (other runs) are kept; a cube written again replaces its row, so re-running
    never duplicates. None when the plans' source keeps no index.
    """
    rows, name = [], None
    for plan, result in zip(plans, results, strict=True):
        entry = batch_index(plan)
        if entry is None:
            continue
        name = str(entry["file"])
        counts = result.quality["counts"]
        item = f"{result.quality.get('item', 'item')}s"
        rows.append(
            {**entry["row"], item: counts["found"], "missing": counts["missing"], "url": plan.dest}
        )
    if name is None:
        return None
    url = join_url(dest, name)
    fs, path = filesystem(url, options)
    with storage_errors(url, options):
        old = pd.read_csv(io.BytesIO(fs.cat_file(path)), dtype=str) if fs.exists(path) else None
        new = pd.DataFrame(rows)
        if old is not None:
            new = pd.concat([old[~old["url"].isin(new["url"])], new.astype(str)])
        fs.pipe_file(path, new.sort_values(new.columns[0]).to_csv(index=False).encode())
    return url
