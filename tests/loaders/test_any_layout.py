"""CubeBatchDataset on any cube layout: climate time windows and array cubes (issue 12, section 1).

Two climate cubes are ingested once per module with the CLI in-process (``synth-climate``
then ``netcdf``: daily noleap steps on a 16x32 grid, ``T`` on 4 pressure levels): A a year
(seed 0), B January to March (seed 1), with different gaps (dropped steps). The arrays cube
holds ten npz samples. The truth to compare with is ``cubes.open_cube(url)``, each variable
read whole once when a test needs it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import cubes
from cubes.errors import SchemaError
from ingest.cli import main
from loaders import CubeBatchDataset, order

GRID = (16, 32)
LEVELS = (85000, 70000, 50000, 25000)
T_LABELS = tuple(f"T@{p}" for p in LEVELS)
GAPS_A = ("2000-01-10", "2000-07-02")
GAPS_B = ("2000-03-05",)
JANUARY = ("2000-01-01", "2000-01-31")
PATCH = (8, 16)
# Inputs T_surf and T's levels, targets q_H2O and T's levels: 2 steps each, 3 apart, 8x16 patches.
LEVEL_WINDOWS: dict[str, Any] = {
    "variables": ["T_surf", "T"],
    "target_variables": ["q_H2O", "T"],
    "input_steps": 2,
    "target_steps": 2,
    "lead": 3,
    "input_dims": {"lat": PATCH[0], "lon": PATCH[1]},
    "batch_size": 6,
    "threads": 2,
}


@dataclass(frozen=True)
class Climate:
    """An ingested climate cube: its URL and ``cubes.open_cube(url)``, the truth to compare with."""

    url: str
    opened: xr.Dataset  # lazy; datasets built from it read through the cube's URL
    gaps: tuple[str, ...]
    days: tuple[str, ...]  # YYYY-MM-DD of each step
    present: np.ndarray  # bool per step
    _values: dict[str, np.ndarray] = dataclasses.field(
        default_factory=dict, compare=False, repr=False
    )

    def field(self, label: str) -> np.ndarray:
        """The channel ``label`` (``'T_surf'``, ``'T@85000'``) as ``(time, lat, lon)`` float64."""
        variable, _, level = label.partition("@")
        if variable not in self._values:  # each variable read once, when a test needs it
            self._values[variable] = self.opened[variable].values.astype(np.float64)
        values = self._values[variable]
        if level:
            assert self.opened[variable].dims == ("time", "plev", "lat", "lon")
            return values[:, list(self.opened.plev.values).index(float(level))]
        return values

    def stats(self, label: str) -> tuple[float, float]:
        """The stored ``<var>_mean`` and ``<var>_std`` of channel ``label`` (per level for T)."""
        variable, _, level = label.partition("@")
        out = []
        for stat in ("mean", "std"):
            da = self.opened[f"{variable}_{stat}"]
            out.append(float((da.sel(plev=float(level)) if level else da).values))
        return out[0], out[1]


def _ingest_climate(
    root: Path, name: str, seed: int, gaps: tuple[str, ...], months: int = 12
) -> Climate:
    """``synth-climate`` (one year) then ``netcdf`` of its first ``months`` files, in-process."""
    src, url = root / f"{name}-src", str(root / f"{name}.zarr")
    drops = [a for day in gaps for a in ("--drop-step", day)]
    grid = f"{GRID[0]}x{GRID[1]}"
    argv = ["synth-climate", str(src), "--years", "1", "--grid", grid, "--seed", str(seed)]
    assert main([*argv, *drops]) == 0
    files = sorted(str(p) for p in src.glob("*.nc"))[:months]
    (root / f"{name}-urls.txt").write_text("\n".join(files) + "\n")
    assert main(["netcdf", str(root / f"{name}-urls.txt"), url, "--no-progress"]) == 0
    opened = cubes.open_cube(url, require_complete=True)
    days = tuple(t.strftime("%Y-%m-%d") for t in opened.time.values)
    return Climate(url, opened, gaps, days, np.asarray(opened.present.values, dtype=bool))


@pytest.fixture(scope="module")
def climate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Climate, Climate]:
    """A: seed 0, a year, missing 2000-01-10 and 2000-07-02; B: seed 1, Jan-Mar, missing 03-05."""
    root = tmp_path_factory.mktemp("any-layout")
    a = _ingest_climate(root, "a", 0, GAPS_A)
    b = _ingest_climate(root, "b", 1, GAPS_B, months=3)
    assert len(a.days) == 365 and len(b.days) == 31 + 28 + 31
    for cube in (a, b):
        missing = [d for d, p in zip(cube.days, cube.present, strict=True) if not p]
        assert missing == list(cube.gaps)
    return a, b


@pytest.fixture(scope="module")
def arrays(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """An arrays cube of ten npz samples (``image`` (3,16,16) uint8, ``label`` int64)."""
    root = tmp_path_factory.mktemp("arrays")
    src = root / "src"
    src.mkdir()
    rng = np.random.default_rng(12)
    for k in range(10):
        image = rng.integers(0, 255, (3, 16, 16), dtype=np.uint8)
        np.savez(src / f"sample_{k}.npz", image=image, label=np.int64((k * 7) % 5))
    url = str(root / "arrays.zarr")
    assert main(["arrays", str(src), url, "--samples-per-shard", "4", "--no-progress"]) == 0
    return url, src


def _offsets(k: int, m: int, lead: int) -> np.ndarray:
    return np.concatenate([np.arange(k), k - 1 + lead + np.arange(m)]).astype(np.int64)


def _expected_starts(present: np.ndarray, k: int, m: int, lead: int) -> set[int]:
    """Brute force: the starts whose every input and target step is on the axis and present."""
    n, offsets = len(present), _offsets(k, m, lead)
    return {t for t in range(n) if all(t + o < n and present[t + o] for o in offsets)}


def _origins(patch: tuple[int, int]) -> list[tuple[int, int]]:
    return list(itertools.product(range(0, GRID[0], patch[0]), range(0, GRID[1], patch[1])))


def _expected_values(
    cube: Climate,
    labels: tuple[str, ...],
    steps: np.ndarray,
    lat: np.ndarray,
    lon: np.ndarray,
    patch: tuple[int, int],
    normalized: bool,
) -> np.ndarray:
    """``(N, len(steps[0]), C, h, w)``: the cube's channels at each sample's steps and patch."""
    out = np.empty((len(steps), steps.shape[1], len(labels), *patch))
    for c, label in enumerate(labels):
        values = cube.field(label)
        if normalized:
            mean, std = cube.stats(label)
            values = (values - mean) / std
        for n in range(len(steps)):
            y, x = int(lat[n]), int(lon[n])
            out[n, :, c] = values[steps[n]][:, y : y + patch[0], x : x + patch[1]]
    return out


def _ranks(
    cube: Climate,
    world_size: int,
    steps: tuple[int, int, int],
    patch: tuple[int, int],
    threads: int = 1,
    **kwargs: Any,
) -> list[CubeBatchDataset]:
    """One dataset per rank of ``world_size`` over ``cube``: windows of ``steps`` (k, m, lead),
    ``patch`` (lat, lon) patches, the uneven end padded."""
    k, m, lead = steps
    return [
        CubeBatchDataset(
            cube.opened,
            input_steps=k,
            target_steps=m,
            lead=lead,
            input_dims={"lat": patch[0], "lon": patch[1]},
            rank=r,
            world_size=world_size,
            uneven="pad",
            threads=threads,
            **kwargs,
        )
        for r in range(world_size)
    ]


def _close(data: CubeBatchDataset | list[CubeBatchDataset]) -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    for d in data if isinstance(data, list) else [data]:
        stack.enter_context(d)
    return stack


# --- 1. every window once per epoch, over all ranks -------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    k=st.integers(1, 3),
    m=st.integers(0, 2),
    lead=st.integers(1, 3),
    world_size=st.integers(1, 3),
    batch_size=st.integers(1, 40),
    shuffle=st.booleans(),
    seed=st.integers(0, 2**20),
    epoch=st.integers(0, 3),
    patch=st.sampled_from([(16, 32), (8, 16), (16, 8)]),
)
def test_every_valid_window_once_per_epoch_over_all_ranks(
    climate, k, m, lead, world_size, batch_size, shuffle, seed, epoch, patch
):
    """On the sample table (no pixels): the windows of all ranks' batches over a year."""
    cube = climate[0]
    ranks = _ranks(
        cube, world_size, (k, m, lead), patch, batch_size=batch_size, shuffle=shuffle, seed=seed
    )
    with _close(ranks):
        first = ranks[0]
        assert len({len(d) for d in ranks}) == 1  # every rank has as many batches
        counts = order.batch_counts(first.n_samples, batch_size, world_size, uneven="pad")
        assert len(first) == counts.per_rank
        samples, padding = [], []
        for r, data in enumerate(ranks):
            for i in range(len(data)):
                batch, pad = order.rank_batch(
                    data.sample_order(epoch),
                    i,
                    batch_size=batch_size,
                    rank=r,
                    world_size=world_size,
                    counts=counts,
                )
                assert 0 < len(batch) <= batch_size
                samples.append(batch)
                padding.append(pad)
        every, flagged = np.concatenate(samples), np.concatenate(padding)
        real, padded = every[~flagged].tolist(), every[flagged].tolist()
        rows = first._samples_table[every]
        assert (rows[:, 0] == 0).all()
        steps = rows[:, 1:2] + _offsets(k, m, lead)
        assert steps.max() < len(cube.present)
        assert cube.present[steps].all()  # no window touches a missing step
        gaps = [cube.days.index(day) for day in cube.gaps]
        assert not np.isin(steps, gaps).any()
        assert sorted(real) == list(range(first.n_samples))  # each window exactly once
        assert set(padded) <= set(real)  # padding repeats real windows, flagged
        assert len(padded) == counts.slots - counts.real
        if -(-first.n_samples // batch_size) % world_size == 0:
            assert not padded
        windows = {tuple(first._samples_table[s, 1:].tolist()) for s in real}
        expected = {
            (t, y, x)
            for t in _expected_starts(cube.present, k, m, lead)
            for y, x in _origins(patch)
        }
        assert windows == expected


@settings(max_examples=25, deadline=None)
@given(
    k=st.integers(1, 3),
    m=st.integers(0, 2),
    lead=st.integers(1, 3),
    world_size=st.integers(1, 3),
    batch_size=st.integers(2, 12),
    shuffle=st.booleans(),
    seed=st.integers(0, 2**20),
    patch=st.sampled_from([(16, 32), (8, 32)]),
)
def test_real_batches_of_all_ranks_hold_every_january_window_once(
    climate, k, m, lead, world_size, batch_size, shuffle, seed, patch
):
    """Through ``data[(epoch, i)]``: sample, padding, step, time, origins and values."""
    cube = climate[0]
    ranks = _ranks(
        cube,
        world_size,
        (k, m, lead),
        patch,
        threads=2,
        variables=["T_surf"],
        time_range=JANUARY,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
    )
    with _close(ranks):
        seen: list[int] = []
        repeats: list[int] = []
        windows = set()
        for data in ranks:
            for i in range(len(data)):
                batch = data[(1, i)]
                n = len(batch["sample"])
                steps = batch["step"].numpy()
                assert batch["inputs"].shape == (n, k, 1, *patch)
                if m:
                    assert batch["targets"].shape == (n, m, 1, *patch)
                else:
                    assert "targets" not in batch
                np.testing.assert_array_equal(steps, steps[:, :1] + _offsets(k, m, lead))
                assert cube.present[steps].all()
                for times, window in zip(batch["time"], steps.tolist(), strict=True):
                    assert [t[:10] for t in times] == [cube.days[t] for t in window]
                    assert not {t[:10] for t in times} & set(cube.gaps)
                for s, pad, start, y, x in zip(
                    batch["sample"].tolist(),
                    batch["padding"].tolist(),
                    steps[:, 0].tolist(),
                    batch["lat"].tolist(),
                    batch["lon"].tolist(),
                    strict=True,
                ):
                    if pad:
                        repeats.append(s)
                    else:
                        seen.append(s)
                        windows.add((start, y, x))
                expected = _expected_values(
                    cube, ("T_surf",), steps, batch["lat"], batch["lon"], patch, False
                )
                np.testing.assert_allclose(batch["inputs"].numpy(), expected[:, :k], rtol=1e-6)
                if m:
                    np.testing.assert_allclose(batch["targets"].numpy(), expected[:, k:], rtol=1e-6)
        counts = order.batch_counts(ranks[0].n_samples, batch_size, world_size, uneven="pad")
        assert sorted(seen) == list(range(ranks[0].n_samples))  # each window once
        assert len(repeats) == counts.slots - counts.real  # the rest: flagged repeats
        assert set(repeats) <= set(seen)
        january = {t for t in _expected_starts(cube.present, k, m, lead) if t < 31}
        assert windows == {(t, y, x) for t in january for y, x in _origins(patch)}
        assert 9 not in {w[0] for w in windows}  # 2000-01-10 is a gap: no window starts there


# --- 2. values equal the cube's ----------------------------------------------------------------


@pytest.mark.parametrize("normalize", [False, True], ids=["raw", "normalized"])
def test_inputs_and_targets_equal_the_cube_at_their_steps_and_patches(climate, normalize):
    cube, patch = climate[0], PATCH
    data = CubeBatchDataset(cube.url, shuffle=True, seed=5, normalize=normalize, **LEVEL_WINDOWS)
    with data:
        assert data.channels == ("T_surf", *T_LABELS)
        assert data.target_channels == ("q_H2O", *T_LABELS)
        for i in (0, len(data) // 2, len(data) - 1):
            batch = data[(0, i)]
            steps, lat, lon = batch["step"].numpy(), batch["lat"], batch["lon"]
            n = len(steps)
            assert batch["inputs"].shape == (n, 2, 5, *patch)
            assert batch["targets"].shape == (n, 2, 5, *patch)
            inputs = _expected_values(cube, data.channels, steps[:, :2], lat, lon, patch, normalize)
            targets = _expected_values(
                cube, data.target_channels, steps[:, 2:], lat, lon, patch, normalize
            )
            # raw: the stored float32 exactly; normalised: float32 arithmetic on O(1) values
            tol = {"rtol": 1e-5, "atol": 1e-5} if normalize else {"rtol": 1e-7, "atol": 0}
            np.testing.assert_allclose(batch["inputs"].numpy(), inputs, **tol)
            np.testing.assert_allclose(batch["targets"].numpy(), targets, **tol)


def test_normalized_channels_have_the_stored_statistics_per_level(climate):
    cube = climate[0]
    with CubeBatchDataset(cube.opened, variables=["T"], input_steps=1, normalize=True) as data:
        stats = data.statistics[0]
        assert stats["samples"] is None  # stored, not estimated
        expected = np.array([cube.stats(label) for label in T_LABELS])
        np.testing.assert_allclose(stats["mean"], expected[:, 0])
        np.testing.assert_allclose(stats["std"], expected[:, 1])
        assert len(set(np.round(expected[:, 0], 3))) == 4  # the levels differ


def test_denormalize_of_one_channel_of_one_cube_gives_back_the_cubes_values(climate):
    cube = climate[0]
    data = CubeBatchDataset(
        cube.url, variables=["T_surf"], input_steps=2, target_steps=1, lead=2, normalize=True
    )
    with data:
        batch = data[(0, len(data) - 1)]
        steps, lat, lon = batch["step"].numpy(), batch["lat"], batch["lon"]
        raw = _expected_values(cube, ("T_surf",), steps, lat, lon, GRID, False)
        normalized = _expected_values(cube, ("T_surf",), steps, lat, lon, GRID, True)
        np.testing.assert_allclose(
            batch["targets"].numpy(), normalized[:, 2:], rtol=1e-5, atol=1e-5
        )
        back = data.denormalize(batch["targets"], cube=batch["cube"])
        np.testing.assert_allclose(back.numpy(), raw[:, 2:], rtol=1e-5, atol=1e-7)
        back = data.denormalize(batch["inputs"].numpy(), variables=["T_surf"])
        np.testing.assert_allclose(back, raw[:, :2], rtol=1e-5, atol=1e-7)


def test_denormalize_gives_back_the_cubes_values_for_every_channel_and_level(climate):
    cube, patch = climate[0], PATCH
    data = CubeBatchDataset(cube.url, normalize=True, **LEVEL_WINDOWS)
    with data:
        batch = data[(0, 1)]
        steps, lat, lon = batch["step"].numpy(), batch["lat"], batch["lon"]
        targets = _expected_values(cube, data.target_channels, steps[:, 2:], lat, lon, patch, False)
        back = data.denormalize(batch["targets"], cube=batch["cube"])
        np.testing.assert_allclose(back.numpy(), targets, rtol=1e-5, atol=1e-7)
        levels = data.denormalize(batch["targets"][:, :, 1:], variables=["T"])
        np.testing.assert_allclose(levels.numpy(), targets[:, :, 1:], rtol=1e-5, atol=1e-7)
        inputs = _expected_values(cube, data.channels, steps[:, :2], lat, lon, patch, False)
        back = data.denormalize(batch["inputs"], variables=list(data.channels))
        np.testing.assert_allclose(back.numpy(), inputs, rtol=1e-5, atol=1e-7)


def test_denormalize_with_each_samples_cube_gives_back_both_cubes_values(climate):
    data = CubeBatchDataset(
        [c.url for c in climate],
        variables=["T_surf", "q_H2O", "cldfrac"],
        input_steps=1,
        target_steps=1,
        time_range=JANUARY,
        batch_size=64,
        shuffle=True,
        normalize=True,
        threads=2,
    )
    with data:
        batch = data[(0, 0)]
        which, steps = batch["cube"].numpy(), batch["step"].numpy()
        assert set(which.tolist()) == {0, 1}
        back = data.denormalize(batch["targets"], cube=batch["cube"]).numpy()
        for k, cube in enumerate(climate):
            mine = which == k
            zeros = np.zeros(int(mine.sum()), dtype=np.int64)
            raw = _expected_values(cube, data.channels, steps[mine, 1:], zeros, zeros, GRID, False)
            np.testing.assert_allclose(back[mine], raw, rtol=1e-5, atol=1e-7)


def test_a_duration_lead_equals_the_same_lead_in_daily_steps(climate):
    cube = climate[0]

    def dataset(lead: int | str) -> CubeBatchDataset:
        return CubeBatchDataset(
            cube.url,
            variables=["cldfrac"],
            input_steps=2,
            target_steps=1,
            lead=lead,
            batch_size=16,
            shuffle=True,
            seed=2,
            threads=2,
        )

    with dataset("2D") as days, dataset(2) as steps:
        assert days.config()["lead"] == "2D"
        np.testing.assert_array_equal(days._samples_table, steps._samples_table)
        for i in (0, len(days) - 1):
            a, b = days[(0, i)], steps[(0, i)]
            np.testing.assert_array_equal(a["step"][:, 2] - a["step"][:, 1], 2)
            assert torch.equal(a["step"], b["step"])
            np.testing.assert_array_equal(a["inputs"], b["inputs"])  # cldfrac has NaNs
            np.testing.assert_array_equal(a["targets"], b["targets"])
            assert a["time"] == b["time"]


# --- 3. time_range splits -----------------------------------------------------------------------


@pytest.mark.parametrize(("k", "m", "lead"), [(1, 0, 1), (3, 2, 2)])
def test_time_range_splits_are_disjoint_and_cover_the_unsplit_windows(climate, k, m, lead):
    cube = climate[0]
    halves = {"first": ("2000-01-01", "2000-06-30"), "second": ("2000-07-01", "2000-12-31")}

    def dataset(time_range):
        return CubeBatchDataset(
            cube.opened,
            variables=["T_surf"],
            input_steps=k,
            target_steps=m,
            lead=lead,
            time_range=time_range,
            batch_size=64,
            threads=2,
        )

    with dataset(None) as whole:
        unsplit = {tuple(r) for r in whole._samples_table.tolist()}
    split = {}
    for name, time_range in halves.items():
        with dataset(time_range) as data:
            assert data.config()["time_range"] == list(time_range)
            firsts, lasts, windows = [], [], set()
            for i in range(len(data)):
                batch = data[(0, i)]
                firsts += [times[0] for times in batch["time"]]
                lasts += [times[-1] for times in batch["time"]]
                windows |= {(0, int(s), 0, 0) for s in batch["step"][:, 0]}
            assert len(firsts) == data.n_samples == len(windows)
            assert all(time_range[0] <= t[:10] <= time_range[1] for t in firsts)
            if name == "first" and m:  # windows are placed by their first input only
                assert max(lasts) > "2000-07"
            split[name] = windows
    assert not split["first"] & split["second"]
    assert split["first"] | split["second"] == unsplit


# --- 4. several cubes as one dataset ------------------------------------------------------------


def test_two_cubes_are_one_dataset_and_each_sample_reads_its_own_cube(climate):
    a, b = climate
    time_range = ("2000-01-01", "2000-03-31")  # both cubes' gaps
    common = {
        "variables": ["T_surf", "T"],
        "input_steps": 2,
        "target_steps": 1,
        "lead": 1,
        "time_range": time_range,
        "threads": 2,
    }
    with (
        CubeBatchDataset(a.opened, **common) as one_a,
        CubeBatchDataset(b.opened, **common) as one_b,
    ):
        sizes = one_a.n_samples, one_b.n_samples
    data = CubeBatchDataset(
        [a.url, b.url], batch_size=16, shuffle=True, seed=4, normalize=True, **common
    )
    with data:
        assert data.n_samples == sum(sizes)
        differ = np.abs(a.field("T_surf")[:90] - b.field("T_surf"))
        assert np.nanmean(differ) > 1  # the seeds differ: the wrong cube's values would show
        starts: dict[int, set[int]] = {0: set(), 1: set()}
        for i in range(len(data)):
            batch = data[(0, i)]
            steps = batch["step"].numpy()
            which = batch["cube"].numpy()
            for k, cube in enumerate(climate):
                mine = which == k
                if not mine.any():
                    continue
                assert cube.present[steps[mine]].all()
                starts[k] |= set(steps[mine, 0].tolist())
                zeros = np.zeros(int(mine.sum()), dtype=np.int64)
                expected = _expected_values(
                    cube, data.channels, steps[mine], zeros, zeros, GRID, normalized=True
                )
                np.testing.assert_allclose(
                    batch["inputs"][mine].numpy(), expected[:, :2], rtol=1e-5, atol=1e-5
                )
                np.testing.assert_allclose(
                    batch["targets"][mine].numpy(), expected[:, 2:], rtol=1e-5, atol=1e-5
                )
        assert [len(starts[0]), len(starts[1])] == list(sizes)
        jan10, mar05 = a.days.index("2000-01-10"), a.days.index("2000-03-05")
        assert jan10 in starts[1] and jan10 not in starts[0]  # a gap of A only
        assert mar05 in starts[0] and mar05 not in starts[1]  # a gap of B only


# --- 5. resume ----------------------------------------------------------------------------------


def test_resume_after_three_batches_gives_the_remaining_batches_of_an_uninterrupted_run(climate):
    cube = climate[0]

    def dataset() -> CubeBatchDataset:
        return CubeBatchDataset(
            cube.url,
            variables=["T_surf", "q_H2O"],
            input_steps=2,
            target_steps=1,
            lead=2,
            time_range=("2000-01-01", "2000-02-28"),
            input_dims={"lat": 8, "lon": 32},
            batch_size=7,
            shuffle=True,
            seed=11,
            threads=2,
        )

    def batches(loader) -> list[tuple[list[int], torch.Tensor]]:
        return [(b["sample"].tolist(), b["inputs"]) for b in loader]

    with dataset() as data, data.loader(num_workers=0, prefetch=0) as reference:
        reference.set_epoch(1)
        full = batches(reference)
    assert len(full) > 6
    with dataset() as data, data.loader(num_workers=0, prefetch=2) as first:
        first.set_epoch(1)
        for j, _ in enumerate(first):
            if j == 2:
                state = first.state_dict()
                break
    assert (state["epoch"], state["batch"]) == (1, 3)
    with dataset() as data, data.loader(num_workers=0, prefetch=2) as resumed:
        resumed.load_state_dict(state)
        rest = batches(resumed)
    assert len(rest) == len(full) - 3
    for (samples, inputs), (want_samples, want_inputs) in zip(rest, full[3:], strict=True):
        assert samples == want_samples
        np.testing.assert_array_equal(inputs, want_inputs)


# --- 6. clear errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cube", "kwargs", "match"),
    [
        ("climate", {"variables": ["nope"]}, r"variables=\['nope'\]: unknown \['nope'\]"),
        ("climate", {"input_dims": {"y": 4}}, r"input_dims has \['y'\].*along \['lat', 'lon'\]"),
        ("arrays", {"input_steps": 2}, r"input_steps given.*no time axis.*Remove input_steps"),
        ("arrays", {"time_range": JANUARY}, r"time_range given.*no time axis"),
        (
            "climate",
            {"input_steps": 1, "target_steps": 1, "lead": 400},
            r"lead=400 is 400 steps, longer than the record of 365",
        ),
        (
            "climate",
            {"input_steps": 1, "target_steps": 1, "lead": "400D"},
            r"lead='400D' is 400 steps, longer than the record",
        ),
        (
            "climate",
            {"input_steps": 2, "target_steps": 2, "lead": 363},
            r"spans 366 steps, longer than the record of 365 steps",
        ),
        (
            "climate",
            {"input_steps": 2, "target_variables": ["T_surf"]},
            r"target_variables given with target_steps=0",
        ),
        ("climate", {"target_steps": 1}, r"target_steps=1 needs input_steps"),
        ("climate", {"normalize": "bogus"}, r"normalize='bogus': give True"),
        (
            "arrays",
            {"variables": ["image", "label"]},
            r"different sample shapes \{'image': \(3, 16, 16\), 'label': \(\)\}",
        ),
    ],
    ids=[
        "unknown-variable",
        "window-dim-not-in-layout",
        "input-steps-without-time",
        "time-range-without-time",
        "lead-longer-than-record",
        "duration-lead-longer-than-record",
        "window-longer-than-record",
        "target-variables-without-target-steps",
        "target-steps-without-input-steps",
        "bogus-normalize",
        "variables-of-different-shapes",
    ],
)
def test_bad_arguments_raise_a_schema_error_naming_them(climate, arrays, cube, kwargs, match):
    url = climate[0].url if cube == "climate" else arrays[0]
    with pytest.raises(SchemaError, match=match):
        CubeBatchDataset(url, **kwargs)


def test_denormalize_refuses_variables_that_are_not_normalized(climate):
    cube = climate[0]
    common = {"variables": ["T_surf"], "input_steps": 1, "target_steps": 1, "threads": 1}
    with CubeBatchDataset(cube.opened, normalize=True, **common) as data:
        values = torch.zeros(2, 1, 1, *GRID)
        with pytest.raises(SchemaError, match=r"variables=\['q_H2O'\]\): not among the normalised"):
            data.denormalize(values, variables=["q_H2O"])
        with pytest.raises(SchemaError, match=r"no channel axis of 1"):
            data.denormalize(torch.zeros(2, 1, 3, *GRID))
    with (
        CubeBatchDataset(cube.opened, normalize=False, **common) as data,
        pytest.raises(SchemaError, match=r"does not normalise \(normalize=False\)"),
    ):
        data.denormalize(values)


def test_denormalize_refuses_targets_that_normalize_inputs_left_unnormalized(climate):
    cube = climate[0]
    data = CubeBatchDataset(
        cube.opened,
        variables=["T_surf"],
        input_steps=1,
        target_steps=1,
        normalize="inputs",
        threads=1,
    )
    with data:
        batch = data[(0, 0)]
        raw = _expected_values(
            cube, ("T_surf",), batch["step"][:, 1:].numpy(), batch["lat"], batch["lon"], GRID, False
        )
        np.testing.assert_allclose(batch["targets"].numpy(), raw, rtol=1e-6)  # not normalised
        with pytest.raises(SchemaError, match="normalis"):
            data.denormalize(batch["targets"])


# --- 7. array cubes -----------------------------------------------------------------------------


def test_array_cube_samples_equal_their_npz_files(arrays):
    url, src = arrays
    truth = cubes.open_cube(url).load()
    data = CubeBatchDataset(
        url, variables=["image"], target_variables=["label"], batch_size=4, shuffle=True, seed=1
    )
    with data:
        assert data.n_samples == 10 and len(data) == 3
        assert data.channels == ("image",) and data.target_channels == ("label",)
        files = []
        for i in range(len(data)):
            batch = data[(0, i)]
            n = len(batch["sample"])
            assert batch["inputs"].shape == (n, 1, 3, 16, 16)
            assert batch["targets"].shape == (n, 1)
            assert batch["inputs"].dtype == batch["targets"].dtype == torch.float32
            for j, position in enumerate(batch["sample_label"].tolist()):
                name = str(truth.source_file.values[position])
                files.append(name)
                with np.load(src / name) as npz:
                    np.testing.assert_array_equal(batch["inputs"][j, 0].numpy(), npz["image"])
                    assert batch["targets"][j, 0].item() == int(npz["label"])
    assert sorted(files) == sorted(p.name for p in src.glob("*.npz"))


def test_denormalize_on_an_array_cube_gives_back_the_stored_samples_and_labels(arrays):
    url, _ = arrays
    stored = cubes.open_cube(url).load()
    data = CubeBatchDataset(
        url, variables=["image"], target_variables=["label"], batch_size=4, normalize=True
    )
    with data:
        batch = data[(0, 1)]
        positions = batch["sample_label"].numpy()
        images = stored["image"].values[positions].astype(np.float64)
        labels = stored["label"].values[positions].astype(np.float64)
        mean, std = float(stored["image_mean"]), float(stored["image_std"])
        assert std > 0  # so normalised values differ from the stored ones
        normalized = batch["inputs"][:, 0].numpy()
        np.testing.assert_allclose(normalized, (images - mean) / std, rtol=1e-5, atol=1e-5)
        back = data.denormalize(batch["inputs"], variables=["image"])
        assert back.shape == batch["inputs"].shape  # (N, C, 3, 16, 16): three sample dims
        np.testing.assert_allclose(back[:, 0].numpy(), images, rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(np.rint(back[:, 0].numpy()), images)
        labels_back = data.denormalize(batch["targets"], cube=batch["cube"])  # (N, C): no dims
        np.testing.assert_array_equal(np.rint(labels_back[:, 0].numpy()), labels)


# --- 8. set_epoch with a plain DataLoader -------------------------------------------------------


def test_set_epoch_changes_a_plain_fork_dataloaders_order_and_without_it_epochs_repeat(climate):
    cube = climate[0]

    def dataset() -> CubeBatchDataset:
        return CubeBatchDataset(
            cube.url,
            variables=["T_surf"],
            input_steps=2,
            target_steps=1,
            time_range=JANUARY,
            batch_size=4,
            shuffle=True,
            seed=3,
            threads=2,
        )

    def epoch(loader) -> list[int]:
        return [s for batch in loader for s in batch["sample"].tolist()]

    def plain(data: CubeBatchDataset) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            data, batch_size=None, num_workers=2, multiprocessing_context="fork"
        )

    with dataset() as data:
        everything = list(range(data.n_samples))
        loader = plain(data)
        data.set_epoch(0)
        first = epoch(loader)
        data.set_epoch(1)
        second = epoch(loader)
        assert sorted(first) == sorted(second) == everything  # each window once per epoch
        assert first != second
        assert first == data.sample_order(0).tolist()
        assert second == data.sample_order(1).tolist()
    with dataset() as data:
        loader = plain(data)
        again = [epoch(loader), epoch(loader)]
        assert again[0] == again[1] == first  # without set_epoch: epoch 0's order, again


def test_fill_nan_replaces_the_fill_values_after_normalising(climate):
    cube = climate[0]
    common = {"variables": ["cldfrac"], "input_steps": 1, "batch_size": 400, "threads": 1}
    with CubeBatchDataset(cube.url, normalize=True, **common) as kept:
        batch = kept[(0, 0)]["inputs"].numpy()
    with CubeBatchDataset(cube.url, normalize=True, fill_nan=0.0, **common) as filled:
        again = filled[(0, 0)]["inputs"].numpy()
    holes = np.isnan(batch)
    assert holes.any()  # the synthetic cloud fraction has fill values
    assert not np.isnan(again).any()
    np.testing.assert_array_equal(again[holes], 0.0)
    np.testing.assert_array_equal(again[~holes], batch[~holes])
