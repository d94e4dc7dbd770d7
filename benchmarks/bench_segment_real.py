"""Throughput of the shipped nuclei model on a realistic 2048x2048 image (8 x 8 simulated 256-px fields,
thousands of nuclei), including tiling, three-class watershed post-processing and the object table.

Run: .venv/bin/python benchmarks/bench_segment_real.py [--size 2048] [--threads 2] [--model M ...] [--cellpose-python PY]
Prints megapixels/s and objects found; compare with cellpose 3.1's 66 s (0.063 MP/s) for a 2048x2048
nuclei image measured on this kind of machine. With ``--cellpose-python`` (an interpreter of a separate
venv with ``torch==2.13.0 "cellpose<4"``: cellpose is not a dependency) cellpose runs on the same image
right after ours, same thread count (``pretrained_model=False``: random weights, no download; its speed
does not depend on the weights), and the ratio is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tile", type=int, default=None, help="tile size (default: the model's)")
    parser.add_argument("--model", action="append", default=None,
                        help="model file or shipped name (repeat to time several in one run; default nuclei_fluorescence)")
    parser.add_argument("--diameter", default=None, help="nucleus diameter passed to segment (px or 'auto'), to time its cost")
    parser.add_argument("--cellpose-python", default=None, help="python of a venv with cellpose<4, to time it side by side")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from napari_microseg.inference.segment import segment
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    n = args.size // 256
    rows = [np.hstack([simulate_nuclei_image(shape=(256, 256), n_nuclei=40, seed=100 + r * n + c, vary_appearance=False)[0]
                       for c in range(n)]) for r in range(n)]
    image = np.vstack(rows).astype(np.float32)
    from napari_microseg.io.models import load_model

    mp = image.size / 1e6
    report = {"size": args.size, "threads": args.threads, "tile": args.tile, "models": {}}
    for name in args.model or ["nuclei_fluorescence"]:
        loaded = load_model(name)
        segment(loaded, image[:256, :256])  # warm-up (first kernels, the inference copy of the network)
        start = time.perf_counter()
        result = segment(loaded, image, tile=args.tile, diameter=args.diameter)
        seconds = time.perf_counter() - start
        report["models"][name] = {"seconds": round(seconds, 2), "megapixels_per_s": round(mp / seconds, 3),
                                  "objects": int(len(result.objects)), "diameter": result.settings["diameter"],
                                  "scale_factor": result.settings["scale_factor"],
                                  "speedup_vs_cellpose_0.063": round(mp / seconds / 0.063, 1)}
    report["load_avg_1min"] = round(os.getloadavg()[0], 2)
    if args.cellpose_python:
        cp = time_cellpose(args.cellpose_python, image, args.threads)
        report["cellpose"] = cp
        for entry in report["models"].values():
            entry["speedup_vs_cellpose_same_run"] = round(cp["seconds"] / entry["seconds"], 1)
    print(json.dumps(report, indent=2))


CELLPOSE_CODE = """
import json, sys, time
import numpy as np, torch
torch.set_num_threads(int(sys.argv[2]))
from cellpose import models, version
image = np.load(sys.argv[1])
model = models.CellposeModel(gpu=False, pretrained_model=False)
model.eval(image[:256, :256], channels=[0, 0], diameter=30)  # warm-up
start = time.perf_counter()
masks = model.eval(image, channels=[0, 0], diameter=30)[0]
seconds = time.perf_counter() - start
print(json.dumps({"version": str(version), "seconds": round(seconds, 2),
                  "megapixels_per_s": round(image.size / 1e6 / seconds, 4), "objects": int(masks.max())}))
"""


def time_cellpose(python: str, image: np.ndarray, threads: int) -> dict:
    """Time cellpose (CPU, random weights, diameter 30 px) on ``image`` in another interpreter."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "image.npy"
        np.save(path, image)
        proc = subprocess.run([python, "-c", CELLPOSE_CODE, str(path), str(threads)], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
