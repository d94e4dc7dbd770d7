"""Behaviour found broken by the session-25 bug hunts (Classification and Auto-label docks, command line
on real data, the design's contracts); each test fails without its fix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def test_class_layer_of_an_autolabelled_stack_leaves_not_annotated_pixels_out():
    """Auto-label's -1 ("not annotated") in a stack whose ids restart per frame: no object in the class
    layer (it wrapped to 65535 and, shifted by the earlier frames' ids, took a real object's id)."""
    from napari_microseg.widgets.classification import class_layer_data

    stack = np.zeros((2, 16, 16), np.int32)
    stack[0, 2:5, 2:5], stack[0, 8:11, 8:11] = 1, 2
    stack[1, 2:5, 2:5], stack[1, 10:14, 10:14] = 1, -1  # a too-large nucleus, not annotated
    table = pd.DataFrame({"t": [0, 0, 1], "label": [1, 2, 1], "class": ["a", "b", "a"], "probability": [0.9, 0.8, 0.7]})
    labels, features = class_layer_data(stack, table)
    assert not labels[1, 10:14, 10:14].any()
    assert set(np.unique(labels)) == {0, 1, 2, 3} and list(features["label"]) == [1, 2, 3]
    labels, _ = class_layer_data(stack[1], table[table["t"] == 1].drop(columns="t"))  # one frame
    assert not labels[10:14, 10:14].any() and labels.min() == 0


@pytest.fixture(scope="module")
def liposome_classifier(tmp_path_factory):
    from napari_microseg.classify.data import simulated_liposome_data
    from napari_microseg.classify.trainer import train_with_strategy
    from napari_microseg.progress import drain
    from napari_microseg.widgets.classification import _default_config

    model = tmp_path_factory.mktemp("lipo") / "lipo.pt"
    drain(train_with_strategy("simulated", _default_config("objects", 1), simulated=simulated_liposome_data(2, seed=0),
                              out_path=model))
    return model


def _objects_dock(viewer, model):
    from napari_microseg.widgets.classification import FILE_CHOICE, ClassificationWidget

    widget = ClassificationWidget(viewer)
    widget.task.value = "objects [T]"
    widget.model_choice.value = FILE_CHOICE
    widget.model_file.value = str(model)
    return widget


@pytest.mark.gui
def test_classification_dock_mask_layer_jump_and_task_change(make_napari_viewer, wait_worker, liposome_classifier):
    """A 0/1 mask layer is classified object by object (as `microseg classify objects` does, not as one
    object); a row jumps to its object in the layer the results came from, whatever the picker shows
    now; a run that ends after the task was changed shows no results under the other task."""
    from napari_microseg.simulate.liposomes import simulate_liposome_image

    a = simulate_liposome_image(shape=(128, 128), n_particles=6, seed=3)
    b = simulate_liposome_image(shape=(128, 128), n_particles=6, seed=4)
    viewer = make_napari_viewer(show=False)
    viewer.add_image(np.stack([a.image, b.image]), name="movie", scale=(10, 0.5, 0.5), translate=(0, 100, 200))
    viewer.add_labels((np.stack([a.labels, b.labels]) > 0).astype(np.uint8), name="mask")
    viewer.add_image(a.image, name="other image")
    widget = _objects_dock(viewer, liposome_classifier)
    widget.image_layer.value, widget.labels_layer.value = "movie", "mask"
    wait_worker(widget.classify())
    from skimage.measure import label

    n_objects = sum(int(label(frame > 0).max()) for frame in (a.labels, b.labels))
    assert len(widget.results) == n_objects > 2, widget.status.text()
    row = int(np.flatnonzero(widget.results["t"].to_numpy() == 1)[0])
    record = widget.results.iloc[row]
    widget.image_layer.value = "other image"  # the user goes on to the next image
    widget.table.selectRow(row)
    assert viewer.dims.point[0] == pytest.approx(10.0)  # frame 1 of the movie, in its time units
    assert tuple(viewer.camera.center[-2:]) == pytest.approx((100 + 0.5 * record["y"], 200 + 0.5 * record["x"]))
    widget.image_layer.value = "movie"
    worker = widget.classify()
    widget.task.value = "profiles [P]"  # changed while it runs
    wait_worker(worker)
    assert widget.results is None and not widget.table.isVisible()
    assert "finished after the task was changed" in widget.status.text()


@pytest.mark.gui
def test_classifier_stopped_before_its_first_epoch_is_not_offered(make_napari_viewer, wait_worker, tmp_path):
    from napari_microseg.widgets._base import NO_MODEL_MESSAGE
    from napari_microseg.widgets.classification import ClassificationWidget

    widget = ClassificationWidget(make_napari_viewer(show=False))
    chosen = widget.model_choice.value
    widget.train_n.value, widget.train_epochs.value = 200, 3
    widget.train_out.value = str(tmp_path / "untrained.pt")
    worker = widget.train()
    widget.stop()  # at once: the run stops while it simulates its data, or at the trainer's first step
    wait_worker(worker)
    assert NO_MODEL_MESSAGE in widget.status.text() or "stopped while simulating" in widget.status.text()
    assert not (tmp_path / "untrained.pt").exists() and widget.model_choice.value == chosen


@pytest.mark.gui
def test_a_closed_dock_stops_following_the_viewer(make_napari_viewer, qtbot):
    """A dock taken out of the window (its close button: napari un-parents it) schedules no more
    auto-label previews on the time slider and no picker refreshes; docked again, it follows again."""
    from napari_microseg.widgets.autolabel import AutolabelWidget

    viewer = make_napari_viewer(show=False)
    viewer.add_image(np.random.default_rng(0).random((3, 64, 64)).astype(np.float32), name="stain")
    widget = AutolabelWidget(viewer)
    dock = viewer.window.add_dock_widget(widget, name="Auto-label")
    viewer.dims.set_current_step(0, 1)
    assert widget.timer.isActive()  # open: a preview is scheduled
    widget.timer.stop()
    viewer.window.remove_dock_widget(dock)
    viewer.dims.set_current_step(0, 2)
    assert not widget.timer.isActive()
    viewer.add_image(np.zeros((3, 64, 64), np.float32), name="another")
    assert "another" not in widget.stain_layer.choices
    viewer.window.add_dock_widget(widget, name="Auto-label")
    viewer.dims.set_current_step(0, 0)
    assert widget.timer.isActive()
    viewer.add_image(np.ones((3, 64, 64), np.float32), name="third")
    assert "third" in widget.stain_layer.choices


def test_the_real_ccd_sample_is_known_as_a_fits_frame():
    """The plugin's own CCD sample carries the reader's source kind, so the Auto-label dock says it
    labels nuclei and points to `microseg autolabel ccd`, as for the same file opened through the reader."""
    from types import SimpleNamespace

    from napari_microseg._sample_data import ccd_fe55
    from napari_microseg.widgets.autolabel import ccd_note

    (data, kwargs, kind), = ccd_fe55()
    assert kind == "image" and kwargs["metadata"]["source_kind"] == "fits"
    assert "autolabel ccd" in ccd_note(SimpleNamespace(metadata=kwargs["metadata"]))


def test_objects_table_of_a_stack_with_empty_frames_keeps_number_columns(liposome_classifier):
    """Frames without objects add no rows and leave the columns numeric (they turned every column to text)."""
    from napari_microseg.classify.predict import classify_objects
    from napari_microseg.simulate.liposomes import simulate_liposome_image

    sim = simulate_liposome_image(shape=(128, 128), n_particles=4, seed=3)
    image = np.stack([sim.image, sim.image])
    labels = np.stack([np.zeros_like(sim.labels), sim.labels])
    table = classify_objects(str(liposome_classifier), image, labels)
    assert len(table) == len(np.unique(sim.labels)) - 1 and set(table["t"]) == {1}
    assert all(table[c].dtype.kind in "if" for c in ("t", "label", "y", "x", "area", "probability"))
    empty = classify_objects(str(liposome_classifier), image, np.zeros_like(labels))
    assert len(empty) == 0 and empty["area"].dtype == np.int64 and list(empty.columns) == list(table.columns)


@pytest.mark.gui
def test_a_failed_preview_hides_the_earlier_one(make_napari_viewer, wait_worker):
    """A preview that fails (NaN in the frame) shows its error and hides the earlier preview, which sat
    over the new stain as if it were its labels; the next good preview shows again."""
    from napari_microseg.simulate.nuclei import simulate_nuclei_image
    from napari_microseg.widgets.autolabel import AutolabelWidget

    image = simulate_nuclei_image(shape=(96, 96), n_nuclei=6, seed=1)[0].astype(np.float32)
    broken = image.copy()
    broken[40, 40] = np.nan
    viewer = make_napari_viewer(show=False)
    viewer.add_image(image, name="good")
    viewer.add_image(broken, name="nan")
    widget = AutolabelWidget(viewer)
    widget.live.value = False
    widget.stain_layer.value = "good"
    wait_worker(widget.preview())
    assert widget.preview_layer.visible and widget.preview_layer.data.any()
    widget.stain_layer.value = "nan"
    wait_worker(widget.preview())
    assert "NaN" in widget.status.text() and not widget.preview_layer.visible
    widget.stain_layer.value = "good"
    wait_worker(widget.preview())
    assert widget.preview_layer.visible
    widget.preview_layer.visible = False  # hidden by the user: the next preview leaves it so
    wait_worker(widget.preview())
    assert not widget.preview_layer.visible


def test_an_unavailable_device_is_one_line_for_classify_and_batch(tmp_path, capsys):
    """`classify --device` of a GPU the machine lacks printed a traceback; `batch --workers 0` failed every
    item: both now exit 2 with the reason, before any output is written."""
    import tifffile

    from napari_microseg.cli import main

    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        tifffile.imwrite(images / f"a{i}.tif", np.random.default_rng(i).random((64, 64)).astype(np.float32))
    for argv in (["classify", "images", "--model", "response_good_bad", "--input", str(images), "--out",
                  str(tmp_path / "c")],
                 ["batch", "segment", "--model", "nuclei_fluorescence_fast", "--input", str(images), "--out",
                  str(tmp_path / "b"), "--workers", "0"]):
        assert main([*argv, "--device", "cuda:7"]) == 2
        err = capsys.readouterr().err
        assert "error: device" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "b" / "failures.csv").exists()


def test_track_overwrite_removes_only_the_ctc_files_it_wrote(tmp_path, capsys):
    """A run without --ctc removes the earlier run's CTC export, but not a user's own file in that
    folder that merely starts with "mask" (it was deleted, and the folder with it)."""
    import tifffile

    from napari_microseg.cli import main
    from test_track_core import division_stack

    labels, _ = division_stack()
    tifffile.imwrite(tmp_path / "labels.tif", labels.astype(np.uint16))
    out = tmp_path / "out"
    assert main(["track", "--labels", str(tmp_path / "labels.tif"), "--out", str(out), "--ctc"]) == 0
    ctc = out / "ctc_RES"
    written = sorted(p.name for p in ctc.iterdir())
    mine = ctc / "mask_corrected_by_hand.tif"
    tifffile.imwrite(mine, np.ones((4, 4), np.uint16))
    assert main(["track", "--labels", str(tmp_path / "labels.tif"), "--out", str(out), "--overwrite"]) == 0
    assert "removed the earlier run's CTC" in capsys.readouterr().err
    assert sorted(p.name for p in ctc.iterdir()) == [mine.name] and "res_track.txt" in written


def test_napari_writers_never_replace_a_file_nobody_was_asked_about(tmp_path):
    """napari's save dialog asks about the name as typed; a writer that adds .tif / .csv refuses when
    that file exists (a hand-corrected labels file was replaced); a full name is written as asked."""
    from napari_microseg._writer import write_image_tiff, write_labels_tiff, write_tracks_csv
    from napari_microseg.errors import WriteRefused

    labels = np.zeros((2, 16, 16), np.uint16)
    labels[:, 2:6, 2:6] = 1
    (first,) = write_labels_tiff(str(tmp_path / "movie segmented"), labels, {})
    before = open(first, "rb").read()
    with pytest.raises(WriteRefused, match="movie segmented.tif exists"):
        write_labels_tiff(str(tmp_path / "movie segmented"), np.zeros_like(labels), {})
    with pytest.raises(WriteRefused, match="exists"):
        write_image_tiff(str(tmp_path / "movie segmented"), labels.astype(np.float32), {})
    assert open(first, "rb").read() == before
    write_labels_tiff(first, np.zeros_like(labels), {})  # named in full: the dialog asked
    assert open(first, "rb").read() != before
    tracks = np.array([[1, 0, 10, 10], [1, 1, 11, 10]], float)
    write_tracks_csv(str(tmp_path / "tracks"), tracks, {})
    with pytest.raises(WriteRefused, match="tracks.csv exists"):
        write_tracks_csv(str(tmp_path / "tracks"), tracks, {})


def test_tracks_writer_puts_z_before_y_for_3d_tracks(tmp_path):
    from napari_microseg._writer import write_tracks_csv

    data = np.array([[1, 0, 3, 10, 10], [1, 1, 3, 11, 10]], float)  # track_id, t, z, y, x
    (path,) = write_tracks_csv(str(tmp_path / "t3d.csv"), data, {})
    assert list(pd.read_csv(path).columns[:5]) == ["track_id", "t", "z", "y", "x"]


def test_free_name_counts_a_checkpoint_beside_the_name_as_used(tmp_path):
    """The Training and Classification docks train into a free name: an earlier run's resumable
    model.pt.last.pt (its model file gone) is not replaced (the command line refuses the same)."""
    from pathlib import Path

    from napari_microseg.widgets._base import free_name

    (tmp_path / "model.pt.last.pt").write_bytes(b"checkpoint")
    assert free_name(Path(tmp_path / "model.pt")) == tmp_path / "model.pt"  # no sidecars asked about
    assert free_name(Path(tmp_path / "model.pt"), sidecars=(".last.pt",)) == tmp_path / "model_2.pt"
    (tmp_path / "model_2.pt").write_bytes(b"model")
    assert free_name(Path(tmp_path / "model.pt"), sidecars=(".last.pt",)) == tmp_path / "model_3.pt"


def test_evaluate_tracks_never_writes_over_its_input_tables(tmp_path, capsys):
    """`evaluate tracks --out GT/tracks.csv --overwrite` replaced the true tracks with the metrics row."""
    import tifffile

    from napari_microseg.cli import main
    from test_track_core import division_stack

    labels, _ = division_stack()
    tifffile.imwrite(tmp_path / "labels.tif", labels.astype(np.uint16))
    for run in ("gt", "pred"):
        assert main(["track", "--labels", str(tmp_path / "labels.tif"), "--out", str(tmp_path / run)]) == 0
    for folder in ("gt", "pred"):
        table = tmp_path / folder / "tracks.csv"
        before = table.read_bytes()
        assert main(["evaluate", "tracks", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"),
                     "--out", str(table), "--overwrite"]) == 2
        assert "never overwritten" in capsys.readouterr().err and table.read_bytes() == before
    assert main(["evaluate", "tracks", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"),
                 "--out", str(tmp_path / "pred" / "metrics.csv")]) == 0


_SMALL_TRAIN = ["--simulated", "2", "--sim-size", "64", "--patches-per-epoch", "2", "--patch", "64", "--batch-size", "2",
                "--device", "cpu", "--quiet"]


def test_train_stopped_by_term_keeps_its_record(tmp_path):
    """`microseg train` killed with TERM (a job scheduler's stop) ends as Ctrl-C does: exit 143, the best
    model kept with how the run stopped, the history written (it died with -15 and no history)."""
    import signal
    import subprocess
    import sys
    import time

    from napari_microseg.io.models import read_model_file

    model = tmp_path / "m.pt"
    proc = subprocess.Popen([sys.executable, "-m", "napari_microseg.cli", "train", *_SMALL_TRAIN, "--epochs", "1000",
                             "--out", str(model)], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "m.pt.last.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    training = read_model_file(model)["config"]["training"]
    assert training["stop_reason"] == "stopped" and 1 <= training["epochs_run"] < 1000
    assert (tmp_path / "m.history.csv").is_file() and "the best model so far is" in err


def test_train_interrupted_before_an_epoch_says_the_model_there_is_an_earlier_one(tmp_path, capsys, monkeypatch):
    """Ctrl-C before the first epoch of an --overwrite run: no earlier run's history is written as this
    run's, and the message says the model file there is the earlier one."""
    import napari_microseg.progress as progress
    from napari_microseg.cli import main

    model = tmp_path / "m.pt"
    assert main(["train", *_SMALL_TRAIN, "--epochs", "1", "--out", str(model)]) == 0
    (tmp_path / "m.history.csv").unlink()

    def interrupted(*_, **__):
        raise KeyboardInterrupt

    monkeypatch.setattr(progress, "run_with_text_progress", interrupted)
    assert main(["train", *_SMALL_TRAIN, "--epochs", "1", "--out", str(model), "--overwrite"]) == 130
    assert "is an earlier run's model, unchanged" in capsys.readouterr().err
    assert not (tmp_path / "m.history.csv").exists()


@pytest.mark.gui
def test_every_labels_layer_the_docks_add_has_a_label_features_table(make_napari_viewer, wait_worker):
    """The design's contract: Labels layers carry features with a ``label`` column (one row per id);
    auto-labels, their preview and QC, and the Tracking dock's "by track" layer had none."""
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse
    from napari_microseg.widgets.autolabel import AutolabelWidget
    from napari_microseg.widgets.tracking import TrackingWidget

    sim = simulate_nuclei_timelapse(n_frames=3, shape=(96, 96), n_nuclei=6, seed=2)
    viewer = make_napari_viewer(show=False)
    viewer.add_image(np.asarray(sim.fluorescence, np.float32), name="stain")
    viewer.add_labels(np.asarray(sim.labels), name="cells")
    auto = AutolabelWidget(viewer)
    auto.live.value = False
    auto.stain_layer.value = "stain"
    wait_worker(auto.preview())
    wait_worker(auto.apply())
    wait_worker(auto.run_qc())
    tracking = TrackingWidget(viewer)
    tracking.labels_layer.value = "cells"
    wait_worker(tracking.track())
    added = [layer for layer in viewer.layers if layer.__class__.__name__ == "Labels" and layer.name != "cells"]
    assert {layer.name for layer in added} >= {"auto-label preview", "stain auto-labels", "cells by track"}
    for layer in added:
        ids = set(np.unique(np.asarray(layer.data))) - {0, -1}
        assert "label" in layer.features.columns and set(layer.features["label"]) == ids, layer.name
    by_track = viewer.layers["cells by track"].features
    assert set(by_track["label"]) == set(tracking.result.table["track_id"]) and "generation" in by_track


def test_non_square_pixels_keep_their_y_size_and_are_warned_about(tmp_path, capsys):
    """An OME-TIFF with 0.65 um X and 1.3 um Y pixels: the Y size was dropped and the written labels
    claimed 0.65 um in Y; now it is kept (napari's Y scale, the labels file) and the run says that um
    lengths use the X size."""
    import tifffile

    from napari_microseg.cli import main
    from napari_microseg.io.images import read_image
    from napari_microseg.simulate.nuclei import simulate_nuclei_image
    from napari_microseg._reader import layer_calibration

    image = simulate_nuclei_image(shape=(96, 96), n_nuclei=6, seed=1)[0].astype(np.float32)
    path = tmp_path / "aniso.ome.tif"
    tifffile.imwrite(path, image, ome=True, metadata={"axes": "YX", "PhysicalSizeX": 0.65, "PhysicalSizeY": 1.3,
                                                       "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm"})
    with pytest.warns(UserWarning, match="not square"):
        read = read_image(path)
    assert read.metadata["calibration"]["pixel_size_y_um"] == pytest.approx(1.3)
    assert layer_calibration(read)["scale"] == pytest.approx((1.3, 0.65))
    assert main(["segment", "--model", "nuclei_fluorescence_fast", "--input", str(path), "--out", str(tmp_path / "o")]) == 0
    assert "warning: aniso.ome.tif: the pixels are not square" in capsys.readouterr().err
    labels = next((tmp_path / "o" / "labels").iterdir())
    with tifffile.TiffFile(labels) as written:
        assert 'PhysicalSizeY="1.3"' in written.ome_metadata


def test_segment_overwrite_names_the_earlier_runs_other_label_files(tmp_path, capsys):
    """`segment --overwrite` into a folder an earlier run of three images wrote, for one of them: the
    other label files stay (a subset rerun patches a run), and the run says evaluate seg would score them."""
    import tifffile

    from napari_microseg.cli import main
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        tifffile.imwrite(images / f"n{i}.tif", simulate_nuclei_image(shape=(64, 64), n_nuclei=4, seed=i)[0].astype(np.float32))
    out = tmp_path / "out"
    assert main(["segment", "--model", "nuclei_fluorescence_fast", "--input", str(images), "--out", str(out),
                 "--save-probabilities"]) == 0
    capsys.readouterr()
    assert main(["segment", "--model", "nuclei_fluorescence_fast", "--input", str(images / "n1.tif"), "--out", str(out),
                 "--overwrite", "--save-probabilities"]) == 0
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["n0.tif", "n1.tif", "n2.tif"]
    assert sorted(p.name for p in (out / "probabilities").iterdir()) == ["n0.tif", "n1.tif", "n2.tif"]
    assert "labels/ also holds 2 label file(s) of an earlier run for other images (n0.tif, n2.tif)" in capsys.readouterr().err


def test_only_a_stated_z_stack_is_called_one(tmp_path):
    """segment notes a Z stack (its planes become frames) when the file states Z: an ImageJ hyperstack or
    OME; a plain ImageJ stack, tagged Z whatever it holds (time-lapses too), is not called one."""
    import tifffile

    from napari_microseg.io.images import is_z_stack, read_image

    planes = np.zeros((4, 32, 32), np.uint16)
    tifffile.imwrite(tmp_path / "hyper.tif", planes, imagej=True, metadata={"axes": "ZYX", "hyperstack": True})
    tifffile.imwrite(tmp_path / "ome.ome.tif", planes, metadata={"axes": "ZYX"})
    with tifffile.TiffWriter(tmp_path / "plain.tif") as writer:  # as Fiji saves a stack that is no hyperstack
        for i, plane in enumerate(planes):
            writer.write(plane, contiguous=True, metadata=None,
                         description="ImageJ=1.54f\nimages=4\nslices=4\nloop=false\n" if i == 0 else None)
    assert read_image(tmp_path / "plain.tif").metadata.get("axes") == "ZYX"
    assert [is_z_stack(read_image(tmp_path / n)) for n in ("hyper.tif", "ome.ome.tif", "plain.tif")] == [True, True, False]
    tifffile.imwrite(tmp_path / "t.tif", planes, imagej=True, metadata={"axes": "TYX"})
    assert not is_z_stack(read_image(tmp_path / "t.tif"))


def test_evaluate_seg_counts_an_image_without_prediction_as_nothing_found(tmp_path, capsys):
    """An image a run failed on (no prediction file) was left out, so failures raised the score; it now
    counts as all missed, and a prediction without ground truth is named as not scored."""
    import pandas as pd
    import tifffile

    from napari_microseg.cli import main

    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir(), pred.mkdir()
    labels = np.zeros((32, 32), np.uint16)
    labels[4:10, 4:10], labels[20:28, 20:28] = 1, 2
    for name in ("a.tif", "b.tif"):
        tifffile.imwrite(gt / name, labels)
    tifffile.imwrite(pred / "a.tif", labels)  # perfect on a; b failed
    tifffile.imwrite(pred / "zzz.tif", labels)
    assert main(["evaluate", "seg", "--gt", str(gt), "--pred", str(pred), "--out", str(tmp_path / "m.csv")]) == 0
    err = capsys.readouterr().err
    assert "1 ground-truth file(s) have no prediction" in err and "scored as nothing found (b.tif)" in err
    assert "match no ground truth and are not scored (zzz.tif)" in err
    pooled = pd.read_csv(tmp_path / "m.csv").set_index("name").loc["ALL"]
    assert pooled["ap@0.50"] == pytest.approx(0.5) and pooled["n_gt"] == 4


def test_simulated_small_training_images_hold_nuclei():
    """64 x 64 images drew 0.1-9 nuclei (2-150 per 256 x 256), so most held none."""
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    counts = [len(np.unique(simulate_nuclei_image(shape=(64, 64), n_nuclei=None, seed=seed)[1])) - 1 for seed in range(12)]
    assert min(counts) >= 1, counts


def test_batch_segment_leaves_out_a_data_sets_label_folders(tmp_path):
    """A data set folder with images/ and masks/: batch segment segmented the masks too; now label
    folders below the input are left out and listed (batch track, which reads labels, still takes them)."""
    import tifffile

    from napari_microseg.batch.runner import find_batch_inputs

    for sub in ("images", "masks", "plate2/labels"):
        (tmp_path / sub).mkdir(parents=True)
        tifffile.imwrite(tmp_path / sub / "a.tif", np.zeros((16, 16), np.uint16))
    ignored: list = []
    found = find_batch_inputs(tmp_path, ignored=ignored, skip_label_folders=True)
    assert [path for path, _ in found] == [tmp_path / "images" / "a.tif"]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in ignored) == ["masks/a.tif", "plate2/labels/a.tif"]
    assert len(find_batch_inputs(tmp_path)) == 3  # tracking reads label files
    assert len(find_batch_inputs(tmp_path / "masks", skip_label_folders=True)) == 1  # a label folder given itself


