"""Behaviour found broken in session 26 (bug hunts and the known-gaps list); each test fails without its fix."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


def test_tracking_dock_jump_and_split_follow_a_rotated_time_scaled_layer(make_napari_viewer, wait_worker):
    """A labels stack rotated 90 degrees in Y-X, 2 min per frame, starting at minute 6: a table row
    centres the camera on the track's first object where the result layers draw it, and Split cuts
    at the frame the viewer shows (both used scale and translate only, so the camera went elsewhere)."""
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse
    from napari_microseg.widgets.tracking import TrackingWidget

    sim = simulate_nuclei_timelapse(n_frames=8, shape=(96, 128), n_nuclei=5, seed=3)
    viewer = make_napari_viewer(show=False)
    rotate = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])  # 90 degrees in the Y-X plane, time left alone
    labels = viewer.add_labels(sim.labels, name="nuclei", scale=(2.0, 0.5, 0.5), translate=(6.0, 10.0, 20.0),
                               rotate=rotate)
    widget = TrackingWidget(viewer)
    widget.labels_layer.value = "nuclei"
    wait_worker(widget.track())
    assert widget.result.n_tracks > 1, widget.status.text()
    table = widget.result.table
    longest = int(table.groupby("track_id").t.size().idxmax())
    row = next(r for r in range(widget.table.rowCount()) if int(widget.table.item(r, 0).data(0)) == longest)
    widget.table.selectRow(row)  # as a click on the row
    first = table[table.track_id == longest].sort_values("t").iloc[0]
    expected = labels.data_to_world((first.t, first.y, first.x))
    assert abs(expected[1] - (10 + 0.5 * first.y)) > 1  # the rotation moves the object: the test can tell
    np.testing.assert_allclose(viewer.camera.center[-2:], expected[1:], atol=1e-6)
    assert viewer.dims.point[0] == pytest.approx(expected[0])

    split_at = int(first.t) + 3
    viewer.dims.set_point(0, 6.0 + 2.0 * split_at)
    wait_worker(widget.split_selected())
    assert f"at frame {split_at}" in widget.status.text()
    after = widget.result.table
    assert int(after[after.track_id == longest].t.max()) == split_at - 1
    # the result layers gone, the jump still lands where the labels lie
    viewer.layers.remove(widget.tracks_layer)
    viewer.layers.remove(widget.relabelled_layer)
    widget.table.clearSelection()
    widget.table.selectRow(row)
    np.testing.assert_allclose(viewer.camera.center[-2:], expected[1:], atol=1e-6)


def test_segmentation_export_of_a_large_layer_checks_and_measures_in_a_worker(make_napari_viewer, wait_worker,
                                                                            tiny_nuclei_model, tmp_path, monkeypatch):
    """A result layer above the GUI-thread limit: Export copies, compares and measures it in a worker (it
    was copied, and hashed, on the GUI thread: seconds and gigabytes for a long movie segmented on one
    frame); the lazy movie's frames without objects are not read."""
    import dask.array as da

    import napari_microseg.widgets.segmentation as seg
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse

    sim = simulate_nuclei_timelapse(n_frames=4, shape=(96, 96), n_nuclei=8, seed=5)
    frames_read = []

    def read(block, block_info=None):
        frames_read.append(block_info[0]["chunk-location"][0])
        return block

    movie = da.from_array(sim.fluorescence, chunks=(1, 96, 96)).map_blocks(read, dtype=sim.fluorescence.dtype)
    viewer = make_napari_viewer(show=False)
    viewer.add_image(movie, name="movie")
    widget = seg.SegmentationWidget(viewer)
    widget.image_layer.value = "movie"
    widget.model_choice.value = seg.FILE_CHOICE
    widget.model_file.value = str(tiny_nuclei_model)
    widget.export_dir.value = str(tmp_path)
    viewer.dims.set_current_step(0, 2)
    wait_worker(widget.segment())  # the current frame only
    layer = viewer.layers["movie segmented"]
    assert layer.data.shape == (4, 96, 96) and layer.data[2].any(), widget.status.text()
    monkeypatch.setattr(seg, "EXPORT_CHECK_BYTES", 0)
    monkeypatch.setattr("napari_microseg.widgets._base.GUI_COPY_BYTES", 0)

    worker = widget.export()  # nothing corrected: the run's own tables, after the check in the worker
    assert worker is not None
    assert widget.export() is None and "press Export again" in widget.status.text()  # one export at a time
    wait_worker(worker)
    assert "corrected" not in widget.status.text()
    written = widget.status.text().split("written: ", 1)[1].split(", ")
    assert pd.read_csv(written[0])["count"].sum() == len(widget.result.objects) > 1

    gone = int(np.unique(layer.data[2])[-1])
    layer.data[layer.data == gone] = 0  # a script's change: no paint event
    frames_read.clear()
    worker = widget.export()
    wait_worker(worker)
    assert "corrected labels" in widget.status.text() and layer.editable
    written = widget.status.text().split("written: ", 1)[1].split(", ")
    counts = pd.read_csv(written[0])
    assert list(counts["t"]) == [2] and int(counts["count"].iloc[0]) == len(widget.result.objects) - 1
    assert gone not in set(pd.read_csv(written[1])["label"])
    assert set(frames_read) == {2}  # mean intensities from the one frame with objects


def test_objects_the_tracker_cannot_link_stay_in_every_table(tmp_path, capsys):
    """An object that moves further than the search radius: btrack dropped it, so it vanished from
    tracks.csv, counts.csv and the relabelled stack; now it is a one-frame track of its own, and the
    run says how many there were."""
    import tifffile

    from napari_microseg.cli import main
    from napari_microseg.tracking.track import run_tracking, track_warnings

    stack = np.zeros((5, 64, 64), np.uint16)
    for t in range(5):
        stack[t, 16:24, 6 + 3 * t:14 + 3 * t] = 1  # moves 3 px per frame
        stack[t, 40:48, 40:48] = 2  # stays
    result = run_tracking(stack, config="particle", max_search_radius=1.0)
    assert len(result.table) == 10  # every object of the labels
    assert result.table.groupby("t").size().tolist() == [2] * 5
    assert (result.relabelled > 0).sum() == (stack > 0).sum()
    # (session 31: the motion model reaches the search radius, so the moving disc is tracked in pieces, said)
    assert any("begin one frame after another ended 1-3 px away" in note for note in track_warnings(result))
    tifffile.imwrite(tmp_path / "labels.tif", stack)
    assert main(["track", "--labels", str(tmp_path / "labels.tif"), "--out", str(tmp_path / "out"),
                 "--max-search-radius", "1"]) == 0
    assert "raise the search radius" in capsys.readouterr().err
    assert pd.read_csv(tmp_path / "out" / "counts.csv")["count"].tolist() == [2] * 5
    linked = run_tracking(stack, config="particle", max_search_radius=10.0)
    assert linked.info["n_unlinked"] == 0 and linked.n_tracks == 2 and not track_warnings(linked)


