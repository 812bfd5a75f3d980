"""PerkinElmer/Revvity Harmony ``Index.idx.xml`` (``Index.xml``): per-image metadata.

Every Harmony version this project has met is read the same way: the
namespace is taken from the root element, whatever it is (Harmony 4/5 and
Operetta CLS ``http://www.perkinelmer.com/PEHH/HarmonyV5``, Harmony 6
``…/HarmonyV6``, Harmony 7 ``43B2A954-E3C3-47E1-B392-6635266B0DD3/HarmonyV7``,
or none), and a UTF-8 byte-order mark is tolerated (Harmony 5 and later
write one).

Read: the plate (PlateID, PlateRows, PlateColumns), the instrument
(InstrumentType: ``Phenix``, ``Sonata`` for an Operetta CLS, …) and each
image's URL, Row, Col, FieldID, PlaneID, ChannelID, ChannelName, wavelengths,
resolution and position. Harmony 7 keeps the per-channel fields (name,
wavelengths, resolution) in ``Maps/Map/Entry[@ChannelID]`` rather than on
each ``Image``; older exports have entries there too, holding only a
``FlatfieldProfile``. A field missing from an ``Image`` is taken from the
first entry of its channel that has it.

Lengths are converted to metres from their ``Unit`` attribute (``m``, the
only unit seen in real files, or ``mm``, ``µm``, ``um``, ``nm``).
"""

from __future__ import annotations

import codecs
import logging
import posixpath
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import numpy as np

from cubes.errors import SchemaError
from cubes.store import filesystem, storage_errors
from ingest.sources.cellpainting.plate import PlateMeta

__all__ = [
    "INDEX_NAMES",
    "NAMESPACES",
    "HarmonyImage",
    "HarmonyIndex",
    "apply_index",
    "read_index",
    "write_index",
]

NAMESPACES = {
    5: "http://www.perkinelmer.com/PEHH/HarmonyV5",
    6: "http://www.perkinelmer.com/PEHH/HarmonyV6",
    7: "43B2A954-E3C3-47E1-B392-6635266B0DD3/HarmonyV7",
}
INDEX_NAMES = ("Index.idx.xml", "Index.xml")
ROOT_TAG = "EvaluationInputData"

# Fields an Image may lack and its channel's Maps/Map/Entry then holds (Harmony 7).
CHANNEL_FIELDS = (
    "ChannelName",
    "MainExcitationWavelength",
    "MainEmissionWavelength",
    "ImageResolutionX",
    "ImageResolutionY",
)
_METRES = {"m": 1.0, "mm": 1e-3, "µm": 1e-6, "μm": 1e-6, "um": 1e-6, "nm": 1e-9}
_VERSION = re.compile(r"HarmonyV(\d+)$")

logger = logging.getLogger(__name__)


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
    """A parsed index file.

    ``namespace`` is the root element's namespace (``""`` when it has none),
    ``version`` the Harmony version it names (``None`` when it names none) and
    ``instrument`` the InstrumentType (``""`` when absent).
    """

    url: str
    plate_id: str
    rows: int
    columns: int
    images: list[HarmonyImage]
    namespace: str = ""
    version: int | None = None
    instrument: str = ""


# (text, Unit attribute) of each child element, by tag without namespace
_Fields = dict[str, tuple[str, str]]


def read_index(url: str, storage_options: dict[str, Any] | None = None) -> HarmonyIndex:
    """Parse the Harmony index at ``url``, whichever Harmony version wrote it.

    Parameters
    ----------
    url
        Path or URL of an ``Index.idx.xml`` / ``Index.xml``.
    storage_options
        fsspec options for ``url``.

    Returns
    -------
    HarmonyIndex
        The plate, the instrument and one :class:`HarmonyImage` per ``Image``.

    Raises
    ------
    SchemaError
        If the file is not XML, not a Harmony index, or an image lacks its
        row, column, field, plane or channel, or a length has an unknown unit.
    """
    fs, path = filesystem(url, storage_options)
    with storage_errors(url, storage_options):
        data = fs.cat_file(path)
    root = _parse(url, data)
    ns = _namespace(root)
    try:
        channels = _channel_entries(root, ns)
        images = [_image(el, ns, channels) for el in root.iterfind(_path(ns, "Images", "Image"))]
        plate = _fields(root.find(_path(ns, "Plates", "Plate")))
        return HarmonyIndex(
            url=url,
            plate_id=_get(plate, "PlateID"),
            rows=int(_get(plate, "PlateRows") or 0),
            columns=int(_get(plate, "PlateColumns") or 0),
            images=images,
            namespace=ns,
            version=_version(ns),
            instrument=_get(_fields(root), "InstrumentType"),
        )
    except (ValueError, TypeError) as exc:
        raise SchemaError(
            f"{url} is not a Harmony index this reader understands ({exc}); expected "
            "Images/Image entries with URL, Row, Col, FieldID, PlaneID, ChannelID (namespace "
            f"{ns or 'none'}). Fix or remove the file."
        ) from exc


