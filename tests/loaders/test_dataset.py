"""CubeBatchDataset and CubeLoader: values, order, workers over S3, resume, and clear errors."""

from __future__ import annotations

import gc
import logging
import multiprocessing
import sys
import threading

import numpy as np
import pytest
import torch

import cubes
from cubes.errors import SchemaError
from loaders import CubeBatchDataset, CubeLoader, to_device
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def s3_cube(moto_server, tmp_path_factory):
    """A plate cube on the moto server with one field missing entirely (C07 field 2)."""
    import boto3
    import s3fs

    boto3.client("s3", endpoint_url=moto_server).create_bucket(Bucket="loaders")
    fs = s3fs.S3FileSystem(endpoint_url=moto_server, skip_instance_cache=True)
    from ingest.sources.cellpainting.synth import parse_wells, write_synth_plate

    plate = write_synth_plate(
        "s3://loaders/raw",
        wells=parse_wells("A01,B02,C07"),
        fields=3,
        size=48,
        seed=3,
        storage_options={"endpoint_url": moto_server},
    )
    images = plate.images_url.removeprefix("s3://")
    for ch in range(1, 9):
        fs.rm(f"{images}/r03c07f02p01-ch{ch}sk1fk1fl1.tiff")
    url = "s3://loaders/plate.zarr"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ENDPOINT_URL", moto_server)
        run_cli("cellpainting", "s3://loaders/raw", url, "--no-progress")
    options = {"endpoint_url": moto_server}
    return url, options, cubes.open_cube(url, storage_options=options).load()


@pytest.fixture(scope="module")
def local_truth(local_cube):
    """The local cube, opened and loaded into memory once: the truth to compare with."""
    return cubes.open_cube(str(local_cube)).load()


def _epoch(loader) -> list[tuple[str, int]]:
    seen = []
    for batch in loader:
        seen += list(zip(batch["well"], batch["field"].tolist(), strict=True))
    return seen


def _samples(batches) -> list[list[int]]:
    return [b["sample"].tolist() for b in batches]


def _check_values(batch, cube, channels=None):
    """Each sample's pixels equal the cube's at its well, field, y and x."""
    h, w = batch["inputs"].shape[-2:]
    for i, well in enumerate(batch["well"]):
        y, x = int(batch["y"][i]), int(batch["x"][i])
        truth = cube.images.sel(well=well, field=int(batch["field"][i]))
        if channels is not None:
            truth = truth.sel(channel=channels)
        truth = truth.isel(y=slice(y, y + h), x=slice(x, x + w)).values.astype(np.float32)
        np.testing.assert_array_equal(batch["inputs"][i].numpy(), truth)


# --- workers over S3 ---------------------------------------------------------------------


@pytest.mark.s3
@pytest.mark.slow
@pytest.mark.parametrize("context", ["forkserver", "spawn"])
def test_two_workers_shuffle_and_read_every_field_once(s3_cube, context):
    url, options, cube = s3_cube
    data = CubeBatchDataset(url, storage_options=options, batch_size=3, shuffle=True, seed=5)
    loader = data.loader(num_workers=2, multiprocessing_context=context)
    assert loader.dataloader.multiprocessing_context.get_start_method() == context
    epochs = []
    for epoch in range(2):  # persistent workers, and the epoch advances by itself
        assert loader.epoch == epoch
        seen_values, order = {}, []
        for batch in loader:
            order += batch["sample"].tolist()
            assert batch["inputs"].dtype == torch.float32
            assert batch["inputs"].shape[1:] == (8, 48, 48)
            assert not batch["padding"].any()
            assert batch["stats"]["requests"] > 0  # read in the worker, counted there
            for i, key in enumerate(zip(batch["well"], batch["field"].tolist(), strict=True)):
                assert key not in seen_values, f"{key} twice in one epoch"
                seen_values[key] = batch["inputs"][i].numpy()
        assert order == data.sample_order(epoch).tolist()
        epochs.append(order)
    expected = {
        (str(w), int(f))
        for w in cube.well.values
        for f in cube.field.values
        if bool(cube.present.sel(well=w, field=f).any())
    }
    assert set(seen_values) == expected
    assert len(seen_values) == 3 * 3 - 1  # the missing field is not a sample
    assert epochs[0] != epochs[1], "two epochs in the same order"
    for (well, field), values in seen_values.items():
        truth = cube.images.sel(well=well, field=field).values.astype(np.float32)
        np.testing.assert_array_equal(values, truth)


