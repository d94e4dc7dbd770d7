"""GUI benchmark: how long adding a result layer holds napari's GUI thread.

Each variant runs in a fresh Python process (with napari's numba colour backend, the first
Labels layer of a wide dtype, or with a direct colormap, compiles numba code: that first add is
the 1-3 s freeze users saw). Reported per variant, ms of wall time on the calling (GUI) thread,
including a repaint: ``first`` (the first add in the process) and ``next`` (best of 3 later
adds), for napari's colour backends: ``numba`` with its on-disk cache as installed and with an
empty cache folder (a fresh or read-only install), and ``partsegcore`` (compiled ahead of time:
PartSegCore-compiled-backend, installed with the ``gui`` extra, which napari then uses).

Variants (a (T, Y, X) stack of ``--frames`` x ``--side`` px, ~3000 nucleus-like ids):
- ``labels uint32`` (what the Segmentation dock added before) vs ``labels display_labels``
  (uint16: what the docks add now);
- ``classes DirectLabelColormap`` (uint8 class map with a direct colormap, as before) vs
  ``classes class_colormap`` (the cyclic colormap the docks use now);
- ``objects by class`` (the object ids, uint16, coloured by their class through a direct
  colormap of ~3000 entries: the Classification dock's per-object layer).

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

VARIANTS = ("labels uint32", "labels display_labels", "classes DirectLabelColormap", "classes class_colormap",
            "objects by class")

CHILD = r"""
import json, sys, time
import numpy as np
variant, frames, side, backend = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
import napari
from napari.utils.colormaps import _accelerated_cmap
if backend == "partsegcore" and _accelerated_cmap.partsegcore_mapping is None:
    sys.exit("PartSegCore-compiled-backend is not installed")
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
# after the viewer: its settings set napari's choice (the fastest available) when it starts
_accelerated_cmap.set_colormap_backend(_accelerated_cmap.ColormapBackend[backend])
viewer.add_image(rng.random((frames, side, side), dtype=np.float32), name="image")
app = napari.qt.get_qapp()
app.processEvents()

def make():
    if variant == "labels uint32":
        return stack, {}
    if variant == "labels display_labels":
        return display_labels(stack), {}
    if variant == "objects by class":
        colours = class_colours(4)
        color_dict = {int(i): colours[1 + int(i) % 3] for i in np.unique(stack) if i}
        color_dict.update({0: "transparent", None: "transparent"})
        return display_labels(stack), {"colormap": DirectLabelColormap(color_dict=color_dict)}
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
assert _accelerated_cmap.COLORMAP_BACKEND.name == backend
print(json.dumps({"first": times[0], "next": min(times[1:])}))
"""


def run_variant(variant: str, frames: int, side: int, backend: str, empty_cache: bool = False) -> dict:
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as cache:
        if empty_cache:
            env["NUMBA_CACHE_DIR"] = cache
        out = subprocess.run([sys.executable, "-c", CHILD, variant, str(frames), str(side), backend], env=env,
                             capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--side", type=int, default=1024)
    args = p.parse_args()
    print(f"adding a Labels layer of {args.frames} x {args.side} x {args.side} px (ms on the GUI thread)")
    print(f"{'':30s} {'numba':>26s} {'numba, empty cache':>20s} {'partsegcore':>20s}")
    print(f"{'variant':30s} {'first':>17s} {'next':>8s} {'first':>11s} {'next':>8s} {'first':>11s} {'next':>8s}")
    for variant in VARIANTS:
        cached = run_variant(variant, args.frames, args.side, "numba")
        fresh = run_variant(variant, args.frames, args.side, "numba", empty_cache=True)
        compiled = run_variant(variant, args.frames, args.side, "partsegcore")
        print(f"{variant:30s} {cached['first']:17.0f} {cached['next']:8.0f} {fresh['first']:11.0f} {fresh['next']:8.0f} "
              f"{compiled['first']:11.0f} {compiled['next']:8.0f}")


if __name__ == "__main__":
    main()
