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
there; it lists the failed units with their exception text. Parts and markers
are kept, so that a later run (a failed unit tried again) can merge again.
"""

from __future__ import annotations

import hashlib
import time
import warnings
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
from ingest.recipe.results import ARRAYS, SUFFIX, TABLE, read_arrays, read_table
from ingest.recipe.run import DONE, check_schemas
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
    """Merge the parts of every unit into DEST's outputs; returns the report.

    Raises
    ------
    IncompleteSlicesError
        Some units have neither a marker nor a failure record; the message
        names their slices.
    RecipeError
        Units returned results of different kinds, columns or arrays.
    """
    start = time.perf_counter()
    store = RecipeDest(dest, options)
    manifest = store.get_json(store.manifest())
    if manifest is None:
        raise SchemaError(f"{dest} holds no recipe output ({store.manifest()} is absent).")
    shape = tuple(manifest["shape"])
    units = [tuple(int(i) for i in ix) for ix in np.ndindex(*shape)]
    done = set(store.names("done", ".json"))
    failed_names = set(store.names("failed", ".json")) - done
    _check_all_there(store, manifest, units, done | failed_names)
    markers = [_json(b) for b in store.get_many(store.marker(n) for n in sorted(done)).values()]
    by_unit = {m["unit"]: m for m in markers}
    by_unit.update({n: {"status": "failed", "unit": n} for n in failed_names})
    results = [by_unit[uid(i)] for i in units if by_unit[uid(i)]["status"] == DONE]
    check_schemas(_describer(manifest), f"{manifest['recipe']}:{manifest['function']}", results)
    store.remove(store.report())
    kind = results[0]["schema"]["kind"] if results else None
    outputs: list[str] = []
    if kind == TABLE:
        outputs = _merge_tables(store, manifest, units, by_unit)
    elif kind == ARRAYS:
        outputs = [_merge_arrays(store, manifest, units, by_unit)]
    failed = [store.get_json(store.failure(n)) for n in sorted(failed_names)]
    report = {
        "dest": dest,
        "recipe": manifest["recipe"],
        "recipe_sha256": manifest["recipe_sha256"],
        "function": manifest["function"],
        "source": manifest["source"],
        "source_fingerprint": manifest["source_fingerprint"],
        "kind": kind,
        "units": len(units),
        "done": len(results),
        "absent": sum(m["status"] != DONE for m in markers),
        "failed": [{k: f[k] for k in ("unit", "coords", "error")} for f in failed if f],
        "rows": sum(m.get("rows") or 0 for m in results) if kind == TABLE else None,
        "outputs": outputs,
        "seconds": round(time.perf_counter() - start, 3),
        "finalized": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    store.put_json(store.report(), report)
    return report


def _json(data: bytes) -> dict[str, Any]:
    import json

    value: dict[str, Any] = json.loads(data)
    return value


def _describer(manifest: dict[str, Any]) -> Any:
    dims, labels = manifest["unit_dims"], manifest["labels"]

    def describe(name: str) -> str:
        index = parse_uid(name)
        return ", ".join(
            f"{d}={labels[k][i]}" for k, (d, i) in enumerate(zip(dims, index, strict=True))
        )

    return describe


def _check_all_there(
    store: RecipeDest, manifest: dict[str, Any], units: list[tuple[int, ...]], seen: set[str]
) -> None:
    missing = [p for p, i in enumerate(units) if uid(i) not in seen]
    if not missing:
        return
    count = manifest.get("count") or 1
    slices = sorted({slice_of(p, len(units), count) for p in missing})
    describe = _describer(manifest)
    first = "; ".join(describe(uid(units[p])) for p in missing[:3])
    raise IncompleteSlicesError(
        f"{store.url}: {len(missing)} of {len(units)} units are not done yet ({first}"
        f"{' …' if len(missing) > 3 else ''}), in slice(s) {', '.join(map(str, slices))} of "
        f"{count}. Run those slices again (the same command computes only the missing units), "
        "then finalize."
    )


def _merge_tables(
    store: RecipeDest,
    manifest: dict[str, Any],
    units: list[tuple[int, ...]],
    by_unit: dict[str, dict[str, Any]],
) -> list[str]:
    """One Parquet file per slice, rows in unit order; stale files from an earlier merge go."""
    fs, root = filesystem(store.url, store.options)
    with storage_errors(store.url, store.options):
        old = fs.glob(join_url(root, "part-*.parquet"))
        if old:
            fs.rm(old)
    count = manifest.get("count") or 1
    outputs = []
    for k in range(count):
        names = [uid(i) for i in slice_units(units, k, count) if by_unit[uid(i)]["status"] == DONE]
        if not names:
            continue
        parts = store.get_many(store.part(n, SUFFIX[TABLE]) for n in names)
        tables = [read_table(parts[store.part(n, SUFFIX[TABLE])]) for n in names]
        tables = [t for t in tables if t.num_rows] or tables[:1]  # empty parts add no rows
        table = pa.concat_tables(tables, promote_options="permissive")
        url = join_url(store.url, PART_NAME.format(k))
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf)
        store.put(url, buf.getvalue().to_pybytes())
        outputs.append(url)
    return outputs


def _merge_arrays(
    store: RecipeDest,
    manifest: dict[str, Any],
    units: list[tuple[int, ...]],
    by_unit: dict[str, dict[str, Any]],
) -> str:
    """The derived cube at DEST, written one block of units (one chunk) at a time."""
    dims = tuple(manifest["unit_dims"])
    shape = tuple(manifest["shape"])
    done = [uid(i) for i in units if by_unit[uid(i)]["status"] == DONE]
    schema = by_unit[done[0]]["schema"]["arrays"]
    first = read_arrays(store.get(store.part(done[0], SUFFIX[ARRAYS])) or b"")
    unit_bytes = sum(
        int(np.prod(a["shape"])) * np.dtype(a["dtype"]).itemsize for a in schema.values()
    )
    block = max(1, min(shape[0], BLOCK_BYTES // max(1, unit_bytes * int(np.prod(shape[1:])))))
    source_options = resolve_storage_options(
        manifest["source"], endpoint_url=store.options.get("endpoint_url")
    )
    template = _template(manifest, schema, first, block, source_options)
    _write_template(store, template)
    group = zarr.open_group(
        zarr_store(store.url, store.options, read_only=False),
        mode="r+",
        zarr_format=3,
        use_consolidated=False,
    )
    present = np.zeros(shape, dtype=bool)
    for name in done:
        present[parse_uid(name)] = True

    def write(start: int) -> None:
        stop = min(start + block, shape[0])
        names = [n for n in done if start <= parse_uid(n)[0] < stop]
        parts = store.get_many(store.part(n, SUFFIX[ARRAYS]) for n in names)
        for var, spec in schema.items():
            values = np.full(
                (stop - start, *shape[1:], *spec["shape"]),
                _fill(spec["dtype"]),
                dtype=spec["dtype"],
            )
            for n in names:
                index = parse_uid(n)
                values[(index[0] - start, *index[1:])] = read_arrays(
                    parts[store.part(n, SUFFIX[ARRAYS])]
                )[var].values
            group_array(group, var)[start:stop] = values

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(0, shape[0], block)))
    group_array(group, cv.PRESENT)[...] = present
    layout = Layout(
        kind="recipe",
        sample_dims=dims,
        window_dims=(),
        variables=tuple(schema),
        mask=cv.PRESENT,
        mask_item="unit",
    )
    group.attrs.update(
        {
            cv.ATTR_KIND: "recipe",
            cv.ATTR_VERSION: cv.CONVENTION_VERSION,
            ATTR_LAYOUT: layout.to_attrs(),
            cv.ATTR_PROVENANCE: {
                k: manifest[k]
                for k in (
                    "recipe",
                    "recipe_sha256",
                    "function",
                    "source",
                    "source_fingerprint",
                    "software",
                )
            }
            | {
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "n_present": int(present.sum()),
                "n_missing": int(present.size - present.sum()),
            },
            cv.ATTR_INPUTS: hashlib.sha256(
                (manifest["recipe_sha256"] + manifest["source_fingerprint"]).encode()
            ).hexdigest(),
            cv.ATTR_COMPLETE: True,
        }
    )
    with warnings.catch_warnings():  # _recipe/ beside the arrays is not a Zarr node
        warnings.filterwarnings("ignore", message="Object at _recipe is not recognized")
        consolidate(group.store)
    return store.url


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