@pytest.mark.s3
def test_a_plain_dataloader_with_fork_workers_still_works(s3_cube):
    url, options, _ = s3_cube
    data = CubeBatchDataset(url, storage_options=options, batch_size=3)
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=None,
        shuffle=True,
        num_workers=2,
        multiprocessing_context=multiprocessing.get_context("fork"),
    )
    assert sorted(_epoch(loader)) == sorted(_epoch(data.loader(num_workers=0)))


@pytest.mark.s3
def test_metrics_count_requests_and_waits(s3_cube, caplog):
    url, options, _ = s3_cube
    data = CubeBatchDataset(url, storage_options=options, batch_size=2, channels=["DNA"])
    loader = data.loader(num_workers=0, prefetch=2, log_every=1e-9)
    with caplog.at_level(logging.INFO, logger="loaders.loader"):
        batches = list(loader)
    m = loader.metrics()
    assert m["batches"] == len(batches) == len(data) == 4
    assert m["requests"] >= 8 and m["bytes"] > 0  # at least one request per field
    assert m["requests"] == sum(b["stats"]["requests"] for b in batches)
    assert m["wait_s"] > 0 and 0 < m["wait_fraction"] <= 1 and m["batches_per_s"] > 0
    assert m["mean_wait_ms"] == pytest.approx(1000 * m["wait_s"] / 4)
    assert np.isnan(m["cache_hit_rate"])  # no cache configured
    assert any("batches/s" in r.getMessage() for r in caplog.records)


@pytest.mark.s3
@pytest.mark.parametrize("cache", ["memory", "disk"])
def test_caches_hit_on_the_second_epoch(s3_cube, cache, tmp_path):
    url, options, _ = s3_cube
    kwargs = {"memory_cache_mb": 64} if cache == "memory" else {"cache_dir": tmp_path}
    data = CubeBatchDataset(url, storage_options=options, batch_size=4, **kwargs)
    loader = data.loader(num_workers=0, prefetch=0)
    list(loader)
    first = loader.metrics()
    assert first["requests"] > 0 and first[f"{cache}_misses"] > 0
    list(loader)
    m = loader.metrics()
    assert m["requests"] == first["requests"]  # nothing read from storage again
    assert m[f"{cache}_hits"] == first[f"{cache}_misses"]
    assert 0.4 < m["cache_hit_rate"] <= 0.5  # epoch 1 misses, epoch 2 hits


# --- order, ranks and resume ---------------------------------------------------------------


def test_resume_mid_epoch_with_other_workers_gives_the_remaining_batches(local_cube):
    def dataset():
        return CubeBatchDataset(
            str(local_cube), input_dims={"y": 32, "x": 32}, batch_size=3, shuffle=True, seed=7
        )

    reference = dataset().loader(num_workers=0, prefetch=0)
    reference.set_epoch(2)
    full = _samples(reference)
    assert len(full) == 8 and reference.epoch == 3
    assert sorted(sum(full, [])) == list(range(24))

    first = dataset().loader(num_workers=1, multiprocessing_context="forkserver")
    first.set_epoch(2)
    seen = []
    for batch in first:
        seen.append(batch["sample"].tolist())
        if len(seen) == 3:
            state = first.state_dict()
            break
    assert seen == full[:3]
    assert (state["epoch"], state["batch"]) == (2, 3)

    resumed = dataset().loader(num_workers=0, prefetch=2)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # the current epoch: keeps the position
    assert _samples(resumed) == full[3:]
    assert (resumed.epoch, resumed.state_dict()["batch"]) == (3, 0)
    # the epoch advanced by itself: the next iteration is epoch 3, as a fresh loader's
    fresh = dataset().loader(num_workers=0, prefetch=0)
    fresh.set_epoch(3)
    assert _samples(resumed) == _samples(fresh)


