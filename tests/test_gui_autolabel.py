"""Auto-label widget: debounced live preview, apply to a stack, QC tiles on the canvas."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def test_preview_apply_and_qc(make_napari_viewer, qtbot, artifacts, wait_worker):
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse
    from napari_microseg.widgets.autolabel import AutolabelWidget

    sim = simulate_nuclei_timelapse(n_frames=3, shape=(192, 192), n_nuclei=25, seed=2)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(sim.fluorescence, name="stain")
    widget = AutolabelWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Auto-label")
    widget.stain_layer.value = "stain"
    widget.clear_border.value = False
    # several quick changes -> one preview after the pause
    for window in (31, 41, 51):
        widget.otsu_window.value = window
    qtbot.waitUntil(lambda: widget.preview_layer is not None and not widget.busy, timeout=60000)
    qtbot.wait(600)
    current = int(viewer.dims.current_step[0])
    preview = widget.preview_layer.data
    assert preview[current].max() > 5
    others = [t for t in range(3) if t != current]
    assert all(preview[t].max() == 0 for t in others)

    # edits painted into the preview survive the next preview (another frame): kept as their own layer
    edited = widget.preview_layer
    edited.paint((current, 5, 5), 99)  # the brush (emits the layer's paint event)
    viewer.dims.set_current_step(0, (current + 1) % 3)
    qtbot.waitUntil(lambda: widget.preview_layer is not edited and not widget.busy, timeout=60000)
    assert edited in viewer.layers and edited.name.startswith("auto-label preview (edited)")
    assert edited.data[current, 5, 5] == 99
    assert "your edits are kept" in widget.status.text()
    viewer.dims.set_current_step(0, current)
    qtbot.waitUntil(lambda: not widget.busy and widget.preview_layer.data[current].max() > 5, timeout=60000)

    wait_worker(widget.apply())
    labels = widget.labels_layer.data
    assert labels.shape == (3, 192, 192) and all(labels[t].max() > 5 for t in range(3))
    from napari_microseg.evaluation.metrics import instance_scores

    f1 = instance_scores(sim.labels[current], labels[current], thresholds=[0.5]).f1.iloc[0]
    assert f1 > 0.6, f"auto-labels disagree with the simulated truth (F1 {f1:.2f})"

    widget.tile.value = 64
    assert widget.qc_table.isHidden()  # no empty table before the first QC
    wait_worker(widget.run_qc())  # in a worker: the dock stays responsive on big frames (QC of 9 tiles may end
    qtbot.waitUntil(lambda: widget.qc is not None, timeout=5000)  # before a signal wait could connect)
    table = widget.qc
    assert len(table) == 9 and widget.qc_table.rowCount() == 9 and not widget.qc_table.isHidden()
    assert (~table.kept).sum() >= 2  # the lowest 25 % are dropped
    assert any(type(lay).__name__ == "Shapes" for lay in viewer.layers)
    # a labels layer to train on: dropped tiles -1 (not annotated), kept tiles and other frames as they were
    checked, source = widget.qc_labels_layer.data, widget.labels_layer.data
    t_qc = viewer.dims.current_step[0]
    assert checked.shape == source.shape
    for rec in table.itertuples():
        area = (t_qc, slice(rec.y, rec.y + 64), slice(rec.x, rec.x + 64))
        if rec.kept:
            np.testing.assert_array_equal(checked[area], source[area])
        else:
            assert (checked[area] == -1).all()
    others = [t for t in range(source.shape[0]) if t != t_qc]
    np.testing.assert_array_equal(checked[others], source[others])
    assert "-1 (not annotated): train on it" in widget.status.text()
    viewer.window._qt_window.resize(1400, 1000)
    qtbot.wait(100)
    from skimage.io import imsave

    imsave(artifacts / "autolabel_widget.png", viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)


def test_autolabel_messages(make_napari_viewer):
    from napari_microseg.widgets.autolabel import AutolabelWidget

    viewer = make_napari_viewer(show=False)
    widget = AutolabelWidget(viewer)
    assert widget.apply() is None and "Choose the stain" in widget.status.text()
    assert widget.run_qc() is None and "Apply the auto-labeller first" in widget.status.text()


def test_labels_onto_a_phase_target(make_napari_viewer, qtbot, artifacts, wait_worker):
    """[N] pairing in the dock: the stain's labels are registered onto the phase layer of the same
    field; a shifted stain's labels are moved back onto the phase image."""
    from scipy import ndimage as ndi

    from napari_microseg.evaluation.metrics import instance_scores
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse
    from napari_microseg.widgets.autolabel import AutolabelWidget

    sim = simulate_nuclei_timelapse(n_frames=2, shape=(192, 256), n_nuclei=30, seed=5)
    stain = sim.fluorescence.copy()
    stain[1] = ndi.shift(stain[1], (8, -7), order=1, mode="nearest")  # the stage moved between the channels
    viewer = make_napari_viewer(show=True)
    viewer.add_image(stain, name="DAPI")
    viewer.add_image(sim.phase, name="phase", scale=(1, 0.5, 0.5))
    widget = AutolabelWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Auto-label")
    widget.live.value = False
    widget.stain_layer.value = "DAPI"
    widget.clear_border.value = False

    widget.target_layer.value = "DAPI"
    assert widget.apply() is None and "is the stain itself" in widget.status.text()
    # the same from the dock napari opens (Plugins menu): its viewer is a proxy, each lookup a new object
    _, plugin_dock = viewer.window.add_plugin_dock_widget("napari-microseg", "Auto-label")
    plugin_dock.live.value = False
    plugin_dock.stain_layer.value, plugin_dock.target_layer.value = "DAPI", "DAPI"
    assert plugin_dock.apply() is None and "is the stain itself" in plugin_dock.status.text()
    viewer.add_image(sim.phase[:, :, :200], name="cropped phase")
    widget.target_layer.value = "cropped phase"
    assert widget.apply() is None and "same field" in widget.status.text()

    widget.target_layer.value = "phase"
    wait_worker(widget.apply())
    qtbot.waitUntil(lambda: widget.labels_layer is not None, timeout=5000)
    layer = widget.labels_layer
    assert layer.name == "phase labels (from DAPI)" and tuple(layer.scale) == (1, 0.5, 0.5)
    shifts = layer.metadata["shifts"]
    assert [s["corrected"] for s in shifts] == [False, True]
    assert "moved onto the target in 1 of 2" in widget.status.text()
    for t in range(2):  # both frames' labels lie on the phase image's nuclei
        f1 = instance_scores(sim.labels[t], np.maximum(layer.data[t], 0), thresholds=[0.5]).f1.iloc[0]  # (-1: strip)
        assert f1 > 0.6, f"frame {t}: labels off the target (F1 {f1:.2f})"

    widget.correct_shift.value = False
    wait_worker(widget.apply())
    qtbot.waitUntil(lambda: widget.labels_layer is not layer, timeout=5000)
    assert "NOT corrected" in widget.status.text()
    f1 = instance_scores(sim.labels[1], widget.labels_layer.data[1], thresholds=[0.5]).f1.iloc[0]
    assert f1 < 0.5  # left on the shifted stain
    viewer.layers.remove("cropped phase")
    viewer.window._qt_window.resize(1400, 1000)
    qtbot.wait(100)
    from skimage.io import imsave

    imsave(artifacts / "autolabel_pairing.png", viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)


