"""Throughput of the shipped nuclei model on a realistic 2048x2048 image (8 x 8 simulated 256-px fields,
thousands of nuclei), including tiling, three-class watershed post-processing and the object table.

Run: .venv/bin/python benchmarks/bench_segment_real.py [--size 2048] [--threads 2]
Prints megapixels/s and objects found; compare with cellpose 3.1's 66 s (0.063 MP/s) for a 2048x2048
nuclei image measured on this kind of machine.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tile", type=int, default=None, help="tile size (default: the model's)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from napari_microseg.inference.segment import segment
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    n = args.size // 256
    rows = [np.hstack([simulate_nuclei_image(shape=(256, 256), n_nuclei=40, seed=100 + r * n + c, vary_appearance=False)[0]
                       for c in range(n)]) for r in range(n)]
    image = np.vstack(rows).astype(np.float32)
    segment("nuclei_fluorescence", image[:256, :256])  # warm-up (model load, first kernels)
    start = time.perf_counter()
    result = segment("nuclei_fluorescence", image, tile=args.tile)
    seconds = time.perf_counter() - start
    mp = image.size / 1e6
    print(json.dumps({"size": args.size, "threads": args.threads, "tile": args.tile, "seconds": round(seconds, 2),
                      "megapixels_per_s": round(mp / seconds, 3), "objects": int(len(result.objects)),
                      "speedup_vs_cellpose_0.063": round(mp / seconds / 0.063, 1),
                      "load_avg_1min": round(os.getloadavg()[0], 2)}, indent=2))


if __name__ == "__main__":
    main()