def test_dataset_state_dict_forwards_to_its_loader(local_cube):
    data = CubeBatchDataset(str(local_cube), batch_size=2, shuffle=True)
    loader = data.loader(num_workers=0)
    batches = iter(loader)
    next(batches)
    assert data.state_dict() == loader.state_dict()
    assert data.state_dict()["batch"] == 1
    rest = [b["sample"].tolist() for b in batches]

    again = CubeBatchDataset(str(local_cube), batch_size=2)  # shuffle given to loader() below
    again.load_state_dict(loader.state_dict() | {"epoch": 0, "batch": 1})
    assert _samples(again.loader(num_workers=0, shuffle=True)) == rest


def test_state_from_another_setup_is_refused(local_cube):
    state = CubeBatchDataset(str(local_cube), batch_size=2, shuffle=True).loader(num_workers=0)
    state = state.state_dict()
    other = CubeBatchDataset(str(local_cube), batch_size=3, shuffle=True, seed=1)
    saved = r"saved with seed=0, shuffle_buffer=8, batch_size=2; this loader has seed=1"
    with pytest.raises(SchemaError, match=saved):
        other.loader(num_workers=0).load_state_dict(state)
    ranks = CubeBatchDataset(str(local_cube), batch_size=2, shuffle=True, world_size=2, rank=1)
    ranks.load_state_dict(state)  # checked when the loader is made
    with pytest.raises(SchemaError, match=r"world_size=1.*world_size=2"):
        ranks.loader(num_workers=0)
    patches = CubeBatchDataset(str(local_cube), batch_size=2, shuffle=True, channels=["DNA"])
    with pytest.raises(
        SchemaError,
        match=r"another dataset \(inputs=\[.*'Brightfield'\]\); this one has inputs=\['DNA'\]",
    ):
        patches.loader(num_workers=0).load_state_dict(state)
    with pytest.raises(SchemaError, match="Not a CubeLoader state"):
        patches.loader(num_workers=0).load_state_dict({"epoch": 0})


def test_ranks_share_an_epoch_disjointly_with_padding(local_cube, local_truth):
    # 6 fields x 4 patches = 24 samples in batches of 5: 5 batches, 3 ranks -> 2 each, padded.
    kwargs = {"input_dims": {"y": 32, "x": 32}, "batch_size": 5, "shuffle": True, "seed": 3}
    ranks = [CubeBatchDataset(str(local_cube), world_size=3, rank=r, **kwargs) for r in range(3)]
    assert [len(d) for d in ranks] == [2, 2, 2]
    real, padded = [], []
    for data in ranks:
        data.set_epoch(4)
        for i in range(len(data)):
            batch = data[i]
            assert len(batch["sample"]) == 5
            _check_values(batch, local_truth)
            real += batch["sample"][~batch["padding"]].tolist()
            padded += batch["sample"][batch["padding"]].tolist()
    assert sorted(real) == list(range(24)) and len(padded) == 6
    assert padded == ranks[0].sample_order(4)[:6].tolist()  # repeats from the start of the epoch
    dropped = CubeBatchDataset(str(local_cube), world_size=3, uneven="drop", **kwargs)
    assert len(dropped) == 1 and not dropped[0]["padding"].any()


