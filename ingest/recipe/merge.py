"""``python -m ingest finalize DEST`` for a recipe's output: merge the units' parts.

- **tables** become a Parquet dataset: one file per slice of the array job
  (one for a plain run), rows in unit order, the unit's coords as the first
  columns; ``pandas.read_parquet(DEST)`` reads it in one call.
- **arrays** become a derived cube at DEST over the unit dims and the
  arrays' own dims, with the source's coords on the unit dims (so
  ``xr.merge`` with the source aligns), a ``present`` mask (False where a unit
  is absent or failed) and a recorded layout whose sample dims are the unit
  dims (so :func:`cubes.open_cube` and ``CubeBatchDataset`` read it). The cube
  is written in blocks of units along the first unit dim, one block per chunk.

``_recipe/report.json`` is written last: the outputs are complete when it is
there; it lists the failed units with their exception text. The units' results
are kept, so that a later run (a failed unit tried again) can merge again.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import dask.array as da
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xarray as xr
import zarr
from zarr.storage import MemoryStore

from cubes import conventions as cv
from cubes.errors import SchemaError
from cubes.layout import ATTR_LAYOUT, Layout
from cubes.open import open_cube
from cubes.store import (
    filesystem,
    group_array,
    join_url,
    resolve_storage_options,
    storage_errors,
    zarr_store,
)
from ingest.output import consolidate
from ingest.recipe.load import RecipeError
from ingest.recipe.results import ABSENT, KIND, SUFFIX, TABLE, read_part, schema_of
from ingest.recipe.run import check_schemas
from ingest.recipe.store import RecipeDest
from ingest.recipe.units import parse_uid, slice_of, slice_units, uid
from ingest.slices import IncompleteSlicesError

__all__ = ["finalize_recipe", "is_recipe_output"]

BLOCK_BYTES = 16 * 2**20  # a derived cube's chunk along the first unit dim: about this much
PART_NAME = "part-{:05d}.parquet"


def is_recipe_output(dest: str, options: dict[str, Any]) -> bool:
    """True if ``dest`` holds a recipe's work (``_recipe/manifest.json``)."""
    store = RecipeDest(dest, options)
    fs, path = filesystem(store.manifest(), options)
    with storage_errors(dest, options):
        return bool(fs.exists(path))