def test_track_never_removes_its_input_from_the_ctc_folder(tmp_path, capsys):
    """--labels kept in out/ctc_RES under a CTC mask name: --ctc --overwrite (and --overwrite without
    --ctc) refused it before any work; it was deleted as a stale mask of an earlier run."""
    import tifffile

    from napari_microseg.cli import main

    out = tmp_path / "out"
    (out / "ctc_RES").mkdir(parents=True)
    labels = out / "ctc_RES" / "mask009.tif"
    stack = np.zeros((5, 64, 64), np.uint16)
    stack[:, 10:18, 10:18] = 1
    stack[:, 30:38, 30:38] = 2
    tifffile.imwrite(labels, stack)
    (out / "ctc_RES" / "res_track.txt").write_text("1 0 4 0\n")
    (out / "track_config.json").write_text("{}")  # an earlier run's export (a user's own folder is left alone)
    before = labels.read_bytes()
    for extra in (["--ctc"], []):
        assert main(["track", "--labels", str(labels), "--out", str(out), "--overwrite", *extra]) == 2
        assert "mask009.tif: is one of this command's inputs" in capsys.readouterr().err
        assert labels.read_bytes() == before
    assert not (out / "tracks.csv").exists()


def test_interrupted_track_leaves_the_earlier_results_whole(tmp_path, monkeypatch):
    """Ctrl-C while the outputs are written: the folder keeps the earlier run's files, all of them (the
    new tracks.csv stood beside the old counts and masks, and the metrics then failed). (A Ctrl-C while
    they are moved into place waits until all are there: the next test.)"""
    import tifffile

    import napari_microseg.tracking.export as export
    from napari_microseg.cli import main

    stack = np.zeros((5, 64, 64), np.uint16)
    for t in range(5):
        stack[t, 10:18, 10 + t:18 + t] = 1
        stack[t, 40:48, 40:48] = 2
    tifffile.imwrite(tmp_path / "labels.tif", stack)
    out = tmp_path / "out"
    assert main(["track", "--labels", str(tmp_path / "labels.tif"), "--out", str(out), "--ctc", "--config", "particle"]) == 0
    names = ["tracks.csv", "counts.csv", "track_summary.csv", "tracks_labels.tif", "track_config.json",
             "ctc_RES/res_track.txt", *(f"ctc_RES/{p.name}" for p in (out / "ctc_RES").glob("mask*.tif"))]
    earlier = {name: (out / name).read_bytes() for name in names}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "write_config_json", interrupted)  # after tracks.csv, counts.csv ... are written
    assert main(["track", "--labels", str(tmp_path / "labels.tif"), "--out", str(out), "--ctc", "--overwrite",
                 "--image", str(tmp_path / "labels.tif")]) == 130  # its tables would hold intensities
    assert {name: (out / name).read_bytes() for name in names} == earlier
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no staging folder left