def test_classify_train_interrupted_before_an_epoch_keeps_the_earlier_history(tmp_path, capsys, monkeypatch):
    """Ctrl-C before the first epoch of an --overwrite run wrote an empty history over the earlier run's,
    which then disagreed with the model file (the earlier one, unchanged); both stay, and it is said."""
    import napari_microseg.progress as progress
    from napari_microseg.cli import main

    model = tmp_path / "c.pt"
    argv = ["classify", "train", "images", "--simulated", "12", "--epochs", "1", "--batch-size", "12", "--out", str(model)]
    assert main(argv) == 0
    history = (tmp_path / "c.history.csv").read_text()

    simulate_then = progress.run_with_text_progress

    def interrupted(events, *args, label="", **kwargs):  # Ctrl-C when training starts (data simulated)
        if label.startswith("train"):
            raise KeyboardInterrupt
        return simulate_then(events, *args, label=label, **kwargs)

    monkeypatch.setattr(progress, "run_with_text_progress", interrupted)
    assert main([*argv, "--overwrite"]) == 130
    assert "is an earlier run's model, unchanged" in capsys.readouterr().err
    assert (tmp_path / "c.history.csv").read_text() == history


def test_napari_reader_and_writers_keep_colour_calibration_and_lazy_stacks(tmp_path):
    """Found through napari's plugin hooks: an RGB layer was written as 3-px-wide frames without its
    calibration; a non-square pixel size was dropped on save; a Zarr layer was read whole to be saved;
    an RGB *_mask.tif (calibrated) could not be opened; URLs and missing files were claimed; fractional
    frame indices were cut silently; upper-case suffixes stayed in layer names."""
    import warnings

    import dask.array as da
    import tifffile

    from napari_microseg._reader import get_reader, read_layers
    from napari_microseg._writer import write_image_tiff, write_labels_tiff, write_tracks_csv
    from napari_microseg.errors import WriteRefused

    rgb = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    (path,) = write_image_tiff(str(tmp_path / "rgb.tif"), rgb, {"scale": (0.5, 0.5), "rgb": True,
                                                                "units": ("micrometer", "micrometer")})
    data, kwargs, kind = read_layers(path)[0]
    assert kind == "image" and kwargs["rgb"] and kwargs["scale"] == (0.5, 0.5) and np.array_equal(data, rgb)
    (path,) = write_image_tiff(str(tmp_path / "aniso.tif"), np.zeros((8, 8), np.float32),
                               {"scale": (1.3, 0.65), "units": ("micrometer", "micrometer")})
    with warnings.catch_warnings(record=True):
        assert read_layers(path)[0][1]["scale"] == pytest.approx((1.3, 0.65))
    lazy = da.from_array(np.arange(3 * 32 * 32, dtype=np.uint16).reshape(3, 32, 32) % 7, chunks=(1, 32, 32))
    (path,) = write_labels_tiff(str(tmp_path / "lazy_labels.tif"), lazy, {})
    assert np.array_equal(tifffile.imread(path), lazy.compute())
    tifffile.imwrite(tmp_path / "cells_mask.TIF", rgb, photometric="rgb", resolution=(2, 2), imagej=False,
                     metadata={"axes": "YXS", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
    data, kwargs, kind = read_layers(str(tmp_path / "cells_mask.TIF"))[0]
    assert kind == "image" and kwargs["name"] == "cells_mask" and len(kwargs.get("scale", (0, 0))) == 2
    assert get_reader("https://example.org/x.ome.zarr") is None and get_reader(str(tmp_path / "none.tif")) is None
    with pytest.raises(WriteRefused, match="whole numbers"):
        write_tracks_csv(str(tmp_path / "t.csv"), np.array([[1, 0.5, 3, 4], [1, 1.5, 3, 5]]), {})


@pytest.mark.gui
def test_tracks_saved_by_the_plugin_open_again_in_napari(make_napari_viewer, tmp_path):
    """Save a Tracks layer with the plugin, open the file with it: the same tracks and divisions (the
    reader did not claim .csv, so the round trip failed); other CSV files are not claimed."""
    from napari_microseg._reader import get_reader

    viewer = make_napari_viewer(show=False)
    data = np.array([[1, 0, 10, 10], [1, 1, 11, 10], [2, 2, 12, 8], [2, 3, 13, 7], [3, 2, 12, 12], [3, 3, 13, 13]], float)
    viewer.add_tracks(data, graph={2: [1], 3: [1]}, name="lineage")
    viewer.layers.save(str(tmp_path / "lineage_tracks.csv"), plugin="napari-microseg")
    viewer.layers.clear()
    viewer.open(str(tmp_path / "lineage_tracks.csv"), plugin="napari-microseg")  # (napari's own reader claims CSVs too)
    layer = viewer.layers["lineage_tracks"]
    np.testing.assert_array_equal(layer.data, data)
    assert {int(k): [int(p) for p in v] for k, v in layer.graph.items()} == {2: [1], 3: [1]}
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    assert get_reader(str(tmp_path / "other.csv")) is None
    # batch track's merged table: one layer per movie (their ids restart), not one zig-zagging track
    import pandas as pd

    table = pd.read_csv(tmp_path / "lineage_tracks.csv")
    pd.concat([table.assign(image="a.tif"), table.assign(image="b.tif", x=table["x"] + 50)]).to_csv(
        tmp_path / "batch_tracks.csv", index=False)
    viewer.open(str(tmp_path / "batch_tracks.csv"), plugin="napari-microseg")
    assert len(viewer.layers["batch_tracks a"].data) == len(viewer.layers["batch_tracks b"].data) == len(data)
    from napari_microseg._reader import read_tracks_layer
    from napari_microseg.errors import InputError

    (tmp_path / "empty_tracks.csv").write_text(",".join(table.columns) + "\n")
    with pytest.raises(InputError, match="holds no tracks"):
        read_tracks_layer(str(tmp_path / "empty_tracks.csv"))


def test_an_image_and_its_labels_folder_twin_open_under_two_names(tmp_path):
    """images/x.tif and labels/x.tif opened together were "x" and "x [1]"; the labels are "x labels"."""
    import tifffile

    from napari_microseg._reader import read_layers

    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
        tifffile.imwrite(tmp_path / folder / "x.tif", np.zeros((16, 16), np.uint16))
    # napari hands files opened together to the reader one by one (a list only for "Open Files as Stack")
    (image, kw_image, kind_image), = read_layers(str(tmp_path / "images" / "x.tif"))
    (labels, kw_labels, kind_labels), = read_layers(str(tmp_path / "masks" / "x.tif"))
    assert (kw_image["name"], kind_image) == ("x", "image") and (kw_labels["name"], kind_labels) == ("x labels", "labels")


@pytest.mark.gui
def test_autolabel_stops_between_steps_and_skips_live_previews_of_huge_frames(make_napari_viewer, wait_worker,
                                                                             monkeypatch):
    """A frame is labelled in steps (Stop took effect only after the whole frame: 140 s on 8192 x 8192);
    the live preview of a frame over the size limit is not run (8 GB and minutes, on opening the dock)."""
    import napari_microseg.widgets.autolabel as autolabel_dock
    from napari_microseg.autolabel.fluorescence import FRAME_STEPS, autolabel_frame, autolabel_frame_iter
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    image = simulate_nuclei_image(shape=(96, 96), n_nuclei=6, seed=1)[0].astype(np.float32)
    steps = autolabel_frame_iter(image)
    events = []
    while True:
        try:
            events.append(next(steps).message)
        except StopIteration as done:
            labels = done.value
            break
    assert events == list(FRAME_STEPS) and np.array_equal(labels, autolabel_frame(image))
    viewer = make_napari_viewer(show=False)
    viewer.add_image(image, name="stain")
    widget = autolabel_dock.AutolabelWidget(viewer)
    widget.live.value = False
    widget.stain_layer.value = "stain"
    import skimage.segmentation

    import napari_microseg.autolabel.fluorescence as fluorescence

    watersheds = []
    monkeypatch.setattr(skimage.segmentation, "watershed", lambda *a, **k: watersheds.append(1))
    thresholds = fluorescence.local_otsu_threshold

    def stop_while_thresholding(*args, **kwargs):  # Stop pressed during the threshold step (in the worker)
        widget._stop_requested.set()
        return thresholds(*args, **kwargs)

    monkeypatch.setattr(fluorescence, "local_otsu_threshold", stop_while_thresholding)
    wait_worker(widget.preview())
    assert widget.preview_layer is None and not watersheds, (watersheds, widget.status.text())  # stopped before the watershed step
    monkeypatch.setattr(autolabel_dock, "LIVE_PREVIEW_MAX_PIXELS", 64 * 64)
    assert widget._live_preview() is None and "live preview is off for frames over" in widget.status.text()


def test_tracking_units_of_a_layer_with_non_square_pixels():
    """A layer whose Y and X scales differ (kept since this session) gave a KeyError in the Tracking dock.
    (Since session 30 the Y size is given too: the summary scales each axis by its own size.)"""
    from napari_microseg.widgets.tracking import physical_units

    units = physical_units({"scale": (2.0, 1.3, 0.65), "units": ("minute", "micrometer", "micrometer")})
    assert units == {"pixel_size": 0.65, "pixel_size_y": 1.3, "frame_interval": 2.0}


def test_classifier_resumed_into_another_runs_file(tmp_path, capsys):
    """`classify train --resume a.pt --out b.pt` replaced b.pt's training record (and, stopped early, kept
    b.pt's weights under a.pt's history) without --overwrite; it is refused, and with --overwrite the
    run's own epochs make b.pt."""
    from napari_microseg.cli import main
    from napari_microseg.io.models import read_model_file

    common = ["classify", "train", "images", "--simulated", "12", "--batch-size", "12"]
    assert main([*common, "--epochs", "1", "--out", str(tmp_path / "a.pt")]) == 0
    assert main([*common, "--epochs", "1", "--seed", "5", "--out", str(tmp_path / "b.pt")]) == 0
    before = (tmp_path / "b.pt").read_bytes()
    capsys.readouterr()
    assert main([*common, "--epochs", "2", "--resume", str(tmp_path / "a.pt"), "--out", str(tmp_path / "b.pt")]) == 2
    assert "exists" in capsys.readouterr().err and (tmp_path / "b.pt").read_bytes() == before
    assert main([*common, "--epochs", "2", "--resume", str(tmp_path / "a.pt"), "--out", str(tmp_path / "b.pt"),
                 "--overwrite"]) == 0
    training = read_model_file(tmp_path / "b.pt")["config"]["training"]
    assert training["best_epoch"] == 2 and training["resumed_from"] == str(tmp_path / "a.pt")


def test_evaluate_seg_with_one_prediction_file_scores_its_image_only(tmp_path, capsys):
    """--pred one file against a --gt folder: that image is scored, the others are not counted as missed."""
    import pandas as pd
    import tifffile

    from napari_microseg.cli import main

    gt = tmp_path / "gt"
    gt.mkdir()
    labels = np.zeros((32, 32), np.uint16)
    labels[4:10, 4:10] = 1
    for name in ("a.tif", "b.tif", "c.tif"):
        tifffile.imwrite(gt / name, labels)
    tifffile.imwrite(tmp_path / "a.tif", labels)
    assert main(["evaluate", "seg", "--gt", str(gt), "--pred", str(tmp_path / "a.tif"), "--out", str(tmp_path / "m.csv")]) == 0
    assert pd.read_csv(tmp_path / "m.csv").set_index("name").loc["ALL", "ap@0.50"] == pytest.approx(1.0)
    assert "not scored" in capsys.readouterr().err


def test_batch_glob_leaves_out_label_folders_below_its_fixed_part(tmp_path, monkeypatch):
    """README's `--input 'plate*/**/*.tif'` segmented plate2/masks/; label folders below the pattern's
    fixed part are left out, while a pattern that names a label folder itself takes its files."""
    import tifffile

    from napari_microseg.batch.runner import find_batch_inputs

    for sub in ("plate1", "plate1/labels", "plate2/masks", "plate2/well"):
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(tmp_path / sub / "a.tif", np.zeros((8, 8), np.uint16))
    monkeypatch.chdir(tmp_path)
    ignored: list = []
    found = find_batch_inputs("plate*/**/*.tif", ignored=ignored, skip_label_folders=True)
    assert sorted(rel for _, rel in found) == ["plate1/a.tif", "plate2/well/a.tif"]
    assert sorted(p.as_posix() for p in ignored) == ["plate1/labels/a.tif", "plate2/masks/a.tif"]
    assert len(find_batch_inputs(str(tmp_path / "plate1" / "labels" / "*.tif"), skip_label_folders=True)) == 1
    assert len(find_batch_inputs("plate*/**/*.tif")) == 4  # batch track reads labels


def test_a_classifier_that_gives_nan_is_neither_saved_nor_used(tmp_path, capsys):
    """A learning rate that blows the network up: training stops with the reason instead of saving it as
    the best model (exit 0), and a model file whose network gives NaN is refused at classification (every
    image came out "good", every particle the first class)."""
    import torch

    from napari_microseg.classify.predict import predict_proba
    from napari_microseg.cli import main
    from napari_microseg.errors import InputError
    from napari_microseg.io.models import read_model_file, save_model
    from napari_microseg.models import build_model

    common = ["classify", "train", "images", "--simulated", "40", "--epochs", "1", "--batch-size", "20"]
    assert main([*common, "--lr", "1e12", "--val-fraction", "0", "--out", str(tmp_path / "x.pt")]) == 2
    assert "training diverged" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()
    assert main([*common, "--out", str(tmp_path / "ok.pt")]) == 0
    payload = read_model_file(tmp_path / "ok.pt")
    net = build_model(payload["config"]["model"])
    net.load_state_dict(payload["state_dict"])
    with torch.no_grad():
        next(iter(net.parameters())).fill_(float("nan"))
    save_model(tmp_path / "nan.pt", net, payload["config"])
    x = np.random.default_rng(0).random((3, *payload["config"]["input_shape"])).astype(np.float32)
    assert predict_proba(str(tmp_path / "ok.pt"), x).shape[0] == 3
    with pytest.raises(InputError, match="no finite probabilities for 3 of 3"):
        predict_proba(str(tmp_path / "nan.pt"), x)


def test_classify_train_keeps_checkpoints_and_a_resumed_history(tmp_path, capsys):
    """An earlier run's resumable <out>.last.pt is not replaced without --overwrite (as `microseg train`
    refuses); resuming in place writes the whole history (the earlier epochs were dropped); too large a
    validation share or too many folds are one line, not a scikit-learn traceback."""
    import pandas as pd

    from napari_microseg.cli import main

    model = tmp_path / "r.pt"
    common = ["classify", "train", "images", "--simulated", "16", "--batch-size", "16"]
    assert main([*common, "--epochs", "2", "--out", str(model)]) == 0
    model.unlink()
    (tmp_path / "r.history.csv").unlink()
    assert main([*common, "--epochs", "2", "--out", str(model)]) == 2  # its .last.pt is still there
    assert "r.pt.last.pt" in capsys.readouterr().err
    assert main([*common, "--epochs", "3", "--out", str(model), "--resume", str(model)]) == 0
    assert list(pd.read_csv(tmp_path / "r.history.csv")["epoch"]) == [1, 2, 3]
    assert main([*common, "--epochs", "1", "--val-fraction", "0.95", "--out", str(tmp_path / "v.pt")]) == 2
    assert main([*common, "--epochs", "1", "--folds", "12", "--out", str(tmp_path / "f.pt")]) == 2
    err = capsys.readouterr().err
    assert "validation share 0.95" in err and "12 folds" in err and "Traceback" not in err


def test_classify_train_init_model_is_one_stage_on_the_real_images(tmp_path, capsys):
    """--init-model with --input fine-tunes on those images (it asked for --simulated, which it then did
    not use); a two-stage --strategy with --init-model, which silently did something else, is refused."""
    from napari_microseg.cli import main

    assert main(["simulate", "response", "--n", "12", "--out", str(tmp_path / "real"), "--seed", "3"]) == 0
    common = ["classify", "train", "images", "--input", str(tmp_path / "real"), "--init-model", "response_good_bad",
              "--epochs", "1", "--batch-size", "12"]
    assert main([*common, "--out", str(tmp_path / "a.pt")]) == 0
    assert main([*common, "--strategy", "pretrain_freeze", "--simulated", "8", "--out", str(tmp_path / "b.pt")]) == 2
    assert "trains in two stages from scratch" in capsys.readouterr().err


def test_evaluate_classes_scores_no_class_that_is_in_no_map(tmp_path, capsys):
    """A class in neither the truth nor the prediction scored 1.000 (a phantom name too); now NaN, and a
    name list that does not fit the maps' classes is said."""
    import pandas as pd
    import tifffile

    from napari_microseg.cli import main

    truth = np.zeros((16, 16), np.uint8)
    truth[:8] = 1
    for folder in ("gt", "pred"):
        (tmp_path / folder).mkdir()
        tifffile.imwrite(tmp_path / folder / "a.tif", truth)
    assert main(["evaluate", "classes", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"),
                 "--class-names", "bg,cell,ghost", "--out", str(tmp_path / "c.csv")]) == 0
    table = pd.read_csv(tmp_path / "c.csv").set_index("name")
    assert table.loc["cell", "f1"] == 1.0 and np.isnan(table.loc["ghost", "f1"])
    assert main(["evaluate", "classes", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"),
                 "--class-names", "bg", "--out", str(tmp_path / "d.csv")]) == 0
    assert "names 1 classes; the maps also hold 1: named by their index" in capsys.readouterr().err


@pytest.mark.gui
def test_segmentation_dock_sends_only_what_applies_and_pairs_corrections_right(make_napari_viewer, wait_worker,
                                                                              tmp_path):
    """A diameter left from a nuclei model is not sent with a CCD class model (hidden, it failed every
    run); a result's corrections go with the image it was segmented from; frames are kept per layer,
    not per name; a model trained meanwhile is offered first; batch takes 'remove border objects'."""
    from napari_microseg.pretrained import resolve_model
    from napari_microseg.widgets.segmentation import FILE_CHOICE, RECENT_MODELS, SegmentationWidget, add_recent_model

    viewer = make_napari_viewer(show=False)
    rng = np.random.default_rng(0)
    image = np.zeros((96, 96), np.float32)
    for y, x in rng.integers(10, 86, (8, 2)):
        image[y - 4:y + 4, x - 4:x + 4] = 1.0
    viewer.add_image(image + 0.05 * rng.random((96, 96), np.float32), name="cells")
    viewer.add_image(rng.random((96, 96)).astype(np.float32), name="other")
    widget = SegmentationWidget(viewer)
    widget.image_layer.value = "cells"
    widget.model_choice.value = "nuclei_fluorescence_fast"
    widget.diameter.value = 19.0
    assert widget._diameter_setting() == 19.0
    widget.model_choice.value = FILE_CHOICE
    widget.model_file.value = str(resolve_model("ccd_classes"))
    assert widget._diameter_setting() is None  # hidden for class models: not sent
    widget.model_choice.value = "nuclei_fluorescence_fast"
    widget.diameter.value = 0.0
    wait_worker(widget.segment())
    result = widget.result_layer
    widget.labels_for_training.value = result.name
    widget.image_layer.value = "other"  # another image of the same shape
    assert widget.add_to_training_set() == 0 and "was segmented from 'cells'" in widget.status.text()
    widget.image_layer.value = "cells"
    assert widget.add_to_training_set() == 1
    viewer.layers["cells"].name = "renamed"
    widget.image_layer.value = "renamed"
    assert widget.add_to_training_set() == 1 and "updated" in widget.status.text()  # the same layer and frame
    add_recent_model(str(tmp_path / "just_trained.pt"))
    try:
        assert widget.model_choice.choices[0] == str(tmp_path / "just_trained.pt")
    finally:
        RECENT_MODELS.remove(str(tmp_path / "just_trained.pt"))
    import tifffile

    folder = tmp_path / "plate"
    folder.mkdir()
    tifffile.imwrite(folder / "edge.tif", np.roll(viewer.layers["renamed"].data, 40, axis=1))  # nuclei cut by the edge
    widget.batch_input.value, widget.batch_out.value, widget.batch_workers.value = str(folder), str(tmp_path / "b"), 0
    widget.remove_border.value = True
    wait_worker(widget.run_batch())
    labels = tifffile.imread(tmp_path / "b" / "labels" / "edge.tif")
    assert labels.any() and not np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]).any(), \
        widget.status.text()