class _ThreadRecordingArray:
    """A Zarr array that notes, in ``reads``, whether each read of its values ran on the GUI (main)
    thread. At module level: a class defined in a test would be copied with its closure when dask
    pickles it for its graph, and the reads noted in the copy."""

    reads: list = []

    def __init__(self, store):
        self.store = store
        self.shape, self.dtype, self.ndim, self.chunks = store.shape, store.dtype, store.ndim, store.chunks

    def __getitem__(self, key):
        import threading

        values = self.store[key]
        if values.size:  # (dask asks for an empty slice to learn the type: no data read)
            _ThreadRecordingArray.reads.append(threading.current_thread() is threading.main_thread())
        return values


def test_preview_of_a_zarr_layer_reads_its_frame_in_the_worker(make_napari_viewer, wait_worker, tmp_path, qtbot):
    """A Zarr-backed layer (indexing a Zarr array reads at once) is wrapped lazily by the widgets:
    pressing preview reads nothing on the GUI thread; the worker reads the one frame it labels."""
    import numpy as np
    import zarr

    from napari_microseg.autolabel.fluorescence import autolabel_frame
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse
    from napari_microseg.widgets.autolabel import AutolabelWidget

    movie = simulate_nuclei_timelapse(n_frames=3, shape=(96, 96), n_nuclei=8, seed=4).fluorescence
    store = zarr.open_array(str(tmp_path / "movie.zarr"), mode="w", shape=movie.shape, chunks=(1, 96, 96),
                            dtype=movie.dtype)
    store[:] = movie
    reads = _ThreadRecordingArray.reads
    viewer = make_napari_viewer(show=False)
    layer = viewer.add_image(_ThreadRecordingArray(store), name="zarr stain", contrast_limits=(0, 1))
    widget = AutolabelWidget(viewer)
    widget.live.value = False  # one preview, the one asked for below (no debounced live previews)
    widget.stain_layer.value = "zarr stain"
    widget.clear_border.value = False
    qtbot.wait(200)  # napari draws the new layer (on a busy machine, later): its reads are not the widget's
    reads.clear()
    worker = widget.preview()
    on_gui_thread = [read for read in reads if read]  # napari's own slicing threads may read too: not these
    assert on_gui_thread == [], "the preview read the Zarr layer on the GUI thread"
    wait_worker(worker)
    assert reads.count(False) == 1, (reads, widget.status.text())  # the worker read the one frame it labels
    t = int(viewer.dims.current_step[0])
    np.testing.assert_array_equal(widget.preview_layer.data[t], autolabel_frame(movie[t], **widget.parameters()))
    assert widget.preview_layer.data[t].max() > 0 and isinstance(layer.data, _ThreadRecordingArray)


