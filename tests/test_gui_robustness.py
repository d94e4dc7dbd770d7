"""Dock widgets under bad input and interruption: one red line in the dock, never an exception escaping into
Qt; results never replace a user's file; Stop discards a run even in its last step; RGB layers are grey."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def test_worker_error_is_one_line_and_the_bar_says_failed(make_napari_viewer, qtbot, wait_worker):
    from napari_microseg.widgets.segmentation import SegmentationWidget

    viewer = make_napari_viewer(show=False)
    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    image[3, 4] = np.nan
    viewer.add_image(image, name="nan image")
    widget = SegmentationWidget(viewer)
    widget.image_layer.value = "nan image"
    wait_worker(widget.segment())  # pytest-qt fails the test if the error escapes into the Qt loop
    assert "NaN" in widget.status.text() and widget.progress.format() == "failed"
    assert [layer.name for layer in viewer.layers] == ["nan image"]


def test_rgb_layer_is_segmented_as_grey(make_napari_viewer, wait_worker, tiny_nuclei_model):
    from napari_microseg.simulate.nuclei import simulate_nuclei_image
    from napari_microseg.widgets.segmentation import FILE_CHOICE, SegmentationWidget

    grey = simulate_nuclei_image(shape=(96, 96), n_nuclei=8, seed=2)[0]
    viewer = make_napari_viewer(show=False)
    viewer.add_image(np.repeat(grey[..., None], 3, axis=-1).astype(np.float32), name="rgb", rgb=True)
    widget = SegmentationWidget(viewer)
    widget.image_layer.value = "rgb"
    widget.model_choice.value = FILE_CHOICE
    widget.model_file.value = str(tiny_nuclei_model)
    wait_worker(widget.segment())
    assert viewer.layers["rgb segmented"].data.shape == (96, 96)


def test_exports_to_an_unwritable_place_say_so(make_napari_viewer, tmp_path, wait_worker, tiny_nuclei_model):
    from napari_microseg.widgets.segmentation import FILE_CHOICE, SegmentationWidget

    viewer = make_napari_viewer(show=False)
    viewer.add_image(np.random.default_rng(1).random((64, 64)).astype(np.float32), name="img")
    widget = SegmentationWidget(viewer)
    widget.image_layer.value = "img"
    widget.model_choice.value = FILE_CHOICE
    widget.model_file.value = str(tiny_nuclei_model)
    wait_worker(widget.segment())
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    widget.export_dir.value = str(a_file)  # a file where a folder is expected
    assert widget.export() == []
    assert "cannot write" in widget.status.text()


def test_training_never_replaces_a_model_file_and_checks_the_path_first(make_napari_viewer, qtbot, tmp_path, wait_worker):
    from napari_microseg.widgets.training import TrainingWidget
    from test_gui_training import _small_config, _viewer_with_sample

    viewer = _viewer_with_sample(make_napari_viewer)
    widget = TrainingWidget(viewer)
    _small_config(widget, tmp_path, epochs=1)
    existing = tmp_path / "model.pt"
    existing.write_bytes(b"my good model")
    worker = widget.train()
    widget.stop()  # at once: the run stops, and the existing file stays as it was
    wait_worker(worker)
    assert existing.read_bytes() == b"my good model"
    assert widget.out_path.value.name == "model_2.pt"
    # an output that cannot be written is refused before any training
    widget.out_path.value = str(tmp_path)  # a folder
    assert widget.train() is None and "is a folder" in widget.status.text()
    (tmp_path / "a_file").write_text("x")
    widget.out_path.value = str(tmp_path / "a_file" / "model.pt")  # under a file: no folder can be made
    assert widget.train() is None and "not a writable folder" in widget.status.text()
    # a folder that lets root pass os.access but takes no files (/proc): refused before training too
    widget.out_path.value = "/proc/model.pt"
    assert widget.train() is None and "cannot write /proc/model.pt" in widget.status.text()


def test_stop_discards_a_run_even_in_its_last_step(make_napari_viewer, qtbot, wait_worker):
    """A one-step job (the generator returns right after Stop) adds nothing."""
    from napari_microseg.progress import Progress
    from napari_microseg.widgets.segmentation import SegmentationWidget

    import threading

    viewer = make_napari_viewer(show=False)
    widget = SegmentationWidget(viewer)
    released = threading.Event()

    def job():
        yield Progress(0, 1, "working")
        released.wait(10)  # in the worker thread: the last step runs until Stop was pressed
        return "result"

    results = []
    worker = widget.start(job, results.append, label="one step")
    qtbot.waitUntil(lambda: widget.status.text() == "working", timeout=10000)
    widget.stop()
    released.set()
    assert worker is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=20000)  # finished (it may finish at once)
    qtbot.wait(50)
    assert results == [] and "stopped" in widget.status.text() and widget.progress.format() == "stopped"


def test_tracking_edits_that_fail_do_not_claim_success(make_napari_viewer, qtbot, wait_worker):
    from skimage.draw import disk

    from napari_microseg.widgets.tracking import TrackingWidget

    stack = np.zeros((3, 60, 60), np.uint16)
    for t in range(3):
        stack[t][disk((10 + t, 10), 3)] = 1
        stack[t][disk((40, 40), 3)] = 2
    viewer = make_napari_viewer(show=False)
    viewer.add_labels(stack, name="cells")
    widget = TrackingWidget(viewer)
    widget.labels_layer.value = "cells"
    wait_worker(widget.track())
    first = int(widget.result.table.track_id.min())
    widget.selected_track_ids = lambda: [first]
    viewer.dims.set_current_step(0, 0)  # splitting at the track's first frame leaves nothing on one side
    before = widget.result
    wait_worker(widget.split_selected())
    assert "split track" not in widget.status.text() and "no rows on both sides" in widget.status.text()
    assert widget.result is before


def test_run_buttons_are_greyed_out_while_a_run_is_going(make_napari_viewer, qtbot):
    """One run at a time: the buttons that start work are disabled until it ends (done or stopped);
    a second start is refused with a message; buttons that only read results stay usable."""
    import threading

    from napari_microseg.progress import Progress
    from napari_microseg.widgets.segmentation import SegmentationWidget

    viewer = make_napari_viewer(show=False)
    widget = SegmentationWidget(viewer)
    starters = (widget.run_button, widget.batch_button, widget.finetune_button)
    assert all(button.enabled for button in starters)
    released = threading.Event()

    def job():
        yield Progress(0, 2, "working")
        released.wait(10)
        yield Progress(1, 2, "still working")
        return "result"

    results = []
    assert widget.start(job, results.append, label="long job") is not None
    qtbot.waitUntil(lambda: widget.status.text() == "working", timeout=10000)
    assert not any(button.enabled for button in starters)
    assert widget.export_button.enabled and widget.stop_button.isEnabled()
    assert widget.start(job, results.append) is None and "Already running" in widget.status.text()
    released.set()
    # wait on the widget's state, not worker.finished: that signal may fire before a waitSignal starts
    qtbot.waitUntil(lambda: results == ["result"] and not widget.stop_button.isEnabled(), timeout=30000)
    assert all(button.enabled for button in starters)

    released.clear()
    assert widget.start(job, results.append, label="long job") is not None  # stopped runs give the buttons back too
    qtbot.waitUntil(lambda: widget.status.text() == "working", timeout=10000)
    widget.stop()
    released.set()
    qtbot.waitUntil(lambda: all(button.enabled for button in starters), timeout=30000)
    assert results == ["result"] and not widget.stop_button.isEnabled()
