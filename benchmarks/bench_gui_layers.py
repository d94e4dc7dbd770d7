"""GUI benchmark: how long adding a result layer holds napari's GUI thread.

Each variant runs in a fresh Python process (napari's first Labels layer of a wide dtype, or
with a direct colormap, compiles numba code: that first add is the 1-3 s freeze users saw).
Reported per variant, ms of wall time on the calling (GUI) thread, including a repaint:
``first`` (the first add in the process) and ``next`` (best of 3 later adds). ``cache``: with
numba's on-disk cache as installed; ``no cache``: with an empty cache folder (a fresh or
read-only install).

Variants (a (T, Y, X) stack of ``--frames`` x ``--side`` px, ~3000 nucleus-like ids):
- ``labels uint32`` (what the Segmentation dock added before) vs ``labels display_labels``
  (uint16: what the docks add now);
- ``classes DirectLabelColormap`` (uint8 class map with a direct colormap, as before) vs
  ``classes class_colormap`` (the cyclic colormap the docks use now).

Usage (under a display; here a virtual one)::

    xvfb-run -a .venv/bin/python benchmarks/bench_gui_layers.py
    xvfb-run -a .venv/bin/python benchmarks/bench_gui_layers.py --frames 50 --side 1024
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

VARIANTS = ("labels uint32", "labels display_labels", "classes DirectLabelColormap", "classes class_colormap")

CHILD = r"""
import json, sys, time
import numpy as np
variant, frames, side = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
import napari
from napari_microseg.widgets._base import class_colormap, display_labels
from napari_microseg.colours import class_colours
from napari.utils.colormaps import DirectLabelColormap

rng = np.random.default_rng(0)
cell = 16
grid = (np.arange(side) // cell)
ids = (grid[:, None] * (side // cell) + grid[None, :] + 1).astype(np.uint32)
ids[(np.arange(side) % cell < 2)[:, None] | (np.arange(side) % cell < 2)[None, :]] = 0   # gaps between objects
stack = np.repeat(ids[None], frames, axis=0)
viewer = napari.Viewer(show=True)
viewer.add_image(rng.random((frames, side, side), dtype=np.float32), name="image")
app = napari.qt.get_qapp()
app.processEvents()

def make():
    if variant == "labels uint32":
        return stack, {}
    if variant == "labels display_labels":
        return display_labels(stack), {}
    classes = (stack % 4).astype(np.uint8)
    if variant == "classes DirectLabelColormap":
        return classes, {"colormap": DirectLabelColormap(color_dict=class_colours(4))}
    return classes, {"colormap": class_colormap(4)}

times = []
for i in range(4):
    data, kwargs = make()
    start = time.perf_counter()
    layer = viewer.add_labels(data, name=f"result {i}", **kwargs)
    viewer.window._qt_viewer.canvas.native.repaint() if hasattr(viewer.window._qt_viewer, "canvas") else None
    app.processEvents()
    times.append(1000 * (time.perf_counter() - start))
viewer.close()
print(json.dumps({"first": times[0], "next": min(times[1:])}))
"""


def run_variant(variant: str, frames: int, side: int, empty_cache: bool) -> dict:
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as cache:
        if empty_cache:
            env["NUMBA_CACHE_DIR"] = cache
        out = subprocess.run([sys.executable, "-c", CHILD, variant, str(frames), str(side)], env=env,
                             capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--side", type=int, default=1024)
    args = p.parse_args()
    print(f"adding a Labels layer of {args.frames} x {args.side} x {args.side} px (ms on the GUI thread)")
    print(f"{'variant':30s} {'first (cache)':>14s} {'next':>8s} {'first (no cache)':>17s} {'next':>8s}")
    for variant in VARIANTS:
        cached = run_variant(variant, args.frames, args.side, empty_cache=False)
        fresh = run_variant(variant, args.frames, args.side, empty_cache=True)
        print(f"{variant:30s} {cached['first']:14.0f} {cached['next']:8.0f} {fresh['first']:17.0f} {fresh['next']:8.0f}")


if __name__ == "__main__":
    main()
