"""A cube's layout, recorded in its attributes: what a sample is, what is tiled, what is a channel.

The layout is data, not code: the writer, array-job slicing, the journal,
``finalize``, the quality report, :func:`cubes.open_cube` and the loaders read
it from the cube (attribute ``cube_layout``) or from the plan that writes it,
and none of them knows the names of a particular kind's dims.

=============  ======================  ==============  ============================
kind           sample dims             window dims     channel-like axis
=============  ======================  ==============  ============================
plate          ``well, field``         ``y, x``        the ``channel`` dim
climate        ``time``                ``lat, lon``    the data variables
arrays         ``sample``              (per variable)  the data variables
=============  ======================  ==============  ============================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from cubes import conventions as cv
from cubes.errors import SchemaError

__all__ = ["ATTR_LAYOUT", "Layout", "StatSpec", "layout_of"]

ATTR_LAYOUT = "cube_layout"


@dataclass(frozen=True)
class StatSpec:
    """Where the statistics of one data variable are stored.

    The statistic ``s`` of variable ``v`` is the variable ``f"{prefix}_{s}"``,
    over ``dims`` (the groups the statistics are computed per: a plate's
    ``channel``, a climate variable's pressure ``level``, or none).
    """

    prefix: str
    dims: tuple[str, ...] = ()
    names: tuple[str, ...] = cv.STAT_NAMES

    def var(self, stat: str) -> str:
        """Name of the variable holding ``stat``."""
        return f"{self.prefix}_{stat}"


@dataclass(frozen=True)
class Layout:
    """What one cube's dims mean.

    Attributes
    ----------
    kind
        The cube kind (``cellpainting-plate``, ``climate``, ``arrays``).
    sample_dims
        What one training sample or recipe unit is indexed by.
    window_dims
        The dims ``input_dims`` tiles (may be empty: whole samples).
    variables
        The data variables that hold the samples.
    channel_dim
        A dim of the variables that is the channel axis, or None when the
        variables themselves are the channels.
    mask
        The bool variable marking what was found (over the sample dims, and
        the channel dim where there is one), or None.
    mask_item
        What one mask position is called in reports ("image", "time step").
    statistics
        Per data variable, where its statistics are stored.
    time_dim
        The record dim of time series (for lead times), or None.
    """

    kind: str
    sample_dims: tuple[str, ...]
    window_dims: tuple[str, ...]
    variables: tuple[str, ...]
    channel_dim: str | None = None
    mask: str | None = cv.PRESENT
    mask_item: str = "item"
    statistics: Mapping[str, StatSpec] = field(default_factory=dict)
    time_dim: str | None = None

    def to_attrs(self) -> dict[str, Any]:
        """The layout as JSON-able group attributes."""
        out = asdict(self)
        out["statistics"] = {k: asdict(v) for k, v in self.statistics.items()}
        return out

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> Layout:
        """The layout recorded by :meth:`to_attrs`."""
        values = dict(attrs)
        stats = {
            k: StatSpec(v["prefix"], tuple(v.get("dims", ())), tuple(v.get("names", ())))
            for k, v in values.pop("statistics", {}).items()
        }
        for key in ("sample_dims", "window_dims", "variables"):
            values[key] = tuple(values.get(key, ()))
        return cls(**values, statistics=stats)

    def channels(self, ds: Any) -> list[str]:
        """The channel-like labels: the channel coord, or the variable names."""
        if self.channel_dim is not None:
            return [str(c) for c in ds[self.channel_dim].values]
        return list(self.variables)

    def stat_var(self, variable: str, stat: str) -> str:
        """Name of the variable holding ``stat`` of ``variable``."""
        return self.statistics[variable].var(stat)


# Plate cubes written before layouts were recorded (convention 1) said only their kind.
_LEGACY: dict[str, dict[str, Any]] = {
    "cellpainting-plate": {
        "kind": "cellpainting-plate",
        "sample_dims": ["well", "field"],
        "window_dims": ["y", "x"],
        "variables": ["images"],
        "channel_dim": "channel",
        "mask": cv.PRESENT,
        "mask_item": "image",
        "statistics": {"images": {"prefix": "channel", "dims": ["channel"]}},
    }
}


def layout_of(attrs: Mapping[str, Any], url: str = "") -> Layout:
    """The layout a cube's attributes record (or its kind implies, for older cubes).

    Raises
    ------
    SchemaError
        The attributes say neither (not a cube written by ``python -m ingest``).
    """
    if ATTR_LAYOUT in attrs:
        return Layout.from_attrs(attrs[ATTR_LAYOUT])
    legacy = _LEGACY.get(str(attrs.get(cv.ATTR_KIND, "")))
    if legacy is None:
        raise SchemaError(
            f"{url or 'This group'} records no cube layout (attribute {ATTR_LAYOUT}) and no known "
            f"{cv.ATTR_KIND}; it was not written by 'python -m ingest'. Ingest the source again."
        )
    values = dict(legacy)
    values["statistics"] = {
        k: {**v, "names": list(cv.STAT_NAMES)} for k, v in legacy["statistics"].items()
    }
    return Layout.from_attrs(values)
