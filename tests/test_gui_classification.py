"""Classification widget: train an [R] classifier on simulated data with a live plot, classify a stack,
move the threshold (verdicts and ROC point follow), jump to an image, export flags.csv; objects [T]."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.gui



def test_response_images_train_classify_threshold(make_napari_viewer, qtbot, tmp_path, artifacts, wait_worker):
    from napari_microseg.widgets.classification import ClassificationWidget
    from napari_microseg.simulate.samples import generate_response
    from napari_microseg.progress import drain

    viewer = make_napari_viewer(show=True)
    for data, kwargs, kind in drain(generate_response({"n_images": 40}, 7)):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = ClassificationWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Classification")
    widget.train_n.value = 120
    widget.train_epochs.value = 4
    widget.train_out.value = str(tmp_path / "response.pt")
    wait_worker(widget.train())
    assert (tmp_path / "response.pt").is_file(), widget.status.text()
    assert len(widget.plot.epochs) >= 1
    assert widget.model_choice.value == str(tmp_path / "response.pt")
    assert widget.model_choice.choices[0] == str(tmp_path / "response.pt")  # newest first, then shipped, then a file
    assert widget.model_choice.choices[-1] == "model file ..."

    widget.image_layer.value = "sim response images"
    wait_worker(widget.classify())
    table = widget.results
    assert len(table) == 40 and widget.table.rowCount() == 40
    assert "truth" in table and "AUC" in widget.summary.value
    widget.threshold.value = 0.0
    assert (widget.results.verdict == "bad").all()
    widget.threshold.value = 1.0
    assert (widget.results.verdict == "good").sum() >= 39
    # the [R] use cases: the thresholds the model chose on its validation images
    from napari_microseg.io.models import read_model_file

    stored = read_model_file(tmp_path / "response.pt")["config"]["use_thresholds"]
    assert widget.presets.visible
    widget.flag_button.clicked()
    assert widget.threshold.value == pytest.approx(stored["flag"], abs=1e-3)
    assert (widget.results.verdict == "bad").sum() == (widget.results.probability_bad >= widget.threshold.value).sum()
    widget.discard_button.clicked()
    assert widget.threshold.value == pytest.approx(stored["discard"], abs=1e-3)
    widget.threshold.value = 0.5
    widget.table.selectRow(5)
    assert viewer.dims.current_step[0] == 5
    widget.export_dir.value = str(tmp_path)
    flags = pd.read_csv(widget.export())
    assert {"probability_bad", "verdict", "threshold"} <= set(flags.columns)
    # another task: the images' results go (no slider crash, no flags under another task's file name)
    widget.task.value = "objects [T]"
    assert widget.results is None and widget.summary.value == "" and not widget.table.isVisible()
    assert widget.model_choice.value == widget.model_choice.choices[0]  # that task's first model, not the images model
    widget.threshold.value = 0.3
    assert widget.export() is None and "classify first" in widget.status.text()
    widget.task.value = "response images [R]"
    assert widget.model_choice.value == str(tmp_path / "response.pt")
    viewer.window._qt_window.resize(1400, 1100)
    qtbot.wait(100)
    from skimage.io import imsave

    imsave(artifacts / "classification_widget.png", viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)


def test_objects_classified_into_new_layer(make_napari_viewer, qtbot, tmp_path, wait_worker, artifacts):
    from napari_microseg.classify.data import simulated_liposome_data
    from napari_microseg.classify.trainer import train_with_strategy
    from napari_microseg.progress import drain
    from napari_microseg.simulate.liposomes import simulate_liposome_image
    from napari_microseg.widgets.classification import FILE_CHOICE, ClassificationWidget, _default_config

    model = tmp_path / "lipo.pt"
    drain(train_with_strategy("simulated", _default_config("objects", 2), simulated=simulated_liposome_data(2, seed=0), out_path=model))
    sim = simulate_liposome_image(shape=(256, 256), n_particles=8, seed=3)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(sim.image, name="tem")
    viewer.add_labels(np.zeros_like(sim.labels), name="nothing painted")
    viewer.add_labels(sim.labels, name="particles")
    widget = ClassificationWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Classification")
    widget.task.value = "objects [T]"
    widget.image_layer.value = "tem"
    widget.labels_layer.value = "nothing painted"
    widget.model_choice.value = FILE_CHOICE
    widget.model_file.value = str(model)
    wait_worker(widget.classify())  # the labels are read, and found empty, in the worker
    assert "the labels layer holds no objects" in widget.status.text() and "tem classes" not in viewer.layers
    widget.labels_layer.value = "particles"
    wait_worker(widget.classify())
    layer = viewer.layers["tem classes"]
    assert set(layer.features["label"]) == set(np.unique(sim.labels)) - {0}
    np.testing.assert_array_equal(layer.data, sim.labels)  # the objects as read, coloured by class
    y, x = np.argwhere(sim.labels == 1)[0]  # hovering object 1 shows object 1's class (not object 2's)
    assert "label: 1" in layer._get_properties((int(y), int(x)))
    assert "%" in widget.summary.value
    np.testing.assert_array_equal(viewer.layers["particles"].data, sim.labels)  # the user's layer is untouched
    # a (T, Y, X) stack whose frames reuse ids: every object keeps its own class and features row
    flipped = sim.labels[:, ::-1].copy()
    ids = np.unique(flipped)[1:]
    renumbered = np.zeros_like(flipped)
    for new, old in zip(ids[::-1], ids):  # the same ids, given to other objects
        renumbered[flipped == old] = new
    viewer.add_image(np.stack([sim.image, sim.image[:, ::-1]]), name="tem movie")
    viewer.add_labels(np.stack([sim.labels, renumbered]), name="particles movie")
    widget.image_layer.value, widget.labels_layer.value = "tem movie", "particles movie"
    wait_worker(widget.classify())
    table, layer = widget.results, viewer.layers["tem movie classes"]
    assert len(layer.features) == len(table) == 2 * len(ids)
    class_of_id = dict(zip(layer.features["label"], layer.features["class"]))
    for rec in table.itertuples():
        shown = np.unique(layer.data[rec.t][np.stack([sim.labels, renumbered])[rec.t] == rec.label])
        assert len(shown) == 1 and class_of_id[int(shown[0])] == rec[table.columns.get_loc("class") + 1]
    viewer.window._qt_window.resize(1400, 1000)
    qtbot.wait(100)
    from skimage.io import imsave

    imsave(artifacts / "classification_objects.png", viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)


def test_classification_messages(make_napari_viewer):
    from napari_microseg.widgets.classification import ClassificationWidget

    viewer = make_napari_viewer(show=False)
    widget = ClassificationWidget(viewer)
    assert widget.classify() is None
    assert "neither a file nor a shipped model" in widget.status.text() or "Choose" in widget.status.text()
    assert widget.export() is None and "classify first" in widget.status.text()


def test_model_lists_hold_only_models_that_fit(make_napari_viewer):
    """Classification offers that task's classifiers (no CCD or nuclei segmentation models);
    Segmentation offers segmentation models (no classifiers)."""
    from napari_microseg.widgets.classification import FILE_CHOICE, ClassificationWidget
    from napari_microseg.widgets.segmentation import SegmentationWidget

    viewer = make_napari_viewer(show=False)
    widget = ClassificationWidget(viewer)
    assert "response_good_bad" in widget.model_choice.choices
    assert "ccd_classes" not in widget.model_choice.choices and "nuclei_fluorescence" not in widget.model_choice.choices
    widget.task.value = "profiles [P]"  # no shipped profile classifier: a file (or one trained here)
    assert list(widget.model_choice.choices) == [FILE_CHOICE] and not widget.model_file.native.isHidden()
    segmentation = SegmentationWidget(viewer)
    assert "nuclei_fluorescence" in segmentation.model_choice.choices
    assert "response_good_bad" not in segmentation.model_choice.choices


def test_response_image_without_metadata_takes_a_typed_box(make_napari_viewer, wait_worker):
    """A user's own image (no crop boxes in the layer): the integration box is typed in the widget."""
    from napari_microseg.classify.predict import classify_images
    from napari_microseg.pretrained import resolve_model
    from napari_microseg.progress import drain
    from napari_microseg.simulate.samples import generate_response
    from napari_microseg.widgets.classification import ClassificationWidget

    data, kwargs, _ = next(iter(drain(generate_response({"n_images": 2}, 3))))
    image, box = np.asarray(data[0]), [int(v) for v in kwargs["metadata"]["crop_box"][0]]
    viewer = make_napari_viewer(show=False)
    viewer.add_image(image, name="my image")  # no metadata
    widget = ClassificationWidget(viewer)
    widget.image_layer.value = "my image"
    widget.model_choice.value = "response_good_bad"
    widget.box.value = "1 2 3"
    assert widget.classify() is None and "four whole numbers" in widget.status.text()
    widget.box.value = " ".join(map(str, box))
    wait_worker(widget.classify())
    expected = classify_images(str(resolve_model("response_good_bad")), [image], boxes=[box])
    np.testing.assert_allclose(widget.results["probability_bad"], expected["probability_bad"], atol=1e-6)


