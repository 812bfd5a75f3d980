"""Checkpoints on local disk and moto S3: resume, retention, damage, kill -9, metrics log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from cubes.errors import CubeExistsError, SchemaError, SourceNotFoundError, StorageError
from loaders import Checkpoints, CubeBatchDataset, DamagedCheckpointWarning
from tests.conftest import ROOT


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store(request, tmp_path):
    """``(url, storage_options)`` of an empty checkpoint location."""
    if request.param == "local":
        return str(tmp_path / "run"), None
    bucket = request.getfixturevalue("bucket")
    return f"{bucket.url}/runs/r1", bucket.storage_options


def _dataset(cube, **kwargs):
    options = {"input_dims": {"y": 32, "x": 32}, "batch_size": 3, "shuffle": True, "seed": 7}
    return CubeBatchDataset(str(cube), **(options | kwargs))


def _model_and_optimizer(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(8, 2)
    return model, torch.optim.Adam(model.parameters(), lr=0.05)


def _train(model, optimizer, loader, n: int) -> list[torch.Tensor]:
    """``n`` optimizer steps on the loader's next batches (across epochs); the batches."""
    seen: list[torch.Tensor] = []
    while len(seen) < n:
        for batch in loader:
            loss = model(batch["inputs"].mean(dim=(2, 3))).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen.append(batch["inputs"])
            if len(seen) == n:
                break
    return seen


def _save_steps(ckpt, steps) -> None:
    model, optimizer = _model_and_optimizer()
    for step in steps:
        ckpt.save(step, model=model, optimizer=optimizer, extra={"step": step})


def test_resume_mid_epoch_gives_the_same_batches_and_weights(store, local_cube):
    url, options = store
    # 8 batches an epoch: checkpoint after 5, then 6 more, into the next epoch.
    model, optimizer = _model_and_optimizer()
    reference = _train(model, optimizer, _dataset(local_cube).loader(prefetch=0), 11)

    ckpt = Checkpoints(url, storage_options=options)
    assert ckpt.load_latest() is None and ckpt.steps() == []
    first_model, first_opt = _model_and_optimizer()
    loader = _dataset(local_cube).loader(prefetch=0)
    _train(first_model, first_opt, loader, 5)
    saved = ckpt.save(5, model=first_model, optimizer=first_opt, loader=loader, extra={"e": 0})
    assert saved.endswith("step-000000005")

    model2, opt2 = _model_and_optimizer(seed=1)  # other weights, fresh Adam state
    loader2 = _dataset(local_cube).loader(prefetch=0)
    again = Checkpoints(url, storage_options=options)
    assert again.load_latest(model=model2, optimizer=opt2, loader=loader2) == {
        "step": 5,
        "extra": {"e": 0},
    }
    assert loader2.state_dict() == loader.state_dict()
    rest = _train(model2, opt2, loader2, 6)
    for got, want in zip(rest, reference[5:], strict=True):
        assert torch.equal(got, want)
    assert torch.equal(model2.weight, model.weight) and torch.equal(model2.bias, model.bias)
    with pytest.raises(CubeExistsError, match=r"step 5 already exists at .*step-000000005"):
        again.save(5, model=model2)


def test_loader_state_of_another_configuration_is_refused(tmp_path, local_cube):
    ckpt = Checkpoints(str(tmp_path / "run"))
    model, optimizer = _model_and_optimizer()
    loader = _dataset(local_cube).loader(prefetch=0)
    ckpt.save(1, model=model, optimizer=optimizer, loader=loader)
    other_model, _ = _model_and_optimizer(seed=1)
    before = other_model.weight.clone()
    other = _dataset(local_cube, batch_size=4).loader(prefetch=0)
    with pytest.raises(
        SchemaError, match=r"loader.json: .*batch_size=3; this loader has .*batch_size=4"
    ):
        ckpt.load_latest(model=other_model, loader=other)
    assert torch.equal(other_model.weight, before)  # nothing loaded before the refusal
    channels = _dataset(local_cube, channels=["DNA"]).loader(prefetch=0)
    with pytest.raises(
        SchemaError,
        match=r"another dataset \(inputs=\[.*'Brightfield'\]\); this one has inputs=\['DNA'\]",
    ):
        ckpt.load_latest(loader=channels)
    bare = Checkpoints(str(tmp_path / "bare"))
    bare.save(0, model=model)
    with pytest.raises(SchemaError, match=r"step-000000000 holds no optimizer.pt"):
        bare.load_latest(optimizer=optimizer)


