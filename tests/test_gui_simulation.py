"""The Simulation widget generates samples in a worker and adds them as new layers."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gui


def _run(widget, wait_worker, domain, **params):
    widget.domain.value = domain
    for name, value in params.items():
        widget.forms[domain][name].value = value
    # through the thread pool: a small simulation can finish before a signal wait would connect
    wait_worker(widget.generate())


def test_generate_nuclei_timelapse_layers(make_napari_viewer, qtbot, artifacts, wait_worker):
    from napari_microseg.widgets.simulation import SimulationWidget

    viewer = make_napari_viewer(show=True)
    widget = SimulationWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Simulation")
    _run(widget, wait_worker, "nuclei time-lapse [N]", n_frames=6, size=128, n_nuclei=12)
    kinds = {layer.name: type(layer).__name__ for layer in viewer.layers}
    assert kinds["sim nuclei (fluorescence)"] == "Image"
    assert kinds["sim nuclei labels"] == "Labels"
    assert kinds["sim nuclei tracks (truth)"] == "Tracks"
    assert viewer.layers["sim nuclei labels"].data.shape == (6, 128, 128)
    assert viewer.layers["sim nuclei labels"].data.max() > 0
    # a second run never replaces the user's layers
    _run(widget, wait_worker, "nuclei time-lapse [N]", n_frames=3, size=64, n_nuclei=4)
    assert viewer.layers["sim nuclei labels"].data.shape == (6, 128, 128)
    assert "sim nuclei labels [2]" in [layer.name for layer in viewer.layers]
    # a field too small for the nuclei asked for: the layers come with a message saying how many fit
    _run(widget, wait_worker, "nuclei time-lapse [N]", n_frames=2, size=64, n_nuclei=3000)
    assert "sim nuclei labels [3]" in [layer.name for layer in viewer.layers]
    assert "of the 3000 nuclei asked for fit in the 64 x 64 px field" in widget.status.text()
    viewer.window._qt_window.resize(1400, 900)
    qtbot.wait(100)
    from skimage.io import imsave

    imsave(artifacts / "simulation_nuclei.png", viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)


def test_ccd_exposures_of_one_sensor_feed_the_repeat_rule(make_napari_viewer, wait_worker):
    """'exposures of one CCD': the same hot pixels in every frame, so the Segmentation dock's repeat rule finds
    them as the sensor's defects; with 'balanced layout' it says the two do not go together."""
    import numpy as np

    from napari_microseg.widgets.segmentation import SegmentationWidget
    from napari_microseg.widgets.simulation import SimulationWidget

    viewer = make_napari_viewer(show=False)
    widget = SimulationWidget(viewer)
    _run(widget, wait_worker, "CCD frames [C]", n_images=3, size=128, one_sensor=True)
    truth = viewer.layers["sim CCD classes"].data
    sensor_hot = (truth == 2).any(axis=0)
    assert sensor_hot.any() and all(np.isin(frame[sensor_hot], (2, 3)).all() for frame in truth)
    seg = SegmentationWidget(viewer)
    seg.image_layer.value, seg.model_choice.value = "sim CCD (ADC)", "ccd_classes"
    seg.scope.value, seg.hot_repeats.value = "whole stack", True
    wait_worker(seg.segment())
    defects = viewer.layers["sim CCD (ADC) defects"].data.astype(bool)
    assert (defects & sensor_hot).sum() >= 0.9 * sensor_hot.sum() and seg.result.settings["repeat_warning"] is None
    _run(widget, wait_worker, "CCD frames [C]", n_images=2, size=128, one_sensor=True, balanced=True)
    assert "do not go together" in widget.status.text()


@pytest.mark.parametrize("domain,params,expected", [
    ("CCD frames [C]", {"size": 128}, "sim CCD classes"),
    ("response images [R]", {"n_images": 4}, "sim response images"),
    ("TEM liposomes [T]", {"size": 256, "n_particles": 8}, "sim liposome labels"),
    ("STEM nanoparticles [P]", {"n": 8}, "sim nanoparticles (hole)"),
])
def test_generate_other_domains(make_napari_viewer, qtbot, artifacts, wait_worker, domain, params, expected):
    from napari_microseg.widgets.simulation import SimulationWidget

    viewer = make_napari_viewer(show=True)
    widget = SimulationWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Simulation")
    _run(widget, wait_worker, domain, **params)
    assert expected in [layer.name for layer in viewer.layers], widget.status.text()
    if expected == "sim CCD classes":  # the class colours the Segmentation dock gives a CCD class map
        import numpy as np

        from napari_microseg.colours import CLASS_COLOURS
        from napari.utils.colormaps.standardize_color import transform_color

        layer = viewer.layers[expected]
        for class_id in (1, 2, 3):
            np.testing.assert_allclose(layer.get_color(class_id)[:3], transform_color(CLASS_COLOURS[class_id])[0][:3],
                                       atol=1e-3)
    if expected == "sim liposome labels":  # hovering a particle shows its own class, not the next one's
        import numpy as np

        layer = viewer.layers[expected]
        for label in np.unique(layer.data)[1:]:
            y, x = np.argwhere(layer.data == label)[0]
            assert f"label: {label}" in layer._get_properties((int(y), int(x))), label
    if expected == "sim response images":  # the image shown is visible, not black under saturated ones
        layer = viewer.layers[expected]
        shown = layer.data[viewer.dims.current_step[0]]
        assert layer.contrast_limits[1] <= shown.max() or layer.contrast_limits[1] < layer.data.max()
    viewer.window._qt_window.resize(1400, 900)
    qtbot.wait(100)
    from skimage.io import imsave

    imsave(artifacts / f"simulation_{expected.split()[1].lower()}.png", viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)
