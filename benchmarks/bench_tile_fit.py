"""Segmentation speed on frames of several sizes, for comparing tilings (or two checkouts of the code).

Run: .venv/bin/python benchmarks/bench_tile_fit.py [--model nuclei_fluorescence_fast ...] [--threads 2]
Prints megapixels/s (normalisation, tiled network, watershed and object table included) and objects
found for a 2048x2048 and a 1024x1024 image and a stack of 4 frames of 512x512, built from simulated
256x256 nuclei fields. To compare with older code, run it once more with ``PYTHONPATH=<old checkout>/src``
(``git worktree add /tmp/old <commit>``), alternating the two a few times: this machine is shared.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def field_mosaic(size: int) -> np.ndarray:
    """A (size, size) float32 image of (size // 256)^2 simulated 256 x 256 nuclei fields (40 nuclei each)."""
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    n = size // 256
    rows = [np.hstack([simulate_nuclei_image(shape=(256, 256), n_nuclei=40, seed=100 + r * n + c,
                                             vary_appearance=False)[0] for c in range(n)]) for r in range(n)]
    return np.vstack(rows).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=None, help="shipped name or model file (repeatable)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from napari_microseg.inference.segment import segment
    from napari_microseg.io.models import load_model

    cases = {"2048x2048": field_mosaic(2048), "1024x1024": field_mosaic(1024)}
    frame = field_mosaic(512)
    cases["4 x 512x512"] = np.stack([np.roll(frame, 16 * f, axis=1) for f in range(4)])
    report = {}
    for name in args.model or ["nuclei_fluorescence_fast"]:
        loaded = load_model(name)
        segment(loaded, frame[:256, :256])  # warm-up: first kernels, the inference copy of the network
        for case, image in cases.items():
            start = time.perf_counter()
            result = segment(loaded, image)
            seconds = time.perf_counter() - start
            report[f"{name} {case}"] = {"megapixels_per_s": round(image.size / 1e6 / seconds, 3),
                                        "seconds": round(seconds, 2), "objects": int(len(result.objects))}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
