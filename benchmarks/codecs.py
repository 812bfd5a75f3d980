"""Which codec for the cubes' pixels and fields? Measured on real data, side by side, one run.

For every candidate (Blosc lz4, lz4hc levels 1 and 5, zstd levels 1, 3, 5, each
with byte shuffle, bitshuffle and no shuffle; Blosc zstd 1 and 3 with 1 MiB
blocks; plain zstd levels 1, 3, 5), through the zarr v3 codec objects the cubes
use (``zarr.codecs.BloscCodec``/``ZstdCodec``, typesize set by zarr from the
dtype as in a cube):

- ratio: raw bytes / stored bytes of Zarr v3 arrays laid out as the cubes
  (plates: one chunk per image ``(1, 1, 1, y, x)``, a field's channels in one
  shard; climate: one step x the full grid per chunk), shard indexes included;
- encode and decode MB/s of raw values per CPU-second of one thread
  (``numcodecs.blosc`` threads = 1; this thread's CPU time, so that other work
  on a shared machine counts less), best of 3 rounds; each round runs every
  candidate in turn, so a noisy neighbour slows all of them, not one.

Data (the real files are read where they lie, never copied):

- uint16 images: ``phenix``, the six real Phenix TIFFs of pe2loaddata (1080²,
  5 stains + brightfield, ``shared/real-data/pe2loaddata/Version1``);
  ``operetta``, the two real Operetta CLS TIFFs (1080², FITC,
  ``shared/real-data/operetta-compose``); ``real``, all eight (timed); ``synth``,
  two fields of ``synth_field(1080)``, their eight channels as ``synth-plate``
  writes them (5 stains, 3 brightfield planes);
- float32 fields: ``era``, ERA-Interim u, v, z (int16 packed) decoded to float32
  by the NetCDF source's own code, one month x (3 levels, 241, 480) per chunk
  (``shared/real-data/xarray-data/eraint_uvz.nc``, timed); ``climate``,
  ``synth-climate`` output (73x144), decoded the same way, one day per chunk.

Then the rule of ``docs/codecs.md`` picks a codec per table; last, the ratios of
float fields rounded to fewer mantissa bits (``--keep-bits``, lossy, opt-in).

    .venv/bin/python benchmarks/codecs.py [--real-data DIR] [--rounds 3]
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numcodecs
import numcodecs.blosc
import numpy as np
import tifffile
import zarr
from zarr.codecs import BloscCodec, ZstdCodec
from zarr.core.array_spec import ArrayConfig, ArraySpec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.dtype import get_data_type_from_native_dtype
from zarr.storage import MemoryStore

from ingest.codecs import CODECS, FLOAT_DEFAULT, codec_name, keep_bits
from ingest.sources.cellpainting.synth import synth_field

SHUFFLES = ("shuffle", "bitshuffle", "noshuffle")
BLOSC = (("lz4", 5), ("lz4hc", 1), ("lz4hc", 5), ("zstd", 1), ("zstd", 3), ("zstd", 5))
MIB = 2**20
# The rule (docs/codecs.md): encode fast enough for ingest; of those, bytes within 10 % of
# their smallest; then the fastest decode, where decodes within 10 % tie and fewer bytes win.
MIN_ENCODE_MBS = 300
RATIO_WITHIN = 0.10
DECODE_TIE = 0.10


def candidates() -> list[Any]:
    """Every codec measured, as zarr v3 codec objects (typesize left to zarr)."""
    out: list[Any] = []
    for cname, level in BLOSC:
        out += [BloscCodec(cname=cname, clevel=level, shuffle=s) for s in SHUFFLES]
    for level in (1, 3):  # Blosc picks 32 KiB (zstd 1) and 128 KiB (zstd 3) blocks
        out += [
            BloscCodec(cname="zstd", clevel=level, shuffle=s, blocksize=MIB)
            for s in ("shuffle", "bitshuffle")
        ]
    out += [ZstdCodec(level=level) for level in (1, 3, 5)]
    return out


def real_data(arg: str | None) -> Path | None:
    """``shared/real-data``: ``--real-data``, ``$CELLCUBES_REAL_DATA``, or beside a checkout."""
    here = Path(__file__).resolve()
    roots = [Path(p) for p in (arg, os.environ.get("CELLCUBES_REAL_DATA")) if p]
    roots += [parent / "shared" / "real-data" for parent in here.parents]
    return next((r for r in roots if r.is_dir()), None)


@dataclass
class DataSet:
    """Chunks of one kind of data; ``per_shard`` of them share a shard, as in the cube."""

    name: str
    what: str
    chunks: list[np.ndarray]
    per_shard: int
    parts: list[DataSet] = field(default_factory=list)  # a union: its ratio is theirs

    @property
    def mb(self) -> float:
        return sum(c.nbytes for c in self.chunks) / 1e6


def union(name: str, what: str, parts: list[DataSet]) -> DataSet:
    return DataSet(name, what, [c for p in parts for c in p.chunks], 1, parts)


def tiffs(root: Path, pattern: str) -> list[np.ndarray]:
    return [tifffile.imread(p) for p in sorted(glob.glob(str(root / pattern)))]


def image_sets(root: Path | None) -> list[DataSet]:
    synth = [im for f in (1, 2) for im in synth_field(1080, seed=0, row=1, column=1, field=f)]
    sets = [DataSet("synth", "synth_field(1080), 8 channels x 2 fields", synth, 8)]
    if root is None:
        return sets
    phenix = tiffs(root, "pe2loaddata/Version1/*.tiff")
    operetta = tiffs(root, "operetta-compose/*.tiff")
    parts = [
        DataSet("phenix", "6 real Phenix TIFFs", phenix, len(phenix)),
        DataSet("operetta", "2 real Operetta TIFFs", operetta, 1),
    ]
    return [union("real", "the 8 real TIFFs", parts), *parts, *sets]


def era_chunks(path: Path) -> list[np.ndarray]:
    """Each variable's months, decoded to float32 by the NetCDF source's own code."""
    from ingest.sources.netcdf.steps import read_steps

    names = ("z", "u", "v")
    steps = read_steps(str(path), {}, names)
    return [np.ascontiguousarray(steps[n][m]) for n in names for m in range(steps[n].shape[0])]


def climate_chunks() -> list[np.ndarray]:
    """Days of one ``synth-climate`` year (73x144) as the cube's chunks, every variable."""
    from ingest.sources.netcdf.steps import read_steps
    from ingest.sources.netcdf.synth import write_synth_climate

    names = ("T_surf", "q_H2O", "cldfrac", "T")
    out: list[np.ndarray] = []
    with tempfile.TemporaryDirectory() as tmp:
        synth = write_synth_climate(tmp, years=1, grid=(73, 144))
        for url in synth.urls[::3]:  # four months, eight days each
            steps = read_steps(url, {}, names, record_dim="time")
            out += [np.ascontiguousarray(steps[n][t]) for n in names for t in range(8)]
    return out


