"""Segmentation widget with a multi-class CCD model on the real FITS sample; batch runs and stops."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile

pytestmark = pytest.mark.gui

CCD_CLASSES = ["background", "glowing", "hot pixel", "cluster"]


@pytest.fixture(scope="module")
def tiny_ccd_model(tmp_path_factory):
    from napari_microseg.progress import run_with_text_progress
    from napari_microseg.simulate.ccd import simulate_ccd_frame
    from napari_microseg.training.trainer import train

    frames = [simulate_ccd_frame(shape=(128, 128), seed=s, balanced=True) for s in range(4)]
    out = tmp_path_factory.mktemp("ccd_model") / "ccd.pt"
    cfg = {"preset": "small", "output_mode": "multiclass", "n_classes": 4, "class_names": CCD_CLASSES,
           "normalization": {"kind": "fixed", "offset": 8800.0, "scale": 1000.0}, "patch_size": 64,
           "patches_per_epoch": 16, "batch_size": 4, "epochs": 2, "lr": 3e-3, "num_threads": 2, "val_fraction": 0.25}
    run_with_text_progress(train(cfg, ([f.image for f in frames], [f.classes for f in frames]), out_path=out), label="ccd")
    return out



def test_multiclass_result_tiles_and_clusters(make_napari_viewer, qtbot, tmp_path, artifacts, tiny_ccd_model, wait_worker):
    from napari_microseg.simulate.ccd import simulate_ccd_frame
    from napari_microseg.widgets.segmentation import FILE_CHOICE, SegmentationWidget

    frame = simulate_ccd_frame(shape=(300, 300), seed=11, n_clusters=30)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(frame.image, name="ccd")
    widget = SegmentationWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segmentation")
    widget.image_layer.value = "ccd"
    widget.model_choice.value = FILE_CHOICE
    assert widget.diameter.native.isVisibleTo(widget) and not widget.shape_rules.native.isVisibleTo(widget)
    from napari_microseg.cli import build_parser

    # the same smallest object as `microseg segment` keeps (the dock said 15, the command 8)
    assert widget.min_size.value == build_parser().parse_args(["segment", "--model", "m", "--input", "i", "--out", "o"]).min_size
    widget.model_file.value = str(tiny_ccd_model)  # a class model: its options, not the nucleus diameter
    assert widget.shape_rules.native.isVisibleTo(widget) and widget.find_button.native.isVisibleTo(widget)
    assert not widget.diameter.native.isVisibleTo(widget)
    assert not widget.min_size.native.isVisibleTo(widget)  # a class map keeps every pixel: no size to set
    assert not widget.tile_table.isVisibleTo(widget)  # no empty tile list before "List tiles"
    widget.export_dir.value = str(tmp_path / "export")
    wait_worker(widget.segment())
    layer = viewer.layers["ccd segmented"]
    assert layer.data.max() <= 3
    assert list(layer.features["class"]) == CCD_CLASSES
    assert "%" in widget.counts_label.value
    assert widget.clusters is not None and {"size_px", "charge_adc"} <= set(widget.clusters.columns)
    assert list(widget.find_class.choices) == CCD_CLASSES[1:]
    widget.find_class.value = "cluster"
    tiles = widget.find_tiles()
    expected = [(y, x) for y in (0, 256) for x in (0, 256) if (layer.data[y:y + 256, x:x + 256] == 3).any()]
    assert sorted(zip(tiles.y0, tiles.x0)) == expected and widget.tile_table.rowCount() == len(expected)
    assert not widget.tile_table.isHidden()
    if len(tiles):
        widget.tile_table.selectRow(0)
        assert viewer.camera.center[-2:] == pytest.approx((tiles.centre_y[0], tiles.centre_x[0]))
    written = widget.export()
    assert any(p.endswith("clusters.csv") for p in written)
    viewer.window._qt_window.resize(1400, 1100)
    qtbot.wait(100)
    from skimage.io import imsave

    imsave(artifacts / "segmentation_ccd.png", viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)
    # the same frame with the shape rules: the class map is the ruled one, and the cluster table follows it
    from napari_microseg.inference.postprocess import ccd_shape_rules

    plain = np.asarray(layer.data).copy()
    widget.shape_rules.value = True
    widget.max_cluster_size.value = 6
    wait_worker(widget.segment())
    ruled = np.asarray(viewer.layers[widget.result_layer_name].data)
    np.testing.assert_array_equal(ruled, ccd_shape_rules(plain, CCD_CLASSES, max_cluster_size=6))
    assert len(widget.clusters) == 0 or widget.clusters.size_px.max() <= 6


def test_hot_repeats_over_a_stack_of_exposures(make_napari_viewer, wait_worker):
    """A stack of three exposures: the defect pixel repeats and stays hot, a bright pixel in one frame is a
    charge deposit. The option needs the whole stack; on one frame it says so."""
    from napari_microseg.inference.postprocess import ccd_persistence_rule
    from napari_microseg.simulate.ccd import simulate_ccd_frame
    from napari_microseg.widgets.segmentation import SegmentationWidget

    frames = np.stack([simulate_ccd_frame(shape=(128, 128), seed=60 + s, n_hot=0, n_clusters=10).image for s in range(3)])
    frames[:, 40, 40] += 2200
    frames[1, 90, 20] += 2200
    viewer = make_napari_viewer(show=False)
    viewer.add_image(frames, name="exposures")
    widget = SegmentationWidget(viewer)
    widget.image_layer.value = "exposures"
    widget.model_choice.value = "ccd_classes"
    assert widget.hot_repeats.native.isVisibleTo(widget)
    widget.scope.value = "whole stack"
    wait_worker(widget.segment())
    plain = np.asarray(viewer.layers[widget.result_layer_name].data).copy()
    assert plain[1, 90, 20] == 2 and (plain[:, 40, 40] == 2).all()
    widget.hot_repeats.value = True
    wait_worker(widget.segment())
    ruled = np.asarray(viewer.layers[widget.result_layer_name].data)
    np.testing.assert_array_equal(ruled, ccd_persistence_rule(plain, CCD_CLASSES))
    assert ruled[1, 90, 20] == 3 and (ruled[:, 40, 40] == 2).all()
    assert widget.result.settings["hot_repeats"] is True and widget.result.settings["exposures"] == 3  # two passes
    defects = viewer.layers["exposures defects"].data  # the sensor's defect mask, over every frame
    assert defects.shape == (128, 128) and defects[40, 40] == 1 and defects[90, 20] == 0
    assert int(defects.sum()) == widget.result.settings["persistent_pixels"] and "defect pixels" in widget.counts_label.value
    two_pass_objects = widget.result.objects.copy()
    assert (two_pass_objects.groupby("t").size() > 0).all() and len(widget.clusters) > 0
    # with the probability layer asked for, the rule runs on the stack in memory: the same labels and objects
    widget.keep_probabilities.value = True
    wait_worker(widget.segment())
    np.testing.assert_array_equal(np.asarray(viewer.layers[widget.result_layer_name].data), ruled)
    assert "exposures" not in widget.result.settings and widget.result.probabilities is not None
    np.testing.assert_allclose(widget.result.objects["probability"], two_pass_objects["probability"], rtol=1e-5)
    widget.keep_probabilities.value = False
    widget.scope.value = "current frame"
    assert widget.segment() is None and "whole stack" in widget.status.text()
    # hidden with a nuclei model, the ticked CCD options no longer apply (they blocked a 2-D run)
    widget.model_choice.value = "nuclei_fluorescence_fast"
    assert not widget.hot_repeats.native.isVisibleTo(widget)
    wait_worker(widget.segment())
    assert widget.result is not None and widget.result.settings["hot_repeats"] is False, widget.status.text()


def test_hot_repeats_stopped_leaves_no_scratch_and_no_result(make_napari_viewer, wait_worker, tmp_path, monkeypatch):
    """Stop while the dock's two-pass repeat rule runs: its scratch folder (in the system's temporary
    folder) is removed, and no result layer appears."""
    import tempfile

    from napari_microseg.simulate.ccd import simulate_ccd_frame
    from napari_microseg.widgets.segmentation import SegmentationWidget

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    frames = np.stack([simulate_ccd_frame(shape=(96, 96), seed=80 + s, n_hot=0, n_clusters=5).image for s in range(4)])
    viewer = make_napari_viewer(show=False)
    viewer.add_image(frames, name="exposures")
    widget = SegmentationWidget(viewer)
    widget.image_layer.value, widget.model_choice.value = "exposures", "ccd_classes"
    widget.scope.value, widget.hot_repeats.value = "whole stack", True
    worker = widget.segment()
    seen = []

    def stop_in_the_first_pass(event):
        seen.append([p.name for p in tmp_path.iterdir()])
        if "exposure 2/" in event.message:
            widget.stop()

    worker.yielded.connect(stop_in_the_first_pass)
    wait_worker(worker)
    assert any(names and names[0].startswith(".microseg-repeats-") for names in seen)  # it was there while running
    assert list(tmp_path.iterdir()) == [] and widget.result is None
    assert [layer.name for layer in viewer.layers] == ["exposures"]


def test_batch_folder_then_resume_and_stop(make_napari_viewer, qtbot, tmp_path, tiny_nuclei_model, wait_worker):
    from napari_microseg.simulate.nuclei import simulate_nuclei_image
    from napari_microseg.widgets.segmentation import FILE_CHOICE, SegmentationWidget

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        tifffile.imwrite(folder / f"img{i}.tif", simulate_nuclei_image(shape=(96, 96), n_nuclei=8, seed=i)[0])
    viewer = make_napari_viewer(show=False)
    widget = SegmentationWidget(viewer)
    widget.model_choice.value = FILE_CHOICE
    widget.model_file.value = str(tiny_nuclei_model)
    widget.batch_input.value = str(folder)
    widget.batch_out.value = str(tmp_path / "out")
    widget.batch_workers.value = 0
    wait_worker(widget.run_batch())
    assert "3 done" in widget.status.text(), widget.status.text()
    objects = pd.read_csv(tmp_path / "out" / "objects.csv")
    assert set(objects["image"].astype(str).str.contains("img")) == {True}
    wait_worker(widget.run_batch())
    assert "0 done, 3 skipped" in widget.status.text(), widget.status.text()

    # Stop: a larger batch is stopped early and reports it
    for i in range(3, 40):
        tifffile.imwrite(folder / f"img{i}.tif", np.zeros((96, 96), np.uint8) + i)
    worker = widget.run_batch()
    qtbot.waitUntil(lambda: widget.progress.maximum() > 1, timeout=60000)
    widget.stop()
    wait_worker(worker)
    assert "stopped" in widget.status.text()


def test_training_preview_of_a_class_model_shows_classes(make_napari_viewer, tiny_ccd_model, wait_worker):
    """The Training dock's preview of a CCD class model: the class shares and the fixed class colours
    (not instance colours and an object count)."""
    import numpy as np
    from napari.utils.colormaps.standardize_color import transform_color

    from napari_microseg.colours import CLASS_COLOURS
    from napari_microseg.simulate.ccd import simulate_ccd_frame
    from napari_microseg.widgets.training import TrainingWidget

    viewer = make_napari_viewer(show=False)
    viewer.add_image(simulate_ccd_frame(shape=(128, 128), seed=30, balanced=True).image, name="frame")
    widget = TrainingWidget(viewer)
    widget.image_layer.value = ["frame"]
    widget.out_path.value = str(tiny_ccd_model)
    wait_worker(widget.preview())
    said = widget.status.text()
    assert "cluster" in said and "%" in said and "objects" not in said, said
    layer = viewer.layers[-1]
    for class_id in (1, 2, 3):
        np.testing.assert_allclose(layer.get_color(class_id)[:3], transform_color(CLASS_COLOURS[class_id])[0][:3], atol=1e-3)