def test_interrupts_deferred_holds_ctrl_c_until_its_block_has_run():
    import os
    import signal

    from napari_microseg.cli._signals import interrupts_deferred

    got = []
    # Python's own Ctrl-C handler, as in a terminal (a shell's background job starts with SIGINT ignored)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with interrupts_deferred():
                os.kill(os.getpid(), signal.SIGINT)
                got.append("finished")
        assert got == ["finished"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is back
    finally:
        signal.signal(signal.SIGINT, before)


def test_evaluate_tracks_refuses_a_tracks_table_edited_apart_from_its_masks(tmp_path, capsys):
    """A row deleted from tracks.csv in a spreadsheet: one line naming the frame and the id (it was a
    traccuracy KeyError traceback); a CTC folder whose track file is not 'L B E P' numbers: one line."""
    import tifffile

    from napari_microseg.cli import main
    from test_track_core import division_stack

    labels, _ = division_stack()
    tifffile.imwrite(tmp_path / "labels.tif", labels.astype(np.uint16))
    out = tmp_path / "out"
    assert main(["track", "--labels", str(tmp_path / "labels.tif"), "--out", str(out), "--ctc"]) == 0
    table = pd.read_csv(out / "tracks.csv")
    gone = table.iloc[1]
    table.drop(index=1).to_csv(out / "tracks.csv", index=False)
    capsys.readouterr()
    assert main(["evaluate", "tracks", "--gt", str(out / "ctc_RES"), "--pred", str(out), "--out", str(tmp_path / "m.csv")]) == 2
    err = capsys.readouterr().err
    assert f"disagree in frame {int(gone.t)}" in err and f"[{int(gone.track_id)}]" in err and "Traceback" not in err
    (out / "ctc_RES" / "res_track.txt").write_text("a b c d\n")
    assert main(["evaluate", "tracks", "--gt", str(out / "ctc_RES"), "--pred", str(out / "ctc_RES"),
                 "--out", str(tmp_path / "m2.csv")]) == 2
    assert "not a readable Cell Tracking Challenge folder" in capsys.readouterr().err


def test_a_stack_of_one_object_id_is_labels_not_a_mask():
    """One nucleus labelled 5 in every frame: tracked as label 5 (it was taken for a 0/1 mask, said so,
    and came out as label 1, which no longer joined the user's own tables); 0/1, 0/255, bool and a value
    marking several separate objects stay masks."""
    from napari_microseg.measure.labels import masks_to_labels
    from napari_microseg.tracking.track import run_tracking

    stack = np.zeros((4, 32, 32), np.uint16)
    for t in range(4):
        stack[t, 8:16, 8 + t:16 + t] = 5
    result = run_tracking(stack, config="particle")
    assert not result.info.get("mask_converted") and set(result.table["label"]) == {5}
    for mask in (stack > 0, (stack > 0).astype(np.uint8), (stack > 0).astype(np.uint8) * 255):
        assert masks_to_labels(mask)[1]
    assert not masks_to_labels(stack)[1]
    camera = np.zeros((2, 32, 32), np.uint16)  # a 12-bit camera's 0/4095 mask of several objects: a mask
    camera[:, 2:6, 2:6] = camera[:, 20:24, 20:24] = 4095
    found, converted = masks_to_labels(camera)
    assert converted and [len(np.unique(frame)) - 1 for frame in found] == [2, 2]


def test_division_f1_is_zero_when_every_division_is_missed():
    """One true division found a frame too late (no frame buffer): precision 0, recall 0, F1 0; none found
    at all (precision undefined): F1 0 too. It was NaN, which averages over movies then skipped."""
    from napari_microseg.tracking.metrics import ctc_scores
    from napari_microseg.tracking.track import run_tracking
    from test_track_core import division_stack

    labels, _ = division_stack()
    truth = run_tracking(labels, config="cell")
    assert truth.graph  # the stack holds a division
    late = labels.copy()
    t_div = min(int(truth.table[truth.table.track_id == d].t.min()) for d in truth.graph)
    late[t_div] = labels[t_div - 1]  # the mother one frame longer: the division comes a frame late
    scores = ctc_scores(truth, run_tracking(late, config="cell"), division_frame_buffer=0)
    assert scores["division_precision"] == 0 and scores["division_recall"] == 0
    assert scores["division_f1"] == 0.0
    none_found = ctc_scores(truth, run_tracking(labels, config="particle"))  # no divisions at all: precision 0/0
    assert none_found["true_divisions"] >= 1 and none_found["division_recall"] == 0
    assert none_found["division_f1"] == 0.0


def _rgb_training_viewer(make_napari_viewer, tmp_path, n_frames: int = 3):
    """A viewer with an RGB (T, Y, X, 3) movie of simulated nuclei and its labels; a Training dock set
    for a tiny run into tmp_path/m.pt."""
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse
    from napari_microseg.widgets.training import TrainingWidget

    sim = simulate_nuclei_timelapse(n_frames=n_frames, shape=(64, 64), n_nuclei=6, seed=4)
    grey = (sim.fluorescence / sim.fluorescence.max() * 255).astype(np.uint8)
    viewer = make_napari_viewer(show=False)
    viewer.add_image(np.stack([grey] * 3, axis=-1), name="rgb movie", rgb=True)
    viewer.add_labels(sim.labels.astype(np.uint16), name="nuclei")
    widget = TrainingWidget(viewer)
    widget.image_layer.value = ["rgb movie"]
    widget.labels_layer.value = ["nuclei"]
    widget.patch.value, widget.epochs.value, widget.patches_per_epoch.value, widget.batch_size.value = 32, 1, 4, 2
    widget.val_fraction.value = 0.34
    widget.out_path.value = str(tmp_path / "m.pt")
    return viewer, widget


def test_training_dock_reads_rgb_and_copies_labels_in_the_worker(make_napari_viewer, wait_worker, tmp_path):
    """Train on an RGB movie: its grey is made where it is read (the whole stack's mean ran on the GUI
    thread: 4 s for 100 frames of 1024 x 1024), the labels are the ones Train was pressed on, and the
    model's record names validation frames by layer, not "image 2"."""
    import dask.array as da

    from napari_microseg.io.models import read_model_config
    from napari_microseg.widgets._base import grey_image

    viewer, widget = _rgb_training_viewer(make_napari_viewer, tmp_path)
    assert isinstance(grey_image(viewer.layers["rgb movie"]), da.Array)  # nothing computed on this thread
    labels = viewer.layers["nuclei"]
    worker = widget.train()
    assert worker is not None, widget.status.text()
    labels.data[:] = 0  # erased once Train is pressed: the run trains on the labels it was given
    wait_worker(worker)
    assert (tmp_path / "m.pt").is_file(), widget.status.text()
    record = read_model_config(tmp_path / "m.pt")["training"]
    held_out = " ".join(str(v) for v in record.get("validation_images", []))
    assert "rgb movie[" in held_out and "image " not in held_out, record.get("validation_images")


def test_training_dock_resumes_a_run_named_by_its_checkpoint(make_napari_viewer, wait_worker, tmp_path):
    """The file dialog offers m.pt.last.pt: with 'resume' it continues m.pt's run (it trained into the
    checkpoint's name, destroying it); without, it is refused. A resumed run records the learning rate
    its optimiser went on with, not the form's."""
    from napari_microseg.io.models import read_model_config
    from napari_microseg.training.trainer import train
    from napari_microseg.errors import InputError

    viewer, widget = _rgb_training_viewer(make_napari_viewer, tmp_path)
    widget.lr.value = 0.001
    wait_worker(widget.train())
    model, checkpoint = tmp_path / "m.pt", tmp_path / "m.pt.last.pt"
    assert model.is_file() and checkpoint.is_file()
    widget.out_path.value = str(checkpoint)
    assert widget.train() is None and "tick 'resume'" in widget.status.text()
    widget.resume.value = True
    widget.epochs.value = 2
    widget.lr.value = 0.01
    wait_worker(widget.train())
    assert str(widget.out_path.value) == str(model)
    config = read_model_config(model)["training"]
    assert config["epochs_run"] == 2, config
    assert config["config"]["lr"] == pytest.approx(0.001)
    assert not (tmp_path / "m.pt.last.pt.last.pt").exists()
    with pytest.raises(InputError, match="resumable checkpoint"):
        next(train({"epochs": 1}, (np.zeros((32, 32)), np.zeros((32, 32), int)), out_path=checkpoint))


def test_simulation_dock_reports_the_seed_it_used_and_labels_carry_features(make_napari_viewer, wait_worker):
    """The seed box changed while a run goes: the message and the layers give the seed the data were
    made with (it said the box's new value); nuclei and response-area labels carry a features table
    with 'label' (and the areas their class names, which training takes as class names)."""
    from napari_microseg.widgets.simulation import SimulationWidget

    viewer = make_napari_viewer(show=False)
    widget = SimulationWidget(viewer)
    widget.seed.value = 5
    form = widget.forms[widget.domain.value]
    for w in form:
        if w.name == "n_frames":
            w.value = 2
        if w.name == "size":
            w.value = 64
    worker = widget.generate()
    widget.seed.value = 99
    wait_worker(worker)
    assert "(seed 5)" in widget.status.text()
    labels = viewer.layers["sim nuclei labels"]
    assert labels.metadata["simulation_seed"] == 5
    assert set(labels.features["label"]) == set(np.unique(labels.data)) - {0}
    widget.domain.value = "response images [R]"
    for w in widget.forms[widget.domain.value]:
        if w.name == "n_images":
            w.value = 2
    wait_worker(widget.generate())
    areas = viewer.layers["sim response areas (1 artefact, 2 integration)"]
    assert list(areas.features["class"]) == ["background", "artefact", "integration"]


def test_evaluate_classes_refuses_maps_that_are_not_class_maps(tmp_path, capsys):
    """A prediction folder of instance labels or images (values in the tens of thousands): one line, exit 2
    (the confusion matrix grew to (largest value)^2 cells: 32 GiB, the process was killed)."""
    import tifffile

    from napari_microseg.cli import main

    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    truth = np.zeros((64, 64), np.uint8)
    truth[10:20, 10:20] = 3
    wrong = np.zeros((64, 64), np.uint16)
    wrong[10:20, 10:20] = 40000
    tifffile.imwrite(tmp_path / "gt" / "a.tif", truth)
    tifffile.imwrite(tmp_path / "pred" / "a.tif", wrong)
    assert main(["evaluate", "classes", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"),
                 "--out", str(tmp_path / "m.csv")]) == 2
    assert "holds the value 40000" in capsys.readouterr().err and not (tmp_path / "m.csv").exists()
    tifffile.imwrite(tmp_path / "pred" / "a.tif", truth)  # a class map: scored
    assert main(["evaluate", "classes", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"),
                 "--out", str(tmp_path / "m.csv")]) == 0


def test_classify_train_keeps_an_earlier_cross_validation(tmp_path, capsys):
    """--folds writes <model>.cv_folds.csv and .cv_predictions.csv: an earlier run's are not replaced
    without --overwrite (they were, silently); a classes.csv label that is neither good nor bad is named."""
    from napari_microseg.cli import main

    out = tmp_path / "prof.pt"
    folds, predictions = tmp_path / "prof.cv_folds.csv", tmp_path / "prof.cv_predictions.csv"
    folds.write_text("earlier\n")
    predictions.write_text("earlier\n")
    assert main(["classify", "train", "profiles", "--simulated", "20", "--epochs", "1", "--folds", "2",
                 "--out", str(out)]) == 2
    assert "prof.cv_folds.csv" in capsys.readouterr().err
    assert folds.read_text() == predictions.read_text() == "earlier\n" and not out.exists()

    import tifffile

    folder = tmp_path / "resp"
    (folder / "images").mkdir(parents=True)
    for i in range(4):
        tifffile.imwrite(folder / "images" / f"r{i}.tif", np.full((48, 48), 500 + i, np.uint16))
    (folder / "classes.csv").write_text("image,label\nimages/r0.tif,Good\nimages/r1.tif,Spike\n"
                                        "images/r2.tif,good\nimages/r3.tif,bad\n")
    assert main(["classify", "train", "images", "--input", str(folder), "--strategy", "real", "--epochs", "1",
                 "--out", str(tmp_path / "m.pt")]) == 2
    assert "'Spike'" in capsys.readouterr().err


def test_a_fits_file_of_several_image_hdus_says_which_it_read(tmp_path):
    """One HDU per amplifier: the first image HDU is read and the others are named in a warning (they
    were left out without a word)."""
    from astropy.io import fits

    from napari_microseg.errors import MicrosegWarning
    from napari_microseg.io.images import read_image

    path = tmp_path / "mef.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones((8, 8), np.float32), name="AMP1"),
                  fits.ImageHDU(np.zeros((8, 8), np.float32), name="AMP2")]).writeto(path)
    with pytest.warns(MicrosegWarning, match=r"read HDU 1 \(AMP1\).*HDU 2 \(AMP2\)"):
        assert read_image(path).data.sum() == 64
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(path, hdu=2).data.sum() == 0  # chosen: no warning


