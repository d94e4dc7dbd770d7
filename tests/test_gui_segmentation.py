"""Segmentation widget: segments in a worker into a new Labels layer, exports CSVs, fine-tunes on corrections."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_microseg.training.finetune import describe_before_after

pytestmark = pytest.mark.gui



def test_segment_export_and_finetune(make_napari_viewer, qtbot, tmp_path, artifacts, tiny_nuclei_model, wait_worker):
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse
    from napari_microseg.widgets.segmentation import FILE_CHOICE, SegmentationWidget

    sim = simulate_nuclei_timelapse(n_frames=3, shape=(128, 128), n_nuclei=10, seed=3)
    viewer = make_napari_viewer(show=True)
    geometry = {"scale": (5.0, 0.325, 0.325), "translate": (0.0, 4.0, 8.0), "units": ("minute", "micrometer", "micrometer")}
    viewer.add_image(sim.fluorescence, name="movie", **geometry)  # a calibrated time-lapse
    original = sim.fluorescence.copy()
    widget = SegmentationWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segmentation")
    widget.image_layer.value = "movie"
    widget.model_choice.value = FILE_CHOICE
    widget.model_file.value = str(tiny_nuclei_model)
    widget.export_dir.value = str(tmp_path / "export")

    viewer.dims.set_current_step(0, 1)
    wait_worker(widget.segment())
    layer = viewer.layers["movie segmented"]
    assert layer.data.shape == (3, 128, 128)
    # the result lies on top of the image, in its units (the Tracking widget's summary reads them)
    np.testing.assert_allclose(layer.scale, geometry["scale"])
    np.testing.assert_allclose(layer.translate, geometry["translate"])
    assert [str(u) for u in layer.units] == list(geometry["units"])
    assert layer.data[0].max() == 0 and layer.data[2].max() == 0  # only the current frame was run
    np.testing.assert_array_equal(viewer.layers["movie"].data, original)  # the user's layer is untouched
    if layer.data[1].max() > 0:
        assert "label" in layer.features.columns and "area" in layer.features.columns
    assert "objects" in widget.counts_label.value
    assert list(widget.result.counts["t"]) == [1]  # the tables name the frame shown, not frame 0
    assert set(widget.result.objects["t"]) <= {1}

    widget.scope.value = "whole stack"
    wait_worker(widget.segment())
    assert "movie segmented [2]" in [lay.name for lay in viewer.layers]
    assert "3 frames" in widget.counts_label.value
    stack_layer = viewer.layers["movie segmented [2]"]
    objects = widget.result.objects
    if len(objects):  # ids unique across the stack: one features row per object, each frame's own id kept
        assert len(stack_layer.features) == len(objects) == len(np.unique(stack_layer.data)) - 1
        assert list(stack_layer.features["frame_label"]) == list(objects["label"])
        row = stack_layer.features.iloc[-1]
        assert (stack_layer.data[int(row["t"])] == row["label"]).any()
        # hovering an object shows its own measurements (napari maps label values to rows by "index")
        step = viewer.dims.current_step
        for _, row in stack_layer.features.iloc[[0, -1]].iterrows():
            t, y, x = (int(v) for v in np.argwhere(stack_layer.data == row["label"])[0])
            viewer.dims.set_current_step(0, t)  # the value under the cursor is read in the frame shown
            shown = stack_layer._get_properties((t, y, x))
            assert f"label: {int(row['label'])}" in shown and f"area: {int(row['area'])}" in shown, shown
        viewer.dims.current_step = step

    written = widget.export()
    counts = pd.read_csv(written[0])
    assert list(counts.columns[:2]) == ["t", "count"] and len(counts) == 3
    assert list(pd.read_csv(written[1]).columns[:5]) == ["t", "label", "y", "x", "area"]
    assert widget.export()[0].endswith("counts_2.csv")  # never overwrites an earlier export
    if len(objects):
        assert list(stack_layer.features.columns[:3]) == ["t", "label", "frame_label"]  # both ids shown on hover
        # the user erases one object with the fill tool: Export measures the corrected labels (in a worker)
        gone = int(stack_layer.features.iloc[0]["label"])
        t, y, x = (int(v) for v in np.argwhere(stack_layer.data == gone)[0])
        stack_layer.fill((t, y, x), 0)
        wait_worker(widget.export())
        assert "corrected labels" in widget.status.text()
        written_now = widget.status.text().split("written: ", 1)[1].split(", ")
        corrected = pd.read_csv(written_now[0])
        assert corrected["count"].sum() == len(objects) - 1
        assert gone not in set(pd.read_csv(written_now[1])["label"])
        # a change written into the array itself (a script; no paint event) is measured too
        widget.result_edited = False  # as if the fill above had not been seen
        second = int(np.unique(stack_layer.data)[-1])
        stack_layer.data[stack_layer.data == second] = 0
        stack_layer.refresh()
        wait_worker(widget.export())
        written_now = widget.status.text().split("written: ", 1)[1].split(", ")
        assert pd.read_csv(written_now[0])["count"].sum() == len(objects) - 2

    # correct-and-retrain: the user fixes frame 1 (here: with the true labels) and fine-tunes
    viewer.add_labels(sim.labels.astype(np.uint32), name="corrected", **geometry)
    widget.labels_for_training.value = "corrected"
    assert widget.add_to_training_set() == 1
    assert widget.add_to_training_set() == 1  # the same frame again replaces its pair, not a second copy
    assert "1 frame(s): movie t=1" in widget.training_set_label.value
    viewer.dims.set_current_step(0, 2)
    assert widget.add_to_training_set() == 2
    widget.clear_training_set()
    assert widget.training_pairs == [] and widget.training_set_label.value == "training set: empty"
    viewer.dims.set_current_step(0, 1)
    assert widget.add_to_training_set() == 1
    widget.finetune_epochs.value = 2
    wait_worker(widget.fine_tune())
    assert widget.fine_tuned_path is not None and widget.model_choice.value == widget.fine_tuned_path
    before, after = widget.finetune_scores["before"], widget.finetune_scores["after"]  # the user's changes
    assert before["changed"] == after["changed"] and before["removed"] == after["removed"]
    assert describe_before_after(before, after) in widget.status.text()

    viewer.window._qt_window.resize(1400, 1000)
    qtbot.wait(100)
    from skimage.io import imsave

    imsave(artifacts / "segmentation_widget.png", viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)


def test_segment_bad_model_message(make_napari_viewer):
    from napari_microseg.widgets.segmentation import FILE_CHOICE, SegmentationWidget

    viewer = make_napari_viewer(show=False)
    viewer.add_image(np.random.rand(64, 64), name="img")
    widget = SegmentationWidget(viewer)
    widget.image_layer.value = "img"
    widget.model_choice.value = FILE_CHOICE
    widget.model_file.value = "/nonexistent/model.pt"
    assert widget.segment() is None
    assert "neither a file nor a shipped model" in widget.status.text()


def test_segment_with_estimated_diameter(make_napari_viewer, qtbot, artifacts, shared_data, wait_worker):
    """A DSB2018 crop zoomed x2 (nuclei ~75 px, above the shipped model's sizes): the widget estimates the
    diameter, resizes the tiles and says so; the labels keep the image's shape."""
    import tifffile
    from skimage.transform import resize

    from napari_microseg.widgets.segmentation import SegmentationWidget

    path = next((shared_data / "dsb2018" / "images").glob("5d21acedb3*.tif"))
    image = resize(tifffile.imread(path)[:256, :320].astype(np.float32), (512, 640), order=1, preserve_range=True)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(image, name="zoomed")
    widget = SegmentationWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segmentation")
    widget.image_layer.value = "zoomed"
    widget.model_choice.value = "nuclei_fluorescence"
    widget.estimate_diameter.value = True
    wait_worker(widget.segment())
    layer = viewer.layers["zoomed segmented"]
    assert layer.data.shape == (512, 640)
    assert widget.result.settings["scale_factor"] < 0.7
    assert "diameter" in widget.counts_label.value and "tiles resized" in widget.counts_label.value
    assert widget.diameter.value == pytest.approx(widget.result.settings["diameter"], abs=0.1)  # kept for reuse
    assert "nucleus diameter" in widget.status.text()
    assert 8 <= layer.data.max() <= 18  # the crop holds 13 annotated nuclei; unresized, the model cuts them into 37
    viewer.window._qt_window.resize(1400, 1000)
    qtbot.wait(100)
    from skimage.io import imsave

    imsave(artifacts / "segmentation_widget_diameter.png", viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)


def test_fast_model_is_offered_and_segments_the_sample(make_napari_viewer, qtbot, artifacts, wait_worker):
    """The 16-filter model is in the model list beside the main one and segments the real DSB2018 sample."""
    from skimage.io import imsave

    from napari_microseg._sample_data import dsb2018_nuclei
    from napari_microseg.evaluation.metrics import evaluate_segmentation
    from napari_microseg.widgets.segmentation import SegmentationWidget

    (image, image_kw, _), (truth, _, _) = dsb2018_nuclei()
    viewer = make_napari_viewer(show=True)
    viewer.add_image(image, **image_kw)
    widget = SegmentationWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segmentation")
    assert {"nuclei_fluorescence", "nuclei_fluorescence_fast"} <= set(widget.model_choice.choices)
    widget.image_layer.value = image_kw["name"]
    widget.model_choice.value = "nuclei_fluorescence_fast"
    wait_worker(widget.segment())
    layer = viewer.layers[f"{image_kw['name']} segmented"]
    scores = evaluate_segmentation(truth, np.asarray(layer.data))
    assert scores["f1@0.50"] > 0.8, scores["f1@0.50"]  # as nuclei_fluorescence on this image: 0.847 both
    assert 0.8 < layer.data.max() / truth.max() < 1.1 and "objects" in widget.counts_label.value
    viewer.window._qt_window.resize(1400, 1000)
    qtbot.wait(100)
    imsave(artifacts / "segmentation_fast_model.png", viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)


def test_pyramid_opened_in_napari_is_segmented_at_full_resolution(make_napari_viewer, qtbot, tmp_path, artifacts,
                                                                    tiny_nuclei_model, wait_worker):
    """A multiscale OME-Zarr time-lapse opens (our reader) as one pyramid layer; the widget segments
    the frame shown at full resolution (a multiscale layer's data indexes levels, not frames) and
    the result lies on the image."""
    import zarr

    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse
    from napari_microseg.widgets.segmentation import FILE_CHOICE, SegmentationWidget

    sim = simulate_nuclei_timelapse(n_frames=3, shape=(256, 256), n_nuclei=20, seed=8)
    root = zarr.open_group(str(tmp_path / "movie.ome.zarr"), mode="w", zarr_format=2)
    frames = sim.fluorescence
    for level in range(3):
        root.create_array(str(level), shape=frames.shape, dtype=frames.dtype, chunks=(1, 128, 128))[...] = frames
        frames = frames[:, ::2, ::2]
    root.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": "t"}, {"name": "y", "unit": "micrometer"},
                                                             {"name": "x", "unit": "micrometer"}],
                                  "datasets": [{"path": str(i), "coordinateTransformations": [
                                      {"type": "scale", "scale": [1.0, 0.5 * 2 ** i, 0.5 * 2 ** i]}]} for i in range(3)]}]
    viewer = make_napari_viewer(show=True)
    [image_layer] = viewer.open(str(tmp_path / "movie.ome.zarr"), plugin="napari-microseg")
    assert image_layer.multiscale and image_layer.data.shape == (3, 256, 256)
    widget = SegmentationWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segmentation")
    widget.image_layer.value = image_layer.name
    widget.model_choice.value = FILE_CHOICE
    widget.model_file.value = str(tiny_nuclei_model)
    viewer.dims.set_current_step(0, 2)
    wait_worker(widget.segment())
    layer = viewer.layers[f"{image_layer.name} segmented"]
    assert layer.data.shape == (3, 256, 256) and layer.data[2].max() > 0 and layer.data[:2].max() == 0
    np.testing.assert_allclose(layer.scale, image_layer.scale)
    assert list(widget.result.counts["t"]) == [2]
    viewer.window._qt_window.resize(1400, 1000)
    qtbot.wait(100)
    from skimage.io import imsave

    imsave(artifacts / "segmentation_pyramid.png", viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)


