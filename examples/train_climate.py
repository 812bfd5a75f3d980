"""Demo: predict next-step surface temperature from a climate cube; resumable checkpoints.

A tiny CNN sees two time steps of T_surf, q_H2O and cldfrac (standardised with
the statistics stored in the cube) and predicts T_surf one step after the last,
as a change from that last step. Every --every steps, and at the last step, the
model, the optimizer and the loader's position are saved to --checkpoints (a
local folder or an s3:// URL). Run the same command again, with more --steps,
and it continues from the latest checkpoint on the batches an uninterrupted run
would have seen: the same weights, to the bit.

    python -m ingest synth-climate demo-data/climate --years 2
    python -m ingest netcdf demo-data/climate demo-data/climate.zarr
    python examples/train_climate.py demo-data/climate.zarr --steps 200 \\
        --time-range 2000-01-01 2000-12-31 --val-range 2001-01-01 2001-12-31

Checkpoints go beside a local cube by default, to ``<cube>-runs/train_climate``
(``demo-data/climate-runs/train_climate`` above); a cube on S3 needs
--checkpoints. Its ``metrics/`` hold one JSON line per step (step, epoch, loss;
val_loss and RMSEs in kelvin at checkpoints with --val-range). After a kill, the
steps between the last checkpoint and the kill are logged again by the resumed
run: the later line is the one that counts. Training with other settings
(batch size, periods, window, seed, learning rate) needs another --checkpoints.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cubes import CubeError, SchemaError
from cubes.store import is_local
from loaders import Checkpoints, CubeBatchDataset

VARIABLES = ["T_surf", "q_H2O", "cldfrac"]
TARGET = "T_surf"
INPUT_STEPS = 2
VAL_BATCH_SIZE = 64


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cube", help="climate cube URL or path")
    parser.add_argument(
        "--checkpoints",
        metavar="URL",
        help="folder or s3:// URL for checkpoints and the metrics log "
        "(default for a local cube: <cube>-runs/train_climate, beside it)",
    )
    parser.add_argument("--steps", type=int, default=200, help="train until this step (total)")
    parser.add_argument("--every", type=int, default=50, help="checkpoint every N steps")
    parser.add_argument("--keep-last", type=int, default=3, help="checkpoints kept (newest)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    parser.add_argument("--seed", type=int, default=0, help="sample order and initial weights")
    parser.add_argument("--window", metavar="LATxLON", help="patch size (default: whole grid)")
    period = {"nargs": 2, "metavar": ("START", "END")}
    parser.add_argument(
        "--time-range", **period, help="training period, ends included (default: the record)"
    )
    parser.add_argument(
        "--val-range", **period, help="a later period: report the validation loss there"
    )
    parser.add_argument("--endpoint-url", metavar="URL", help="S3-compatible endpoint")
    args = parser.parse_args()
    if args.steps < 1 or args.every < 1 or args.keep_last < 1 or args.batch_size < 1:
        parser.error("--steps, --every, --keep-last and --batch-size take integers >= 1")
    if args.checkpoints is None:
        if not is_local(args.cube):
            parser.error(f"{args.cube} is not local: give --checkpoints URL to save to")
        args.checkpoints = default_checkpoints(args.cube)
    try:
        args.window = parse_window(args.window)
    except ValueError:
        parser.error(f"--window {args.window}: give LATxLON, e.g. 16x32")
    return args


def default_checkpoints(cube: str) -> str:
    """``<cube>-runs/train_climate`` beside a local cube (``x.zarr`` -> ``x-runs/...``)."""
    stem = cube.removeprefix("file://").rstrip("/").removesuffix(".zarr")
    return f"{stem}-runs/train_climate"


def parse_window(text: str | None) -> dict[str, int] | None:
    if text is None:
        return None
    lat, lon = (int(n) for n in text.lower().split("x"))
    return {"lat": lat, "lon": lon}


def period(values: list[str] | None) -> tuple[str | None, str | None] | None:
    """``--time-range START END`` as a time range; an empty string leaves that end open."""
    return None if values is None else (values[0] or None, values[1] or None)


def make_dataset(
    args: argparse.Namespace, time_range: Any, *, shuffle: bool, batch_size: int
) -> CubeBatchDataset:
    return CubeBatchDataset(
        args.cube,
        variables=VARIABLES,
        target_variables=[TARGET],
        input_steps=INPUT_STEPS,
        target_steps=1,
        lead=1,  # the next step
        input_dims=args.window,
        time_range=period(time_range),
        normalize=True,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=args.seed,
        storage_options={"endpoint_url": args.endpoint_url} if args.endpoint_url else None,
    )


class NextStep(nn.Module):
    """``(N, steps, C, H, W)`` inputs -> ``(N, 1, 1, H, W)``: the last target channel + a change."""

    def __init__(self, channels: int, target_channel: int) -> None:
        super().__init__()
        self.target_channel = target_channel
        self.net = nn.Sequential(
            nn.Conv2d(INPUT_STEPS * channels, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 1, 3, padding=1),
        )

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        n, steps, c, h, w = inputs.shape
        last = inputs[:, -1:, self.target_channel : self.target_channel + 1]
        x = torch.nan_to_num(inputs).reshape(n, steps * c, h, w)  # a missing value: the mean
        return last + self.net(x).reshape(n, 1, 1, h, w)


def masked_mse(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean squared error over the finite target values, and how many there were."""
    ok = torch.isfinite(target) & torch.isfinite(pred)
    n = int(ok.sum())
    return ((pred - target)[ok] ** 2).sum() / max(n, 1), n