def test_a_two_tap_ccd_frame_with_a_modest_pedestal_step_is_levelled():
    """Two amplifiers whose pedestals differ by 450 ADC at 60 ADC read noise (7.5 sd): a tap boundary at
    the middle column or row is found (it needed 10 sd, so half the frame was called glowing or its
    clusters were lost); a glowing band that ends at the middle without filling its half is no tap."""
    from napari_microseg.autolabel.ccd import autolabel_ccd, detect_taps
    from napari_microseg.simulate.ccd import simulate_ccd_frame

    frame = simulate_ccd_frame(shape=(256, 256), seed=3, glow_probability=0.0)
    assert detect_taps(frame.image) == ([], [])
    right = frame.image.astype(np.float32).copy()
    right[:, 128:] += 450
    lower = frame.image.astype(np.float32).copy()
    lower[128:, :] += 450
    assert detect_taps(right) == ([], [128]) and detect_taps(lower) == ([128], [])
    # the clusters found on the frame without a step are found with it (session 31: compared with the
    # same frame's own result, not a fraction of the truth fitted to one seed's layout)
    level = ((autolabel_ccd(frame.image.astype(np.float32)) == 3) & (frame.classes == 3)).sum()
    assert level > 0
    for image in (right, lower):
        found = autolabel_ccd(image)
        assert (found == 1).sum() == 0  # no glow
        assert ((found == 3) & (frame.classes == 3)).sum() >= 0.9 * level
    band = frame.image.astype(np.float32).copy()
    band[:, 80:128] += 1450  # glow over 48 of the left half's 128 columns, ending at the middle
    assert detect_taps(band)[1] == []
    strong = frame.image.astype(np.float32).copy()
    strong[:, 128:] += 3000  # a 50 sd tap step with glow in the other half: a tap, as it always was
    strong[:, 20:60] += 2000
    assert detect_taps(strong) == ([], [128])


def test_a_ccd_frame_three_times_too_dim_is_warned_about():
    """A frame in other units (electrons at gain 3: a third of the ADC) loses most hot pixels and glow
    with the class model; it was passed as fitting (the tolerance was 5 x): class models warn from 2.5 x,
    and the simulated frames they were trained on, at their own scale, draw no warning."""
    from napari_microseg.io.models import read_model_config
    from napari_microseg.pretrained import pretrained_path
    from napari_microseg.simulate.ccd import simulate_ccd_frame
    from napari_microseg.training.normalize import scale_mismatch

    config = read_model_config(pretrained_path("ccd_classes"))
    frames = [simulate_ccd_frame(shape=(256, 256), seed=seed).image.astype(np.float32) for seed in range(12)]
    assert not any(scale_mismatch(frame, config) for frame in frames)
    warned = [scale_mismatch(frame / 3, config) for frame in frames]
    assert sum(w is not None for w in warned) >= 6 and "far below" in next(w for w in warned if w)