def field_sets(root: Path | None) -> list[DataSet]:
    sets = [DataSet("climate", "synth-climate 73x144, days", climate_chunks(), 8)]
    if root is not None:
        era = era_chunks(root / "xarray-data" / "eraint_uvz.nc")
        sets.insert(0, DataSet("era", "ERA-Interim u, v, z months (3, 241, 480)", era, 1))
    return sets


def stored_bytes(codec: Any, data: DataSet) -> tuple[int, int, Any]:
    """(raw, stored) bytes in sharded Zarr v3 arrays laid out as the cube (one array per
    chunk shape), and the codec as zarr evolved it for the dtype (typesize)."""
    if data.parts:
        sizes = [stored_bytes(codec, p) for p in data.parts]
        return sum(s[0] for s in sizes), sum(s[1] for s in sizes), sizes[0][2]
    groups: dict[tuple[int, ...], list[np.ndarray]] = {}
    for chunk in data.chunks:
        groups.setdefault(chunk.shape, []).append(chunk)
    raw = stored = 0
    for shape, chunks in groups.items():
        stack = np.stack(chunks[: len(chunks) - len(chunks) % data.per_shard])
        store = MemoryStore()
        array = zarr.create_array(
            store,
            shape=stack.shape,
            chunks=(1, *shape),
            shards=(data.per_shard, *shape),
            dtype=stack.dtype,
            compressors=[codec],
            fill_value=0,
        )
        array[...] = stack
        if not np.array_equal(array[...], stack, equal_nan=True):
            raise AssertionError(f"{codec_name(codec)} did not round-trip {data.name}")
        raw += stack.nbytes
        stored += sum(len(v) for k, v in store._store_dict.items() if k.startswith("c/"))
    return raw, stored, array.compressors[0]


def cpu_seconds(codec: Any, data: DataSet) -> tuple[float, float]:
    """CPU seconds of this thread to encode, then decode, every chunk once through the
    codec's own per-chunk methods (what zarr's pipeline calls)."""
    proto = default_buffer_prototype()
    spec = ArraySpec(
        shape=data.chunks[0].shape,
        dtype=get_data_type_from_native_dtype(data.chunks[0].dtype),
        fill_value=0,
        config=ArrayConfig(order="C", write_empty_chunks=True),
        prototype=proto,
    )
    raw = [proto.buffer.from_array_like(c.reshape(-1).view(np.uint8)) for c in data.chunks]
    t0 = time.thread_time()
    encoded = [codec._encode_sync(b, spec) for b in raw]
    t1 = time.thread_time()
    for b in encoded:
        codec._decode_sync(b, spec)
    return t1 - t0, time.thread_time() - t1


@dataclass
class Row:
    name: str
    ratios: dict[str, float]
    encode: float = float("inf")
    decode: float = float("inf")


