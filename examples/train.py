"""Demo: train a tiny CNN from a cube with CubeBatchDataset and 2 DataLoader workers.

The task is in-silico staining: predict the DNA channel of a 128x128 patch
from the four other stains (Mito, AGP, RNA, ER), standardised with the
statistics stored in the cube.

    python examples/train.py demo-data/plate.zarr [--steps 40]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import cubes
from loaders import CubeBatchDataset

INPUTS = ["Mito", "AGP", "RNA", "ER"]
TARGET = "DNA"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cube", help="cube URL or path")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)

    print(cubes.open_cube(args.cube, require_complete=True))
    data = CubeBatchDataset(
        args.cube,
        input_dims={"y": 128, "x": 128},
        batch_size=args.batch_size,
        channels=[*INPUTS, TARGET],
        normalize=True,
        shuffle=True,  # fields permuted, then samples shuffled within a few fields; seed=0
    )
    print(f"\n{data.n_samples} samples of {data.channels}, {len(data)} batches per epoch")
    loader = data.loader(num_workers=args.workers)  # one iteration = one epoch
    model = nn.Sequential(
        nn.Conv2d(len(INPUTS), 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 1, 3, padding=1),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    step, samples, first_loss, loss_value = 0, 0, None, float("nan")
    start = None
    while step < args.steps:
        for batch in loader:
            if start is None:  # time from the first batch: worker start-up is not throughput
                start = time.perf_counter()
            x, y = batch["inputs"][:, :-1], batch["inputs"][:, -1:]
            loss = nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_value = loss.item()
            first_loss = loss_value if first_loss is None else first_loss
            step += 1
            samples += len(x)
            if step % 10 == 0:
                print(f"step {step:3d}  loss {loss_value:.3f}")
            if step >= args.steps:
                break
    seconds = time.perf_counter() - (start or time.perf_counter())
    m, state = loader.metrics(), loader.state_dict()
    print(
        f"\nloader: {m['batches_per_s']:.1f} batches/s, waited {m['wait_fraction']:.0%} of the "
        f"time ({m['mean_wait_ms']:.0f} ms/batch, {m['first_wait_s']:.1f} s for the workers to "
        f"start), {m['bytes'] / 1e6:.1f} MB in {m['requests']:.0f} requests; "
        f"resume from {state['epoch']}:{state['batch']}"
    )
    print(
        f"trained {step} steps on {samples} samples in {seconds:.1f} s: "
        f"{samples / seconds:.1f} samples/s ({args.workers} workers, CPU); "
        f"loss {first_loss:.3f} -> {loss_value:.3f}"
    )


if __name__ == "__main__":
    main()
