"""The README's picture of napari with the widgets (``docs/napari_widgets.png``): the demo's results in a real
napari window as ``microseg demo --gui`` shows them, the Tracking dock in front after Track. Prints the tracking
message and the seconds taken.

Run: xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python benchmarks/gui_demo_screenshot.py [--out docs/]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(ROOT / "docs"))
    args = parser.parse_args()

    from qtpy.QtWidgets import QApplication
    from skimage.io import imsave

    from gui_ccd_fe55 import close_notifications  # (benchmarks/ is the script's folder)

    from napari_microseg.demo import run_demo
    from napari_microseg.progress import drain
    from napari_microseg.widgets.demo_viewer import show_demo

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        result = drain(run_demo(Path(scratch) / "demo"))
        viewer = show_demo(result, run=False)
        tracking = viewer.window.dock_widgets["Tracking (napari-microseg)"]
        tracking.native.parent().raise_() if hasattr(tracking, "native") else tracking.parent().raise_()
        worker = tracking.track()
        while worker is not None and tracking.busy:
            QApplication.processEvents()
            time.sleep(0.05)
        viewer.window._qt_window.resize(1600, 1045)
        viewer.dims.set_current_step(0, 19)
        for _ in range(30):
            QApplication.processEvents()
            time.sleep(0.05)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        png = out / "napari_widgets.png"
        close_notifications()  # (napari's PyQt5 deprecation toast over the picture)
        imsave(png, viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)
        print(f"{png}: {tracking.status.text()} ({time.perf_counter() - start:.0f} s)")
        viewer.close()


if __name__ == "__main__":
    main()
