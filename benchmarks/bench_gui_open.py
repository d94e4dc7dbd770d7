"""GUI benchmark: how long opening the Training dock holds napari's window.

The Training dock needs torch, kornia and the trainer (~1.3 s of imports on this 2-core CPU).
Each variant runs in a fresh Python process, in a shown napari viewer, with a 10 ms Qt timer
as a heartbeat; reported: ``open`` (ms to construct and dock the widget, on the GUI thread),
and the longest and 99th-percentile gaps between heartbeats (ms) from just before the dock
is created until its imports are done (+0.5 s).

Variants:
- ``imports in a thread`` (what the dock does): the imports run in a thread of their own;
- ``imports on the GUI thread`` (what it did before): the same imports, called on the GUI
  thread right after the dock is built.

Usage (under a display; here a virtual one)::

    xvfb-run -a .venv/bin/python benchmarks/bench_gui_open.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

VARIANTS = ("imports in a thread", "imports on the GUI thread")

CHILD = r"""
import json, sys, threading, time
import numpy as np
import napari
from qtpy.QtCore import QTimer
import napari_microseg.widgets.training as training

variant = sys.argv[1]
viewer = napari.Viewer(show=True)
app = napari.qt.get_qapp()
for _ in range(20):
    app.processEvents(); time.sleep(0.01)
gaps, last = [], [time.perf_counter()]
def beat():
    now = time.perf_counter(); gaps.append(now - last[0]); last[0] = now
timer = QTimer(); timer.timeout.connect(beat); timer.start(10)
app.processEvents(); last[0] = time.perf_counter()
if variant == "imports on the GUI thread":
    training._import_in_thread = training._import_training_modules
    training._import_training_modules = lambda: None  # the dock's thread does nothing ...
start = time.perf_counter()
widget = training.TrainingWidget(viewer)
viewer.window.add_dock_widget(widget, name="Training")
if variant == "imports on the GUI thread":
    training._import_in_thread()  # ... the GUI thread imports, as the dock did before
opened = time.perf_counter() - start
while widget.imports.is_alive():
    app.processEvents(); time.sleep(0.002)
end = time.perf_counter() + 0.5
while time.perf_counter() < end:
    app.processEvents(); time.sleep(0.002)
timer.stop()
beat_gaps = np.array(gaps) * 1000
print(json.dumps({"open": opened * 1000, "max_gap": float(beat_gaps.max()), "p99_gap": float(np.percentile(beat_gaps, 99))}))
viewer.close()
"""


def run_variant(variant: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, variant], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per variant, interleaved (default 3)")
    args = p.parse_args()
    results: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for _ in range(args.repeats):
        for variant in VARIANTS:
            results[variant].append(run_variant(variant))
    print(f"{'variant':28s} {'open (ms)':>10s} {'longest gap (ms)':>17s} {'p99 gap (ms)':>13s}   (median of {args.repeats})")
    for variant, runs in results.items():
        med = {k: sorted(r[k] for r in runs)[len(runs) // 2] for k in runs[0]}
        print(f"{variant:28s} {med['open']:10.0f} {med['max_gap']:17.0f} {med['p99_gap']:13.0f}")


if __name__ == "__main__":
    main()