def _parse(url: str, data: bytes) -> ET.Element:
    """The root element; a UTF-8 byte-order mark and leading blanks are tolerated."""
    try:
        root = ET.fromstring(data.removeprefix(codecs.BOM_UTF8).lstrip())
    except ET.ParseError as exc:
        raise SchemaError(f"{url} is not valid XML ({exc}). Fix or remove the file.") from exc
    if root.tag.rsplit("}", 1)[-1] != ROOT_TAG:
        raise SchemaError(
            f"{url} is not a Harmony index: its root element is {root.tag}, expected "
            f"{ROOT_TAG}. Remove the file from SRC, or give the Harmony export's index."
        )
    return root


def _namespace(root: ET.Element) -> str:
    return root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else ""


def _version(namespace: str) -> int | None:
    match = _VERSION.search(namespace)
    return int(match.group(1)) if match else None


def _path(ns: str, *tags: str) -> str:
    return "/".join(f"{{{ns}}}{tag}" if ns else tag for tag in tags)


def _fields(el: ET.Element | None) -> _Fields:
    """The child elements that hold text, by local tag (the first of each tag)."""
    found: _Fields = {}
    for child in [] if el is None else el:
        tag = child.tag.rsplit("}", 1)[-1] if isinstance(child.tag, str) else ""
        text = (child.text or "").strip()
        if tag and text and tag not in found:
            found[tag] = (text, child.get("Unit", ""))
    return found


def _get(fields: _Fields, tag: str) -> str:
    return fields.get(tag, ("", ""))[0]


def _channel_entries(root: ET.Element, ns: str) -> dict[int, _Fields]:
    """Per channel, the fields of its ``Maps/Map/Entry`` elements (the first Map that has each)."""
    channels: dict[int, _Fields] = {}
    for entry in root.iterfind(_path(ns, "Maps", "Map", "Entry")):
        channel = entry.get("ChannelID")
        if channel is None:
            continue
        merged = channels.setdefault(int(channel), {})
        for tag, value in _fields(entry).items():
            merged.setdefault(tag, value)
    return channels


def _length_m(fields: _Fields, tag: str) -> float:
    """A length in metres from its text and ``Unit`` (metres when no unit is given)."""
    if tag not in fields:
        return float("nan")
    text, unit = fields[tag]
    if unit and unit not in _METRES:
        raise ValueError(f"{tag} has Unit={unit!r}, expected one of {', '.join(_METRES)}")
    return float(text) * _METRES.get(unit, 1.0)


def _number(fields: _Fields, tag: str) -> float:
    text = _get(fields, tag)
    return float(text) if text else float("nan")


def _image(el: ET.Element, ns: str, channels: dict[int, _Fields]) -> HarmonyImage:
    own = _fields(el)
    for tag in ("URL", "Row", "Col", "FieldID", "PlaneID", "ChannelID"):
        if tag not in own:
            raise ValueError(f"Image {_get(own, 'id') or _get(own, 'URL')!r} has no {tag}")
    channel = int(own["ChannelID"][0])
    shared = channels.get(channel, {})
    fields = {**{k: v for k, v in shared.items() if k in CHANNEL_FIELDS}, **own}
    return HarmonyImage(
        name=posixpath.basename(own["URL"][0].replace("\\", "/")),
        row=int(own["Row"][0]),
        column=int(own["Col"][0]),
        field=int(own["FieldID"][0]),
        plane=int(own["PlaneID"][0]),
        channel=channel,
        channel_name=_get(fields, "ChannelName"),
        excitation_nm=_number(fields, "MainExcitationWavelength"),
        emission_nm=_number(fields, "MainEmissionWavelength"),
        resolution_x_m=_length_m(fields, "ImageResolutionX"),
        resolution_y_m=_length_m(fields, "ImageResolutionY"),
        position_x_m=_length_m(fields, "PositionX"),
        position_y_m=_length_m(fields, "PositionY"),
    )


# (row, column, field, plane, channel) of an image, as its file name says
Placement = tuple[int, int, int, int, int]


def apply_index(index: HarmonyIndex, found: dict[str, Placement], meta: PlateMeta) -> None:
    """Channel names, wavelengths, positions (µm), pixel size (µm) and plate id into ``meta``.

    Parameters
    ----------
    index
        The plate's parsed index.
    found
        The images found, by file name: where their names place them.
    meta
        Filled in place; ``meta.index_url`` is set (the index was used).

    Raises
    ------
    SchemaError
        If the index names none of the images found, or places an image
        elsewhere than its name does. One that names only some is warned about.
    """
    matched = [im for im in index.images if im.name in found]
    _check_matches(index, found, matched)
    for im in matched:
        said = (im.row, im.column, im.field, im.plane, im.channel)
        if said != found[im.name]:
            raise SchemaError(
                f"{index.url} contradicts the file names: it places {im.name} at row, column, "
                f"field, plane, channel {said}, the name says {found[im.name]}. Fix or remove "
                "the index file, or the misnamed image."
            )
        meta.instrument.setdefault(im.channel, (im.channel_name, im.excitation_nm, im.emission_nm))
        if np.isfinite(im.position_x_m):
            meta.positions[(im.row, im.column, im.field)] = (
                im.position_x_m * 1e6,
                im.position_y_m * 1e6,
            )
        if meta.pixel_size_um is None and np.isfinite(im.resolution_x_m):
            meta.pixel_size_um = im.resolution_x_m * 1e6
    meta.plate = meta.plate or index.plate_id
    meta.index_url = index.url


