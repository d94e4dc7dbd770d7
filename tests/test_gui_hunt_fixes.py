"""GUI behaviour found broken by the session-24 bug hunt: counts of frames never segmented, RGB
time-lapses and pyramid labels in the fine-tuning set, a CCD tile jump on calibrated images, the
auto-label preview's place and its pending refresh, a stack's crop boxes that no longer fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_microseg.simulate.nuclei import simulate_nuclei_image

pytestmark = pytest.mark.gui


def _nuclei(seed: int, size: int = 96, n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    image, labels = simulate_nuclei_image(shape=(size, size), n_nuclei=n, seed=seed)[:2]
    return image.astype(np.float32), labels.astype(np.int32)


def _segmentation_dock(viewer, image_name: str, model: str = "nuclei_fluorescence_fast"):
    from napari_microseg.widgets.segmentation import SegmentationWidget

    widget = SegmentationWidget(viewer)
    widget.image_layer.value = image_name
    widget.model_choice.value = model
    widget.tile.value = 128
    return widget


def test_corrected_export_counts_only_the_frames_segmented_or_painted(make_napari_viewer, tmp_path, wait_worker,
                                                                     artifacts):
    """One frame of a 3-frame stack segmented, then corrected: counts.csv lists that frame (and a frame
    the user painted objects into), not 0 nuclei for frames nobody segmented."""
    viewer = make_napari_viewer(show=True)
    image, _ = _nuclei(1)
    viewer.add_image(np.stack([image, image, image]), name="stack", scale=(2.0, 1.0, 1.0))  # 2 min per frame
    viewer.dims.set_point(0, 2.0)  # frame 1
    widget = _segmentation_dock(viewer, "stack")
    widget.keep_probabilities.value = True
    wait_worker(widget.segment())
    result = viewer.layers["stack segmented"]
    assert list(widget.result.counts["t"]) == [1]
    # the probability map of one frame is shown on that frame only
    probability = viewer.layers["stack probability"]
    assert probability.data.shape == (1, 96, 96) and probability.translate[0] == 2.0 and probability.scale[0] == 2.0
    found = int(widget.result.counts["count"].iloc[0])
    from skimage.io import imsave

    viewer.window._qt_window.resize(1200, 800)
    viewer.reset_view()
    imsave(artifacts / "segmentation_one_frame_probability.png", viewer.screenshot(canvas_only=False, flash=False),
           check_contrast=False)

    result.paint((1, 3, 3), 999, refresh=True)  # a new object on the segmented frame
    widget.export_dir.value = str(tmp_path / "one")
    wait_worker(widget.export())
    counts = pd.read_csv(tmp_path / "one" / "counts.csv")
    assert list(counts["t"]) == [1] and list(counts["count"]) == [found + 1]

    result.paint((2, 50, 50), 1000, refresh=True)  # and one painted into a frame never segmented
    widget.export_dir.value = str(tmp_path / "two")
    wait_worker(widget.export())
    counts = pd.read_csv(tmp_path / "two" / "counts.csv")
    assert list(counts["t"]) == [1, 2] and list(counts["count"]) == [found + 1, 1]


def test_rgb_time_lapse_and_pyramid_labels_join_the_training_set(make_napari_viewer):
    """An RGB (T, Y, X, 3) image: its current frame is one (Y, X) grey frame; a multiscale labels layer
    gives its full-resolution frame (its data indexes levels, not frames)."""
    viewer = make_napari_viewer(show=False)
    (a, label_a), (b, label_b) = _nuclei(1, 64), _nuclei(2, 64)
    viewer.add_image(np.repeat(np.stack([a, b])[..., None], 3, axis=-1), rgb=True, name="rgb stack")
    viewer.add_labels(np.stack([label_a, label_b]), name="labels")
    stack = np.stack([label_a, label_b])
    viewer.add_labels([stack, stack[:, ::2, ::2]], multiscale=True, name="pyramid")
    viewer.dims.set_point(0, 1)
    widget = _segmentation_dock(viewer, "rgb stack")
    widget.labels_for_training.value = "labels"
    assert widget.add_to_training_set() == 1, widget.status.text()
    image, labels = widget.training_pairs[0]
    assert image.shape == labels.shape == (64, 64)
    np.testing.assert_allclose(image, b, rtol=1e-5)
    np.testing.assert_array_equal(labels, label_b)

    widget.labels_for_training.value = "pyramid"
    assert widget.add_to_training_set() == 1  # the same frame: updated, not added
    np.testing.assert_array_equal(widget.training_pairs[0][1], label_b)
    assert widget._current_frame(viewer.layers["rgb stack"]) == 1


def test_tile_jump_follows_the_image_calibration_and_a_renamed_result(make_napari_viewer, wait_worker):
    """A CCD frame with a pixel size and an offset: clicking a tile centres the camera on it in world
    coordinates; a renamed result layer still gives the frame whose tiles are listed."""
    from napari_microseg.simulate.ccd import simulate_ccd_frame

    viewer = make_napari_viewer(show=False)
    frames = [simulate_ccd_frame(shape=(256, 256), seed=s).image for s in (1, 2)]
    viewer.add_image(np.stack(frames), name="ccd", scale=(5.0, 15.0, 15.0), translate=(0.0, 1000.0, 1000.0))
    viewer.add_image(np.zeros((10, 8, 8), np.float32), name="longer")  # more frames: its steps differ
    widget = _segmentation_dock(viewer, "ccd", model="ccd_classes")
    widget.scope.value = "whole stack"
    widget.tile.value = 256
    wait_worker(widget.segment())
    viewer.layers["ccd segmented"].name = "renamed"
    viewer.dims.set_point(0, 5.0)  # world time 5: frame 1 of the CCD stack
    classes = [c for c in widget.find_class.choices if c]
    tiles = None
    for name in classes:
        widget.find_class.value = name
        tiles = widget.find_tiles()
        if tiles is not None and len(tiles):
            break
    assert tiles is not None and len(tiles), widget.status.text()
    class_id = list(widget.result.class_names).index(widget.find_class.value)
    assert (np.asarray(widget.result.labels)[1] == class_id).sum() == tiles["pixels"].sum()
    widget.tile_table.selectRow(0)
    centre = viewer.layers["ccd"].data_to_world((1.0, float(tiles.iloc[0].centre_y), float(tiles.iloc[0].centre_x)))
    np.testing.assert_allclose(viewer.camera.center[-2:], centre[-2:])


def test_autolabel_preview_sits_on_the_stain_chosen_and_follows_changes_made_while_busy(make_napari_viewer, qtbot,
                                                                                      wait_worker, artifacts):
    from napari_microseg.widgets.autolabel import AutolabelWidget

    viewer = make_napari_viewer(show=True)
    (a, _), (b, _) = _nuclei(1), _nuclei(2)
    viewer.add_image(np.stack([a, b]), name="stack", scale=(2.0, 0.5, 0.5), translate=(0.0, 100.0, 100.0))
    viewer.add_image(b, name="plain")
    widget = AutolabelWidget(viewer)
    widget.live.value = False  # previews started by hand here
    widget.stain_layer.value = "stack"
    wait_worker(widget.preview())
    preview = widget.preview_layer
    assert preview.ndim == 3 and tuple(preview.scale) == (2.0, 0.5, 0.5)
    widget.stain_layer.value = "plain"
    wait_worker(widget.preview())
    assert widget.preview_layer.ndim == 2
    assert tuple(widget.preview_layer.scale) == (1.0, 1.0) and tuple(widget.preview_layer.translate) == (0.0, 0.0)
    assert len([layer for layer in viewer.layers if layer.name.startswith("auto-label preview")]) == 1
    from skimage.io import imsave

    viewer.layers["stack"].visible = False
    viewer.window._qt_window.resize(1200, 800)
    viewer.reset_view()
    imsave(artifacts / "autolabel_preview_after_switch.png", viewer.screenshot(canvas_only=False, flash=False),
           check_contrast=False)
    viewer.layers["stack"].visible = True

    # a change of the form while Apply runs: the preview asked for then runs once the dock is free
    before = np.asarray(widget.preview_layer.data).copy()
    widget.live.value = True
    worker = widget.apply()
    widget.min_diameter.value = float(widget.min_diameter.value) + 6  # fewer, larger nuclei
    widget.timer.stop()  # (its debounce would fire on its own; here only the call below asks for a preview)
    widget.preview()  # what the debounce timer calls: busy, so it waits
    assert widget._pending_preview
    wait_worker(worker)
    # only the dock's end-of-run hook can start it now: the preview follows the changed form
    qtbot.waitUntil(lambda: not widget.busy and not np.array_equal(np.asarray(widget.preview_layer.data), before),
                    timeout=15000)
    assert not widget._pending_preview


def test_crop_boxes_that_do_not_fit_the_stack_are_refused_with_a_reason(make_napari_viewer):
    from napari_microseg.widgets.classification import ClassificationWidget

    viewer = make_napari_viewer(show=False)
    viewer.add_image(np.random.default_rng(0).random((3, 64, 64)).astype(np.float32), name="responses",
                     metadata={"crop_box": [[0, 0, 10, 10]]})
    widget = ClassificationWidget(viewer)
    widget.image_layer.value = "responses"
    from napari_microseg.errors import InputError
    with pytest.raises(InputError, match="1 integration box.*for 3 image"):
        widget._make_job(widget.model_path())


def test_segment_then_track_in_napari_joins_the_csv_files(make_napari_viewer, tmp_path, wait_worker):
    """A whole stack segmented in the dock carries ids unique across its frames; its objects.csv and the
    Tracking dock's tracks.csv both hold them as label and each frame's own id as frame_label, so the two
    join. Exports of both docks in one folder number their files together (counts_2 with tracks_2 ...)."""
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse
    from napari_microseg.widgets.tracking import TrackingWidget

    viewer = make_napari_viewer(show=False)
    sim = simulate_nuclei_timelapse(n_frames=4, shape=(96, 96), n_nuclei=6, seed=5)
    viewer.add_image(sim.fluorescence, name="movie")
    seg = _segmentation_dock(viewer, "movie")
    seg.scope.value = "whole stack"
    wait_worker(seg.segment())
    seg.export_dir.value = str(tmp_path)
    seg.export()
    track = TrackingWidget(viewer)
    track.labels_layer.value = "movie segmented"
    track.image_layer.value = "movie"
    wait_worker(track.track())
    track.export_dir.value = str(tmp_path)
    paths = [Path(p).name for p in track.export_csv()]
    assert paths == ["tracks_2.csv", "counts_2.csv", "track_summary_2.csv", "track_config_2.json"]  # counts.csv taken
    tracks, objects = pd.read_csv(tmp_path / "tracks_2.csv"), pd.read_csv(tmp_path / "objects.csv")
    assert objects["label"].is_unique and objects["label"].max() > objects["frame_label"].max()  # the layer's ids
    joined = tracks.merge(objects, on=["t", "label", "frame_label"], suffixes=("", "_objects"))
    assert len(joined) == len(tracks) == len(objects)
    np.testing.assert_allclose(joined["y"], joined["y_objects"], atol=1e-3)
    assert [Path(p).name for p in seg.export()] == ["counts_3.csv", "objects_3.csv", "segment_run_3.json"]
    import json

    record = json.loads((tmp_path / "track_config_2.json").read_text())  # what the CLI records, too
    assert record["inputs"] == {"labels": "napari layer 'movie segmented'", "image": "napari layer 'movie'"}
    assert record["units"] == {"pixel_size_um": None, "frame_interval_min": None} and record["seed"] == 0


def test_merge_takes_the_earlier_track_first_whatever_the_ids(make_napari_viewer, wait_worker):
    """Track 1 on the left over 6 frames, track 2 appearing on the right at frame 3. Split track 1 at
    frame 1 (new track 3) and track 3 at frame 3 (new track 4): track 3 (frames 1-2) has the higher id
    but is the earlier of 3 and 2; merging them must not be refused for their order in the table."""
    from skimage.draw import disk

    from napari_microseg.widgets.tracking import TrackingWidget

    stack = np.zeros((6, 64, 64), np.uint16)
    for t in range(6):
        stack[t][disk((20, 15 + t), 4)] = 1
        if t >= 3:
            stack[t][disk((40, 50), 4)] = 2
    viewer = make_napari_viewer(show=False)
    viewer.add_labels(stack, name="cells")
    widget = TrackingWidget(viewer)
    widget.labels_layer.value = "cells"
    wait_worker(widget.track())
    starts = widget.result.table.groupby("track_id")["t"].min()
    left, right = int(starts.idxmin()), int(starts.idxmax())
    for track_id, t in ((left, 1), (None, 3)):
        widget._select_tracks([track_id if track_id is not None else int(widget.result.table["track_id"].max())])
        viewer.dims.set_current_step(0, t)
        wait_worker(widget.split_selected())
    pieces = widget.result.table.groupby("track_id")["t"].agg(["min", "max"])
    earlier = int(pieces[(pieces["min"] == 1) & (pieces["max"] == 2)].index[0])
    assert earlier > right  # the earlier piece has the higher id
    widget._select_tracks([right, earlier])
    wait_worker(widget.merge_selected())
    merged = widget.result.table[widget.result.table["track_id"] == earlier]
    assert sorted(merged["t"]) == [1, 2, 3, 4, 5], widget.status.text()

    # each edit can be undone, the layers following; the oldest undo gives the tracking back
    split_twice = pieces
    assert widget.undo() and "undone: merged" in widget.status.text()
    pd.testing.assert_frame_equal(widget.result.table.groupby("track_id")["t"].agg(["min", "max"]), split_twice)
    tracks_layer_ids = set(np.unique(widget.tracks_layer.data[:, 0]).astype(int))
    assert tracks_layer_ids == set(split_twice.index)
    assert widget.undo() and widget.undo()
    assert widget.result.n_tracks == 2 and not widget.undo() and "No edit to undo" in widget.status.text()


def test_a_model_trained_meanwhile_is_offered_in_an_open_segmentation_dock(make_napari_viewer):
    from napari_microseg.widgets.segmentation import RECENT_MODELS, add_recent_model

    from napari_microseg.widgets.segmentation import SegmentationWidget

    viewer = make_napari_viewer(show=False)
    dock = SegmentationWidget(viewer)
    dock.model_choice.value = "nuclei_fluorescence_fast"  # the user's pick
    try:
        add_recent_model("/tmp/just_trained.pt")  # what the Training dock calls when its run ends
        assert "/tmp/just_trained.pt" in dock.model_choice.choices
        assert dock.model_choice.value == "nuclei_fluorescence_fast"
    finally:
        RECENT_MODELS.remove("/tmp/just_trained.pt")


def test_class_layer_keeps_ids_unique_across_the_stack_already():
    from napari_microseg.widgets.classification import class_layer_data

    stack = np.zeros((2, 16, 16), np.uint16)
    stack[0, 2:5, 2:5], stack[1, 2:5, 2:5], stack[1, 8:12, 8:12] = 1, 2, 3  # a Segmentation dock's ids
    table = pd.DataFrame({"t": [0, 1, 1], "label": [1, 2, 3], "frame_label": [1, 1, 2], "class": ["a", "b", "a"],
                          "probability": [0.9, 0.8, 0.7]})
    labels, features = class_layer_data(stack, table)
    np.testing.assert_array_equal(labels, stack)
    assert list(features["label"]) == [1, 2, 3] and list(features["frame_label"]) == [1, 1, 2]
    per_frame = stack.copy()
    per_frame[1][per_frame[1] > 0] -= 1  # ids 1, 2 again in frame 1: made unique
    labels, features = class_layer_data(per_frame, table.drop(columns="frame_label").assign(label=[1, 1, 2]))
    assert list(features["label"]) == [1, 2, 3] and list(features["frame_label"]) == [1, 1, 2]


def test_training_pairs_follow_shape_and_name_not_the_layer_order(make_napari_viewer, tmp_path):
    """Images 'cells A', 'cells B' and labels 'B nuclei', 'A nuclei' (added in that order): each image
    trains with its own labels, even after a new layer reorders the pickers' lists."""
    from napari_microseg.widgets.training import TrainingWidget, pair_by_shape_and_name

    viewer = make_napari_viewer(show=False)
    (a, label_a), (b, label_b) = _nuclei(1, 64), _nuclei(2, 64)
    viewer.add_image(a, name="cells A")
    viewer.add_image(b, name="cells B")
    viewer.add_labels(label_b, name="B nuclei")
    viewer.add_labels(label_a, name="A nuclei")
    widget = TrainingWidget(viewer)
    widget.image_layer.value = ["cells A", "cells B"]
    widget.labels_layer.value = ["A nuclei", "B nuclei"]
    viewer.add_image(np.zeros((8, 8), np.float32), name="another")  # the lists are rebuilt in layer order
    images, labels, names = widget.chosen_training_layers()
    assert names == ["A nuclei (on cells A)", "B nuclei (on cells B)"]
    np.testing.assert_array_equal(labels[0], label_a)
    # the shape decides before the name: a 32-px labels layer never goes with a 64-px image
    shapes = {"x": (64, 64), "y": (32, 32), "x labels": (32, 32), "y labels": (64, 64)}
    assert pair_by_shape_and_name(["x", "y"], ["x labels", "y labels"], shapes) == (["x", "y"], ["y labels", "x labels"])
    # a movie and a still of one size: the whole shape decides
    shapes = {"movie": (10, 32, 32), "still": (32, 32), "Labels": (32, 32), "Labels [1]": (10, 32, 32)}
    assert pair_by_shape_and_name(["movie", "still"], ["Labels", "Labels [1]"], shapes) == \
        (["movie", "still"], ["Labels [1]", "Labels"])
    # napari's default names say nothing: the pickers' order stands (not "cells_1" with "Labels [1]")
    same = {name: (32, 32) for name in ("cells_1", "cells_2", "img1", "img2", "img3", "Labels", "Labels [1]", "Labels [2]")}
    assert pair_by_shape_and_name(["cells_1", "cells_2"], ["Labels", "Labels [1]"], same) == \
        (["cells_1", "cells_2"], ["Labels", "Labels [1]"])
    assert pair_by_shape_and_name(["img1", "img2", "img3"], ["Labels", "Labels [1]", "Labels [2]"], same)[1] == \
        ["Labels", "Labels [1]", "Labels [2]"]
    # the usual Simulation names pair as they are
    sim = {"sim nuclei (fluorescence)": (3, 32, 32), "sim nuclei labels": (3, 32, 32)}
    assert pair_by_shape_and_name(["sim nuclei (fluorescence)"], ["sim nuclei labels"], sim)[1] == ["sim nuclei labels"]


