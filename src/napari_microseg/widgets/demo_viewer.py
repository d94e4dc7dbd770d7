"""Open a demo result in napari: layers plus the widgets docked (used by ``microseg demo --gui``)."""

from __future__ import annotations

from typing import Any

WIDGET_NAMES = ("Simulation", "Training", "Segmentation", "Tracking", "Auto-label", "Classification")


def show_demo(result: Any, run: bool = True, viewer: Any = None) -> Any:
    """Add the demo's images, labels and tracks as layers, dock the widgets, and start napari's event loop.

    The briefly trained model (if the demo trained one) becomes the Segmentation widget's
    current model. ``viewer``: an existing viewer (None: a new one); ``run``: start the event loop.
    """
    import napari

    viewer = viewer if viewer is not None else napari.Viewer(title="napari-microseg demo")
    sim, seg, tracks = result.simulation, result.segmentation, result.tracking
    viewer.add_image(sim.fluorescence, name="movie (simulated fluorescence)")
    from ._base import ids_features

    viewer.add_labels(sim.labels, name="true labels", visible=False, features=ids_features(sim.labels))
    viewer.add_labels(seg.labels, name="segmented", opacity=0.4, features=ids_features(seg.labels))
    data, kwargs = tracks.napari_tracks()
    viewer.add_tracks(data, **{**kwargs, "name": "tracks", "tail_length": 12})
    docks = {name: viewer.window.add_plugin_dock_widget("napari-microseg", name, tabify=True) for name in WIDGET_NAMES}
    docks["Auto-label"][1].live.value = False  # no auto-label preview layer over the demo's results (it drops the pending one)
    segmentation_dock, segmentation = docks["Segmentation"]
    # the docks work on the demo's segmentation, never on the hidden truth (tracking the simulator's own
    # labels would score itself)
    docks["Tracking"][1].labels_layer.value = "segmented"
    segmentation.labels_for_training.value = "segmented"
    if "model" in result.files:
        segmentation.set_model(str(result.files["model"]))
    segmentation_dock.raise_()  # the tab in front: the model just trained, ready to segment more
    show_whole_tab_names(viewer)
    if run:
        napari.run()
    return viewer


def show_whole_tab_names(viewer: Any) -> None:
    """Tabbed docks show their whole names, scrolling the tab row where it is too narrow: elided, Training and
    Tracking both read "Tra..." in a window of ordinary width."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QTabBar

    for bar in viewer.window._qt_window.findChildren(QTabBar):
        bar.setElideMode(Qt.ElideNone)
        bar.setUsesScrollButtons(True)
