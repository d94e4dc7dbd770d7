"""Each dock widget opens in a real napari viewer (virtual display); screenshots are written and non-blank."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gui

WIDGETS = ["Simulation", "Training", "Segmentation", "Tracking", "Auto-label", "Classification"]


def settle(qtbot, ms: int = 150) -> None:
    """Let Qt lay out and paint newly docked widgets before a screenshot."""
    qtbot.wait(ms)


def save_screenshot(viewer, path) -> None:
    from skimage.io import imsave

    shot = viewer.screenshot(canvas_only=False, flash=False)
    assert shot.ndim == 3 and shot.shape[0] > 200
    assert shot[..., :3].std() > 5, "screenshot is blank"
    imsave(path, shot, check_contrast=False)


@pytest.mark.parametrize("name", WIDGETS)
def test_widget_opens_and_says_what_it_does(make_napari_viewer, qtbot, artifacts, name):
    from napari_microseg._sample_data import dsb2018_nuclei

    viewer = make_napari_viewer(show=True)
    for data, kwargs, kind in dsb2018_nuclei():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-microseg", name)
    viewer.window._qt_window.resize(1400, 900)
    settle(qtbot)
    assert widget.isVisible()
    assert widget.title == name and widget.description
    save_screenshot(viewer, artifacts / f"widget_{name.lower()}.png")


def test_all_four_widgets_docked(make_napari_viewer, qtbot, artifacts):
    viewer = make_napari_viewer(show=True)
    from napari_microseg._sample_data import dsb2018_nuclei

    for data, kwargs, kind in dsb2018_nuclei():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widgets = [viewer.window.add_plugin_dock_widget("napari-microseg", name)[1] for name in WIDGETS]
    viewer.window._qt_window.resize(1600, 1100)
    settle(qtbot)
    assert all(w.isVisible() for w in widgets)
    save_screenshot(viewer, artifacts / "viewer_four_widgets.png")


def test_demo_opens_in_napari_with_the_trained_model(make_napari_viewer, qtbot, artifacts, tmp_path):
    """``microseg demo --gui``: the demo's layers, all widgets docked, the briefly trained model current."""
    from napari_microseg.demo import run_demo
    from napari_microseg.progress import drain
    from napari_microseg.widgets.demo_viewer import show_demo

    result = drain(run_demo(tmp_path / "demo", n_frames=4, size=128, n_nuclei=10, train_epochs=1, train_frames=2,
                            train_patches=8))
    viewer = make_napari_viewer(show=True)
    show_demo(result, run=False, viewer=viewer)
    assert [layer.name for layer in viewer.layers] == ["movie (simulated fluorescence)", "true labels", "segmented", "tracks"]
    segmentation = next(w for name, w in viewer.window.dock_widgets.items() if "Segmentation" in name)
    assert segmentation.model_choice.value == str(result.files["model"])
    tracking = next(w for name, w in viewer.window.dock_widgets.items() if "Tracking" in name)
    assert tracking.labels_layer.value == "segmented" == segmentation.labels_for_training.value  # not the hidden truth
    viewer.window._qt_window.resize(1500, 950)
    settle(qtbot)
    qtbot.wait(700)  # past the Auto-label dock's preview delay: no preview layer joins the demo's
    assert [layer.name for layer in viewer.layers][-1] == "tracks"
    save_screenshot(viewer, artifacts / "demo_gui.png")


def test_headers_and_result_lines_use_their_row(make_napari_viewer, qtbot):
    """Section headers and result lines span the dock instead of wrapping in the value column;
    a result line with no text leaves no empty row."""
    from napari_microseg.widgets.classification import ClassificationWidget
    from napari_microseg.widgets.segmentation import SegmentationWidget

    viewer = make_napari_viewer(show=True)
    seg = SegmentationWidget(viewer)
    cls = ClassificationWidget(viewer)
    viewer.window.add_dock_widget(seg)
    viewer.window.add_dock_widget(cls)
    viewer.window._qt_window.resize(1400, 900)
    settle(qtbot)
    for line in (seg.counts_label, cls.summary):  # nothing to say yet: no row
        assert not line.native.isVisible() and not line._labeled_widget().native.isVisible()
    seg.counts_label.value = "3 frames: 9-10 objects per frame (mean 9.3)"
    settle(qtbot)
    assert seg.counts_label.native.isVisible()
    one_line = seg.counts_label.native.fontMetrics().height() * 1.5
    for line in (seg.counts_label, seg.training_set_label):
        assert line.native.height() < one_line, "wrapped"
        assert line.native.width() > 0.8 * seg.form.native.width()
    seg.counts_label.value = ""
    settle(qtbot)
    assert not seg.counts_label._labeled_widget().native.isVisible()


def test_labels_drawn_by_the_compiled_backend():
    """napari colours labels with PartSegCore's compiled code (installed with the gui extra), not
    with numba code it would compile on the GUI thread the first time (a 1-3 s freeze)."""
    from napari.utils.colormaps import _accelerated_cmap

    assert _accelerated_cmap.partsegcore_mapping is not None
    assert _accelerated_cmap.labels_raw_to_texture_direct is _accelerated_cmap.labels_raw_to_texture_direct_partsegcore
