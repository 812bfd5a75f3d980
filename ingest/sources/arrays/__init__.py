"""The arrays source (``python -m ingest arrays``): folders of .npy/.npz/.pt samples.

:mod:`.catalog` lists, describes and reads the files; :mod:`.source` plans the cube
(``ArraysSource``, ``ArraysOptions``); :mod:`.reader` fills one shard per write task.
"""

from __future__ import annotations

from ingest.sources.arrays.source import ArraysOptions, ArraysSource, plan

__all__ = ["SOURCE", "ArraysOptions", "ArraysSource", "plan"]

SOURCE = ArraysSource()