def test_sparse_labels_without_background_are_refused(make_napari_viewer):
    from napari_microseg.errors import InputError
    from napari_microseg.widgets.training import TrainingWidget

    viewer = make_napari_viewer(show=False)
    image, truth = _nuclei(1, 64)
    painted = np.where(truth == truth.max(), 2, 0).astype(np.int32)  # one nucleus painted, no background
    viewer.add_image(image, name="cells")
    viewer.add_labels(painted, name="painted")
    widget = TrainingWidget(viewer)
    widget.image_layer.value, widget.labels_layer.value = ["cells"], ["painted"]
    widget.sparse.value = True
    with pytest.raises(InputError, match="no background painted"):
        widget.training_pairs()
    painted[:4, :4] = 1  # some background (id 1): accepted
    viewer.layers["painted"].data = painted
    assert len(widget.training_pairs()[0]) == 1


def test_ccd_classes_from_the_simulation_dock_name_the_trained_model(make_napari_viewer, tmp_path, wait_worker):
    """A class model trained on the Simulation dock's CCD layers takes the class names its labels layer
    carries (background, glowing, hot pixel, cluster), which the Segmentation dock's CCD tools need; the
    Preview button then uses the model file the field names."""
    from napari_microseg.io.models import read_model_file
    from napari_microseg.simulate.ccd import CLASS_NAMES
    from napari_microseg.widgets.simulation import SimulationWidget
    from napari_microseg.widgets.training import TrainingWidget

    viewer = make_napari_viewer(show=False)
    sim = SimulationWidget(viewer)
    sim.domain.value = "CCD frames [C]"
    sim.forms["CCD frames [C]"]["size"].value = 64
    wait_worker(sim.generate())
    widget = TrainingWidget(viewer)
    widget.image_layer.value, widget.labels_layer.value = ["sim CCD (ADC)"], ["sim CCD classes"]
    widget.output_mode.value = "multiclass"
    widget.patch.value, widget.epochs.value, widget.patches_per_epoch.value, widget.batch_size.value = 64, 1, 4, 2
    widget.val_fraction.value = 0.0
    widget.out_path.value = str(tmp_path / "ccd.pt")
    wait_worker(widget.train())
    assert read_model_file(tmp_path / "ccd.pt")["config"]["class_names"] == list(CLASS_NAMES), widget.status.text()
    other = tmp_path / "other.pt"
    other.write_bytes((tmp_path / "ccd.pt").read_bytes())
    widget.out_path.value = str(other)
    wait_worker(widget.preview())
    assert any(layer.name.startswith("preview other") for layer in viewer.layers), [layer.name for layer in viewer.layers]