def test_closing_napari_mid_training_leaves_the_history_beside_the_model(make_napari_viewer, qtbot, tmp_path):
    """The viewer closed during a run: the trainer keeps its best model, and now its history.csv too, as
    after Stop (the dock that wrote it is gone)."""
    from qtpy.QtCore import QThreadPool

    from napari_microseg.io.models import read_model_config

    viewer, widget = _rgb_training_viewer(make_napari_viewer, tmp_path)
    widget.epochs.value, widget.patches_per_epoch.value = 40, 8
    assert widget.train() is not None
    qtbot.waitUntil(lambda: "epoch 2/40" in widget.status.text(), timeout=120000)
    viewer.close()
    qtbot.waitUntil(lambda: QThreadPool.globalInstance().activeThreadCount() == 0, timeout=120000)
    record = read_model_config(tmp_path / "m.pt")["training"]
    assert record["stop_reason"] == "stopped"
    history = pd.read_csv(tmp_path / "m.history.csv")
    assert list(history["epoch"]) == [row["epoch"] for row in record["history"]] and len(history) >= 1


def test_resuming_a_run_without_a_distance_head_with_one_asked_says_so(tmp_path):
    """'distance head' ticked when resuming a run that has none: the message says that is the mismatch
    (it said only "checkpoint has 3 outputs but three_class needs 4")."""
    from napari_microseg.errors import InputError
    from napari_microseg.progress import drain
    from napari_microseg.simulate.nuclei import simulate_nuclei_image
    from napari_microseg.training.trainer import train

    image, labels = simulate_nuclei_image(shape=(64, 64), n_nuclei=6, seed=1)
    settings = {"output_mode": "three_class", "epochs": 1, "patch_size": 32, "patches_per_epoch": 2, "batch_size": 2,
                "val_fraction": 0.0, "preset": "n"}
    drain(train(settings, (image, labels), out_path=tmp_path / "m.pt"))
    with pytest.raises(InputError, match="needs 4 with a distance head; the run to resume has none"):
        drain(train({**settings, "epochs": 2, "distance_head": True}, (image, labels), out_path=tmp_path / "m.pt",
                    resume=tmp_path / "m.pt"))


def test_train_multiclass_on_object_ids_warns(tmp_path, capsys):
    """microseg train --output-mode multiclass on instance labels (one id per particle) built a model of
    one "class" per object without a word; it now warns as the Training dock does."""
    import tifffile

    from napari_microseg.cli import main
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    image, labels = simulate_nuclei_image(shape=(64, 64), n_nuclei=8, seed=2)
    tifffile.imwrite(tmp_path / "image.tif", image)
    tifffile.imwrite(tmp_path / "labels.tif", labels.astype(np.uint16))
    assert main(["train", "--images", str(tmp_path / "image.tif"), "--labels", str(tmp_path / "labels.tif"),
                 "--out", str(tmp_path / "m.pt"), "--output-mode", "multiclass", "--epochs", "1", "--patch", "32",
                 "--patches-per-epoch", "2", "--batch-size", "2", "--preset", "n"]) == 0
    assert "look like object ids, not classes" in capsys.readouterr().err


