"""The arrays source (``python -m ingest arrays``): folders of .npy/.npz/.pt samples.

:mod:`.listing` lists SRC, :mod:`.headers` describes each file, :mod:`.files` reads one
whole (:mod:`.formats` holds what they share) and :mod:`.catalog` numbers the samples and
re-exports the others' public names; :mod:`.source` plans the cube (``ArraysSource``,
``ArraysOptions``); :mod:`.reader` fills one shard per write task.
"""

from __future__ import annotations

from ingest.sources.arrays.source import ArraysOptions, ArraysSource, plan

__all__ = ["SOURCE", "ArraysOptions", "ArraysSource", "plan"]

SOURCE = ArraysSource()