def test_preview_says_how_many_objects_the_diameter_limit_left_out(make_napari_viewer, wait_worker):
    """Nuclei larger than the max diameter (another magnification) vanish from the labels: the preview
    says how many, how large, and which setting keeps them."""
    import numpy as np

    from napari_microseg.simulate.nuclei import simulate_nuclei_image
    from napari_microseg.widgets.autolabel import AutolabelWidget

    image, truth = simulate_nuclei_image((256, 256), 12, seed=6, diameter_range=(36.0, 44.0), cluster_fraction=0.0)
    viewer = make_napari_viewer(show=False)
    viewer.add_image(image, name="big nuclei")
    widget = AutolabelWidget(viewer)
    widget.live.value = False
    widget.stain_layer.value = "big nuclei"
    widget.clear_border.value = False
    wait_worker(widget.preview())
    status = widget.status.text()
    assert "above the 30 px max diameter left out" in status and "raise 'max diameter'" in status, status
    few = int(widget.preview_layer.data.max())
    # Apply marks them -1, "not annotated" (training ignores them), instead of background
    wait_worker(widget.apply())
    applied = widget.labels_layer.data
    assert (applied == -1).any() and "are -1, not annotated" in widget.status.text()
    from napari_microseg.training.data import IGNORE, make_target

    target = make_target(applied, "three_class")
    assert (target[applied == -1] == IGNORE).all()
    widget.max_diameter.value = 60.0
    wait_worker(widget.preview())
    assert "left out" not in widget.status.text() and widget.preview_layer.data.max() > few
    assert widget.preview_layer.data.max() >= 0.7 * (len(np.unique(truth)) - 1)


def test_opening_with_a_stain_chosen_previews_it(make_napari_viewer, qtbot):
    """The dock opened over an image picks it as the stain: the live preview comes without a click."""
    from napari_microseg.simulate.nuclei import simulate_nuclei_image
    from napari_microseg.widgets.autolabel import AutolabelWidget

    image, _ = simulate_nuclei_image(shape=(128, 128), n_nuclei=12, seed=4)
    viewer = make_napari_viewer()
    viewer.add_image(image, name="dapi")
    widget = AutolabelWidget(viewer)
    assert widget.stain_layer.value == "dapi"
    qtbot.waitUntil(lambda: widget.preview_layer is not None and not widget.busy, timeout=60000)
    assert widget.preview_layer.data.max() > 5 and "nuclei" in widget.status.text()
    blank = AutolabelWidget(make_napari_viewer())  # nothing to preview: no timer, no message
    assert not blank.timer.isActive()


def test_a_fits_frame_is_pointed_to_the_ccd_auto_labeller(make_napari_viewer, wait_worker):
    """The dock labels nuclei: on a CCD frame read from FITS its preview says where CCD frames are
    auto-labelled."""
    from napari_microseg._reader import get_reader
    from napari_microseg.widgets.autolabel import AutolabelWidget

    path = "src/napari_microseg/sample_data/ccd_fe55_ESIS1_00002_crop.fits.gz"
    viewer = make_napari_viewer(show=False)
    for data, kwargs, kind in get_reader(path)(path):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = AutolabelWidget(viewer)
    widget.live.value = False
    widget.stain_layer.value = viewer.layers[0].name
    wait_worker(widget.preview())
    assert "microseg autolabel ccd" in widget.status.text()