def test_autolabel_ccd_on_an_all_nan_frame_says_one_line(tmp_path, capsys):
    """An all-NaN FITS frame: the one-line refusal, without numpy's RuntimeWarning and source line first."""
    import warnings

    from astropy.io import fits

    from napari_microseg.cli import main

    fits.PrimaryHDU(np.full((32, 32), np.nan, np.float32)).writeto(tmp_path / "nan.fits")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert main(["autolabel", "ccd", "--input", str(tmp_path / "nan.fits"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "NaN or infinite" in err and "RuntimeWarning" not in err


def test_autolabel_preview_keeps_corrections_written_into_its_array(make_napari_viewer, wait_worker):
    """A correction written into the preview layer's array (the console, a script: no paint event) was
    replaced by the next preview; it is now kept as its own layer, as brush edits are."""
    from napari_microseg.simulate.nuclei import simulate_nuclei_image
    from napari_microseg.widgets.autolabel import AutolabelWidget

    image, _ = simulate_nuclei_image((128, 128), 10, seed=6)
    viewer = make_napari_viewer(show=False)
    viewer.add_image(image, name="stain")
    widget = AutolabelWidget(viewer)
    widget.live.value = False
    widget.stain_layer.value = "stain"
    wait_worker(widget.preview())
    widget.preview_layer.data[10:20, 10:20] = 777
    widget.preview_layer.refresh()
    widget.otsu_window.value = 41
    wait_worker(widget.preview())
    kept = {layer.name: int((layer.data == 777).sum()) for layer in viewer.layers if layer.name.startswith("auto-label")}
    assert kept.get("auto-label preview (edited)") == 100 and "your edits are kept" in widget.status.text(), kept
    assert kept.get("auto-label preview") == 0
    widget.min_diameter.value = widget.min_diameter.value + 1  # nothing edited since: the preview is replaced
    wait_worker(widget.preview())
    assert "your edits are kept" not in widget.status.text()


def test_table_filling_sizes_columns_once_and_restores_the_table(qtbot):
    """filling(): the table is filled without per-cell column re-measuring (256 QC tiles took 5.6 s of the
    GUI thread), and afterwards its resize modes, signals and painting are as before."""
    from qtpy.QtWidgets import QHeaderView, QTableWidget, QTableWidgetItem

    from napari_microseg.widgets._base import filling

    table = QTableWidget(0, 3)
    qtbot.addWidget(table)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
    seen = []
    table.itemChanged.connect(seen.append)
    with filling(table):
        assert table.horizontalHeader().sectionResizeMode(0) == QHeaderView.Interactive
        table.setRowCount(300)
        for row in range(300):
            for col in range(3):
                table.setItem(row, col, QTableWidgetItem(f"{row * col}"))
    assert [table.horizontalHeader().sectionResizeMode(i) for i in range(3)] == [QHeaderView.ResizeToContents] * 3
    assert table.updatesEnabled() and not table.signalsBlocked() and seen == []
    assert table.item(299, 2).text() == str(299 * 2)


def test_labels_saved_by_the_plugin_reopen_as_labels_and_calibrated_int64_saves(make_napari_viewer, tmp_path):
    """A Labels layer saved under napari's suggested name ("movie segmented") reopened as an Image
    (no painting, not offered to the docks); a calibrated int64 / float16 image layer could not be saved
    (OME-XML has no such pixel type: tifffile's error)."""
    from napari_microseg._reader import get_reader

    viewer = make_napari_viewer(show=False)
    labels = np.zeros((2, 32, 32), np.uint16)
    labels[:, 4:10, 4:10] = 3
    layer = viewer.add_labels(labels, name="movie segmented", scale=(1, 0.5, 0.5), units=("s", "um", "um"))
    (saved,) = layer.save(str(tmp_path / "movie segmented.tif"), plugin="napari-microseg")
    (data, kwargs, kind), = get_reader(saved)(saved)
    assert kind == "labels" and np.array_equal(np.asarray(data), labels)
    for dtype in ("int64", "float16"):
        values = np.arange(12 * 16).reshape(12, 16).astype(dtype)
        image = viewer.add_image(values, name=dtype, scale=(0.5, 0.5), units=("um", "um"))
        (saved,) = image.save(str(tmp_path / f"{dtype}.tif"), plugin="napari-microseg")
        (data, kwargs, kind), = get_reader(saved)(saved)
        assert kind == "image" and np.array_equal(np.asarray(data), values.astype(np.float64))
        assert tuple(kwargs["scale"]) == pytest.approx((0.5, 0.5))


def test_open_files_as_stack_gives_one_layer(make_napari_viewer, tmp_path):
    """File > Open Files as Stack with this plugin: one (N, Y, X) layer in the order given, calibrated as
    the first file (it gave one layer per file); files of other shapes: a one-line refusal."""
    import tifffile

    from napari_microseg._reader import get_reader
    from napari_microseg.errors import InputError

    paths = []
    for i in range(3):
        tifffile.imwrite(tmp_path / f"t{i}.tif", np.full((20, 30), i, np.uint8))
        paths.append(str(tmp_path / f"t{i}.tif"))
    viewer = make_napari_viewer(show=False)
    (layer,) = viewer.open(paths, stack=True, plugin="napari-microseg")
    assert layer.data.shape == (3, 20, 30) and [int(layer.data[i].max()) for i in range(3)] == [0, 1, 2]
    tifffile.imwrite(tmp_path / "odd.tif", np.zeros((10, 10), np.uint8))
    with pytest.raises(InputError, match="only files of one shape"):
        get_reader([*paths, str(tmp_path / "odd.tif")])([*paths, str(tmp_path / "odd.tif")])
    (single,) = viewer.open(paths[:1], stack=True, plugin="napari-microseg")  # one file: as it is
    assert single.data.shape == (20, 30)


def test_3d_tracks_saved_by_the_plugin_open_again(make_napari_viewer, tmp_path):
    """The tracks writer saves 3-D tracks with a z column (as the contract says); the reader refused them."""
    viewer = make_napari_viewer(show=False)
    data = np.array([[1, 0, 2, 10, 10], [1, 1, 3, 11, 10], [2, 0, 5, 30, 30], [2, 1, 5, 31, 29]], float)
    layer = viewer.add_tracks(data, name="3d tracks")
    (saved,) = layer.save(str(tmp_path / "tracks3d.csv"), plugin="napari-microseg")
    assert pd.read_csv(saved).columns[:5].tolist() == ["track_id", "t", "z", "y", "x"]
    (reopened,) = viewer.open(saved, plugin="napari-microseg")
    np.testing.assert_allclose(reopened.data[np.lexsort((reopened.data[:, 1], reopened.data[:, 0]))], data)


def test_tracks_of_a_calibrated_run_open_over_the_calibrated_movie(tmp_path):
    """microseg track on a movie stating 0.5 um pixels and 2 min frames: its tracks.csv (pixels, frames)
    opened at scale 1, off the movie the reader opens in micrometres and minutes; it now takes the run's
    calibration from track_config.json."""
    import tifffile

    from napari_microseg._reader import get_reader
    from napari_microseg.cli import main

    stack = np.zeros((4, 48, 48), np.uint16)
    for t in range(4):
        stack[t, 10:18, 10 + t:18 + t] = 1
    tifffile.imwrite(tmp_path / "labels.tif", stack)
    assert main(["track", "--labels", str(tmp_path / "labels.tif"), "--out", str(tmp_path / "out"),
                 "--pixel-size", "0.5", "--frame-interval", "2"]) == 0
    tracks = str(tmp_path / "out" / "tracks.csv")
    (_, kwargs, kind), = get_reader(tracks)(tracks)
    assert kind == "tracks" and tuple(kwargs["scale"]) == (2.0, 0.5, 0.5)
    assert tuple(kwargs["units"]) == ("minute", "micrometer", "micrometer")
    # a second export (tracks_2.csv) takes its own config, track_config_2.json, not the first run's
    import shutil

    shutil.copy(tracks, tmp_path / "out" / "tracks_2.csv")
    second = str(tmp_path / "out" / "tracks_2.csv")
    (_, kwargs, _), = get_reader(second)(second)
    assert "scale" not in kwargs
    (tmp_path / "out" / "track_config_2.json").write_text('{"units": "um"}')  # not one this package wrote
    (_, kwargs, _), = get_reader(second)(second)
    assert "scale" not in kwargs


def test_batch_inputs_leave_out_earlier_runs_follow_linked_folders_and_keep_png_folders(tmp_path):
    """A search of an input folder: an earlier run's results inside it (its labels, relabelled stacks,
    probabilities) were read again as new inputs; a linked sub-folder was skipped without a word; a folder
    of PNG images was dropped as "previews" once a TIFF was anywhere else in the tree."""
    import json

    from napari_microseg.batch import find_batch_inputs

    data = tmp_path / "data"
    for rel in ("movies/m0.tif", "run1/labels/m0.tif", "run1/tracks_labels/m0.tif", "run1/raw.tif", "pngs/p0.png",
                "pngs/p1.png", "mixed/x.tif", "mixed/x_preview.png", "mixed/thumbnails/x.png",
                "other_tool/manifest.jsonl", "other_tool/batch_config.json", "other_tool/y.tif"):
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_bytes(b"0")
    # an earlier run's --out (the raw movie it was run on lies there too); another tool's files of the same names
    (data / "run1" / "batch_config.json").write_text(json.dumps({"task": "segment", "settings_hash": "abc"}))
    (tmp_path / "elsewhere" / "plate").mkdir(parents=True)
    (tmp_path / "elsewhere" / "plate" / "w1.tif").write_bytes(b"0")
    os.symlink(tmp_path / "elsewhere" / "plate", data / "plate_link")  # a linked share: searched
    os.symlink(data / "mixed", data / "latest")  # a link into the tree: its images keep their own names
    ignored = []
    found = [rel for _, rel in find_batch_inputs(data, ignored=ignored)]
    assert found == ["mixed/x.tif", "movies/m0.tif", "other_tool/y.tif", "plate_link/w1.tif", "pngs/p0.png", "pngs/p1.png",
                     "run1/raw.tif"], found
    assert {"x_preview.png", "x.png"} <= {Path(p).name for p in ignored}
    assert sorted(str(Path(p).relative_to(data)) for p in ignored if "run1" in str(p) and str(p).endswith(".tif")) \
        == ["run1/labels/m0.tif", "run1/tracks_labels/m0.tif"]
    # a pattern leaves the earlier run's results out too; tracking keeps its labels (they are its inputs)
    assert [rel for _, rel in find_batch_inputs(str(data / "run1" / "**" / "*.tif"))] == ["raw.tif"]
    assert [rel for _, rel in find_batch_inputs(str(data / "run1" / "**" / "*.tif"), keep_run_labels=True)] \
        == ["labels/m0.tif", "raw.tif"]
    assert [rel for _, rel in find_batch_inputs(data / "run1", keep_run_labels=True)] == ["labels/m0.tif", "raw.tif"]


def test_a_linked_folder_that_points_up_the_tree_is_walked_once(tmp_path):
    from napari_microseg.batch import find_batch_inputs

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.tif").write_bytes(b"0")
    os.symlink(tmp_path, tmp_path / "a" / "up")  # a cycle
    assert [path.name for path, _ in find_batch_inputs(tmp_path)] == ["x.tif"]


def test_segment_and_batch_share_a_lock_on_their_output_folder(tmp_path, capsys):
    """Two runs into one --out at once: the second is refused (microseg segment took no lock, and the
    run finishing last replaced the other's tables); a stated default is no change of settings."""
    from napari_microseg.batch.runner import _is_default, acquire_out_lock
    from napari_microseg.cli import main
    from napari_microseg.pretrained import pretrained_path

    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "in").mkdir()
    import tifffile

    tifffile.imwrite(tmp_path / "in" / "a.tif", np.zeros((32, 32), np.uint16))
    import json
    import socket

    lock = acquire_out_lock(out)
    lock.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))  # another live run holds it
    assert main(["segment", "--model", "nuclei_fluorescence_fast", "--input", str(tmp_path / "in"),
                 "--out", str(out), "--quiet"]) == 2
    assert "in use by another run" in capsys.readouterr().err and not (out / "counts.csv").exists()
    (out / "notes.txt").write_text("a segment run's folder")  # batch said "not empty and holds no batch results"
    assert main(["batch", "segment", "--model", "nuclei_fluorescence_fast", "--input", str(tmp_path / "in"),
                 "--out", str(out), "--workers", "0", "--quiet"]) == 2
    assert "in use by another run" in capsys.readouterr().err
    (out / "notes.txt").unlink()
    lock.unlink()
    assert main(["segment", "--model", "nuclei_fluorescence_fast", "--input", str(tmp_path / "in"),
                 "--out", str(out), "--quiet"]) == 0
    assert not (out / ".batch.lock").exists()  # released at the end
    model = str(pretrained_path("nuclei_fluorescence_fast"))
    assert _is_default("min_size", 8, model) and _is_default("overlap", 32, model) and _is_default("tile", 512, model)
    assert not _is_default("min_size", 9, model) and not _is_default("tile", 256, model)