def weights_digest(model: nn.Module) -> str:
    """A checksum of the weights: equal runs print equal digests."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@torch.no_grad()
def validate(model: NextStep, data: CubeBatchDataset) -> dict[str, float]:
    """Loss (standardised) over the period, and RMSE in kelvin of the model and of persistence."""
    model.eval()
    sums = {"val_loss": 0.0, "val_rmse_K": 0.0, "persistence_rmse_K": 0.0}
    count = 0
    for i in range(len(data)):
        batch = data[i]
        keep = ~batch["padding"]
        inputs, targets = batch["inputs"][keep], batch["targets"][keep]
        pred = model(inputs)
        persistence = inputs[:, -1:, model.target_channel : model.target_channel + 1]
        loss, n = masked_mse(pred, targets)
        kelvin = [
            data.denormalize(x, variables=[TARGET], cube=batch["cube"][keep])
            for x in (pred, persistence, targets)
        ]
        sums["val_loss"] += float(loss) * n
        sums["val_rmse_K"] += float(masked_mse(kelvin[0], kelvin[2])[0]) * n
        sums["persistence_rmse_K"] += float(masked_mse(kelvin[1], kelvin[2])[0]) * n
        count += n
    model.train()
    out = {k: v / max(count, 1) for k, v in sums.items()}
    for key in ("val_rmse_K", "persistence_rmse_K"):
        out[key] **= 0.5
    return out


def config(args: argparse.Namespace) -> dict[str, Any]:
    """What a resumed run must share with the run it continues, as JSON gives it back."""
    names = ("batch_size", "lr", "seed", "window", "time_range")
    return json.loads(json.dumps({name: getattr(args, name) for name in names}))


@dataclass
class Trainer:
    """The model, its optimizer and where they are saved; one method per training event."""

    args: argparse.Namespace
    model: NextStep
    optimizer: torch.optim.Optimizer
    checkpoints: Checkpoints
    val: CubeBatchDataset | None
    loss: float = float("nan")
    samples: int = 0

    @classmethod
    def build(
        cls, args: argparse.Namespace, data: CubeBatchDataset, val: CubeBatchDataset | None
    ) -> Trainer:
        torch.manual_seed(args.seed)
        model = NextStep(len(data.channels), list(data.channels).index(TARGET))
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
        ckpt = Checkpoints(
            args.checkpoints, keep_last=args.keep_last, endpoint_url=args.endpoint_url
        )
        return cls(args, model, optimizer, ckpt, val)

    def resume(self, loader: Any) -> int:
        """Load the latest checkpoint (model, optimizer, loader); the step it was saved at."""
        where, again = self.args.checkpoints, "Give another --checkpoints to train with these"
        try:
            resumed = self.checkpoints.load_latest(
                model=self.model, optimizer=self.optimizer, loader=loader
            )
        except SchemaError as exc:
            raise SystemExit(f"{exc}\n{again} settings.") from exc
        if resumed is None:
            print(f"starting afresh; checkpoints in {where}")
            return 0
        extra, now = resumed["extra"] or {}, config(self.args)
        saved = extra.get("config", {})
        differ = [k for k in now if saved.get(k) != now[k]]
        if differ:
            then = ", ".join(f"{k}={saved.get(k)!r}" for k in differ)
            here = ", ".join(f"{k}={now[k]!r}" for k in differ)
            raise SystemExit(
                f"The checkpoints in {where} were made with {then}; this run has {here}. "
                f"{again} settings, or the same settings to continue."
            )
        self.loss = extra.get("metrics", {}).get("loss", float("nan"))
        state = loader.state_dict()
        print(
            f"resumed from step {resumed['step']} ({where}); "
            f"next batch: epoch {state['epoch']}, batch {state['batch']}"
        )
        return int(resumed["step"])

    def step(self, batch: dict[str, Any]) -> None:
        loss, _ = masked_mse(self.model(batch["inputs"]), batch["targets"])
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.loss = loss.item()
        self.samples += len(batch["inputs"])

    def record(self, step: int, epoch: int, loader: Any) -> None:
        """Log step ``step``; at checkpoints also validate and save."""
        metrics: dict[str, Any] = {"step": step, "epoch": epoch, "loss": self.loss}
        due = step % self.args.every == 0 or step == self.args.steps
        if due and self.val is not None:
            metrics.update(validate(self.model, self.val))
        self.checkpoints.log(**metrics)  # before the save: a kill in between repeats a line
        if due:
            self.checkpoints.save(
                step,
                model=self.model,
                optimizer=self.optimizer,
                loader=loader,
                extra={"config": config(self.args), "metrics": metrics},
            )
            print(" ".join(f"{k} {_show(v)}" for k, v in metrics.items()), " saved")


def train(args: argparse.Namespace, data: CubeBatchDataset, val: CubeBatchDataset | None) -> None:
    """Train until step ``args.steps``, from the latest checkpoint if there is one."""
    trainer = Trainer.build(args, data, val)
    with data.loader(num_workers=args.workers) as loader:
        step = first = trainer.resume(loader)
        start = time.perf_counter()
        while step < args.steps:
            epoch = loader.epoch  # the epoch of this iteration's batches
            for batch in loader:
                trainer.step(batch)
                step += 1
                trainer.record(step, epoch, loader)
                if step == args.steps:
                    break
        seconds = time.perf_counter() - start
    if step == first:
        print(f"the checkpoints are at step {step} (--steps {args.steps}): raise --steps to go on")
    else:
        rate = trainer.samples / seconds
        print(f"trained steps {first + 1}..{step} in {seconds:.1f} s ({rate:.1f} samples/s)")
    print(f"done: step {step}, loss {trainer.loss:.6g}, weights {weights_digest(trainer.model)}")


def _show(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def main() -> None:
    args = parse_args()
    try:
        run(args)
    except CubeError as exc:  # its message names the remedy: no traceback
        raise SystemExit(f"train_climate.py: {exc}") from exc


def run(args: argparse.Namespace) -> None:
    data = make_dataset(args, args.time_range, shuffle=True, batch_size=args.batch_size)
    print(
        f"{data.n_samples} samples (windows of {INPUT_STEPS} steps x patches) of "
        f"{list(data.channels)} -> {list(data.target_channels)} a step later; "
        f"{len(data)} batches per epoch"
    )
    val = None
    if args.val_range is not None:  # in the cube's order, in larger batches: no gradients
        val = make_dataset(args, args.val_range, shuffle=False, batch_size=VAL_BATCH_SIZE)
        print(f"validation: {val.n_samples} samples in {args.val_range[0]} .. {args.val_range[1]}")
    train(args, data, val)


if __name__ == "__main__":
    main()
