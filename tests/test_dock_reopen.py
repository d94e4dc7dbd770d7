"""Closing a dock (napari's close button destroys it) and opening it again from the Plugins menu (a new dock)
keeps its results: the Segmentation dock's last result and training set, the Tracking dock's tracks and undo
history, the Classification dock's table. Before, the new dock said "Nothing to export yet"."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.gui


def _fine_tuning_dock(viewer, qtbot, tmp_path, model, wait_worker):
    """A Segmentation dock (from the Plugins menu) in ``viewer`` that segmented a simulated image with a copy of
    ``model`` (``tmp_path / "m.pt"``), added it to the training set and is fine-tuning (200 epochs) with the first
    epoch's model written (``m-ft1.pt``): (its napari dock widget, the fine-tune's worker)."""
    import shutil

    from napari_microseg.simulate.nuclei import simulate_nuclei_image
    from napari_microseg.widgets.segmentation import FILE_CHOICE

    shutil.copy(model, tmp_path / "m.pt")
    viewer.add_image(simulate_nuclei_image(shape=(96, 96), n_nuclei=6, seed=4)[0], name="nuclei")
    dock, widget = viewer.window.add_plugin_dock_widget("napari-microseg", "Segmentation")
    widget.image_layer.value = "nuclei"
    widget.model_choice.value = FILE_CHOICE
    widget.model_file.value = str(tmp_path / "m.pt")
    wait_worker(widget.segment())
    assert widget.add_to_training_set() == 1
    widget.finetune_epochs.value = 200
    worker = widget.fine_tune()
    assert worker is not None, widget.status.text()
    qtbot.waitUntil(lambda: (tmp_path / "m-ft1.pt").exists(), timeout=120000)  # an epoch kept: a model to keep
    return dock, worker


def _close(viewer, widget):
    """napari's close button (destroyOnClose): the dock is taken out of the window."""
    viewer.window.remove_dock_widget(widget)


def test_segmentation_results_and_training_set_survive_closing_the_dock(make_napari_viewer, qtbot, tmp_path,
                                                                         tiny_nuclei_model, wait_worker):
    from napari_microseg.simulate.nuclei import simulate_nuclei_image
    from napari_microseg.widgets.segmentation import FILE_CHOICE, SegmentationWidget

    image, _ = simulate_nuclei_image(shape=(128, 128), n_nuclei=10, seed=4)
    viewer = make_napari_viewer(show=False)
    viewer.add_image(image, name="nuclei")
    widget = SegmentationWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segmentation")
    widget.image_layer.value = "nuclei"
    widget.model_choice.value = FILE_CHOICE
    widget.model_file.value = str(tiny_nuclei_model)
    widget.min_size.value = 5
    widget.export_dir.value = str(tmp_path / "export")
    wait_worker(widget.segment())
    result = viewer.layers["nuclei segmented"]
    assert result.data.max() > 0, widget.status.text()
    counts_line = widget.counts_label.value
    assert widget.add_to_training_set() == 1
    _close(viewer, widget)

    reopened = SegmentationWidget(viewer)
    viewer.window.add_dock_widget(reopened, name="Segmentation")
    assert reopened is not widget
    assert reopened.status.text().startswith("kept from the closed Segmentation dock"), reopened.status.text()
    # the form as the user left it, the result line and the training set
    assert reopened.min_size.value == 5 and reopened.model_choice.value == FILE_CHOICE
    assert str(reopened.model_file.value) == str(tiny_nuclei_model)
    assert reopened.counts_label.value == counts_line
    assert reopened.training_set_label.value.startswith("training set: 1 frame(s)")
    assert len(reopened.training_pairs) == 1
    written = reopened.export()
    assert written and "Nothing to export" not in reopened.status.text(), reopened.status.text()
    objects = pd.read_csv(next(p for p in written if "objects" in str(p)))
    assert len(objects) == len(np.unique(result.data)) - 1

    # corrections made after reopening are followed by the new dock: Export measures the corrected labels
    erased = int(result.data.max())
    result.data = np.where(result.data == erased, 0, result.data).astype(result.data.dtype)
    assert reopened.result_edited
    worker = reopened.export()
    if not isinstance(worker, list):
        wait_worker(worker)
    written = sorted((tmp_path / "export").glob("objects*.csv"), key=lambda p: p.stat().st_mtime)
    assert erased not in set(pd.read_csv(written[-1])["label"]), reopened.status.text()
    assert len(pd.read_csv(written[-1])) == len(objects) - 1


