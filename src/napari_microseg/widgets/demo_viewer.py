"""Open a demo result in napari: layers plus the four widgets docked (used by ``microseg demo --gui``)."""

from __future__ import annotations

from typing import Any


def show_demo(result: Any, run: bool = True) -> Any:
    """Add the demo's images, labels and tracks as layers, dock the widgets, and start napari's event loop."""
    import napari

    viewer = napari.Viewer(title="napari-microseg demo")
    sim, seg, tracks = result.simulation, result.segmentation, result.tracking
    viewer.add_image(sim.fluorescence, name="movie (simulated fluorescence)")
    viewer.add_labels(sim.labels, name="true labels", visible=False)
    viewer.add_labels(seg.labels, name="segmented", opacity=0.4)
    data, kwargs = tracks.napari_tracks()
    viewer.add_tracks(data, **{**kwargs, "name": "tracks", "tail_length": 12})
    for name in ("Simulation", "Training", "Segmentation", "Tracking", "Auto-label", "Classification"):
        viewer.window.add_plugin_dock_widget("napari-microseg", name, tabify=True)
    if run:
        napari.run()
    return viewer
