"""Which storage layout and codec for plate cubes? Measured side by side, in one run.

On the moto S3 server (127.0.0.1, sharing the machine's cores), for a JUMP-size
sample (1080x1080 uint16, 8 channels): objects per JUMP plate (384 wells x 9
fields), stored bytes, and MB/s reading whole fields (all channels) and one
channel of a field, for the source TIFFs and three Zarr layouts. Then Blosc
codecs on the same pixels. Prints tables; ratios are against the source TIFFs.

    .venv/bin/python benchmarks/layout.py [--wells 2] [--fields 3]
"""

from __future__ import annotations

import argparse
import io
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import numcodecs
import numpy as np
import s3fs
import tifffile
import zarr
from _moto import use_dummy_credentials  # noqa: E402 - benchmarks/ is on sys.path
from moto.server import ThreadedMotoServer
from zarr.codecs import BloscCodec
from zarr.storage import FsspecStore

from ingest.sources.cellpainting.synth import synth_field

use_dummy_credentials()

JUMP_FIELDS = 384 * 9
C, N = 8, 1080


def _best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _put(arr, site, stack) -> None:
    arr[site[0], site[1]] = stack


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--wells", type=int, default=2)
    parser.add_argument("--fields", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
    fs.mkdir("bench")
    sites = [(w, f) for w in range(args.wells) for f in range(args.fields)]
    data = {s: synth_field(N, seed=0, row=1, column=s[0] + 1, field=s[1] + 1) for s in sites}
    field_mb = C * N * N * 2 / 1e6
    rows = []

    pool = ThreadPoolExecutor(16)

    # Source TIFFs: one object per channel image; a field is 8 GETs (16 threads, as users do).
    def put_tiff(item) -> None:
        (w, f, c), image = item
        buf = io.BytesIO()
        tifffile.imwrite(buf, image)
        fs.pipe_file(f"bench/tiff/{w}_{f}_{c}.tiff", buf.getvalue())

    items = [((w, f, c), stack[c]) for (w, f), stack in data.items() for c in range(C)]
    t_write = _timed(lambda: list(pool.map(put_tiff, items)))

    def read_tiffs(sel=sites, channels=range(C)) -> None:
        keys = [f"bench/tiff/{w}_{f}_{c}.tiff" for w, f in sel for c in channels]
        list(pool.map(lambda k: tifffile.imread(io.BytesIO(fs.cat_file(k))), keys))

    tiff_bytes = sum(fs.du("bench/tiff", total=False).values())
    rows.append(("TIFF per image (source)", C, tiff_bytes, t_write, read_tiffs))

    layouts = {
        "zarr chunk per image": dict(chunks=(1, 1, 1, N, N), shards=None),
        "zarr chunk per field": dict(chunks=(1, 1, C, N, N), shards=None),
        "zarr shard per field, chunk per image (chosen)": dict(
            chunks=(1, 1, 1, N, N), shards=(1, 1, C, N, N)
        ),
    }
    codec = BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")
    for name, layout in layouts.items():
        path = f"bench/{name.split(' (')[0].replace(' ', '_')}.zarr"
        store = FsspecStore.from_url(f"s3://{path}", storage_options={"endpoint_url": endpoint})
        arr = zarr.create_array(
            store,
            shape=(args.wells, args.fields, C, N, N),
            dtype="uint16",
            compressors=[codec],
            zarr_format=3,
            **layout,
        )
        t_write = _timed(lambda arr=arr: list(pool.map(lambda s: _put(arr, s, data[s]), sites)))
        objects = len([p for p in fs.find(path) if "/c/" in p]) // len(sites)
        nbytes = sum(v for k, v in fs.du(path, total=False).items() if "/c/" in k)

        def read(sel=sites, channels=range(C), arr=arr) -> None:
            ch = slice(None) if len(channels) == C else channels[0]
            list(pool.map(lambda s: arr[s[0], s[1], ch], sel))

        rows.append((name, objects, nbytes, t_write, read))

    print(f"\n{len(sites)} fields of {C}x{N}x{N} uint16 ({field_mb:.1f} MB each) on moto S3\n")
    print(
        "| layout | objects per JUMP plate | stored MB per field | write MB/s | one field MB/s "
        "| batch MB/s | one channel MB/s | batch vs TIFF |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    base = None
    total = len(sites) * field_mb
    for name, per_field, nbytes, t_write, read in rows:
        t_one_field = _best(lambda read=read: [read([s]) for s in sites])  # one at a time
        t_batch = _best(read)  # every field at once
        t_channel = _best(lambda read=read: read(channels=[4]))
        batch = total / t_batch
        base = base or batch
        print(
            f"| {name} | {per_field * JUMP_FIELDS:,} | {nbytes / len(sites) / 1e6:.1f} "
            f"| {total / t_write:.0f} | {total / t_one_field:.0f} | {batch:.0f} "
            f"| {total / C / t_channel:.0f} | {batch / base:.2f}x |"
        )

    print(
        "\n| codec (Blosc, byte shuffle) | ratio | encode MB/s | decode MB/s |\n"
        "|---|---:|---:|---:|"
    )
    pixels = np.stack(list(data.values()))
    for cname, level in (("zstd", 1), ("zstd", 3), ("zstd", 5), ("lz4", 5)):
        blosc = numcodecs.Blosc(cname, level, numcodecs.Blosc.SHUFFLE)
        chunks = [pixels[i, c] for i in range(len(pixels)) for c in range(C)]
        t_enc = _best(lambda b=blosc, xs=chunks: [b.encode(x) for x in xs], 2)
        encoded = [blosc.encode(x) for x in chunks]
        t_dec = _best(lambda b=blosc, es=encoded: [b.decode(e) for e in es], 2)
        size = sum(len(e) for e in encoded)
        print(
            f"| {cname} {level} | {pixels.nbytes / size:.2f} | {pixels.nbytes / t_enc / 1e6:.0f} "
            f"| {pixels.nbytes / t_dec / 1e6:.0f} |"
        )
    server.stop()


if __name__ == "__main__":
    main()