def test_a_redocked_dock_keeps_its_own_state_and_a_new_dock_starts_afresh(make_napari_viewer, tiny_nuclei_model,
                                                                           wait_worker):
    """A dock closed and docked again is not robbed of its state by a dock opened later; a dock opened while
    none was closed starts empty."""
    from napari_microseg.simulate.nuclei import simulate_nuclei_image
    from napari_microseg.widgets.segmentation import FILE_CHOICE, SegmentationWidget

    viewer = make_napari_viewer(show=False)
    viewer.add_image(simulate_nuclei_image(shape=(96, 96), n_nuclei=6, seed=1)[0], name="nuclei")
    widget = SegmentationWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segmentation")
    widget.model_choice.value = FILE_CHOICE
    widget.model_file.value = str(tiny_nuclei_model)
    wait_worker(widget.segment())
    assert widget.result is not None
    _close(viewer, widget)
    viewer.window.add_dock_widget(widget, name="Segmentation")  # docked again
    assert widget.result is not None
    fresh = SegmentationWidget(viewer)
    assert fresh.result is None and fresh.result_layer is None
    assert "kept" not in fresh.status.text()


def test_tracking_results_and_undo_survive_closing_the_dock(make_napari_viewer, qtbot, tmp_path, wait_worker):
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse
    from napari_microseg.widgets.tracking import TrackingWidget

    sim = simulate_nuclei_timelapse(n_frames=6, shape=(128, 128), n_nuclei=8, seed=5)
    viewer = make_napari_viewer(show=False)
    viewer.add_labels(sim.labels, name="nuclei")
    widget = TrackingWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Tracking")
    widget.labels_layer.value = "nuclei"
    widget.max_search_radius.value = 20.0
    widget.export_dir.value = str(tmp_path)
    wait_worker(widget.track())
    assert widget.result is not None, widget.status.text()
    n_tracks = widget.result.n_tracks
    widget.table.selectRow(0)
    wait_worker(widget.delete_selected())
    assert widget.result.n_tracks == n_tracks - 1
    _close(viewer, widget)

    reopened = TrackingWidget(viewer)
    viewer.window.add_dock_widget(reopened, name="Tracking")
    assert reopened.max_search_radius.value == 20.0
    assert reopened.table.rowCount() == n_tracks - 1
    assert "with 1 edit(s) to undo" in reopened.status.text(), reopened.status.text()
    tracks_csv = reopened.export_csv()[0]
    assert pd.read_csv(tracks_csv)["track_id"].nunique() == n_tracks - 1
    assert reopened.undo()  # the closed dock's edit is undone by the new one, in the same layers
    assert reopened.result.n_tracks == n_tracks and reopened.table.rowCount() == n_tracks
    assert len(np.unique(reopened.tracks_layer.data[:, 0])) == n_tracks  # in the layer the closed dock made
    # painting into the "by track" layer after reopening is followed: the next edit keeps the paint
    by_track = reopened.relabelled_layer
    by_track.data = np.zeros_like(by_track.data)
    assert reopened._by_track_edited


def test_classification_results_survive_closing_the_dock(make_napari_viewer, tmp_path, wait_worker):
    from napari_microseg.cli import main
    from napari_microseg.simulate.nanoparticles import simulate_profiles
    from napari_microseg.widgets.classification import FILE_CHOICE, ClassificationWidget

    model = tmp_path / "hole.pt"
    assert main(["classify", "train", "profiles", "--simulated", "12", "--epochs", "1", "--device", "cpu",
                 "--threads", "1", "--out", str(model)]) == 0
    viewer = make_napari_viewer(show=False)
    viewer.add_image(simulate_profiles(10, "hole", 1, seed=9).profiles[:, 0], name="one view")
    widget = ClassificationWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Classification")
    widget.task.value = "profiles [P]"
    widget.image_layer.value = "one view"
    widget.model_choice.value = FILE_CHOICE
    widget.model_file.value = str(model)
    wait_worker(widget.classify())
    classes = list(widget.results["class"])
    _close(viewer, widget)

    reopened = ClassificationWidget(viewer)
    viewer.window.add_dock_widget(reopened, name="Classification")
    assert reopened.task.value == "profiles [P]" and reopened.table.rowCount() == 10
    reopened.export_dir.value = str(tmp_path / "out")
    written = reopened.export()
    assert written is not None, reopened.status.text()
    assert list(pd.read_csv(written)["class"]) == classes