def test_result_layers_are_drawn_without_numba_and_keep_their_ids():
    """Result labels go to napari in uint8/uint16 when their ids fit (wider dtypes and direct colormaps
    make napari compile numba code on the GUI thread: a 1-3 s freeze); class maps get the fixed class
    colours from a cyclic colormap; stack ids made unique across frames are the same as before."""
    import numpy as np
    import pandas as pd

    from napari_microseg.colours import class_colour
    from napari_microseg.widgets._base import class_colormap, display_labels
    from napari_microseg.widgets._base import unique_stack_ids

    small = np.array([[0, 3], [250, 1]], np.int64)
    assert display_labels(small).dtype == np.uint16 and display_labels(small, np.uint8).dtype == np.uint8
    assert display_labels(small + 70000).dtype == np.uint32
    np.testing.assert_array_equal(display_labels(small), small)
    same = np.zeros((2, 2), np.uint16)
    assert display_labels(same) is same  # no copy when the dtype is already right

    colormap = class_colormap(4)
    rgba = colormap.map(np.array([0, 1, 2, 3], np.uint8))
    assert rgba[0, 3] == 0  # background transparent
    from napari.utils.colormaps.standardize_color import transform_color

    np.testing.assert_allclose(rgba[1:], transform_color([class_colour(i) for i in (1, 2, 3)]), atol=1e-6)
    assert class_colour(8) == class_colour(1) != "transparent"  # ids past the palette cycle, never vanish

    stack = np.zeros((3, 4, 4), np.uint32)
    stack[0, 0, 0], stack[0, 1, 1], stack[2, 2, 2], stack[2, 3, 3] = 1, 2, 1, 2
    objects = pd.DataFrame({"t": [0, 0, 2, 2], "label": [1, 2, 1, 2]})
    labels, table = unique_stack_ids(stack, objects)
    assert labels.dtype == np.uint16 and labels[2, 2, 2] == 3 and labels[2, 3, 3] == 4 and labels[0, 1, 1] == 2
    assert table["label"].tolist() == [1, 2, 3, 4] and table["frame_label"].tolist() == [1, 2, 1, 2]
    assert stack[2, 2, 2] == 1  # the result's own labels are not changed
    signed = np.array([[-1, 0], [2, 3]], np.int32)
    assert display_labels(signed) is signed  # "not annotated" values are never wrapped to 65535

    # the dock's layer data: a class map over a stack keeps its class ids (no per-frame renumbering)
    from types import SimpleNamespace

    from napari_microseg.inference.segment import class_map_tables
    from napari_microseg.widgets.segmentation import layer_data

    class_map = np.zeros((3, 8, 8), np.uint8)
    class_map[:, 1:3, 1:3], class_map[:, 5:7, 5:7], class_map[1:, 0, 7] = 1, 3, 2
    names = ["background", "glowing", "hot pixel", "cluster"]
    objects, _ = class_map_tables(class_map, class_map.astype(np.float32), names)
    result = SimpleNamespace(labels=class_map, objects=objects, output_mode="multiclass")
    shown, _ = layer_data(result, class_map.shape, None)
    np.testing.assert_array_equal(shown, class_map)
    assert shown.dtype == np.uint8
    one_frame = SimpleNamespace(labels=class_map[1], objects=objects[objects["t"] == 0], output_mode="multiclass")
    shown, _ = layer_data(one_frame, class_map.shape, 2)
    assert shown.dtype == np.uint8 and not shown[:2].any() and (shown[2] == class_map[1]).all()


