"""A recipe output's provenance: which recipe, which function, which cube, which units.

The first run writes ``DEST/_recipe/manifest.json``; every later run (another
slice of an array job, a re-run after a kill or a failure) compares its own
with it and is refused if the recipe file (SHA-256 of its bytes), the function,
the source cube (its fingerprint) or the unit dims differ: results of two
recipes, or of two versions of a cube, are never mixed. ``--overwrite``
discards the old results and computes every unit again.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import cubes
from cubes import conventions as cv
from cubes.errors import CubeExistsError
from cubes.open import read_cube_root
from ingest.recipe.load import Recipe
from ingest.recipe.store import RecipeDest
from ingest.recipe.units import UnitSpace

__all__ = ["RecipeChangedError", "check_or_write_manifest", "source_fingerprint"]

# What must be equal for two runs to write into one DEST.
_SAME = ("recipe_sha256", "function", "source", "source_fingerprint", "unit_dims", "shape")


class RecipeChangedError(CubeExistsError):
    """DEST holds the results of another recipe, function, cube or unit."""


def source_fingerprint(url: str, options: dict[str, Any]) -> str:
    """SHA-256 of what identifies the cube's contents: its inputs, layout, arrays and creation.

    A cube appended to, or written again, has another fingerprint.
    """
    root = read_cube_root(url, options)
    attrs = root.attrs
    identity = {
        "inputs": attrs.get(cv.ATTR_INPUTS),
        "layout": attrs.get("cube_layout"),
        "created": (attrs.get(cv.ATTR_PROVENANCE) or {}).get("created"),
        "arrays": {
            name: [meta.get("shape"), meta.get("data_type")]
            for name, meta in sorted(root.arrays.items())
        },
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def manifest_of(recipe: Recipe, space: UnitSpace, count: int | None) -> dict[str, Any]:
    """The manifest a run over ``space`` with ``recipe`` writes (``count``: array-job slices)."""
    return {
        "recipe": recipe.path,
        "recipe_sha256": recipe.sha256,
        "function": recipe.function,
        "source": space.url,
        "source_fingerprint": space.fingerprint,
        "source_kind": space.layout.kind,
        "unit_dims": list(space.dims),
        "shape": list(space.shape),
        "labels": [[str(v) for v in values] for values in space.labels],
        "count": count,
        "software": f"cellcubes {cubes.__version__}",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def check_or_write_manifest(
    dest: RecipeDest, recipe: Recipe, space: UnitSpace, count: int | None
) -> dict[str, Any]:
    """Write the manifest of a new DEST, or check that this run continues the recorded one.

    Raises
    ------
    RecipeChangedError
        DEST holds results of another recipe, function, cube or unit choice, or
        an array job with another number of slices.
    CubeExistsError
        DEST holds something that is not a recipe's output.
    """
    mine = manifest_of(recipe, space, count)
    recorded = dest.get_json(dest.manifest())
    if recorded is None:
        there = [n for n in dest.listing() if n != "_recipe"]
        if there:
            raise CubeExistsError(
                f"{dest.url} already holds {', '.join(there[:5])}, not a recipe's output. "
                "Choose another DEST, or pass --overwrite to replace it."
            )
        dest.put_json(dest.manifest(), mine)
        return mine
    changed = [k for k in _SAME if recorded.get(k) != mine[k]]
    if changed:
        raise RecipeChangedError(_changed_message(dest, recorded, mine, changed))
    if count is not None and recorded.get("count") not in (None, count):
        raise RecipeChangedError(
            f"{dest.url} is being written by an array job of {recorded['count']} slices "
            f"({dest.manifest()}); this task says {count}. Use the same --task-count for every "
            "slice."
        )
    return dict(recorded)


def _changed_message(
    dest: RecipeDest, recorded: dict[str, Any], mine: dict[str, Any], changed: list[str]
) -> str:
    what = []
    if "recipe_sha256" in changed:
        what.append(
            f"the recipe {mine['recipe']} has changed (SHA-256 {mine['recipe_sha256'][:12]}…, "
            f"the results were computed by {recorded.get('recipe_sha256', '?')[:12]}…)"
        )
    if "function" in changed:
        what.append(f"the function is {mine['function']}, not {recorded.get('function')}")
    if {"source", "source_fingerprint"} & set(changed):
        what.append(
            f"the cube {mine['source']} is not the one the results came from "
            f"({recorded.get('source')}, fingerprint "
            f"{recorded.get('source_fingerprint', '?')[:12]}…)"
        )
    if {"unit_dims", "shape"} & set(changed):
        what.append(
            f"the units are {mine['unit_dims']} {mine['shape']}, not "
            f"{recorded.get('unit_dims')} {recorded.get('shape')}"
        )
    return (
        f"{dest.url} holds the results of another run: {'; '.join(what)}. Results of two recipes "
        "(or cubes) are never mixed: pass --overwrite to discard them and compute every unit "
        "again, or choose another DEST."
    )
