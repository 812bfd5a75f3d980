"""What a finished ingest reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["IngestResult"]


@dataclass
class IngestResult:
    """Summary of a finished ingest."""

    dest: str
    n_tasks: int
    n_inputs: int
    bytes_written: int
    seconds: float
    stats: dict[str, dict[str, np.ndarray]] = field(repr=False, default_factory=dict)
    quality: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def mb_per_s(self) -> float:
        """Uncompressed MB written per second."""
        return self.bytes_written / 1e6 / max(self.seconds, 1e-9)