def test_world_size_comes_from_torch_distributed(local_cube, monkeypatch):
    monkeypatch.setattr(torch.distributed, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    data = CubeBatchDataset(str(local_cube), batch_size=1)
    assert (data.rank, data.world_size, len(data)) == (1, 2, 3)
    assert CubeBatchDataset(str(local_cube), rank=0, world_size=1).world_size == 1


def test_indices_are_batches_of_the_current_epoch_or_of_a_given_one(local_cube):
    data = CubeBatchDataset(str(local_cube), batch_size=2, shuffle=True, seed=11)
    assert data[0]["sample"].tolist() == data[(0, 0)]["sample"].tolist()
    data.set_epoch(5)
    assert data[-1]["sample"].tolist() == data[(5, 2)]["sample"].tolist()
    orders = {tuple(data.sample_order(e).tolist()) for e in range(4)}
    assert len(orders) == 4
    unshuffled = CubeBatchDataset(str(local_cube), batch_size=2)
    assert unshuffled.sample_order(3).tolist() == list(range(6))
    with pytest.raises(IndexError, match="batch 3 out of range for 3 batches"):
        data[(0, 3)]


# --- values and transforms ---------------------------------------------------------------


def test_patches_and_channel_subsets_match_the_cube(local_cube, local_truth):
    data = CubeBatchDataset(
        str(local_cube),
        input_dims={"y": 32, "x": 16},
        input_overlap={"x": 8},
        channels=["DNA", "Mito"],
        batch_size=5,
    )
    patches_per_field = 2 * 7  # y: 64/32; x: windows of 16 every 8 px in 64
    assert data.n_samples == local_truth.sizes["well"] * local_truth.sizes["field"] * 14
    assert len(data) == -(-data.n_samples // 5) and patches_per_field == 14
    seen = 0
    for b in range(len(data)):
        batch = data[b]
        assert batch["inputs"].shape[1:] == (2, 32, 16)
        _check_values(batch, local_truth, ["DNA", "Mito"])
        seen += len(batch["well"])
    assert seen == data.n_samples


def test_random_crop_reads_the_pixels_at_the_reported_position(local_cube, local_truth):
    kwargs = {"input_dims": {"y": 32, "x": 64}, "batch_size": 4, "channels": ["ER", "AGP"]}
    data = CubeBatchDataset(str(local_cube), random_crop={"y": 20, "x": 9}, seed=2, **kwargs)
    windows = CubeBatchDataset(str(local_cube), **kwargs)
    offsets = []
    for i in range(len(data)):
        batch, window = data[i], windows[i]
        assert batch["inputs"].shape[1:] == (2, 20, 9)
        _check_values(batch, local_truth, ["ER", "AGP"])
        dy, dx = batch["y"] - window["y"], batch["x"] - window["x"]
        assert ((dy >= 0) & (dy <= 12)).all() and ((dx >= 0) & (dx <= 55)).all()
        offsets += list(zip(dy.tolist(), dx.tolist(), strict=True))
    assert len(set(offsets)) > 1
    first = (data[0]["y"], data[0]["x"])
    data.set_epoch(1)
    assert not (torch.equal(data[0]["y"], first[0]) and torch.equal(data[0]["x"], first[1]))


def test_normalize_uses_the_cube_statistics(local_cube, local_truth):
    cube = local_truth
    data = CubeBatchDataset(str(local_cube), channels=["ER"], normalize=True, batch_size=100)
    batch = data[0]["inputs"].numpy()
    raw = cube.images.sel(channel="ER").values.astype(np.float64)
    expected_first = (raw[0, 0] - cube.channel_mean.sel(channel="ER").item()) / (
        cube.channel_std.sel(channel="ER").item()
    )
    np.testing.assert_allclose(batch[0, 0], expected_first, rtol=1e-5, atol=1e-5)
    assert abs(batch.mean()) < 0.05 and abs(batch.std() - 1) < 0.05
    assert data.statistics[0]["samples"] is None


def test_normalize_without_stored_statistics_estimates_them(local_truth):
    cube = local_truth.drop_vars(["channel_mean", "channel_std"])
    cube.encoding.clear()  # in memory: read through xarray
    channels = ["DNA", "RNA"]
    with pytest.warns(UserWarning, match=r"no usable statistics.*6 of its samples"):
        data = CubeBatchDataset(cube, channels=channels, normalize=True, batch_size=6)
    stats = data.statistics[0]
    assert len(stats["samples"]) == 6  # all of this small cube's fields (at most 16)
    pixels = np.stack(
        [cube.images.sel(well=w, field=f, channel=channels).values for w, f in stats["samples"]]
    ).astype(np.float64)
    mean, std = pixels.mean(axis=(0, 2, 3)), pixels.std(axis=(0, 2, 3))
    np.testing.assert_allclose(stats["mean"], mean, rtol=1e-9)
    np.testing.assert_allclose(stats["std"], std, rtol=1e-9)
    batch = data[0]
    raw = cube.images.sel(well=batch["well"][0], field=int(batch["field"][0]), channel=channels)
    expected = (raw.values - mean[:, None, None]) / std[:, None, None]
    np.testing.assert_allclose(batch["inputs"][0].numpy(), expected, rtol=1e-4, atol=1e-4)


def test_clahe_equalises_each_channel_into_0_1(local_cube, local_truth):
    data = CubeBatchDataset(str(local_cube), channels=["Mito", "DNA"], clahe=True, batch_size=2)
    batch = data[0]
    images = batch["inputs"].numpy()
    assert images.min() >= 0.0 and images.max() <= 1.0
    raw = local_truth.images.sel(well=batch["well"][0], field=int(batch["field"][0]))
    raw = raw.sel(channel="Mito").values.astype(np.float64)
    scaled = (raw - raw.min()) / (raw.max() - raw.min())
    assert np.abs(images[0, 0] - scaled).mean() > 0.01  # equalised, not just rescaled
    assert np.corrcoef(images[0, 0].ravel(), scaled.ravel())[0, 1] > 0.5  # monotone-ish
    both = CubeBatchDataset(str(local_cube), channels=["Mito"], clahe=True, normalize=True)
    assert both.statistics[0]["samples"] is not None  # estimated after CLAHE
    normalised = torch.cat([both[i]["inputs"] for i in range(len(both))]).numpy()
    assert abs(normalised.mean()) < 1e-3 and abs(normalised.std() - 1) < 1e-3


def test_clahe_without_scikit_image_says_how_to_install_it(local_cube, monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage.exposure", None)
    with pytest.raises(ImportError, match=r"pip install cellcubes\[clahe\]"):
        CubeBatchDataset(str(local_cube), clahe=True)


def test_user_transform_runs_last_on_each_sample(local_cube, local_truth):
    def halve(sample):
        assert sample.dtype == np.float32 and sample.ndim == 3
        return sample[:, ::2, ::2] / 2

    data = CubeBatchDataset(str(local_cube), channels=["AGP"], transform=halve, batch_size=3)
    batch = data[1]
    assert batch["inputs"].shape == (3, 1, 32, 32)
    truth = local_truth.images.sel(well=batch["well"][0], field=int(batch["field"][0]))
    expected = truth.sel(channel=["AGP"]).values[:, ::2, ::2].astype(np.float32) / 2
    np.testing.assert_array_equal(batch["inputs"][0].numpy(), expected)


def test_in_memory_dataset(local_truth):
    cube = local_truth.copy()
    cube.encoding.clear()  # as if built in memory: read through xarray
    data = CubeBatchDataset(cube, batch_size=2, channels=["RNA"])
    batch = data[1]  # samples 2 and 3: the second well's two fields
    assert batch["well"] == [str(cube.well.values[1])] * 2
    truth = cube.images.sel(channel=["RNA"]).isel(well=1)
    np.testing.assert_array_equal(batch["inputs"].numpy(), truth.values)


def test_several_cubes_are_one_dataset(local_cube, local_truth):
    data = CubeBatchDataset([str(local_cube), str(local_cube)], batch_size=4, shuffle=True)
    one = CubeBatchDataset(str(local_cube), batch_size=4)
    assert data.n_samples == 2 * one.n_samples
    cubes_seen = torch.cat([data[i]["cube"] for i in range(len(data))])
    assert cubes_seen.tolist().count(1) == one.n_samples
    # each cube's own channel positions: a second cube storing them in another order
    reversed_cube = local_truth.isel(channel=slice(None, None, -1))
    reversed_cube.encoding.clear()
    mixed = CubeBatchDataset([str(local_cube), reversed_cube], channels=["DNA", "Mito"])
    batch = mixed[0]
    assert batch["cube"].tolist() == [0] * 6 + [1] * 6
    _check_values(batch, local_truth, ["DNA", "Mito"])


# --- the loader: prefetch, devices ---------------------------------------------------------


def test_prefetch_thread_gives_the_same_batches(local_cube):
    data = CubeBatchDataset(str(local_cube), input_dims={"y": 32, "x": 32}, batch_size=3)
    data = data.with_options(shuffle=True)
    plain = list(data.loader(num_workers=0, prefetch=0))
    ahead = list(data.loader(num_workers=0, prefetch=3, pin_memory=True))
    assert len(plain) == len(ahead) == 8
    for a, b in zip(plain, ahead, strict=True):
        assert a.keys() == b.keys()
        for key in ("inputs", "present", "padding", "field", "cube", "y", "x", "sample"):
            assert torch.equal(a[key], b[key])
        assert a["well"] == b["well"]


def test_prefetch_thread_raises_errors_and_stops_when_abandoned(local_cube):
    calls = []

    def fail_on_third(sample):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom in a transform")
        return sample

    data = CubeBatchDataset(str(local_cube), batch_size=1, transform=fail_on_third, threads=1)
    loader = data.loader(num_workers=0, prefetch=2)
    with pytest.raises(RuntimeError, match="boom in a transform"):
        list(loader)
    assert loader.state_dict()["batch"] == 2  # the two batches delivered before the error

    loader = CubeBatchDataset(str(local_cube), batch_size=1).loader(num_workers=0, prefetch=2)
    for _ in loader:
        break
    gc.collect()
    assert not [t for t in threading.enumerate() if t.name == "cube-prefetch"]


def test_batches_move_to_a_device(local_cube):
    data = CubeBatchDataset(str(local_cube), batch_size=4, channels=["DNA"])
    moved = list(data.loader(num_workers=0, device="cpu"))
    plain = list(data.loader(num_workers=0))
    for a, b in zip(moved, plain, strict=True):
        assert a["inputs"].device.type == "cpu"
        assert torch.equal(a["inputs"], b["inputs"]) and a["well"] == b["well"]
    batch = to_device(plain[0], "cpu", non_blocking=True)
    assert torch.equal(batch["y"], plain[0]["y"]) and batch["stats"] == plain[0]["stats"]


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_dims": {"z": 4}}, r"input_dims has \['z'\].*Remove the other keys"),
        ({"input_dims": {"y": 65}}, r"input_dims\['y'\] = 65, but the cube's 'y' has 64 pixels"),
        ({"channels": ["DAPI"]}, r"channels=\['DAPI'\]: unknown \['DAPI'\]; the cube has \['Mito'"),
        ({"channels": []}, r"channels=\[\]: empty selection.*channels=None for all"),
        ({"batch_size": 0}, r"batch_size must be at least 1"),
        ({"batch_size": 1000, "drop_last": True}, r"make no full batch of 1000"),
        (
            {"input_dims": {"y": 32}, "random_crop": {"y": 40}},
            r"random_crop\['y'\] = 40, but each sample's window is 32 pixels.*larger input_dims",
        ),
        ({"random_crop": {"c": 2}}, r"random_crop has \['c'\]"),
        ({"uneven": "wrap"}, r"uneven='wrap': give 'pad' .* or 'drop'"),
        ({"rank": 2, "world_size": 2}, r"rank=2 with world_size=2: rank must be in 0 \.\. 1"),
        ({"world_size": 0}, r"world_size=0"),
        ({"world_size": 7, "uneven": "drop"}, r"fewer batches than the 7 ranks"),
        ({"seed": -1}, r"seed=-1: give a non-negative integer"),
        ({"shuffle_buffer": 0}, r"shuffle_buffer=0"),
        ({"backend": "s3"}, r"backend='s3'"),
    ],
)
def test_bad_arguments_are_clear(local_cube, kwargs, message):
    with pytest.raises(SchemaError, match=message):
        CubeBatchDataset(str(local_cube), **kwargs)


def test_bad_loader_arguments_are_clear(local_cube):
    data = CubeBatchDataset(str(local_cube), batch_size=4)
    with pytest.raises(SchemaError, match=r"CubeLoader sets \['sampler'\] itself"):
        data.loader(sampler=[0])
    with pytest.raises(SchemaError, match=r"prefetch=0: .*at least 1 with workers"):
        data.loader(num_workers=1, prefetch=0)
    with pytest.raises(SchemaError, match=r"\['timeout'\] apply to DataLoader workers"):
        CubeLoader(data, num_workers=0, timeout=3)


def test_index_out_of_range(local_cube):
    data = CubeBatchDataset(str(local_cube), batch_size=4)
    with pytest.raises(IndexError):
        data[len(data)]