def test_paint_made_while_the_tracking_dock_is_closed_is_kept_by_the_reopened_dock(make_napari_viewer, tmp_path,
                                                                                  wait_worker):
    """Paint in the "by track" layer while the dock was closed: the reopened dock's first curation edit overwrote
    it without a word (the closed dock no longer followed the layer); Export did not say the labels were edited."""
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse

    sim = simulate_nuclei_timelapse(n_frames=5, shape=(96, 96), n_nuclei=6, seed=2)
    viewer = make_napari_viewer(show=False)
    viewer.add_labels(sim.labels, name="nuclei")
    dock, widget = viewer.window.add_plugin_dock_widget("napari-microseg", "Tracking")
    widget.labels_layer.value = "nuclei"
    widget.export_dir.value = str(tmp_path)
    wait_worker(widget.track())
    assert widget.result is not None, widget.status.text()
    dock.destroyOnClose()  # the close button
    by_track = viewer.layers["nuclei by track"]
    painted = by_track.data.copy()
    painted[0, :5, :5] = 999
    by_track.data = painted
    source = viewer.layers["nuclei"]
    source.data = np.where(source.data == source.data.max(), 0, source.data)

    _, reopened = viewer.window.add_plugin_dock_widget("napari-microseg", "Tracking")
    assert reopened is not widget and reopened.result is not None
    reopened.export_csv()
    assert "was edited since it was tracked" in reopened.status.text(), reopened.status.text()
    reopened.table.selectRow(0)
    wait_worker(reopened.delete_selected())
    assert "your edits are kept in 'nuclei by track (edited)'" in reopened.status.text(), reopened.status.text()
    assert (viewer.layers["nuclei by track (edited)"].data[0, :5, :5] == 999).all()


def test_a_fine_tune_stopped_by_closing_the_dock_hands_its_model_to_the_reopened_dock(make_napari_viewer, qtbot,
                                                                                      tmp_path, tiny_nuclei_model,
                                                                                      wait_worker):
    """Closing the dock stops a fine-tune, which keeps its best model: the closed dock chose it, the reopened
    one (which took the state at the closing) kept the old model and never said a model was written."""
    viewer = make_napari_viewer(show=False)
    dock, worker = _fine_tuning_dock(viewer, qtbot, tmp_path, tiny_nuclei_model, wait_worker)
    dock.destroyOnClose()
    _, reopened = viewer.window.add_plugin_dock_widget("napari-microseg", "Segmentation")
    wait_worker(worker)
    assert reopened.fine_tuned_path == str(tmp_path / "m-ft1.pt")
    assert reopened.model_choice.value == str(tmp_path / "m-ft1.pt")
    assert "fine-tuned (stopped" in reopened.status.text(), reopened.status.text()


def test_a_reopened_tracking_dock_lets_the_closed_ones_results_go(make_napari_viewer, qtbot, tmp_path, wait_worker):
    """The closed dock's edit recorders (undo wrappers on the tracked labels layer) and the hand-over kept its
    tracking result and "by track" layer alive after the reopened dock tracked again and they were closed
    (a 400 MB movie's stacks stayed in memory)."""
    import gc
    import weakref

    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse

    sim = simulate_nuclei_timelapse(n_frames=4, shape=(96, 96), n_nuclei=5, seed=2)
    viewer = make_napari_viewer(show=False)
    viewer.add_labels(sim.labels, name="nuclei")
    dock, widget = viewer.window.add_plugin_dock_widget("napari-microseg", "Tracking")
    widget.labels_layer.value = "nuclei"
    wait_worker(widget.track())
    first_stack = weakref.ref(widget.result.relabelled)
    dock.destroyOnClose()
    _, reopened = viewer.window.add_plugin_dock_widget("napari-microseg", "Tracking")
    reopened.labels_layer.value = "nuclei"
    wait_worker(reopened.track())
    for layer in [lay for lay in viewer.layers if lay.name in ("nuclei tracks", "nuclei by track")]:
        viewer.layers.remove(layer)  # the first run's layers
    assert "undo" not in vars(viewer.layers["nuclei"])  # napari's own undo again, not a recorder
    del widget, dock
    for _ in range(3):
        gc.collect()
        qtbot.wait(20)
    assert first_stack() is None  # (the layer itself napari's canvas may still hold without a window)


def test_a_fine_tune_ending_after_two_closings_reaches_the_third_dock(make_napari_viewer, qtbot, tmp_path,
                                                                     tiny_nuclei_model, wait_worker):
    """Dock A closed during its fine-tune, B opened and closed at once, C opened after the fine-tune ended:
    C kept the old model (the run's end went to the closed B only)."""
    viewer = make_napari_viewer(show=False)
    dock, worker = _fine_tuning_dock(viewer, qtbot, tmp_path, tiny_nuclei_model, wait_worker)
    dock.destroyOnClose()
    second_dock, _ = viewer.window.add_plugin_dock_widget("napari-microseg", "Segmentation")
    second_dock.destroyOnClose()
    wait_worker(worker)
    _, third = viewer.window.add_plugin_dock_widget("napari-microseg", "Segmentation")
    assert third.fine_tuned_path == str(tmp_path / "m-ft1.pt")
    assert third.model_choice.value == str(tmp_path / "m-ft1.pt")
