"""The arrays source (``python -m ingest arrays``): folders of .npy/.npz/.pt samples.

:mod:`.listing` lists SRC, :mod:`.headers` describes each file, :mod:`.files` reads one
whole (:mod:`.formats` holds what they share) and :mod:`.catalog` numbers the samples and
re-exports the others' public names; :mod:`.source` plans the cube; :mod:`.options`
holds the sub-command (``ArraysSource``) and ``ArraysOptions``, light enough for the
command line; :mod:`.reader` fills one shard per write task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ingest._lazy import lazy_names
from ingest.sources.arrays.options import ArraysOptions, ArraysSource

if TYPE_CHECKING:
    from ingest.sources.arrays.source import plan

__all__ = ["SOURCE", "ArraysOptions", "ArraysSource", "plan"]

SOURCE = ArraysSource()


# plan: imported with the planner (xarray, dask) on first use.
__getattr__ = lazy_names(__name__, {"plan": "ingest.sources.arrays.source"})
