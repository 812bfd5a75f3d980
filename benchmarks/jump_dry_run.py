"""The dry run of a JUMP-scale plate, without 27,648 TIFFs: for the README.

A cpg0016 source_4 plate is 384 wells x 9 fields x 8 channels (5 stains and 3
brightfield planes) of 1080 x 1080 uint16 images. Writing those as files to plan
them is what a dry run exists to avoid, so:

- the *plan* is the real planner's (``SOURCES["cellpainting"].plan``) on a
  listing of the plate's 27,648 file names on fsspec's ``memory://`` file
  system: the first file is a real 1080 x 1080 uint16 TIFF header, the others
  are empty (:func:`tests.helpers.names_only_plate`). Tasks, cubes, objects and
  requests therefore come from the same code as for a real plate;
- the input *sizes* are the listing a real plate would give: every image the
  size of an uncompressed 1080 x 1080 uint16 TIFF as the synthetic plate writes
  it (JUMP's are uncompressed or LZW; LZW ones are smaller);
- the *rates and compression ratio* are measured, with the plan's reader and
  the writer's own task into memory (statistics, codec, shards, journal
  marker), on a small real plate of the same shape per task: a synthetic
  1080 x 1080 plate of 2 wells x 2 fields x 8 channels written to local disk
  (``--sample-dir``), 3 sampled tasks after one warm-up. Synthetic images
  compress a little worse than the instrument's (docs/codecs.md, FIELD-NOTES:
  lz4+bitshuffle 1.58 synthetic vs 1.75 on six real Phenix TIFFs), so the
  stored bytes are an upper estimate; the real six-channel Phenix field in
  ``shared/real-data`` (if present) is sampled too and its ratio printed.

    .venv/bin/python benchmarks/jump_dry_run.py [--threads 8] [--workers N] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ingest.dryrun import dry_run  # noqa: E402
from ingest.dryrun_rates import measure_rates  # noqa: E402
from ingest.dryrun_text import format_dry_run, size  # noqa: E402
from ingest.sources import SOURCES  # noqa: E402
from ingest.sources.cellpainting import CellPaintingOptions  # noqa: E402
from ingest.sources.cellpainting.synth import JUMP_SIZE, parse_wells, write_synth_plate  # noqa: E402
from tests.helpers import names_only_plate, real_data  # noqa: E402

PLATE = "BR00117035"  # a cpg0016 source_4 plate id
DEST = f"s3://my-bucket/cpg0016/source_4/{PLATE}.zarr"
SETTINGS = ((8, 1, 2), (8, 1, 8), (4, 4, 16))  # threads, workers, cores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--sample-dir", default=None, help="keep the sampled plate here")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    source, options = SOURCES["cellpainting"], CellPaintingOptions()

    with tempfile.TemporaryDirectory() as tmp:
        sample_dir = Path(args.sample_dir or tmp) / "sample-plate"
        if not sample_dir.exists():
            write_synth_plate(str(sample_dir), wells=parse_wells("2"), fields=2, size=JUMP_SIZE)
        sample = source.plan(str(sample_dir), str(Path(tmp) / "unused.zarr"), options)
        rates = measure_rates(sample, 3)
        rates.measured_on = (
            "a synthetic 1080x1080 plate (2 wells x 2 fields x 8 channels, uncompressed TIFFs "
            "on local disk)"
        )
        tiffs = sorted(sample_dir.rglob("*.tiff"))
        tiff_size = round(sum(p.stat().st_size for p in tiffs) / len(tiffs))

    names_only_plate("memory://jump", parse_wells("384"), 9, JUMP_SIZE, plate=PLATE)
    plans = source.plan("memory://jump/", DEST, options)
    urls = {url for plan in plans for task in plan.tasks for _, url in task.inputs}
    sizes = dict.fromkeys(urls, tiff_size)
    result = dry_run(
        plans,
        {},
        threads=args.threads,
        workers=args.workers,
        rates=rates,
        sizes=sizes,
    )
    if args.json:
        print(json.dumps(result.to_json(), indent=1, default=str))
        return
    print(format_dry_run(result, f"cellpainting <a 384-well source_4 plate> -> {DEST}"))
    print("\nThe same rates at other settings (threads x workers, cores of the machine):")
    for threads, workers, cores in SETTINGS:
        other = dry_run(
            plans, {}, threads=threads, workers=workers, rates=rates, sizes=sizes, cores=cores
        )
        print(f"  {threads} x {workers} on {cores} cores: ~{other.wall_s / 60:.1f} min")
    _real_ratio(source, options)


def _real_ratio(source: object, options: CellPaintingOptions) -> None:
    """The same sampling on the real Phenix field in shared/real-data (6 channels, LZW)."""
    folder = real_data("pe2loaddata", "Version1")
    if folder is None:
        return
    plans = source.plan(str(folder), "/tmp/unused.zarr", options)  # type: ignore[attr-defined]
    rates = measure_rates(plans, 1)
    s = rates.samples[0]
    print(
        f"Real Phenix field ({folder}, {s.inputs} LZW TIFFs of 1080x1080): read+decode "
        f"{s.read_s * 1000:.0f} ms, write {s.write_s * 1000:.0f} ms, "
        f"{size(sum(s.raw.values()))} -> {size(sum(s.stored.values()))} "
        f"(images ratio {rates.ratio('images'):.2f})"
    )


if __name__ == "__main__":
    main()
