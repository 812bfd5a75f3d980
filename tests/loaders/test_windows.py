"""Time windows: every valid window once, none needing a missing step, splits by time disjoint."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from cubes.errors import SchemaError
from loaders import order
from loaders import windows as w

SETTINGS = settings(max_examples=150, deadline=None)


def _needed(t, k, m, lead):
    """The steps window ``t`` needs, written out from the definition."""
    inputs = list(range(t, t + k))
    targets = [t + k - 1 + lead + j for j in range(m)]
    return inputs + targets


def _brute_force(present, k, m, lead, stride):
    n = len(present)
    out = []
    for t in range(0, n, stride):
        steps = _needed(t, k, m, lead)
        if all(0 <= s < n and present[s] for s in steps):
            out.append(t)
    return out


@st.composite
def masks(draw, min_size=1, max_size=60):
    return np.array(draw(st.lists(st.booleans(), min_size=min_size, max_size=max_size)))


@st.composite
def shapes(draw):
    return {
        "input_steps": draw(st.integers(1, 6)),
        "target_steps": draw(st.integers(0, 4)),
        "lead": draw(st.integers(1, 8)),
        "stride": draw(st.integers(1, 4)),
    }


def _daily(n, calendar="noleap", start="2000-01-01", freq="D"):
    return xr.date_range(start, periods=n, freq=freq, calendar=calendar, use_cftime=True).values


# --- valid_windows --------------------------------------------------------------------------


@SETTINGS
@given(masks(), shapes())
def test_valid_windows_match_brute_force(present, shape):
    k, m, lead = shape["input_steps"], shape["target_steps"], shape["lead"]
    if w.window_span(k, m, lead) > len(present):
        with pytest.raises(SchemaError, match="longer than the record"):
            w.valid_windows(present, **shape)
        return
    starts = w.valid_windows(present, **shape)
    assert starts.dtype == np.int64
    assert starts.tolist() == _brute_force(present, k, m, lead, shape["stride"])
    for t in starts:
        needed = w.window_steps(np.array([t]), input_steps=k, target_steps=m, lead=lead)[0]
        assert needed.tolist() == _needed(int(t), k, m, lead)
        assert present[needed].all(), "a window needs a missing step"


def test_lead_counts_from_the_last_input():
    present = np.ones(10, dtype=bool)
    steps = w.window_steps(np.array([0]), input_steps=3, target_steps=2, lead=1)
    assert steps.tolist() == [[0, 1, 2, 3, 4]]
    steps = w.window_steps(np.array([2]), input_steps=2, target_steps=1, lead=4)
    assert steps.tolist() == [[2, 3, 7]]
    # Inputs t..t+2, targets t+6..t+7: the last start on 10 steps is 2.
    assert w.valid_windows(present, input_steps=3, target_steps=2, lead=4).tolist() == [0, 1, 2]


def test_steps_between_inputs_and_targets_need_not_be_present():
    present = np.array([1, 1, 0, 0, 1, 1], dtype=bool)
    assert w.valid_windows(present, input_steps=2, target_steps=1, lead=3).tolist() == [0]
    assert w.valid_windows(present, input_steps=2, target_steps=1, lead=1).tolist() == []


def test_windows_without_targets_ignore_the_lead():
    present = np.array([1, 1, 1, 0, 1, 1], dtype=bool)
    assert w.valid_windows(present, input_steps=2, lead=5).tolist() == [0, 1, 4]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"input_steps": 0}, "input_steps=0: give an integer >= 1"),
        ({"input_steps": 2, "target_steps": -1}, "target_steps=-1"),
        ({"input_steps": 2, "target_steps": 1, "lead": 0}, "lead=0"),
        ({"input_steps": 2, "stride": 0}, "stride=0"),
        ({"input_steps": 2, "target_steps": 1, "lead": 8}, "spans 10 steps, longer than the"),
    ],
)
def test_valid_windows_refuse_bad_shapes(kwargs, match):
    with pytest.raises(SchemaError, match=match):
        w.valid_windows(np.ones(8, dtype=bool), **kwargs)


# --- lead_steps -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lead", "freq", "expected"),
    [
        ("6h", "6h", 1),
        ("1D", "6h", 4),
        ("12H", "6h", 2),
        ("3 days", "6h", 12),
        ("30min", "30min", 1),
        ("2D", "D", 2),
        (3, "D", 3),
    ],
)
@pytest.mark.parametrize("calendar", ["noleap", "standard", "360_day"])
def test_lead_steps_on_cftime_axes(lead, freq, expected, calendar):
    assert w.lead_steps(lead, _daily(40, calendar, freq=freq)) == expected


def test_lead_steps_on_datetime64_axes():
    six_hourly = np.arange("2000-01-01", "2000-01-05", np.timedelta64(6, "h"), dtype="M8[ns]")
    assert w.lead_steps("6h", six_hourly) == 1
    assert w.lead_steps("1D", six_hourly) == 4
    daily = np.arange("2000-01-01", "2000-02-01", dtype="datetime64[D]")
    assert w.lead_steps("2D", daily) == 2


def test_lead_steps_infer_the_most_common_step():
    six_hourly = _daily(40, freq="6h")
    with_gap_dropped = np.delete(six_hourly, [5, 6, 20])
    assert w.lead_steps("1D", with_gap_dropped) == 4


@pytest.mark.parametrize(
    ("lead", "times", "match"),
    [
        ("5h", _daily(20, freq="6h"), r"'5h' .* not a whole number of steps .* 06:00:00"),
        ("1M", _daily(20), "not a duration"),
        ("soon", _daily(20), "not a duration"),
        ("0h", _daily(20), "is 0 steps"),
        (-2, _daily(20), "is -2 steps"),
        ("30D", _daily(20), "longer than the record of 20 steps"),
        (20, _daily(20), "longer than the record of 20 steps"),
        ("31D", _daily(20, freq="MS"), "not regular .* Give the lead in steps"),
        ("1D", np.arange(10), "not times"),
        ("1D", None, "give the cube's time axis"),
        ("1D", _daily(1), "1 step"),
        (1.5, _daily(20), "give a number of steps"),
        (True, _daily(20), "give a number of steps"),
    ],
)
def test_lead_steps_refuse_what_has_no_whole_steps(lead, times, match):
    with pytest.raises(SchemaError, match=match):
        w.lead_steps(lead, times)


# --- select_time_range ----------------------------------------------------------------------


@st.composite
def splits(draw):
    n = draw(st.integers(10, 80))
    cuts = draw(st.lists(st.integers(0, n), min_size=2, max_size=5, unique=True))
    return n, sorted(cuts)


def _axis(n, calendar):
    if calendar == "datetime64":
        return np.datetime64("2001-01-01", "ns") + np.arange(n) * np.timedelta64(1, "D")
    return _daily(n, calendar, start="2001-01-01")


@SETTINGS
@given(splits(), st.sampled_from(["noleap", "standard", "datetime64"]), masks(80, 80), shapes())
def test_time_splits_are_disjoint_and_cover_their_union(split, calendar, present, shape):
    n, cuts = split
    times = _axis(n, calendar)
    if w.window_span(shape["input_steps"], shape["target_steps"], shape["lead"]) > n:
        return
    starts = w.valid_windows(present[:n], **shape)
    day = [str(t)[:10] for t in times]
    pairs = list(zip(cuts[:-1], cuts[1:], strict=True))
    parts = [w.select_time_range(starts, times, (day[a], day[b - 1])) for a, b in pairs]
    for (a, b), part in zip(pairs, parts, strict=True):
        assert part.tolist() == [t for t in starts.tolist() if a <= t < b]
    union = np.concatenate(parts)
    assert len(np.unique(union)) == len(union), "two periods share a window"
    whole = w.select_time_range(starts, times, (day[cuts[0]], day[cuts[-1] - 1]))
    assert union.tolist() == whole.tolist()


def test_time_range_selects_by_the_first_input_and_includes_the_end_day():
    times = _daily(4 * 365 * 4, freq="6h", start="2000-01-01")  # noleap, 6-hourly, 4 years
    present = np.ones(len(times), dtype=bool)
    starts = w.valid_windows(present, input_steps=2, target_steps=1, lead=4)
    train = w.select_time_range(starts, times, ("2000-01-01", "2001-12-31"))
    valid = w.select_time_range(starts, times, ("2002-01-01", "2002-12-31"))
    assert train[0] == 0 and train[-1] == 2 * 365 * 4 - 1  # 18h of 31 December 2001
    assert valid[0] == 2 * 365 * 4 and len(valid) == 365 * 4
    assert not set(train.tolist()) & set(valid.tolist())
    years = w.select_time_range(starts, times, ("2000", "2001"))
    assert years.tolist() == train.tolist()
    assert w.select_time_range(starts, times, None).tolist() == starts.tolist()


def test_time_range_refuses_what_is_not_a_period():
    with pytest.raises(SchemaError, match="not times"):
        w.select_time_range(np.arange(3), np.arange(10), ("2000", "2001"))
    with pytest.raises(SchemaError, match="not a period of the time axis"):
        w.select_time_range(np.arange(3), _daily(10), ("yesterday", "2001"))
    with pytest.raises(SchemaError, match="not sorted"):
        w.select_time_range(np.arange(3), _daily(10)[::-1], ("2000", "2001"))


# --- window_table and windows_epoch_order ---------------------------------------------------


def test_window_table_lists_cubes_then_times():
    members = [np.array([1, 1, 1, 0, 1, 1], bool), np.ones(4, bool), np.zeros(5, bool)]
    table = w.window_table(members, input_steps=1, target_steps=1, lead=1)
    assert table.dtype == np.int64
    assert table.tolist() == [[0, 0], [0, 1], [0, 4], [1, 0], [1, 1], [1, 2]]


def test_window_table_converts_durations_and_splits_each_cube():
    years = [_daily(365, start="2000-01-01"), _daily(365, start="2001-01-01")]
    present = [np.ones(365, bool), np.ones(365, bool)]
    table = w.window_table(
        present, input_steps=2, target_steps=1, lead="2D", times=years, time_range=("2001", None)
    )
    assert set(table[:, 0].tolist()) == {1}
    assert table[:, 1].tolist() == list(range(365 - 3))
    with pytest.raises(SchemaError, match="pass times="):
        w.window_table(present, input_steps=2, target_steps=1, lead="2D")
    with pytest.raises(SchemaError, match="one per cube"):
        w.window_table(present, input_steps=2, times=years[:1])


@st.composite
def epochs(draw):
    cubes = draw(st.lists(masks(4, 30), min_size=1, max_size=4))
    return {
        "cubes": cubes,
        "batch_size": draw(st.integers(1, 7)),
        "world_size": draw(st.integers(1, 4)),
        "shuffle": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**32 - 1)),
        "epoch": draw(st.integers(0, 50)),
        "uneven": draw(st.sampled_from(order.UNEVEN)),
        "drop_last": draw(st.booleans()),
        "shard_steps": draw(st.integers(1, 8)),
        "shuffle_buffer": draw(st.none() | st.integers(1, 30)),
    }


def _epoch(p, epoch=None, seed=None):
    table = w.window_table(p["cubes"], input_steps=2, target_steps=1, lead=1)
    keys = ("batch_size", "shuffle", "uneven", "drop_last", "shard_steps", "shuffle_buffer")
    ranks = {
        rank: w.windows_epoch_order(
            table,
            seed=p["seed"] if seed is None else seed,
            epoch=p["epoch"] if epoch is None else epoch,
            rank=rank,
            world_size=p["world_size"],
            **{k: p[k] for k in keys},
        )
        for rank in range(p["world_size"])
    }
    return table, ranks


def _rows(ranks, padding):
    chosen = [rows[pad == padding] for b in ranks.values() for rows, pad in b]
    return np.concatenate(chosen) if chosen else np.zeros((0, 2), dtype=np.int64)


@SETTINGS
@given(epochs())
def test_every_window_once_per_epoch_over_all_ranks(p):
    table, ranks = _epoch(p)
    assert len({len(b) for b in ranks.values()}) == 1, "ranks got different numbers of batches"
    real = [tuple(r) for r in _rows(ranks, False).tolist()]
    assert len(set(real)) == len(real), "a window twice in one epoch"
    assert set(real) <= {tuple(r) for r in table.tolist()}
    if p["uneven"] == "pad" and not p["drop_last"]:
        assert sorted(real) == [tuple(r) for r in table.tolist()], "a window missing"
    if p["uneven"] == "drop":
        assert len(_rows(ranks, True)) == 0
    if p["drop_last"]:
        assert all(len(rows) == p["batch_size"] for b in ranks.values() for rows, _ in b)


@SETTINGS
@given(epochs())
def test_epoch_order_is_a_function_of_seed_and_epoch(p):
    _, first = _epoch(p)
    _, again = _epoch(p)
    for rank in first:
        for (a, pa), (b, pb) in zip(first[rank], again[rank], strict=True):
            assert np.array_equal(a, b) and np.array_equal(pa, pb)


def test_shuffled_epochs_differ_and_unshuffled_follow_the_table():
    p = {
        "cubes": [np.ones(200, bool), np.ones(150, bool)],
        "batch_size": 8,
        "world_size": 2,
        "shuffle": True,
        "seed": 7,
        "epoch": 0,
        "uneven": "pad",
        "drop_last": False,
        "shard_steps": 4,
        "shuffle_buffer": None,
    }
    table, one = _epoch(p, epoch=0)
    _, two = _epoch(p, epoch=1)
    _, other_seed = _epoch(p, epoch=0, seed=8)
    assert not np.array_equal(_rows(one, False), _rows(two, False))
    assert not np.array_equal(_rows(one, False), _rows(other_seed, False))
    _, plain = _epoch({**p, "shuffle": False, "world_size": 1})
    assert _rows(plain, False).tolist() == table.tolist()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size=0"),
        ({"rank": 2, "world_size": 2}, r"rank=2 with world_size=2"),
        ({"seed": -1}, "seed=-1"),
        ({"uneven": "wrap"}, "uneven='wrap'"),
        ({"shard_steps": 0}, "shard_steps=0"),
    ],
)
def test_epoch_order_refuses_bad_arguments(kwargs, match):
    args = {"seed": 0, "epoch": 0, "batch_size": 4, **kwargs}
    with pytest.raises(SchemaError, match=match):
        w.windows_epoch_order(np.array([[0, 0], [0, 1]]), **args)


def test_epoch_order_refuses_an_unsorted_table():
    with pytest.raises(SchemaError, match="shape"):
        w.windows_epoch_order(np.arange(6), seed=0, epoch=0, batch_size=2)
    with pytest.raises(SchemaError, match="not in cube order"):
        w.windows_epoch_order(np.array([[1, 0], [0, 3]]), seed=0, epoch=0, batch_size=2)


# --- read_plan ------------------------------------------------------------------------------


@SETTINGS
@given(
    st.lists(st.integers(0, 100), min_size=1, max_size=12),
    shapes(),
    st.integers(1, 10),
)
def test_read_plan_covers_exactly_the_steps_needed(starts, shape, per_chunk):
    k, m, lead = shape["input_steps"], shape["target_steps"], shape["lead"]
    chunks = w.read_plan(np.array(starts), k, m, lead=lead, steps_per_chunk=per_chunk)
    needed = {s for t in starts for s in _needed(t, k, m, lead)}
    assert chunks.tolist() == sorted({s // per_chunk for s in needed})


def test_consecutive_windows_share_their_chunks():
    starts = np.arange(10, 18)
    assert len(w.read_plan(starts, 4, steps_per_chunk=1)) == 4 + 8 - 1
    assert w.read_plan(starts, 4, 2, lead=3, steps_per_chunk=8).tolist() == [1, 2, 3]
    with pytest.raises(SchemaError, match="steps_per_chunk=0"):
        w.read_plan(starts, 4, steps_per_chunk=0)