def test_a_kept_zarr_label_store_is_incomplete_until_the_new_run_ends(tmp_path):
    """A rerun keeps the earlier run's Zarr label store to write into: it stayed marked complete while
    holding frames of two settings after the rerun was killed."""
    import zarr

    from napari_microseg.batch.runner import prepare_zarr_stores

    assert prepare_zarr_stores(tmp_path, {"movie": (3, 16, 16)}, "uint16") == {"movie"}
    store = zarr.open_array(str(tmp_path / "labels" / "movie.zarr"), mode="r+")
    store.attrs["microseg_batch"] = {"complete": True, "frames": 3}  # as a finished run leaves it
    assert prepare_zarr_stores(tmp_path, {"movie": (3, 16, 16)}, "uint16") == set()  # kept
    assert zarr.open_array(str(tmp_path / "labels" / "movie.zarr"), mode="r").attrs["microseg_batch"]["complete"] is False


def test_a_batch_folder_hashed_with_stated_defaults_still_resumes(tmp_path, tiny_nuclei_model, monkeypatch):
    """A folder made before stated defaults were left out of the settings hash (every Segmentation-dock
    batch states tile and min_size): resuming it skips its done items instead of refusing it as made with
    other settings."""
    import tifffile

    import napari_microseg.batch.runner as runner
    from napari_microseg.batch import run_batch_sync
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        tifffile.imwrite(src / f"a{i}.tif", simulate_nuclei_image(shape=(48, 48), n_nuclei=3, seed=i)[0])
    out = tmp_path / "out"
    with monkeypatch.context() as old_hashing:
        old_hashing.setattr(runner, "_is_default", lambda *args: False)  # as the hash was made before
        first = run_batch_sync("segment", src, out, model=tiny_nuclei_model, workers=0, min_size=8)
    assert first.processed == 3
    again = run_batch_sync("segment", src, out, model=tiny_nuclei_model, workers=0, min_size=8)
    assert (again.processed, again.skipped) == (0, 3)


def test_a_batch_over_a_moved_input_folder_skips_its_done_items(tmp_path, tiny_nuclei_model):
    """The input folder renamed (or a share mounted elsewhere) between runs: every item was redone and
    labels/ held each image twice, under the old and the new names."""
    import tifffile

    from napari_microseg.batch import run_batch_sync
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    src = tmp_path / "plate_a" / "well0"
    src.mkdir(parents=True)
    for i in range(3):
        tifffile.imwrite(src / f"a{i}.tif", simulate_nuclei_image(shape=(48, 48), n_nuclei=3, seed=i)[0])
    out = tmp_path / "out"
    assert run_batch_sync("segment", tmp_path / "plate_a", out, model=tiny_nuclei_model, workers=0).processed == 3
    (tmp_path / "plate_a").rename(tmp_path / "plate_b")
    again = run_batch_sync("segment", tmp_path / "plate_b", out, model=tiny_nuclei_model, workers=0)
    assert (again.processed, again.skipped) == (0, 3)
    assert sorted(p.relative_to(out / "labels").as_posix() for p in (out / "labels").rglob("*.tif")) == \
        ["a0.tif", "a1.tif", "a2.tif"]


