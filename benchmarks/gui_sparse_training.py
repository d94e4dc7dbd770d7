"""Issue 4's user story, scripted in a real napari window: paint a few nuclei (and some background) on a
real DSB2018 image, train in the Training widget with sparse labels, watch the loss, Stop, preview
the whole image; prints the F1 of the preview against the true masks outside the painted area and
saves a screenshot.

Run: xvfb-run -a .venv/bin/python benchmarks/gui_sparse_training.py [--seconds 150] [--out docs/]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]
DSB = ROOT.parent / "shared" / "data" / "dsb2018"
IMAGE_ID = "0ea221716cf13710"  # 520x696, 369 nuclei


def painted_labels(truth: np.ndarray, n_nuclei: int = 12, seed: int = 0) -> np.ndarray:
    """What a user paints: ``n_nuclei`` true nuclei in the left third (ids 2..) and background strokes (id 1)."""
    rng = np.random.default_rng(seed)
    h, w = truth.shape
    region = np.zeros_like(truth, bool)
    region[:, : w // 3] = True
    ids = [i for i in np.unique(truth[region]) if i and (truth == i)[:, w // 3:].sum() == 0]
    chosen = rng.choice(ids, size=min(n_nuclei, len(ids)), replace=False)
    paint = np.zeros(truth.shape, np.int32)
    for k, i in enumerate(chosen, start=2):
        paint[truth == i] = k
    from scipy import ndimage as ndi

    near = ndi.binary_dilation(np.isin(truth, chosen), iterations=12) & (truth == 0)
    paint[near] = 1  # background brushed around the painted nuclei
    return paint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=150.0, help="train this long, then press Stop")
    parser.add_argument("--out", default=str(ROOT / "docs"))
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_microseg.evaluation.metrics import instance_scores
    from napari_microseg.widgets.training import TrainingWidget

    image = tifffile.imread(DSB / "images" / f"{IMAGE_ID}.tif")
    truth = tifffile.imread(DSB / "labels" / f"{IMAGE_ID}.tif")
    paint = painted_labels(truth)
    viewer = napari.Viewer(show=True)
    viewer.add_image(image, name="DSB2018 image")
    viewer.add_labels(paint, name="painted")
    widget = TrainingWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Training")
    viewer.window._qt_window.resize(1500, 1050)
    widget.image_layer.value = ["DSB2018 image"]
    widget.labels_layer.value = ["painted"]
    widget.sparse.value = True
    widget.background_id.value = 1
    widget.patch.value = 128
    widget.epochs.value = 500
    widget.patches_per_epoch.value = 64
    widget.out_path.value = str(Path(args.out) / "sparse_model.pt")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    worker = widget.train()
    start = time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        QApplication.processEvents()
        time.sleep(0.02)
    widget.stop()
    while widget.busy:
        QApplication.processEvents()
        time.sleep(0.02)
    if widget.result is None:
        raise SystemExit(f"training did not return a result: {widget.status.text()}")
    epochs = widget.result.epochs_run
    preview = widget.preview()
    while widget.busy:
        QApplication.processEvents()
        time.sleep(0.02)
    pred = viewer.layers[-1].data
    w = truth.shape[1]
    unpainted = (slice(None), slice(w // 3, None))
    scores = instance_scores(truth[unpainted], pred[unpainted], thresholds=[0.5]).iloc[0]
    viewer.layers["painted"].opacity = 0.8
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.02)
    from skimage.io import imsave

    shot = Path(args.out) / "sparse_training.png"
    imsave(shot, viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)
    n_painted = len(np.unique(paint)) - 2
    print(f"painted {n_painted} nuclei + background; trained {epochs} epochs in {args.seconds:.0f} s ({widget.result.stop_reason}); "
          f"on the unpainted two thirds ({int(len(np.unique(truth[unpainted])) - 1)} true nuclei): "
          f"F1@0.5 {scores.f1:.3f}, precision {scores.precision:.3f}, recall {scores.recall:.3f}; screenshot {shot}")
    viewer.close()


if __name__ == "__main__":
    main()