def test_nan_in_an_unpainted_frame_does_not_refuse_the_time_lapse():
    from napari_microseg.errors import InputError
    from napari_microseg.widgets.training import check_training_layers

    image, truth = _nuclei(1, 64)
    movie = np.stack([image, image, image]).astype(np.float32)
    labels = np.zeros(movie.shape, np.int32)
    labels[0] = truth  # frame 0 painted; frame 2, not painted, holds a NaN (a dropped frame, say)
    movie[2, 5, 5] = np.nan
    check_training_layers(movie, labels, partial=False)
    movie[0, 5, 5] = np.nan
    with pytest.raises(InputError, match="NaN or infinite values in a painted frame"):
        check_training_layers(movie, labels, partial=False)


def test_simulation_dock_says_when_fewer_liposomes_fit(make_napari_viewer, wait_worker):
    from napari_microseg.widgets.simulation import SimulationWidget

    viewer = make_napari_viewer(show=False)
    sim = SimulationWidget(viewer)
    sim.domain.value = "TEM liposomes [T]"
    form = sim.forms["TEM liposomes [T]"]
    form["size"].value, form["n_particles"].value = 128, 500
    wait_worker(sim.generate())
    placed = len(viewer.layers["sim liposome labels"].features)
    assert placed < 500 and f"only {placed} of the 500 particles asked for fit" in sim.status.text()


