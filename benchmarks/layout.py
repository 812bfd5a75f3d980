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
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numcodecs
import numpy as np
import s3fs
import tifffile
import zarr
from moto.server import ThreadedMotoServer
from zarr.codecs import BloscCodec
from zarr.storage import FsspecStore

from ingest.synth import synth_field

for _k, _v in {
    "AWS_ACCESS_KEY_ID": "x",
    "AWS_SECRET_ACCESS_KEY": "x",
    "AWS_DEFAULT_REGION": "us-east-1",
}.items():
    os.environ.setdefault(_k, _v)

JUMP_FIELDS = 384 * 9
C, N = 8, 1080


def _best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


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

    # Source TIFFs: one object per channel image; a field is 8 GETs (16 threads, as users do).
    for (w, f), stack in data.items():
        for c in range(C):
            buf = io.BytesIO()
            tifffile.imwrite(buf, stack[c])
            fs.pipe_file(f"bench/tiff/{w}_{f}_{c}.tiff", buf.getvalue())
    pool = ThreadPoolExecutor(16)

    def read_tiffs(channels=range(C)) -> None:
        keys = [f"bench/tiff/{w}_{f}_{c}.tiff" for w, f in sites for c in channels]
        list(pool.map(lambda k: tifffile.imread(io.BytesIO(fs.cat_file(k))), keys))

    tiff_bytes = sum(fs.du("bench/tiff", total=False).values())
    rows.append(("TIFF per image (source)", C, tiff_bytes, read_tiffs, lambda: read_tiffs([4])))

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
        for (w, f), stack in data.items():
            arr[w, f] = stack
        objects = len([p for p in fs.find(path) if "/c/" in p]) // len(sites)
        nbytes = sum(v for k, v in fs.du(path, total=False).items() if "/c/" in k)

        def read_fields(arr=arr) -> None:
            list(pool.map(lambda s: arr[s[0], s[1]], sites))

        def read_channel(arr=arr) -> None:
            list(pool.map(lambda s: arr[s[0], s[1], 4], sites))

        rows.append((name, objects, nbytes, read_fields, read_channel))

    print(f"\n{len(sites)} fields of {C}x{N}x{N} uint16 ({field_mb:.1f} MB each) on moto S3\n")
    print(
        "| layout | objects per JUMP plate | stored MB per field | field MB/s "
        "| one-channel MB/s | field read vs TIFF |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    base = None
    for name, per_field, nbytes, read_all, read_one in rows:
        t_all, t_one = _best(read_all), _best(read_one)
        mbs = len(sites) * field_mb / t_all
        base = base or mbs
        print(
            f"| {name} | {per_field * JUMP_FIELDS:,} | {nbytes / len(sites) / 1e6:.1f} | "
            f"{mbs:.0f} | {len(sites) * field_mb / C / t_one:.0f} | {mbs / base:.2f}x |"
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
