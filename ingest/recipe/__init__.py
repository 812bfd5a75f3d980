"""Recipes: a user's function applied to every unit of a cube, as array jobs, merged.

``python -m ingest recipe CUBE DEST --recipe f.py[:function]`` (:mod:`.cli`):
the units come from the cube's layout (:mod:`.units`), the function from the
file (:mod:`.load`), each unit is computed and recorded once (:mod:`.run`,
:mod:`.store`) under the provenance of the first run (:mod:`.provenance`), and
``python -m ingest finalize DEST`` merges the parts (:mod:`.merge`).

From Python::

    recipe = load_recipe("examples/recipes/cell_profiles.py:profile")
    space = open_units(url, options, None, source_fingerprint(url, options))
    run_recipe(recipe, space, RecipeDest(dest, dest_options), runner=Runner())
    finalize_recipe(dest, dest_options)
"""

from __future__ import annotations

import importlib
from typing import Any

from ingest.recipe.cli import add_recipe_command, print_report

# Imported when first used: ``python -m ingest --help`` does not load pandas or zarr.
_LAZY = {
    "Recipe": "load",
    "RecipeError": "load",
    "load_recipe": "load",
    "finalize_recipe": "merge",
    "is_recipe_output": "merge",
    "RecipeChangedError": "provenance",
    "source_fingerprint": "provenance",
    "RunResult": "run",
    "run_recipe": "run",
    "RecipeDest": "store",
    "UnitSpace": "units",
    "load_unit": "units",
    "open_units": "units",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"ingest.recipe.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'ingest.recipe' has no attribute {name!r}")


__all__ = [
    "Recipe",
    "RecipeChangedError",
    "RecipeDest",
    "RecipeError",
    "RunResult",
    "UnitSpace",
    "add_recipe_command",
    "finalize_recipe",
    "is_recipe_output",
    "load_recipe",
    "load_unit",
    "open_units",
    "print_report",
    "run_recipe",
    "source_fingerprint",
]