def measure(sets: list[DataSet], rounds: int) -> list[Row]:
    """Ratios on every set; MB/s on the first, best of ``rounds`` interleaved rounds."""
    timed, rows, used = sets[0], [], []
    for codec in candidates():
        ratios = {}
        for data in sets:
            raw, stored, evolved = stored_bytes(codec, data)
            ratios[data.name] = raw / stored
        rows.append(Row(codec_name(codec), ratios))
        used.append(evolved)
    for _ in range(rounds):
        for codec, row in zip(used, rows, strict=True):
            enc, dec = cpu_seconds(codec, timed)
            row.encode, row.decode = min(row.encode, enc), min(row.decode, dec)
    for row in rows:
        row.encode, row.decode = timed.mb / row.encode, timed.mb / row.decode
    return rows


def choose(rows: list[Row], on: str) -> Row | None:
    """The rule: of the codecs that encode at ≥ MIN_ENCODE_MBS, those whose ratio on ``on``
    is within RATIO_WITHIN of the best of them; of these the fastest decoder, where
    decodes within DECODE_TIE of the fastest tie and the best ratio wins."""
    fast = [r for r in rows if r.encode >= MIN_ENCODE_MBS]
    if not fast:
        return None
    best = max(r.ratios[on] for r in fast)
    fit = [r for r in fast if r.ratios[on] >= best / (1 + RATIO_WITHIN)]
    fastest = max(r.decode for r in fit)
    ties = [r for r in fit if r.decode >= fastest * (1 - DECODE_TIE)]
    return max(ties, key=lambda r: r.ratios[on])


def print_table(title: str, sets: list[DataSet], rows: list[Row], chosen: Row | None) -> None:
    timed = sets[0]
    print(f"\n### {title}\n")
    for data in sets:
        print(f"- {data.name}: {data.what}, {len(data.chunks)} chunks, {data.mb:.1f} MB")
    names = [d.name for d in sets]
    best = max(r.ratios[timed.name] for r in rows)
    print(f"\nMB/s on {timed.name}; 'of best': its ratio / the best ratio on {timed.name}.\n")
    print(
        "| codec | "
        + " | ".join(f"ratio {n}" for n in names)
        + " | of best | encode MB/s | decode MB/s |"
    )
    print("|---|" + "---:|" * (len(names) + 3))
    for r in sorted(rows, key=lambda r: -r.decode):
        cells = " | ".join(f"{r.ratios[n]:.3f}" for n in names)
        name = f"**{r.name}**" if r is chosen else r.name
        print(
            f"| {name} | {cells} | {r.ratios[timed.name] / best:.0%} | {r.encode:,.0f} | "
            f"{r.decode:,.0f} |"
        )
    rule = (
        f"The rule (encode ≥ {MIN_ENCODE_MBS} MB/s; of those, ratio on {timed.name} ≥ their "
        f"best / {1 + RATIO_WITHIN:.2f}; the fastest decode, decodes within {DECODE_TIE:.0%} "
        "of it tie and the better ratio wins)"
    )
    if chosen is None:
        print(f"\n{rule}: no candidate meets it.")
        return
    print(
        f"\n{rule} picks **{chosen.name}**: ratio {chosen.ratios[timed.name]:.3f}, encode "
        f"{chosen.encode:,.0f}, decode {chosen.decode:,.0f} MB/s."
    )


def print_keep_bits(sets: list[DataSet], names: tuple[str, ...], bits: tuple[int, ...]) -> None:
    """Ratios of float fields rounded to ``bits`` mantissa bits (``--keep-bits``: lossy)."""
    print("\n### float32 fields rounded to N mantissa bits (--keep-bits N, lossy, opt-in)\n")
    cols = [f"{d.name} {b if b < 23 else 'all'}" for d in sets for b in bits]
    print("| codec | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for name in names:
        cells = []
        for data in sets:
            for b in bits:
                rounded = DataSet(
                    data.name, "", [keep_bits(c, b) for c in data.chunks], data.per_shard
                )
                raw, stored, _ = stored_bytes(CODECS[name], rounded)
                cells.append(f"{raw / stored:.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--real-data", default=None, help="the shared/real-data folder")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds (best of)")
    parser.add_argument("--only", choices=("images", "fields"), default=None)
    args = parser.parse_args()
    numcodecs.blosc.set_nthreads(1)
    numcodecs.blosc.use_threads = False
    root = real_data(args.real_data)
    print(
        f"# Codecs, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()} "
        f"({os.cpu_count()} CPUs, {platform.machine()}), zarr {zarr.__version__}, "
        f"numcodecs {numcodecs.__version__}: one thread, best of {args.rounds}"
    )
    if root is None:
        print("\n(shared/real-data not found: the real data are left out, synthetic data timed)")
    tables = {"images": ("uint16 images", image_sets), "fields": ("float32 fields", field_sets)}
    for key, (title, make) in tables.items():
        if args.only in (None, key):
            sets = make(root)
            rows = measure(sets, args.rounds)
            print_table(title, sets, rows, choose(rows, sets[0].name))
            if key == "fields":
                names = (FLOAT_DEFAULT, "zstd1-bitshuffle-1M", "zstd3")
                print_keep_bits(sets, names, (23, 16, 12, 8))


if __name__ == "__main__":
    main()