def test_keep_last_keeps_the_newest_complete_steps(store):
    url, options = store
    ckpt = Checkpoints(url, keep_last=2, storage_options=options)
    _save_steps(ckpt, [10, 20, 30])
    assert ckpt.steps() == [20, 30]
    ckpt.fs.pipe_file(f"{ckpt._root}/step-000000035/model.pt", b"half a save")
    _save_steps(ckpt, [40])
    assert ckpt.steps() == [30, 40]
    assert not any("step-000000035" in name for name in ckpt._files())  # unfinished, older
    assert ckpt.load(30)["extra"] == {"step": 30}
    with pytest.raises(SourceNotFoundError, match=r"No whole checkpoint step 10 .*\[30, 40\]"):
        ckpt.load(10)
    with pytest.raises(SchemaError, match="keep_last=0"):
        Checkpoints(url, keep_last=0, storage_options=options)


def test_damaged_latest_step_falls_back_to_the_previous_one(store):
    url, options = store
    ckpt = Checkpoints(url, storage_options=options)
    _save_steps(ckpt, [1, 2, 3])
    ckpt.fs.rm(f"{ckpt._root}/step-000000003/optimizer.pt")
    ckpt.fs.pipe_file(f"{ckpt._root}/step-000000002/model.pt", b"bit rot")
    model, optimizer = _model_and_optimizer(seed=5)
    with pytest.warns(DamagedCheckpointWarning, match=r"step 3: optimizer.pt is missing; step 2"):
        resumed = ckpt.load_latest(model=model, optimizer=optimizer)
    assert resumed == {"step": 1, "extra": {"step": 1}}
    assert torch.equal(model.weight, _model_and_optimizer()[0].weight)
    with pytest.raises(
        StorageError, match=r"step 2 at .* is damaged: model.pt has 7 bytes, not the"
    ):
        ckpt.load(2)


def _kill_script(url: str, options, after: str) -> str:
    """Saves step 1, then SIGKILLs itself in step 2's save right after writing ``after``."""
    return textwrap.dedent(
        f"""
        import os, signal, torch
        from loaders import Checkpoints

        ckpt = Checkpoints({url!r}, storage_options={options!r})
        torch.manual_seed(0)
        model = torch.nn.Linear(8, 2)
        ckpt.save(1, model=model, extra={{"step": 1}})
        put = ckpt._put

        def put_then_die(name, data):
            put(name, data)
            if name.endswith({after!r}):
                os.kill(os.getpid(), signal.SIGKILL)

        ckpt._put = put_then_die
        with torch.no_grad():
            model.weight.fill_(2.0)
        ckpt.save(2, model=model, extra={{"step": 2}})
        """
    )


@pytest.mark.parametrize("after", ["model.pt", "manifest.json"])
def test_kill_9_during_a_save_leaves_the_previous_checkpoint(store, after):
    url, options = store
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", _kill_script(url, options, after)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -9, proc.stderr
    ckpt = Checkpoints(url, storage_options=options)
    assert json.loads(ckpt._get("latest") or b"") == {"prefix": "step-000000001", "step": 1}
    model, _ = _model_and_optimizer(seed=3)
    assert ckpt.load_latest(model=model) == {"step": 1, "extra": {"step": 1}}
    assert torch.equal(model.weight, _model_and_optimizer()[0].weight)
    # complete but never named by latest: loaded by no one, replaced when saved again
    assert ckpt.steps() == ([1] if after == "model.pt" else [1, 2])
    with torch.no_grad():
        model.weight.fill_(3.0)
    ckpt.save(2, model=model, extra={"step": 2})  # the resumed run reaches step 2 again
    assert ckpt.load_latest(model=model) == {"step": 2, "extra": {"step": 2}}
    assert bool((model.weight == 3.0).all())
    with pytest.raises(CubeExistsError, match="step 1 already exists"):
        ckpt.save(1, model=model)


def test_metrics_log_appends_in_order_across_segments_and_runs(store, monkeypatch):
    url, options = store
    monkeypatch.setattr(Checkpoints, "segment_lines", 3)
    ckpt = Checkpoints(url, storage_options=options)
    assert ckpt.read_log() == []
    for step in range(5):
        ckpt.log(step=step, loss=torch.tensor(1.0 / (step + 1)))
    resumed = Checkpoints(url, storage_options=options)  # a new run appends after
    resumed.log(step=5, note="resumed")
    log = Checkpoints(url, storage_options=options).read_log()
    assert [row["step"] for row in log] == list(range(6))
    assert log[1]["loss"] == 0.5 and log[5]["note"] == "resumed"
    segments = sorted(n for n in ckpt._files() if n.startswith("metrics/"))
    assert segments == ["metrics/000001.jsonl", "metrics/000002.jsonl", "metrics/000003.jsonl"]
    with pytest.raises(SchemaError, match="Cannot write the metrics as JSON"):
        ckpt.log(model=object())


@pytest.mark.s3
def test_missing_bucket_is_named(moto_server):
    with pytest.raises(SourceNotFoundError, match="Bucket 'no-such-bucket' does not exist"):
        Checkpoints("s3://no-such-bucket/run", endpoint_url=moto_server)