@pytest.mark.gui
def test_a_corrected_stack_export_joins_the_first_one(make_napari_viewer, wait_worker, tmp_path):
    """Whole-stack run, Export, erase one object, Export again: both objects tables hold the layer's stack-wide
    ids as label and each frame's own id as frame_label (the first one held the frame ids as label: one layout
    now), so an untouched object is found in both."""
    import pandas as pd

    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse
    from napari_microseg.widgets.segmentation import SegmentationWidget

    sim = simulate_nuclei_timelapse(n_frames=3, shape=(96, 96), n_nuclei=8, seed=4)
    viewer = make_napari_viewer(show=False)
    viewer.add_image(np.asarray(sim.fluorescence, np.float32), name="movie")
    widget = SegmentationWidget(viewer)
    widget.image_layer.value, widget.model_choice.value, widget.scope.value = "movie", "nuclei_fluorescence_fast", "whole stack"
    widget.export_dir.value = str(tmp_path)
    wait_worker(widget.segment())
    widget.export()
    layer = widget.result_layer
    data = np.asarray(layer.data)
    erased = int(data[0][data[0] > 0][0])
    data[data == erased] = 0
    layer.data = data
    wait_worker(widget.export())
    first, second = pd.read_csv(tmp_path / "objects.csv"), pd.read_csv(tmp_path / "objects_2.csv")
    assert "frame_label" in first and "frame_label" in second and first["label"].is_unique
    assert len(second) == len(first) - 1
    joined = second.merge(first, on=["t", "label", "frame_label"], suffixes=("", "_first"))
    assert len(joined) == len(second)
    np.testing.assert_allclose(joined["area"], joined["area_first"])


@pytest.mark.gui
def test_result_layers_turn_with_a_rotated_image(make_napari_viewer):
    """An image placed with rotate (and a stack's frame result of it) gets result layers that lie on it."""
    from napari_microseg.widgets._base import layer_geometry

    viewer = make_napari_viewer(show=False)
    image = viewer.add_image(np.zeros((20, 30), np.float32), rotate=30, scale=(0.5, 0.5), translate=(5, 7))
    result = viewer.add_labels(np.zeros((20, 30), np.uint8), **layer_geometry(image, 2))
    for point in ((3.0, 4.0), (19.0, 29.0)):
        np.testing.assert_allclose(result.data_to_world(point), image.data_to_world(point), atol=1e-9)
    stack = viewer.add_image(np.zeros((3, 20, 30), np.float32), rotate=45)  # a rotation in (Y, X)
    frame = viewer.add_labels(np.zeros((20, 30), np.uint8), **layer_geometry(stack, 2))
    np.testing.assert_allclose(frame.data_to_world((3.0, 4.0)), stack.data_to_world((1.0, 3.0, 4.0))[1:], atol=1e-9)
    assert "rotate" not in layer_geometry(viewer.add_image(np.zeros((20, 30), np.float32)), 2)