def test_model_config_is_read_without_torch(tmp_path):
    """Choosing a model reads its config from the file's pickle with every class replaced by a
    placeholder: the same config torch.load gives, no torch import (it froze the docks ~1 s), no code
    from the file run; a file that is no model file is refused with its name."""
    import pickle
    import subprocess
    import sys
    import zipfile

    from napari_microseg.errors import InputError
    from napari_microseg.io.models import read_model_config, read_model_file
    from napari_microseg.pretrained import resolve_model

    for name in ("ccd_classes", "nuclei_fluorescence", "response_good_bad"):
        path = resolve_model(name)
        assert read_model_config(path) == read_model_file(path)["config"]
    script = ("import sys; from napari_microseg.io.models import read_model_config; "
              f"mode = read_model_config({str(resolve_model('ccd_classes'))!r})['output_mode']; "
              "print(mode, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["multiclass", "False"]

    class Exploit:  # a pickle that would run a command if the classes it names were honoured
        def __reduce__(self):
            return (subprocess.call, (["touch", str(tmp_path / "ran")],))

    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"format": "napari-microseg-model", "x": Exploit()}))
    with pytest.raises(InputError, match="evil.pt"):
        read_model_config(evil)
    assert not (tmp_path / "ran").exists()
    (tmp_path / "notes.pt").write_text("not a model")
    with pytest.raises(InputError, match="notes.pt is not a napari-microseg model file"):
        read_model_config(tmp_path / "notes.pt")