def finalize_recipe(dest: str, options: dict[str, Any]) -> dict[str, Any]:
    """Merge the results of every unit into DEST's outputs; returns the report.

    Raises
    ------
    IncompleteSlicesError
        Some units are neither done nor recorded as failed; the message names
        their slices.
    RecipeError
        Units returned results of different kinds, columns or arrays (named).
    """
    start = time.perf_counter()
    store = RecipeDest(dest, options)
    manifest = store.get_json(store.manifest())
    if manifest is None:
        raise SchemaError(f"{dest} holds no recipe output ({store.manifest()} is absent).")
    units = [uid(tuple(int(i) for i in ix)) for ix in np.ndindex(*manifest["shape"])]
    done = store.names("done")
    failed_names = sorted(set(store.names("failed")) - set(done))
    _check_all_there(store, manifest, units, set(done) | set(failed_names))
    merge = _Merge(store, manifest, units, done)
    store.remove(store.report())
    outputs = merge.tables() if merge.kind == TABLE else merge.arrays() if merge.kind else []
    failed = [store.get_json(store.failure(n)) for n in failed_names]
    report = {
        "dest": dest,
        **{k: manifest[k] for k in ("recipe", "recipe_sha256", "function", "source")},
        "source_fingerprint": manifest["source_fingerprint"],
        "kind": merge.kind or None,
        "units": len(units),
        "done": len(merge.names),
        "absent": sum(s == ABSENT for s in done.values()),
        "failed": [{k: f[k] for k in ("unit", "coords", "error")} for f in failed if f],
        "rows": merge.rows if merge.kind == TABLE else None,
        "outputs": outputs,
        "seconds": round(time.perf_counter() - start, 3),
        "finalized": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    store.put_json(store.report(), report)
    return report


class _Merge:
    """The units with a result (in unit order), read in groups and checked against the first."""

    def __init__(
        self, store: RecipeDest, manifest: dict[str, Any], units: list[str], done: dict[str, str]
    ) -> None:
        names = [n for n in units if done.get(n) in KIND]
        self.store, self.manifest, self.units, self.names = store, manifest, units, names
        self.describe = _describer(manifest)
        self.recipe = f"{manifest['recipe']}:{manifest['function']}"
        self.rows = 0
        kinds = {KIND[done[n]]: n for n in names}
        if len(kinds) > 1:
            first, other = (next(n for n in names if KIND[done[n]] == k) for k in kinds)
            raise RecipeError(
                f"{self.recipe} returned a {KIND[done[first]]} for unit {self.describe(first)} "
                f"but {KIND[done[other]]} for unit {self.describe(other)}. A recipe must return "
                "the same kind of result for every unit: fix it and run again with --overwrite."
            )
        self.kind = next(iter(kinds), "")  # "": no unit has a result
        self.n_coords = len(manifest["unit_dims"])
        self.first: Any = None
        if self.kind:
            self.first = self.read(names[:1])[names[0]]

    def read(self, names: list[str]) -> dict[str, Any]:
        """The parts of ``names``, read at once and checked against the first unit's schema."""
        urls = {n: self.store.done(n, SUFFIX[self.kind]) for n in names}
        found = self.store.get_many(urls.values())
        missing = [n for n, u in urls.items() if u not in found]
        if missing:
            raise SchemaError(
                f"{urls[missing[0]]} vanished while merging; run the recipe again (it computes "
                "only the units without a result), then finalize."
            )
        parts = {n: read_part(self.kind, found[u]) for n, u in urls.items()}
        if self.first is not None:
            reference = {"unit": self.names[0], "schema": self.schema(self.first)}
            for n, part in parts.items():
                check_schemas(
                    self.describe,
                    self.recipe,
                    [reference, {"unit": n, "schema": self.schema(part)}],
                )
        return parts

    def schema(self, part: Any) -> dict[str, Any]:
        return schema_of(self.kind, part, self.n_coords if self.kind == TABLE else 0)

    def tables(self) -> list[str]:
        """One Parquet file per slice, rows in unit order; files of an earlier merge go first."""
        store = self.store
        fs, root = filesystem(store.url, store.options)
        with storage_errors(store.url, store.options):
            old = fs.glob(join_url(root, "part-*.parquet"))
            if old:
                fs.rm(old)
        count = self.manifest.get("count") or 1
        outputs = []
        for k in range(count):
            with_result = set(self.names)
            names = [n for n in slice_units(self.units, k, count) if n in with_result]
            if not names:
                continue
            parts = self.read(names)
            tables = [parts[n] for n in names if parts[n].num_rows] or [parts[names[0]]]
            table = pa.concat_tables(tables, promote_options="permissive")
            self.rows += table.num_rows
            buf = pa.BufferOutputStream()
            pq.write_table(table, buf)
            url = join_url(store.url, PART_NAME.format(k))
            store.put(url, buf.getvalue().to_pybytes())
            outputs.append(url)
        return outputs

    def arrays(self) -> list[str]:
        """The derived cube at DEST, written one block of units (one chunk) at a time."""
        store, manifest = self.store, self.manifest
        shape = tuple(manifest["shape"])
        schema = self.schema(self.first)["arrays"]
        unit_bytes = sum(
            int(np.prod(a["shape"])) * np.dtype(a["dtype"]).itemsize for a in schema.values()
        )
        block = max(1, min(shape[0], BLOCK_BYTES // max(1, unit_bytes * int(np.prod(shape[1:])))))
        source_options = resolve_storage_options(
            manifest["source"], endpoint_url=store.options.get("endpoint_url")
        )
        _write_template(store, _template(manifest, schema, self.first, block, source_options))
        group = zarr.open_group(
            zarr_store(store.url, store.options, read_only=False),
            mode="r+",
            zarr_format=3,
            use_consolidated=False,
        )
        present = np.zeros(shape, dtype=bool)
        for name in self.names:
            present[parse_uid(name)] = True

        def write(start: int) -> None:
            stop = min(start + block, shape[0])
            names = [n for n in self.names if start <= parse_uid(n)[0] < stop]
            parts = self.read(names) if names else {}
            for var, spec in schema.items():
                values = np.full(
                    (stop - start, *shape[1:], *spec["shape"]),
                    _fill(spec["dtype"]),
                    dtype=spec["dtype"],
                )
                for n, part in parts.items():
                    index = parse_uid(n)
                    values[(index[0] - start, *index[1:])] = part[var].values
                group_array(group, var)[start:stop] = values

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(write, range(0, shape[0], block)))
        group_array(group, cv.PRESENT)[...] = present
        _complete(group, manifest, schema, present)
        return [store.url]


def _complete(
    group: zarr.Group, manifest: dict[str, Any], schema: dict[str, Any], present: np.ndarray
) -> None:
    """The derived cube's layout, provenance and completion mark; consolidated metadata."""
    layout = Layout(
        kind="recipe",
        sample_dims=tuple(manifest["unit_dims"]),
        window_dims=(),
        variables=tuple(schema),
        mask=cv.PRESENT,
        mask_item="unit",
    )
    keys = ("recipe", "recipe_sha256", "function", "source", "source_fingerprint", "software")
    provenance = {k: manifest[k] for k in keys} | {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "n_present": int(present.sum()),
        "n_missing": int(present.size - present.sum()),
    }
    inputs = (manifest["recipe_sha256"] + manifest["source_fingerprint"]).encode()
    group.attrs.update(
        {
            cv.ATTR_KIND: "recipe",
            cv.ATTR_VERSION: cv.CONVENTION_VERSION,
            ATTR_LAYOUT: layout.to_attrs(),
            cv.ATTR_PROVENANCE: provenance,
            cv.ATTR_INPUTS: hashlib.sha256(inputs).hexdigest(),
            cv.ATTR_COMPLETE: True,
        }
    )
    with warnings.catch_warnings():  # _recipe/ beside the arrays is not a Zarr node
        warnings.filterwarnings("ignore", message="Object at _recipe is not recognized")
        consolidate(group.store)


def _describer(manifest: dict[str, Any]) -> Callable[[str], str]:
    dims, labels = manifest["unit_dims"], manifest["labels"]

    def describe(name: str) -> str:
        index = parse_uid(name)
        pairs = enumerate(zip(dims, index, strict=True))
        return ", ".join(f"{d}={labels[k][i]}" for k, (d, i) in pairs)

    return describe


def _check_all_there(
    store: RecipeDest, manifest: dict[str, Any], units: list[str], seen: set[str]
) -> None:
    missing = [p for p, n in enumerate(units) if n not in seen]
    if not missing:
        return
    count = manifest.get("count") or 1
    slices = sorted({slice_of(p, len(units), count) for p in missing})
    describe = _describer(manifest)
    first = "; ".join(describe(units[p]) for p in missing[:3])
    raise IncompleteSlicesError(
        f"{store.url}: {len(missing)} of {len(units)} units are not done yet ({first}"
        f"{' …' if len(missing) > 3 else ''}), in slice(s) {', '.join(map(str, slices))} of "
        f"{count}. Run those slices again (the same command computes only the missing units), "
        "then finalize."
    )


def _fill(dtype: str) -> Any:
    kind = np.dtype(dtype).kind
    return np.nan if kind in "fc" else (np.datetime64("NaT") if kind in "mM" else 0)


def _template(
    manifest: dict[str, Any],
    schema: dict[str, Any],
    first: xr.Dataset,
    block: int,
    source_options: dict[str, Any],
) -> xr.Dataset:
    """The derived cube's schema: lazy data, the source's coords on the unit dims."""
    dims = tuple(manifest["unit_dims"])
    shape = tuple(manifest["shape"])
    source = open_cube(manifest["source"], storage_options=source_options, require_complete=False)
    coords = {
        name: coord.variable.to_base_variable().load()
        for name, coord in source.coords.items()
        if coord.dims and set(coord.dims) <= set(dims)
    }
    coords.update({n: c.variable for n, c in first.coords.items() if not set(c.dims) & set(dims)})
    for name, var in coords.items():  # variable-length strings, as the source's coords
        if var.dtype.kind == "U":
            coords[name] = var.astype(np.dtypes.StringDType())
    data_vars = {}
    for var, spec in schema.items():
        full = (*shape, *spec["shape"])
        chunks = (block, *full[1:])
        data_vars[var] = (
            (*dims, *spec["dims"]),
            da.full(full, _fill(spec["dtype"]), dtype=spec["dtype"], chunks=chunks),
        )
    data_vars[cv.PRESENT] = (dims, np.zeros(shape, dtype=bool))
    return xr.Dataset(data_vars, coords=coords)


def _write_template(store: RecipeDest, template: xr.Dataset) -> None:
    """The metadata and coords, uploaded together; the root ``zarr.json`` last."""
    objects: dict[str, Any] = {}
    template.to_zarr(
        MemoryStore(objects), mode="w", compute=False, zarr_format=3, consolidated=False
    )
    fs, root = filesystem(store.url, store.options)
    files = {join_url(root, key): value.to_bytes() for key, value in objects.items()}
    root_key = join_url(root, "zarr.json")
    with storage_errors(store.url, store.options):
        fs.pipe({k: v for k, v in files.items() if k != root_key})
        fs.pipe_file(root_key, files[root_key])
