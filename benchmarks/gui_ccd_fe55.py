"""Issue 9's user story in a real napari window: open a real Fe-55 CCD frame (FITS), segment it with the
shipped ``ccd_classes`` model in the Segmentation widget, list the tiles holding clusters, jump to one and
save a screenshot. Prints the class percentages, the cluster count and the seconds taken.

Run: xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python benchmarks/gui_ccd_fe55.py [--frame ESIS3_05400] [--out docs/]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ccd_fe55"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frame", default="ESIS3_05400")
    parser.add_argument("--model", default="ccd_classes")
    parser.add_argument("--out", default=str(ROOT / "docs"))
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication
    from skimage.io import imsave

    from napari_microseg.widgets.segmentation import SegmentationWidget

    viewer = napari.Viewer(show=True)
    viewer.open(str(DATA / f"{args.frame}.fit.gz"), plugin="napari-microseg")
    image_layer = viewer.layers[-1]
    widget = SegmentationWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segmentation")
    widget.image_layer.value = image_layer.name
    widget.model_choice.value = args.model
    start = time.perf_counter()
    if widget.segment() is None:
        raise SystemExit("the widget refused to segment")
    while widget.result_layer_name is None:  # set on the GUI thread when the result arrives
        if time.perf_counter() - start > 600:
            raise SystemExit("no result after 600 s")
        QApplication.processEvents()
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    classes = np.asarray(viewer.layers[widget.result_layer_name].data)
    widget.find_class.value = "cluster"
    widget.find_tiles()
    if widget.tile_table.rowCount():
        widget.tile_table.selectRow(0)
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.05)
    viewer.window._qt_window.resize(1500, 1000)
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.05)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png = out / "ccd_fe55_napari.png"
    close_notifications()  # (napari's PyQt5 deprecation toast over the picture)
    imsave(png, viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)
    fractions = np.bincount(classes.ravel(), minlength=4) / classes.size
    print(json.dumps({"frame": args.frame, "shape": list(classes.shape), "seconds_incl_gui": round(seconds, 1),
                      "percent_bg_glow_hot_cluster": [round(100 * float(v), 3) for v in fractions],
                      "clusters": None if widget.clusters is None else int(len(widget.clusters)),
                      "tiles_with_clusters": widget.tile_table.rowCount(), "screenshot": str(png),
                      "status": widget.counts_label.value}, indent=2))
    viewer.close()


def close_notifications() -> None:
    """Close napari's notification toasts (they would cover part of the screenshot)."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification
    from qtpy.QtWidgets import QApplication

    for widget in QApplication.allWidgets():
        if isinstance(widget, NapariQtNotification):
            widget.close()
    for _ in range(10):
        QApplication.processEvents()


if __name__ == "__main__":
    main()
