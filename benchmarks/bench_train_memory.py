"""Peak memory of training on a (T, Y, X) stack, in bytes per pixel of the stack.

Builds a uint16 image stack with uint32 instance labels (disks of radius 14 px every 40 px),
then runs :func:`napari_microseg.training.trainer.train` (three_class, CPU) up to its first
optimisation step and prints:

- the peak resident memory (``ru_maxrss``) above what the process held after building the
  inputs and importing torch, per pixel of the stack, and the same with the inputs' 6 B/px;
- the peak of numpy memory traced by ``tracemalloc`` (``--traced``; slower).

The Training dock refuses a lazy stack whose ``TRAINING_BYTES_PER_PIXEL`` estimate exceeds 60 %
of the free memory; this script is how that constant was measured.

Run:  .venv/bin/python benchmarks/bench_train_memory.py [--frames 24] [--size 1024] [--traced]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import threading
from pathlib import Path

import numpy as np


def make_stack(frames: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(T, Y, X) uint16 image and uint32 labels: a grid of bright disks on noise."""
    from skimage.draw import disk

    rng = np.random.default_rng(0)
    image = np.zeros((frames, size, size), np.uint16)
    labels = np.zeros((frames, size, size), np.uint32)
    for t in range(frames):
        label = 1
        for y in range(20, size - 20, 40):
            for x in range(20, size - 20, 40):
                rr, cc = disk((y, x), 14, shape=(size, size))
                labels[t, rr, cc] = label
                image[t, rr, cc] = 1000 + rng.integers(0, 500)
                label += 1
        image[t] += rng.integers(0, 200, (size, size), dtype=np.uint16)
    return image, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--traced", action="store_true", help="also trace numpy allocations (tracemalloc)")
    args = parser.parse_args()
    image, labels = make_stack(args.frames, args.size)
    import scipy.ndimage  # noqa: F401  (imports counted in the baseline, not as training's memory)
    import skimage.segmentation  # noqa: F401
    import torch  # noqa: F401

    from napari_microseg.training.trainer import train

    if args.traced:
        import tracemalloc

        tracemalloc.start()
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    stop = threading.Event()
    with tempfile.TemporaryDirectory() as tmp:
        config = dict(output_mode="three_class", epochs=1, patches_per_epoch=8, batch_size=8, patch_size=128,
                      val_max_tiles=4, device="cpu", preset="small", augment=False, num_threads=2)
        for event in train(config, {"images": [image], "labels": [labels]}, out_path=Path(tmp) / "m.pt",
                           stop_event=stop):
            if getattr(event, "kind", "") == "step":
                stop.set()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    pixels = image.size
    print(f"stack {args.frames} x {args.size} x {args.size} ({pixels / 1e6:.1f} Mpx), uint16 image, uint32 labels")
    print(f"peak RSS above the inputs: {(peak - baseline) / pixels:.1f} B/px; "
          f"with the inputs (6 B/px): {(peak - baseline) / pixels + 6:.1f} B/px")
    if args.traced:
        print(f"peak traced numpy memory: {tracemalloc.get_traced_memory()[1] / pixels:.1f} B/px")


if __name__ == "__main__":
    main()