def test_class_layer_data_and_summary_per_frame_objects():
    """Frames that reuse an id keep their own classes; the summary lists classes found nowhere."""
    from napari_microseg.widgets.classification import class_layer_data, class_summary

    stack = np.zeros((2, 8, 8), np.int32)
    stack[0, :4, :4], stack[0, 4:, 4:] = 1, 2
    stack[1, :4, 4:], stack[1, 4:, :4] = 2, 1
    table = pd.DataFrame({"t": [0, 0, 1, 1], "label": [1, 2, 1, 2], "class": ["full", "empty", "empty", "empty"],
                          "probability": [0.9, 0.8, 0.7, 0.6], "prob_full": [0.9, 0.2, 0.3, 0.4],
                          "prob_empty": [0.1, 0.8, 0.7, 0.6], "prob_uncertain": [0.0] * 4})
    labels, features = class_layer_data(stack, table)
    assert labels.dtype == np.uint16 and len(np.unique(labels)) == 5
    class_of = dict(zip(features["label"], features["class"]))
    assert class_of[int(labels[0, 0, 0])] == "full" and class_of[int(labels[1, 7, 0])] == "empty"
    assert features["frame_label"].tolist() == [1, 2, 1, 2] and "prob_full" not in features
    import re

    summary = class_summary(table)
    assert re.sub(r"<[^>]+>|&#9632; ", "", summary) == "full: 1 (25.0 %), empty: 3 (75.0 %), uncertain: 0 (0.0 %)"
    assert summary.count("color:") == 3  # each class name in its layer colour
