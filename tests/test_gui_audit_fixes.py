"""GUI behaviour found broken by the GUI audit: stacks in training, renamed layers, default model,
stale per-run results, scrolling docks, early stop, the fine-tuning set."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.gui


def _simulate_nuclei_stack(viewer, wait_worker, n_frames=3, size=96, n_nuclei=8):
    """Add a simulated (T, Y, X) nuclei time-lapse through the Simulation widget."""
    from napari_microseg.widgets.simulation import SimulationWidget

    sim = SimulationWidget(viewer)
    sim.domain.value = "nuclei time-lapse [N]"
    form = sim.forms["nuclei time-lapse [N]"]
    form["n_frames"].value, form["size"].value, form["n_nuclei"].value = n_frames, size, n_nuclei
    wait_worker(sim.generate())
    assert viewer.layers["sim nuclei labels"].data.shape == (n_frames, size, size)
    return sim


def test_training_on_a_stack_uses_every_frame(make_napari_viewer, qtbot, tmp_path, wait_worker):
    """A (T, Y, X) image with (T, Y, X) labels trains on T frame pairs (it used to fail on shapes)."""
    from napari_microseg.io.models import load_model
    from napari_microseg.widgets.training import TrainingWidget

    viewer = make_napari_viewer(show=False)
    _simulate_nuclei_stack(viewer, wait_worker, n_frames=3)
    widget = TrainingWidget(viewer)
    widget.image_layer.value = ["sim nuclei (fluorescence)"]
    widget.labels_layer.value = ["sim nuclei labels"]
    widget.patch.value, widget.epochs.value = 64, 1
    widget.patches_per_epoch.value, widget.batch_size.value = 8, 4
    widget.out_path.value = str(tmp_path / "stack.pt")
    worker = widget.train()
    wait_worker(worker)
    assert widget.result is not None, widget.status.text()
    assert widget.result.epochs_run == 1 and widget.result.stop_reason == "completed"
    trained_on = load_model(tmp_path / "stack.pt").config["training"]
    assert trained_on["data"] == ("napari layers: sim nuclei (fluorescence) + sim nuclei labels (3 annotated frame(s)); "
                                  "2 trained on, 1 held out for validation")  # (the last frame validates)
    assert (trained_on["n_training_images"], trained_on["n_validation_images"]) == (2, 1)


def test_renamed_layers_stay_chosen_and_run(make_napari_viewer, qtbot, wait_worker):
    """Renaming a chosen layer refreshes every picker, keeps the choice under its new name, and the
    runs use the renamed layer (they used to raise KeyError from a stale name)."""
    from napari_microseg.errors import InputError
    from napari_microseg.widgets.autolabel import AutolabelWidget
    from napari_microseg.widgets.classification import ClassificationWidget
    from napari_microseg.widgets.segmentation import SegmentationWidget
    from napari_microseg.widgets.tracking import TrackingWidget
    from napari_microseg.widgets.training import TrainingWidget

    viewer = make_napari_viewer(show=False)
    _simulate_nuclei_stack(viewer, wait_worker, n_frames=2, size=96, n_nuclei=6)
    seg, train = SegmentationWidget(viewer), TrainingWidget(viewer)
    auto, track, classify = AutolabelWidget(viewer), TrackingWidget(viewer), ClassificationWidget(viewer)
    auto.live.value = False
    seg.image_layer.value = "sim nuclei (fluorescence)"
    seg.labels_for_training.value = "sim nuclei labels"
    seg.model_choice.value = "nuclei_fluorescence_fast"
    train.image_layer.value, train.labels_layer.value = ["sim nuclei (fluorescence)"], ["sim nuclei labels"]
    auto.stain_layer.value = classify.image_layer.value = "sim nuclei (fluorescence)"
    track.labels_layer.value = "sim nuclei labels"

    viewer.layers["sim nuclei (fluorescence)"].name = "stain renamed"
    viewer.layers["sim nuclei labels"].name = "labels renamed"
    assert seg.image_layer.value == "stain renamed" and "stain renamed" in seg.image_layer.choices
    assert "sim nuclei (fluorescence)" not in seg.image_layer.choices
    assert seg.labels_for_training.value == "labels renamed"
    assert train.image_layer.value == ["stain renamed"] and train.labels_layer.value == ["labels renamed"]
    assert auto.stain_layer.value == classify.image_layer.value == "stain renamed"
    assert track.labels_layer.value == "labels renamed"

    wait_worker(seg.segment())
    assert "stain renamed segmented" in [layer.name for layer in viewer.layers], seg.status.text()
    seg.labels_for_training.value = "labels renamed"
    assert seg.add_to_training_set() == 1, seg.status.text()
    wait_worker(auto.apply())
    assert "stain renamed auto-labels" in [layer.name for layer in viewer.layers], auto.status.text()
    assert train.training_pairs()[0][0].shape == (2, 96, 96)

    # a layer name that is no longer in the viewer is a message, not a KeyError
    with pytest.raises(InputError, match="'sim nuclei labels' is no longer in the viewer"):
        seg.chosen_layer("sim nuclei labels", "corrected labels")
    seg.labels_for_training.native.addItem("stale name", "stale name")  # a picker not yet refreshed
    seg.labels_for_training.native.setCurrentText("stale name")
    before = len(seg.training_pairs)
    assert seg.add_to_training_set() == before
    assert "no longer in the viewer" in seg.status.text()


def test_segmentation_defaults_to_the_nuclei_model(make_napari_viewer):
    from napari_microseg.widgets.segmentation import SegmentationWidget, default_model

    widget = SegmentationWidget(make_napari_viewer(show=False))
    assert widget.model_choice.choices[0] != "nuclei_fluorescence"  # the list is alphabetical (ccd_classes first)
    assert widget.model_choice.value == "nuclei_fluorescence"
    assert widget.model_path().name == "nuclei_fluorescence.pt"
    assert default_model(["ccd_classes", "nuclei_phase", "model file ..."]) == "nuclei_phase"
    assert default_model(["ccd_classes", "model file ..."]) == "ccd_classes"


def test_ccd_clusters_of_a_stack_frame_carry_its_time(make_napari_viewer, tmp_path, wait_worker):
    """Clusters are measured for a single frame of a CCD stack (t kept) and for the whole stack."""
    from napari_microseg.simulate.ccd import simulate_ccd_frame
    from napari_microseg.widgets.segmentation import SegmentationWidget

    viewer = make_napari_viewer(show=False)
    stack = np.stack([simulate_ccd_frame(shape=(128, 128), seed=s, n_clusters=12).image for s in (3, 4)])
    viewer.add_image(stack, name="ccd stack")
    viewer.dims.set_current_step(0, 1)
    widget = SegmentationWidget(viewer)
    widget.image_layer.value, widget.model_choice.value = "ccd stack", "ccd_classes"
    widget.scope.value = "current frame"
    wait_worker(widget.segment())
    assert widget.clusters is not None and len(widget.clusters) > 0, widget.status.text()
    assert set(widget.clusters.t) == {1} and "clusters" in widget.counts_label.value
    widget.scope.value = "whole stack"
    wait_worker(widget.segment())
    assert set(widget.clusters.t) == {0, 1}
    widget.export_dir.value = str(tmp_path)
    written = [p for p in widget.export() if p.endswith("clusters.csv")]
    assert written and pd.read_csv(written[0]).columns[0] == "t"
    assert "intensity scale" not in widget.status.text()
    # the same frames rescaled to 8 bits: segmented, with a warning that names the likely cause
    eight = ((stack - stack.min()) / (stack.max() - stack.min()) * 255).astype(np.uint8)
    viewer.add_image(eight, name="ccd 8 bit")
    widget.image_layer.value = "ccd 8 bit"
    wait_worker(widget.segment())
    assert "intensity scale the model was trained on" in widget.status.text()


def test_a_new_run_clears_the_previous_runs_results(make_napari_viewer, tmp_path, wait_worker):
    """A nuclei run after a CCD run exports no stale clusters.csv; a failed run leaves no old counts."""
    from napari_microseg.simulate.ccd import simulate_ccd_frame
    from napari_microseg.simulate.nuclei import simulate_nuclei_image
    from napari_microseg.widgets.segmentation import FILE_CHOICE, SegmentationWidget

    viewer = make_napari_viewer(show=False)
    viewer.add_image(simulate_ccd_frame(shape=(128, 128), seed=3, n_clusters=10).image, name="ccd")
    viewer.add_image(simulate_nuclei_image(shape=(96, 96), n_nuclei=6, seed=1)[0], name="nuclei")
    widget = SegmentationWidget(viewer)
    widget.image_layer.value, widget.model_choice.value = "ccd", "ccd_classes"
    widget.export_dir.value = str(tmp_path / "ccd")
    wait_worker(widget.segment())
    assert widget.clusters is not None, widget.status.text()
    assert any(p.endswith("clusters.csv") for p in widget.export())

    widget.image_layer.value, widget.model_choice.value = "nuclei", "nuclei_fluorescence_fast"
    widget.export_dir.value = str(tmp_path / "nuclei")
    wait_worker(widget.segment())
    assert widget.clusters is None and widget.counts_label.value.endswith("objects"), widget.status.text()
    written = widget.export()
    assert sorted(p.rsplit("/", 1)[-1] for p in written) == ["counts.csv", "objects.csv", "segment_run.json"]
    assert not (tmp_path / "nuclei" / "clusters.csv").exists()

    # a run that fails in the worker (an unreadable model file) leaves nothing of the last run behind
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a model")
    widget.model_choice.value, widget.model_file.value = FILE_CHOICE, str(bad)
    wait_worker(widget.segment())
    assert widget.status.styleSheet(), widget.status.text()  # the red error line
    assert widget.result is None and widget.counts_label.value == ""
    assert widget.export() == [] and "Nothing to export" in widget.status.text()


@pytest.mark.parametrize("name", ["Training", "Segmentation"])
def test_docks_scroll_on_a_laptop_screen(make_napari_viewer, qtbot, artifacts, name):
    """The tall docks fit a 1366 x 768 window: their content scrolls, progress and Stop stay in view."""
    from qtpy.QtWidgets import QApplication

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-microseg", name)
    qtbot.wait(200)
    assert widget.content.sizeHint().height() > 768  # taller than the screen ...
    assert dock.minimumSizeHint().height() < 300  # ... yet the dock may be much smaller
    assert viewer.window._qt_window.height() <= 768
    assert widget.scroll.viewport().width() >= widget.content.minimumSizeHint().width()  # nothing cut on the right
    run_button = widget.train_button if name == "Training" else widget.run_button
    widget.scroll.ensureWidgetVisible(run_button.native)
    QApplication.processEvents()
    assert not run_button.native.visibleRegion().isEmpty()
    assert not widget.stop_button.visibleRegion().isEmpty() and not widget.progress.visibleRegion().isEmpty()
    from skimage.io import imsave

    imsave(artifacts / f"{name.lower()}_1366x768.png", viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)


def test_stop_before_the_first_epoch_saves_no_model(make_napari_viewer, qtbot, tmp_path, monkeypatch, wait_worker):
    """Stop during epoch 1 (Train or Fine-tune): a message, no model file, nothing offered as a model."""
    from napari_microseg.widgets import segmentation
    from napari_microseg.widgets._base import NO_MODEL_MESSAGE
    from napari_microseg.widgets.training import TrainingWidget

    monkeypatch.setenv("HOME", str(tmp_path))  # fine-tuned shipped models are written under ~/microseg_models
    monkeypatch.setattr(segmentation, "RECENT_MODELS", [])
    viewer = make_napari_viewer(show=False)
    _simulate_nuclei_stack(viewer, wait_worker, n_frames=2, size=96, n_nuclei=6)
    train = TrainingWidget(viewer)
    train.image_layer.value, train.labels_layer.value = ["sim nuclei (fluorescence)"], ["sim nuclei labels"]
    train.patch.value, train.epochs.value, train.patches_per_epoch.value, train.batch_size.value = 64, 3, 4000, 2
    train.out_path.value = str(tmp_path / "early.pt")
    worker = train.train()
    worker.yielded.connect(lambda event: train.stop())  # at the first training step
    wait_worker(worker)
    assert train.result.stop_reason == "stopped" and train.result.model_path is None
    assert train.status.text() == NO_MODEL_MESSAGE and train.model_path is None
    assert not (tmp_path / "early.pt").exists() and segmentation.RECENT_MODELS == []

    seg = segmentation.SegmentationWidget(viewer)
    seg.image_layer.value, seg.labels_for_training.value = "sim nuclei (fluorescence)", "sim nuclei labels"
    seg.model_choice.value = "nuclei_fluorescence_fast"
    assert seg.add_to_training_set() == 1
    seg.finetune_epochs.value = 2
    worker = seg.fine_tune()
    worker.yielded.connect(lambda event: seg.stop())
    wait_worker(worker)
    assert seg.status.text() == NO_MODEL_MESSAGE
    assert seg.model_choice.value == "nuclei_fluorescence_fast" and seg.fine_tuned_path is None
    assert not any(str(c).endswith("-ft1.pt") for c in seg.model_choice.choices)
    assert not list(tmp_path.glob("microseg_models/*.pt"))


def test_training_takes_the_only_image_and_labels_layers_when_none_is_picked(make_napari_viewer):
    from napari_microseg.widgets.training import TrainingWidget

    viewer = make_napari_viewer(show=False)
    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    labels = np.zeros((64, 64), np.uint16)
    labels[10:20, 10:20] = 1
    viewer.add_image(image, name="cells")
    viewer.add_labels(labels, name="painted")
    widget = TrainingWidget(viewer)
    images, label_list = widget.training_pairs()
    assert len(images) == 1 and np.array_equal(label_list[0], labels)
    assert list(widget.image_layer.value) == ["cells"] and list(widget.labels_layer.value) == ["painted"]


def test_a_long_result_line_wraps_instead_of_pushing_the_dock_edge_out(make_napari_viewer, qtbot):
    """A summary written after a run used to widen the content past the dock (its right edge cut off)."""
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1400, 1000)
    _, widget = viewer.window.add_plugin_dock_widget("napari-microseg", "Classification")
    qtbot.wait(100)
    widget.summary.value = "40 of 40 images flagged bad at threshold 0.50; AUC 0.938 against the simulated truth " * 2
    qtbot.wait(100)
    assert widget.content.minimumSizeHint().width() <= widget.scroll.viewport().width()


@pytest.mark.parametrize("name", ["Auto-label", "Segmentation", "Training", "Tracking", "Classification", "Simulation"])
def test_docks_ask_for_little_width(make_napari_viewer, qtbot, monkeypatch, name):
    """Each dock's minimum width is its controls' once they are laid out (elided layer pickers, wrapped
    labels), not the wider one measured while it was being shown: the Auto-label dock asked 535 px."""
    from napari_microseg.widgets import segmentation

    # a model trained into a deep folder is offered by path: it must not widen the Segmentation dock
    monkeypatch.setattr(segmentation, "RECENT_MODELS", ["/home/someone/projects/2026/nuclei_screen/plate_07/" * 2 + "m.pt"])
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    _, widget = viewer.window.add_plugin_dock_widget("napari-microseg", name)
    # the fit follows the laid-out controls (refitted after each layout change, on the next event-loop pass)
    qtbot.waitUntil(lambda: widget.scroll.minimumWidth()
                    == widget.content.minimumSizeHint().width() + widget.scroll._bar_width() + 4, timeout=3000)
    assert widget.minimumSizeHint().width() <= 430