def test_tracking_dock_on_a_movie_without_objects_and_after_deleting_every_track(make_napari_viewer, wait_worker,
                                                                               tmp_path):
    from skimage.draw import disk

    from napari_microseg.widgets.tracking import TrackingWidget

    viewer = make_napari_viewer(show=False)
    viewer.add_labels(np.zeros((4, 32, 32), np.uint16), name="empty well")
    widget = TrackingWidget(viewer)
    widget.labels_layer.value = "empty well"
    wait_worker(widget.track())
    assert widget.result is not None and widget.result.n_tracks == 0 and widget.table.rowCount() == 0
    assert "none of the 4 frames holds an object" in widget.status.text()
    widget.export_dir.value = str(tmp_path)
    assert pd.read_csv(widget.export_csv()[1])["count"].tolist() == [0, 0, 0, 0]

    one = np.zeros((4, 32, 32), np.uint16)
    for t in range(4):
        one[t][disk((16, 10 + t), 4)] = 1
    viewer.add_labels(one, name="one cell")
    widget.labels_layer.value = "one cell"
    wait_worker(widget.track())
    widget._select_tracks([int(widget.result.table["track_id"].iloc[0])])
    wait_worker(widget.delete_selected())
    assert widget.result.n_tracks == 0 and widget.tracks_layer is None, widget.status.text()
    assert widget.undo() and widget.tracks_layer is not None and widget.result.n_tracks == 1