def _check_matches(
    index: HarmonyIndex, found: dict[str, Placement], matched: list[HarmonyImage]
) -> None:
    """An index naming none of the images is an error; one describing only some, a warning."""
    if not matched:
        example = index.images[0].name if index.images else "(none)"
        raise SchemaError(
            f"Harmony index {index.url} names none of the {len(found)} images found: its "
            f"{len(index.images)} Image entries name e.g. {example}, the images are named e.g. "
            f"{min(found)}. It describes another plate or export: remove the index file, or "
            "point SRC at the folder it describes."
        )
    named = {im.name for im in matched}
    if len(named) < len(found):
        logger.warning(
            "Harmony index %s describes %d of the %d images found (it has %d Image entries); "
            "the %d it does not describe have no channel name, wavelengths or position from it",
            index.url,
            len(named),
            len(found),
            len(index.images),
            len(found) - len(named),
        )
    elif len(matched) < len(index.images):  # images missing: the quality report counts them
        logger.info(
            "Harmony index %s names %d images that were not found",
            index.url,
            len(index.images) - len(matched),
        )


def write_index(
    plate_id: str,
    rows: int,
    columns: int,
    images: list[HarmonyImage],
    *,
    version: int = 5,
    instrument: str = "",
) -> bytes:
    """An index file as Harmony ``version`` writes it (the parts this project reads).

    Parameters
    ----------
    plate_id, rows, columns
        The plate's ``PlateID``, ``PlateRows`` and ``PlateColumns``.
    images
        One ``Images/Image`` each (the first image of a channel gives that
        channel's ``Maps/Map/Entry`` in versions 6 and 7).
    version
        5: namespace ``…/HarmonyV5``, no byte-order mark, every field on each
        Image (the default, as before). 6 and 7: their namespaces, a UTF-8
        byte-order mark, a FlatfieldProfile Map and a Map with the channel
        name, wavelengths and resolution per ``Entry[@ChannelID]``, which the
        Images then lack (7 as in a real Harmony 7 export; 6 assumed alike:
        no real Harmony 6 export was at hand).
    instrument
        An ``InstrumentType`` element, if not empty.

    Returns
    -------
    bytes
        The file's content.
    """
    if version not in NAMESPACES:
        raise ValueError(f"version={version}: Harmony index versions are {sorted(NAMESPACES)}")
    ns = NAMESPACES[version]
    ET.register_namespace("", ns)
    root = ET.Element(f"{{{ns}}}{ROOT_TAG}", {"Version": "2" if version >= 6 else "1"})
    if instrument:
        ET.SubElement(root, f"{{{ns}}}InstrumentType").text = instrument
    plate = ET.SubElement(ET.SubElement(root, f"{{{ns}}}Plates"), f"{{{ns}}}Plate")
    for tag, text in (("PlateID", plate_id), ("PlateRows", rows), ("PlateColumns", columns)):
        ET.SubElement(plate, f"{{{ns}}}{tag}").text = str(text)
    if version >= 6:
        _write_maps(ET.SubElement(root, f"{{{ns}}}Maps"), ns, images)
    parent = ET.SubElement(root, f"{{{ns}}}Images")
    for im in images:
        el = ET.SubElement(parent, f"{{{ns}}}Image", {"Version": "1"})
        for tag, value, unit in _image_values(im):
            if version < 6 or tag not in CHANNEL_FIELDS:
                _sub(el, ns, tag, value, unit)
    text = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return codecs.BOM_UTF8 + text if version >= 6 else text


def _sub(parent: ET.Element, ns: str, tag: str, value: object, unit: str | None) -> None:
    child = ET.SubElement(parent, f"{{{ns}}}{tag}", {"Unit": unit} if unit else {})
    child.text = str(value)


def _image_values(im: HarmonyImage) -> tuple[tuple[str, object, str | None], ...]:
    return (
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


def _write_maps(maps: ET.Element, ns: str, images: list[HarmonyImage]) -> None:
    """Harmony 7's Maps: flat-field profiles (text only), then the channels' fields."""
    first = {im.channel: im for im in reversed(images)}
    flatfield = ET.SubElement(maps, f"{{{ns}}}Map")
    described = ET.SubElement(maps, f"{{{ns}}}Map")
    for channel, im in sorted(first.items()):
        entry = ET.SubElement(flatfield, f"{{{ns}}}Entry", {"ChannelID": str(channel)})
        profile = f"{{Background: {{Profile: {{Type: Identity}}}}, Channel: {channel}, "
        _sub(entry, ns, "FlatfieldProfile", f"{profile}ChannelName: {im.channel_name}}}", None)
        entry = ET.SubElement(described, f"{{{ns}}}Entry", {"ChannelID": str(channel)})
        for tag, value, unit in _image_values(im):
            if tag in CHANNEL_FIELDS:
                _sub(entry, ns, tag, value, unit)
