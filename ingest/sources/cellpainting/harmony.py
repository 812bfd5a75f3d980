"""PerkinElmer Harmony / Phenix ``Index.idx.xml`` (``Index.xml``): per-image metadata.

Namespace ``http://www.perkinelmer.com/PEHH/HarmonyV5``. Read: the plate
(PlateID, PlateRows, PlateColumns) and each image's URL, Row, Col, FieldID,
PlaneID, ChannelID, ChannelName, wavelengths, resolution and position.
"""

from __future__ import annotations

import posixpath
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from cubes.errors import SchemaError
from cubes.store import filesystem, storage_errors

__all__ = ["INDEX_NAMES", "HarmonyImage", "HarmonyIndex", "read_index"]

NS = "http://www.perkinelmer.com/PEHH/HarmonyV5"
INDEX_NAMES = ("Index.idx.xml", "Index.xml")


@dataclass(frozen=True)
class HarmonyImage:
    """One ``Images/Image`` entry; lengths in metres, wavelengths in nm (NaN when absent)."""

    name: str
    row: int
    column: int
    field: int
    plane: int
    channel: int
    channel_name: str
    excitation_nm: float
    emission_nm: float
    resolution_x_m: float
    resolution_y_m: float
    position_x_m: float
    position_y_m: float


@dataclass(frozen=True)
class HarmonyIndex:
    """A parsed index file."""

    url: str
    plate_id: str
    rows: int
    columns: int
    images: list[HarmonyImage]


def read_index(url: str, storage_options: dict[str, Any] | None = None) -> HarmonyIndex:
    """Parse the Harmony index at ``url``; :class:`SchemaError` naming it if it is malformed."""
    fs, path = filesystem(url, storage_options)
    with storage_errors(url, storage_options):
        data = fs.cat_file(path)
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise SchemaError(f"{url} is not valid XML ({exc}). Fix or remove the file.") from exc
    plate = root.find(f"{{{NS}}}Plates/{{{NS}}}Plate")
    try:
        images = [_image(el) for el in root.iterfind(f"{{{NS}}}Images/{{{NS}}}Image")]
        return HarmonyIndex(
            url=url,
            plate_id=_text(plate, "PlateID") if plate is not None else "",
            rows=int(_text(plate, "PlateRows") or 0) if plate is not None else 0,
            columns=int(_text(plate, "PlateColumns") or 0) if plate is not None else 0,
            images=images,
        )
    except (ValueError, TypeError) as exc:
        raise SchemaError(
            f"{url} is not a Harmony index this reader understands ({exc}); expected "
            f"Images/Image entries with Row, Col, FieldID, PlaneID, ChannelID in namespace {NS}."
        ) from exc


def _text(el: ET.Element | None, tag: str) -> str:
    child = None if el is None else el.find(f"{{{NS}}}{tag}")
    return "" if child is None or child.text is None else child.text.strip()


def _number(el: ET.Element, tag: str) -> float:
    text = _text(el, tag)
    return float(text) if text else float("nan")


def _image(el: ET.Element) -> HarmonyImage:
    return HarmonyImage(
        name=posixpath.basename(_text(el, "URL").replace("\\", "/")),
        row=int(_text(el, "Row")),
        column=int(_text(el, "Col")),
        field=int(_text(el, "FieldID")),
        plane=int(_text(el, "PlaneID")),
        channel=int(_text(el, "ChannelID")),
        channel_name=_text(el, "ChannelName"),
        excitation_nm=_number(el, "MainExcitationWavelength"),
        emission_nm=_number(el, "MainEmissionWavelength"),
        resolution_x_m=_number(el, "ImageResolutionX"),
        resolution_y_m=_number(el, "ImageResolutionY"),
        position_x_m=_number(el, "PositionX"),
        position_y_m=_number(el, "PositionY"),
    )


def write_index(plate_id: str, rows: int, columns: int, images: list[HarmonyImage]) -> bytes:
    """An ``Index.idx.xml`` as Harmony writes it (the parts this project reads)."""
    ET.register_namespace("", NS)
    root = ET.Element(f"{{{NS}}}EvaluationInputData", {"Version": "2"})
    plate = ET.SubElement(ET.SubElement(root, f"{{{NS}}}Plates"), f"{{{NS}}}Plate")
    for tag, text in (("PlateID", plate_id), ("PlateRows", rows), ("PlateColumns", columns)):
        ET.SubElement(plate, f"{{{NS}}}{tag}").text = str(text)
    parent = ET.SubElement(root, f"{{{NS}}}Images")
    for im in images:
        el = ET.SubElement(parent, f"{{{NS}}}Image", {"Version": "1"})
        fields: tuple[tuple[str, object, str | None], ...] = (
            ("URL", im.name, None),
            ("Row", im.row, None),
            ("Col", im.column, None),
            ("FieldID", im.field, None),
            ("PlaneID", im.plane, None),
            ("ChannelID", im.channel, None),
            ("ChannelName", im.channel_name, None),
            ("ImageResolutionX", im.resolution_x_m, "m"),
            ("ImageResolutionY", im.resolution_y_m, "m"),
            ("PositionX", im.position_x_m, "m"),
            ("PositionY", im.position_y_m, "m"),
            ("MainExcitationWavelength", im.excitation_nm, "nm"),
            ("MainEmissionWavelength", im.emission_nm, "nm"),
        )
        for tag, value, unit in fields:
            child = ET.SubElement(el, f"{{{NS}}}{tag}", {"Unit": unit} if unit else {})
            child.text = str(value)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