def test_a_pattern_through_linked_folders_takes_each_image_once(tmp_path):
    """plate1/link/ and plate3/ both lead to real/: a pattern segmented real/c.tif three times (three rows
    in the tables); now once, the other names said as left out. Two linked files in one folder stay two."""
    from napari_microseg.batch import find_batch_inputs

    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "c.tif").write_bytes(b"0")
    (tmp_path / "plate1").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "plate1" / "link")
    os.symlink(tmp_path / "real", tmp_path / "plate3")
    (tmp_path / "plate2").mkdir()
    os.symlink(tmp_path / "real" / "c.tif", tmp_path / "plate2" / "A01.tif")
    os.symlink(tmp_path / "real" / "c.tif", tmp_path / "plate2" / "A02.tif")
    ignored = []
    found = [rel for _, rel in find_batch_inputs(str(tmp_path / "plate*" / "**" / "*.tif"), ignored=ignored)]
    assert found == ["plate1/link/c.tif", "plate2/A01.tif", "plate2/A02.tif"], found
    assert [Path(p).relative_to(tmp_path).as_posix() for p in ignored] == ["plate3/c.tif"]


def test_a_batch_whose_inputs_now_lie_under_another_path_is_resumed_by_their_names(tmp_path, tiny_nuclei_model):
    """The share is mounted elsewhere while the old mount point stays (empty), and the first run was of
    a sub-folder: its items keep their names (everything was redone under new names, labels/ twice)."""
    import tifffile

    from napari_microseg.batch import run_batch_sync
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    old = tmp_path / "media" / "share"
    for well, seed in (("w1", 1), ("w2", 2)):
        (old / well).mkdir(parents=True)
        tifffile.imwrite(old / well / f"{well}.tif", simulate_nuclei_image(shape=(48, 48), n_nuclei=3, seed=seed)[0])
    out = tmp_path / "out"
    assert run_batch_sync("segment", old, out, model=tiny_nuclei_model, workers=0).processed == 2
    new = tmp_path / "mnt" / "share"
    new.parent.mkdir()
    old.rename(new)
    old.mkdir()  # the old mount point, left empty
    again = run_batch_sync("segment", new, out, model=tiny_nuclei_model, workers=0)
    assert (again.processed, again.skipped) == (0, 2)
    assert sorted(p.relative_to(out / "labels").as_posix() for p in (out / "labels").rglob("*.tif")) == \
        ["w1/w1.tif", "w2/w2.tif"]


def test_a_pattern_names_images_by_their_own_folder_not_a_link_to_it_and_skips_zarr_innards(tmp_path):
    """exp/images/a.tif with a link exp/alias -> exp/images: a folder search names it images/a.tif; a
    pattern named it alias/a.tif (so switching between them redid it); the arrays inside a Zarr store
    matched by '**' were inputs of their own."""
    import zarr

    from napari_microseg.batch import find_batch_inputs

    (tmp_path / "exp" / "images").mkdir(parents=True)
    (tmp_path / "exp" / "images" / "a.tif").write_bytes(b"0")
    os.symlink(tmp_path / "exp" / "images", tmp_path / "exp" / "alias")
    assert [rel for _, rel in find_batch_inputs(tmp_path / "exp")] == ["a.tif"]
    assert [path for path, _ in find_batch_inputs(str(tmp_path / "exp" / "**" / "*.tif"))] == \
        [tmp_path / "exp" / "images" / "a.tif"]
    zarr.open_group(str(tmp_path / "z" / "m.zarr"), mode="w").create_array("0", shape=(2, 8, 8), dtype="uint8")
    assert [path.name for path, _ in find_batch_inputs(str(tmp_path / "z" / "**"))] == ["m.zarr"]


def test_evaluate_seg_keeps_every_threshold_its_own_scores(tmp_path, capsys):
    """--thresholds 0.5,0.501: both were keyed "0.50", so AP@0.5 showed the 0.501 score (and PQ of 0.5
    beside F1 of 0.501); 0.525 was named 0.53. Two decimals stay the names where they suffice."""
    import tifffile

    from napari_microseg.cli import main
    from napari_microseg.evaluation.metrics import threshold_key

    assert [threshold_key(t) for t in (0.5, 0.75, 0.501, 0.525)] == ["0.50", "0.75", "0.501", "0.525"]
    truth = np.zeros((40, 40), np.uint16)
    pred = np.zeros((40, 40), np.uint16)
    truth[0:10, 0:10] = 1
    pred[0:10, 0:10] = 1  # exact
    truth[20:30, 0:10] = 2
    pred[20:30, 0:10] = 2
    pred[20:30, 10:20] = 2  # IoU exactly 0.5: a match at 0.5, not at 0.501
    tifffile.imwrite(tmp_path / "gt.tif", truth)
    tifffile.imwrite(tmp_path / "pred.tif", pred)
    assert main(["evaluate", "seg", "--gt", str(tmp_path / "gt.tif"), "--pred", str(tmp_path / "pred.tif"),
                 "--thresholds", "0.5,0.501", "--out", str(tmp_path / "m.csv")]) == 0
    out = capsys.readouterr().out
    assert "AP@0.50 1.000" in out and "AP@0.501 0.333" in out, out
    table = pd.read_csv(tmp_path / "m_thresholds.csv")
    assert table["ap"].round(3).tolist() == [1.0, 0.333]


def test_tracks_saved_from_a_calibrated_layer_reopen_where_they_lay(make_napari_viewer, tmp_path):
    """A Tracks layer at 2 min per frame and 0.5 um per pixel, shifted: its saved table holds frames and
    pixels, and reopened it lay at scale 1 from 0, off the movie; the placement now goes beside it."""
    viewer = make_napari_viewer(show=False)
    data = np.array([[1, 0, 10, 10], [1, 1, 11, 10], [2, 0, 30, 30], [2, 1, 31, 29]], float)
    layer = viewer.add_tracks(data, name="nuclei tracks", scale=(2.0, 0.5, 0.5), translate=(0.0, 10.0, 20.0),
                              units=("minute", "micrometer", "micrometer"))
    saved = layer.save(str(tmp_path / "nuclei tracks.csv"), plugin="napari-microseg")
    assert sorted(Path(p).name for p in saved) == ["nuclei tracks.csv", "nuclei tracks.placement.json"]
    (reopened,) = viewer.open(str(tmp_path / "nuclei tracks.csv"), plugin="napari-microseg")
    np.testing.assert_allclose(reopened.scale, (2.0, 0.5, 0.5))
    np.testing.assert_allclose(reopened.translate, (0.0, 10.0, 20.0))
    assert [str(u) for u in reopened.units] == ["minute", "micrometer", "micrometer"]
    # the same name saved again from a layer at 1 pixel per unit: the old placement goes with the old table
    plain = viewer.add_tracks(data, name="plain")
    assert [Path(p).name for p in plain.save(str(tmp_path / "nuclei tracks.csv"), plugin="napari-microseg")] == \
        ["nuclei tracks.csv"]
    assert not (tmp_path / "nuclei tracks.placement.json").exists()
