"""Regression tests for the gaps closed and bugs found in session 34: each failed on the code before its fix."""
from __future__ import annotations

import json
from pathlib import Path
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
from test_hunt32_fixes import _image_label_folders  # folders of simulated image / label pairs
from test_hunt33_fixes import _running_until  # a dock run that goes on until released


def test_train_simulated_records_the_nuclei_placed_not_asked(tmp_path):
    """`train --simulated 2 --sim-nuclei 400` recorded "400 nuclei each" where the simulator placed far fewer
    (they do not fit in 64 x 64): the record names the nuclei placed, and the number asked for."""
    from napari_microseg.cli import main
    from napari_microseg.cli.train import _simulated
    from napari_microseg.io.models import read_model_config

    assert main(["train", "--simulated", "2", "--sim-size", "64", "--sim-nuclei", "400", "--out", str(tmp_path / "m.pt"),
                 "--epochs", "1", "--patch", "32", "--patches-per-epoch", "8", "--batch-size", "4",
                 "--val-fraction", "0", "--threads", "1", "--quiet"]) == 0
    training = read_model_config(tmp_path / "m.pt")["training"]
    _, labels = _simulated(2, 64, 400, training["seed"])
    placed = [len(np.unique(lb)) - 1 for lb in labels]
    assert max(placed) < 400
    assert f"{sum(placed)} in all" in training["data"] and "400 asked for" in training["data"], training["data"]
    assert "400 nuclei each" not in training["data"]
    # and the threads the run used, where none were asked for (the record said null)
    assert training["cpu_threads"] == 1


def test_classifier_training_records_the_cpu_threads_used(tmp_path):
    import torch

    from napari_microseg.classify.data import simulated_profile_data
    from napari_microseg.classify.trainer import train_with_strategy
    from napari_microseg.io.models import read_model_config
    from napari_microseg.progress import drain

    data = simulated_profile_data(40, n_views=1, seed=0)
    drain(train_with_strategy("simulated", {"task": "profiles", "epochs": 1, "batch_size": 16, "device": "cpu"},
                              simulated=data, out_path=tmp_path / "p.pt"))
    assert read_model_config(tmp_path / "p.pt")["training"]["cpu_threads"] == torch.get_num_threads()


def test_autolabel_records_keep_dropped(tmp_path):
    """params.json recorded the QC settings but not --keep-dropped: which tiles a folder holds was unsaid."""
    from napari_microseg.cli import main
    from napari_microseg.io.images import write_tiff
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    image, _ = simulate_nuclei_image((128, 128), 12, seed=3)
    write_tiff(tmp_path / "stain.tif", image)
    for flag, expected in (([], False), (["--keep-dropped"], True)):
        out = tmp_path / f"out{expected}"
        assert main(["autolabel", "fluorescence", "--stain", str(tmp_path / "stain.tif"), "--out", str(out),
                     "--tile", "64", "--qc", "--quiet", *flag]) == 0
        assert json.loads((out / "params.json").read_text())["keep_dropped"] is expected


def test_batch_segment_records_the_network_arithmetic(tmp_path):
    """`batch segment --precision auto` recorded "auto" only (bfloat16 on some CPUs, float32 on others): each
    item's record and batch_run.json say what it resolved to, as segment_run.json does."""
    import tifffile

    from napari_microseg.batch.manifest import MANIFEST_NAME, RUN_NAME
    from napari_microseg.cli import main

    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    tifffile.imwrite(src / "a.tif", (rng.random((64, 64)) * 50).astype(np.uint8))
    for precision in ("float32", "auto"):
        out = tmp_path / precision
        assert main(["batch", "segment", "--model", "nuclei_fluorescence_fast", "--input", str(src), "--out", str(out),
                     "--workers", "0", "--precision", precision, "--quiet"]) == 0
        records = [json.loads(line) for line in (out / MANIFEST_NAME).read_text().splitlines() if line.strip()]
        used = {r["precision"] for r in records if r.get("status") == "done"}
        assert used <= {"float32", "bfloat16"} and len(used) == 1, records
        assert "precision" not in records[-1]["outputs"]  # a setting, not a file
        assert json.loads((out / RUN_NAME).read_text())["precision"] == sorted(used)
        if precision == "float32":
            assert used == {"float32"}


def test_evaluate_seg_writes_its_bootstrap_interval_and_seed(tmp_path):
    """The printed 95 % AP interval was in no file: `<out>_thresholds.csv` has it (first threshold) with its seed."""
    from napari_microseg.cli import main
    from napari_microseg.io.images import write_tiff

    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir(), pred.mkdir()
    rng = np.random.default_rng(1)
    for i in range(6):
        truth = np.zeros((40, 40), np.uint16)
        for k in range(4):
            y, x = rng.integers(2, 30, 2)
            truth[y:y + 6, x:x + 6] = k + 1
        guess = truth.copy()
        guess[guess == (i % 4) + 1] = 0  # one miss in each image, a different one
        write_tiff(gt / f"im{i}.tif", truth), write_tiff(pred / f"im{i}.tif", guess)
    assert main(["evaluate", "seg", "--gt", str(gt), "--pred", str(pred), "--out", str(tmp_path / "m.csv"),
                 "--seed", "7"]) == 0
    table = pd.read_csv(tmp_path / "m_thresholds.csv")
    first = table.iloc[0]
    assert first["ap_low_95"] <= first["ap"] <= first["ap_high_95"] and first["bootstrap_seed"] == 7
    assert table["ap_low_95"].iloc[1:].isna().all()


@pytest.mark.parametrize("grow", [0.7, 1.5, 3.2])
def test_cluster_growth_by_strips_equals_the_whole_frame_growth(grow):
    """find_clusters grew clusters with expand_labels over the whole frame (24 bytes a pixel: 4096^2 with
    20,000 clusters 320 -> 672 MiB); it grows strip by strip now, with the same labels."""
    from scipy import ndimage as ndi
    from skimage.segmentation import expand_labels

    from napari_microseg.autolabel.ccd import _expand_labels_by_strips

    rng = np.random.default_rng(0)
    mask = ndi.binary_dilation(rng.random((700, 300)) < 0.02) & (rng.random((700, 300)) < 0.8)
    lab, _ = ndi.label(mask, structure=np.ones((3, 3)))
    np.testing.assert_array_equal(_expand_labels_by_strips(lab, grow, strip_rows=64), expand_labels(lab, grow))


def test_find_clusters_peak_memory_does_not_scale_with_a_whole_frame_distance_transform():
    """The growth's distance transform is taken per strip: its memory is that of a strip, not of the frame."""
    import tracemalloc

    from napari_microseg.autolabel.ccd import find_clusters

    rng = np.random.default_rng(0)
    n = 1024
    classes = np.zeros((n, n), np.uint8)
    ys, xs = rng.integers(2, n - 2, 800), rng.integers(2, n - 2, 800)
    for dy in (-1, 0, 1):
        classes[ys + dy, xs] = 3
    image = rng.normal(100, 4, (n, n)).astype(np.float32)
    image[classes == 3] += 200
    tracemalloc.start()
    table = find_clusters(classes, image)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(table) > 700
    # 42 bytes a pixel with the whole-frame transform (its float64 distances and int64 indices), 21 by strips
    assert peak < 30 * n * n, peak / n / n


@pytest.mark.gui
def test_classification_dock_trains_profiles_of_the_chosen_task_and_views(make_napari_viewer, wait_worker, tmp_path):
    """The dock trained every profile classifier on simulated "hole" particles of 2 views: a chirality model,
    or one for single-view profiles, could not be made there. The task and views are fields now."""
    from napari_microseg.io.models import read_model_config
    from napari_microseg.widgets.classification import ClassificationWidget

    viewer = make_napari_viewer()
    widget = ClassificationWidget(viewer)
    widget.task.value = "profiles [P]"
    assert not widget.train_profile_task.native.isHidden() and not widget.train_views.native.isHidden()
    widget.train_profile_task.value, widget.train_views.value = "chirality", 3
    widget.train_n.value, widget.train_epochs.value = 40, 1
    widget.train_out.value = str(tmp_path / "chiral.pt")
    wait_worker(widget.train())
    config = read_model_config(tmp_path / "chiral.pt")
    assert config["class_names"] == ["clockwise", "anticlockwise"]
    assert config["crop"]["views"] == 3
    widget.task.value = "objects [T]"
    assert widget.train_profile_task.native.isHidden() and widget.train_views.native.isHidden()


@pytest.mark.gui
def test_training_dock_end_message_keeps_the_resumed_runs_own_settings(make_napari_viewer, wait_worker, tmp_path):
    """Resuming a binary run from a form showing three_class said "resuming with the run's own output binary"
    while it started, then the end message replaced it: the form still showed three_class, and nothing said
    which the model was. The end message says it."""
    from test_hunt32_fixes import _tiny_training_dock

    widget = _tiny_training_dock(make_napari_viewer, 2)
    widget.output_mode.value, widget.val_fraction.value = "binary", 0.0
    widget.out_path.value = str(tmp_path / "m.pt")
    wait_worker(widget.train())
    messages = []
    widget.show_message = messages.append
    widget.resume.value, widget.epochs.value, widget.output_mode.value = True, 2, "three_class"
    wait_worker(widget.train())
    assert "resumed with the run's own output binary" in messages[-1], messages


def _two_movers(n_frames: int = 6) -> np.ndarray:
    """(T, 64, 64) labels: object 1 moves +3 px a frame in X, object 2 +2 px a frame in Y."""
    labels = np.zeros((n_frames, 64, 64), np.uint16)
    for t in range(n_frames):
        labels[t, 5:11, 3 + 3 * t:9 + 3 * t] = 1
        labels[t, 30 + 2 * t:36 + 2 * t, 40:46] = 2
    return labels


def test_a_plain_imagej_stack_keeps_its_frame_interval(tmp_path):
    """Fiji's plain stack (no hyperstack=true) with a frame interval is tracked as a time-lapse, but its
    finterval was dropped as a Z stack's: no duration or um/min in the summary."""
    import tifffile

    from napari_microseg.cli import main
    from napari_microseg.io.images import read_image

    # Fiji's description of a plain stack (File > Import > Image Sequence, then Image > Properties)
    description = "ImageJ=1.54f\nimages=6\nslices=6\nunit=micron\nfinterval=300\nloop=false\n"
    tifffile.imwrite(tmp_path / "plain.tif", _two_movers(), photometric="minisblack", resolution=(1 / 0.325, 1 / 0.325),
                     description=description, metadata=None)
    assert read_image(tmp_path / "plain.tif").metadata["calibration"] == {"pixel_size_um": 0.325,
                                                                          "frame_interval_min": 5.0}
    # read as the time-lapse it is: the reader scales its frames as the outputs written from it (TYX, 5 min)
    from napari_microseg._reader import get_reader

    [(_, kwargs, _)] = get_reader(str(tmp_path / "plain.tif"))(str(tmp_path / "plain.tif"))
    assert kwargs["scale"] == pytest.approx((5.0, 0.325, 0.325)) and kwargs["units"][0] == "minute"
    assert main(["track", "--labels", str(tmp_path / "plain.tif"), "--out", str(tmp_path / "o")]) == 0
    summary = pd.read_csv(tmp_path / "o" / "track_summary.csv")
    np.testing.assert_allclose(summary["mean_speed_um_per_min"], [3 * 0.325 / 5, 2 * 0.325 / 5])


def test_capitalised_imagej_units_are_read_and_unknown_ones_said(tmp_path):
    import tifffile

    from napari_microseg.errors import MicrosegWarning
    from napari_microseg.io.images import read_image

    for unit, tunit, expected in (("Micron", "Min", {"pixel_size_um": 0.325, "frame_interval_min": 5.0}),
                                  ("furlongz", "sec", {"frame_interval_min": 5.0 / 60})):
        tifffile.imwrite(tmp_path / "c.tif", _two_movers(), imagej=True, resolution=(1 / 0.325, 1 / 0.325),
                         metadata={"axes": "TYX", "unit": unit, "finterval": 5, "tunit": tunit})
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            found = read_image(tmp_path / "c.tif").metadata.get("calibration")
        assert found == pytest.approx(expected)
        messages = [str(w.message) for w in said if issubclass(w.category, MicrosegWarning)]
        assert any("'furlongz' not understood" in m for m in messages) == (unit != "Micron"), messages


def _ome_movie(path, data, pixel_size, pixel_size_y=None, interval_s=300.0):
    import tifffile

    tifffile.imwrite(path, data, ome=True, metadata={
        "axes": "TYX", "PhysicalSizeX": pixel_size, "PhysicalSizeY": pixel_size_y or pixel_size,
        "TimeIncrement": interval_s, "TimeIncrementUnit": "s"})


def test_track_says_which_calibration_it_uses_when_files_and_options_disagree(tmp_path, capsys):
    """Labels of 0.325 um / 5 min with an image of 0.65 um / 1 min: the command line took the image's without a
    word, the Tracking dock the labels' (10x apart). Both take the labels' now and say so. Options replacing the
    file's values are said, non-square pixels made square by --pixel-size too (Y's 0.4 um became 0.2 silently)."""
    from napari_microseg.cli import main

    labels = _two_movers()
    _ome_movie(tmp_path / "lab.ome.tif", labels, 0.325)
    _ome_movie(tmp_path / "img.ome.tif", labels.astype(np.float32) * 50, 0.65, interval_s=60)
    assert main(["track", "--labels", str(tmp_path / "lab.ome.tif"), "--image", str(tmp_path / "img.ome.tif"),
                 "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "calibrated differently (0.325 um per pixel in the labels, 0.65 in the image; 5 min per frame" in err, err
    summary = pd.read_csv(tmp_path / "a" / "track_summary.csv")
    np.testing.assert_allclose(summary["mean_speed_um_per_min"], [3 * 0.325 / 5, 2 * 0.325 / 5])
    assert main(["track", "--labels", str(tmp_path / "lab.ome.tif"), "--out", str(tmp_path / "b"),
                 "--pixel-size", "0.5", "--frame-interval", "1"]) == 0
    err = capsys.readouterr().err
    assert "--pixel-size 0.5 replaces the file's 0.325 um per pixel" in err
    assert "--frame-interval 1 replaces the file's 5 min per frame" in err
    _ome_movie(tmp_path / "aniso.ome.tif", labels, 0.2, pixel_size_y=0.4)
    assert main(["track", "--labels", str(tmp_path / "aniso.ome.tif"), "--out", str(tmp_path / "c"),
                 "--pixel-size", "0.2"]) == 0
    assert "replaces the file's non-square pixels (0.2 um in X, 0.4 um in Y)" in capsys.readouterr().err


def test_batch_track_says_when_the_options_replace_a_movies_calibration_and_records_its_units(tmp_path):
    from napari_microseg.batch.manifest import MANIFEST_NAME
    from napari_microseg.cli import main

    (tmp_path / "in").mkdir()
    _ome_movie(tmp_path / "in" / "m.ome.tif", _two_movers(), 0.325)
    assert main(["batch", "track", "--input", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--workers", "0",
                 "--pixel-size", "0.5", "--quiet"]) == 0
    notes = pd.read_csv(tmp_path / "o" / "notes.csv")
    assert "--pixel-size 0.5 replaces the file's 0.325 um per pixel" in notes["note"].iloc[0]
    record = json.loads((tmp_path / "o" / MANIFEST_NAME).read_text().splitlines()[-1])
    assert record["units"] == {"pixel_size_um": 0.5, "frame_interval_min": 5.0}
    assert "units" not in record["outputs"]


@pytest.mark.gui
def test_tracking_dock_says_when_the_image_layer_is_calibrated_otherwise(make_napari_viewer, wait_worker):
    from napari_microseg.widgets.tracking import TrackingWidget

    viewer = make_napari_viewer()
    labels = _two_movers()
    units = ("minute", "micrometer", "micrometer")
    viewer.add_labels(labels, name="lab", scale=(5, 0.325, 0.325), units=units)
    viewer.add_image(labels.astype(np.float32), name="img", scale=(1, 0.65, 0.65), units=units)
    widget = TrackingWidget(viewer)
    widget.labels_layer.value, widget.image_layer.value = "lab", "img"
    errors = []
    widget.show_error = errors.append
    wait_worker(widget.track())
    assert errors and "calibrated differently (0.325 um per pixel in the labels, 0.65 in the image" in errors[-1]


def test_opening_files_of_other_calibrations_as_one_stack_is_said(tmp_path):
    import tifffile

    from napari_microseg._reader import get_reader
    from napari_microseg.errors import MicrosegWarning

    frame = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32)
    paths = [str(tmp_path / "a.ome.tif"), str(tmp_path / "b.ome.tif")]
    for path, size in zip(paths, (0.325, 0.65)):
        tifffile.imwrite(path, frame, ome=True, metadata={"axes": "YX", "PhysicalSizeX": size, "PhysicalSizeY": size})
    with pytest.warns(MicrosegWarning, match="b.ome.tif: calibrated otherwise than a.ome.tif"):
        [(data, kwargs, _)] = get_reader(paths)(paths)
    assert data.shape == (2, 32, 32) and kwargs["scale"][1:] == pytest.approx((0.325, 0.325))


def _two_squares_stepping(step: int, n_frames: int = 6) -> np.ndarray:
    """(T, 80, X) labels: two 10 x 10 squares moving ``step`` px a frame in X."""
    width = 40 + step * (n_frames - 1)
    labels = np.zeros((n_frames, 80, width), np.uint16)
    for t in range(n_frames):
        x0 = 10 + step * t
        labels[t, 10:20, x0:x0 + 10] = 1
        labels[t, 50:60, x0:x0 + 10] = 2
    return labels


@pytest.mark.parametrize("radius", [15, 30])
def test_steps_up_to_the_search_radius_link(radius):
    """The motion model reached the radius exactly on the first link, then less: steps of 0.93-0.97 radii
    cut two squares into 7-8 tracks without a word. Steps up to the radius link; a step beyond it does not."""
    from napari_microseg.progress import drain
    from napari_microseg.tracking.track import track

    for step in (radius - 1, radius):
        result = drain(track(_two_squares_stepping(step), None, max_search_radius=radius))
        assert result.table["track_id"].nunique() == 2, (radius, step)
    result = drain(track(_two_squares_stepping(radius + 2), None, max_search_radius=radius))
    assert result.table["track_id"].nunique() > 2


def test_a_movie_of_one_frame_tracks_is_warned_about():
    """Objects stepping 3x beyond the search radius became 12 one-frame tracks without a warning (the broken
    tracks check looks within 3 radii only, btrack returns no object unlinked)."""
    from napari_microseg.progress import drain
    from napari_microseg.tracking.track import track, track_warnings

    result = drain(track(_two_squares_stepping(50), None, max_search_radius=15))
    notes = track_warnings(result)
    assert any("12 of 12 tracks are one frame long" in note for note in notes), notes
    steady = drain(track(_two_squares_stepping(5), None, max_search_radius=15))
    assert not any("one frame long" in note for note in track_warnings(steady))


def test_read_ctc_counts_divisions_not_gaps_as_generations(tmp_path):
    """A mother bridged over a gap, then dividing: in CTC files the gap is a parent of one child. read_ctc gave
    the daughters generation 2 and the gap's second piece 1 (tracks.csv: 1 and 0)."""
    from napari_microseg.progress import drain
    from napari_microseg.tracking import read_ctc
    from napari_microseg.tracking.export import write_ctc
    from napari_microseg.tracking.track import track

    labels = np.zeros((10, 120, 120), np.uint16)
    yy, xx = np.mgrid[:120, :120]
    for t in range(6):
        if t != 3:
            labels[t][(yy - 60) ** 2 + (xx - 60) ** 2 <= 49] = 1
    for t in range(6, 10):
        k = t - 5
        labels[t][(yy - 57 + 2 * k) ** 2 + (xx - 60) ** 2 <= 25] = 2
        labels[t][(yy - 63 - 2 * k) ** 2 + (xx - 60) ** 2 <= 25] = 3
    result = drain(track(labels, None))
    own = result.table.groupby("track_id")["generation"].first()
    assert sorted(own) == [0, 1, 1]
    write_ctc(result, tmp_path / "ctc")
    back = read_ctc(tmp_path / "ctc").table.groupby("track_id")[["parent_track_id", "generation"]].first()
    assert len(back) == 4  # the gap cuts the mother into two CTC tracks
    assert sorted(back["generation"]) == [0, 0, 1, 1], back  # the two pieces of the mother 0, her daughters 1


def _translated_ome_zarr(path, data):
    """An OME-Zarr (T, Y, X) of 5 min frames, 0.325 um pixels, lying at (Y, X) = (100, 50) um."""
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("0", data=data, chunks=(1,) + data.shape[1:])
    group.attrs["multiscales"] = [{"version": "0.4", "axes": [
        {"name": "t", "type": "time", "unit": "minute"}, {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"}], "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [5, 0.325, 0.325]}, {"type": "translation", "translation": [0, 100.0, 50.0]}]}]}]


def _placement(path):
    from napari_microseg._reader import get_reader

    [(_, kwargs, _)] = get_reader(str(path))(str(path))
    return kwargs.get("scale"), kwargs.get("translate")


def test_outputs_of_a_translated_ome_zarr_lie_over_it(tmp_path):
    """An OME-Zarr movie with a translation opens at (100, 50) um; the labels `segment` wrote for it and the
    tracks and labels `track` wrote opened at 0, 300 px away from the movie. They carry its place now."""
    from napari_microseg.cli import main

    movie = tmp_path / "movie.zarr"
    _translated_ome_zarr(movie, (_two_movers(4) > 0).astype(np.float32) * 200 + 10)
    expected = ((5.0, 0.325, 0.325), (0.0, 100.0, 50.0))
    assert _placement(movie) == expected
    assert main(["segment", "--model", "nuclei_fluorescence_fast", "--input", str(movie), "--out", str(tmp_path / "s"),
                 "--quiet"]) == 0
    [labels] = (tmp_path / "s" / "labels").iterdir()
    assert _placement(labels) == expected
    assert main(["track", "--labels", str(labels), "--out", str(tmp_path / "t")]) == 0
    assert _placement(tmp_path / "t" / "tracks_labels.tif") == expected
    assert _placement(tmp_path / "t" / "tracks.csv") == expected
    # the file's own pixel size given again keeps the place (it was dropped with any --pixel-size)
    assert main(["track", "--labels", str(labels), "--out", str(tmp_path / "t2"), "--pixel-size", "0.325"]) == 0
    assert _placement(tmp_path / "t2" / "tracks.csv") == expected
    (tmp_path / "in").mkdir()
    _translated_ome_zarr(tmp_path / "in" / "lab.zarr", _two_movers(4))
    assert main(["batch", "track", "--input", str(tmp_path / "in"), "--out", str(tmp_path / "b"), "--workers", "0",
                 "--quiet"]) == 0
    assert _placement(tmp_path / "b" / "tracks_labels" / "lab.tif") == expected
    assert _placement(tmp_path / "b" / "tracks.csv") == expected


def _classify(*args) -> int:
    from napari_microseg.cli import main

    return main(["classify", *map(str, args)])


def test_classifier_resume_refuses_other_samples_or_validation_share(tmp_path, capsys):
    """`classify train --resume` with another --simulated N (or --val-fraction) went on silently: its validation
    split then held samples the run had trained on (4 of 12), which chose its best epoch and thresholds."""
    common = ["--epochs", "2", "--out", tmp_path / "m.pt", "--device", "cpu", "--threads", "1", "--batch-size", "8"]
    assert _classify("train", "images", "--simulated", "10", "--epochs", "1", *common[2:]) == 0
    assert _classify("train", "images", "--simulated", "30", *common, "--resume", tmp_path / "m.pt") == 2
    assert "its run trained on 10 samples, this one has 30" in capsys.readouterr().err
    assert _classify("train", "images", "--simulated", "10", *common, "--resume", tmp_path / "m.pt",
                     "--val-fraction", "0.3") == 2
    assert "held out 0.2 of its samples for validation, this one 0.3" in capsys.readouterr().err
    assert _classify("train", "images", "--simulated", "10", *common, "--resume", tmp_path / "m.pt") == 0


def test_classes_csv_contents_that_cannot_be_read_are_refused_in_one_line(tmp_path, capsys):
    """A classes.csv of a header only, an is_good of 2 or "yes" or blank, a blank crop cell: tracebacks
    (IndexError, IntCastingNaNError, ValueError; an is_good of 2 became class -1). An absolute image path
    outside the folder crashed in relative_to; it is read."""
    from napari_microseg.cli import main

    sim = tmp_path / "sim"
    assert main(["simulate", "response", "--n", "4", "--out", str(sim), "--seed", "5"]) == 0
    table = pd.read_csv(sim / "classes.csv")
    model = tmp_path / "m.pt"
    assert _classify("train", "images", "--simulated", "8", "--epochs", "1", "--out", model, "--device", "cpu",
                     "--threads", "1") == 0
    cases = {"header": (table.iloc[:0], "no rows"),
             "two": (table.assign(is_good=[1, 2, 0, 1]).drop(columns=[c for c in ("label",) if c in table]),
                     "row 3: is_good must be 1 (good) or 0 (bad), got '2'"),
             "crop": (table.assign(crop_y0=[0, 0, np.nan, 0]), "row 4: crop_y0, crop_x0, crop_y1, crop_x1 must be numbers")}
    for name, (bad, said) in cases.items():
        folder = tmp_path / name
        shutil.copytree(sim, folder)
        bad.to_csv(folder / "classes.csv", index=False)
        assert _classify("images", "--model", model, "--input", folder, "--out", tmp_path / f"o_{name}") == 2, name
        assert said in capsys.readouterr().err, name
    outside = tmp_path / "outside"
    outside.mkdir()
    table.assign(image=[str((sim / image).resolve()) for image in table["image"]]).to_csv(outside / "classes.csv",
                                                                                           index=False)
    assert _classify("images", "--model", model, "--input", outside, "--out", tmp_path / "o_outside") == 0
    assert len(pd.read_csv(tmp_path / "o_outside" / "flags.csv")) == 4


def test_classify_train_refuses_options_it_would_drop(tmp_path, capsys):
    """--strategy simulated read --input and never used it; --arch with --init-model was dropped (the model's
    network trained on) and recorded as used."""
    from napari_microseg.cli import main
    from napari_microseg.io.models import read_model_config

    sim = tmp_path / "sim"
    assert main(["simulate", "response", "--n", "4", "--out", str(sim), "--seed", "5"]) == 0
    base = ["--epochs", "1", "--device", "cpu", "--threads", "1", "--simulated", "8"]
    assert _classify("train", "images", *base, "--input", sim, "--strategy", "simulated", "--out", tmp_path / "a.pt") == 2
    assert "--input would go unused" in capsys.readouterr().err
    assert _classify("train", "images", *base, "--out", tmp_path / "b.pt") == 0
    assert _classify("train", "images", *base, "--init-model", tmp_path / "b.pt", "--arch", "vgg16_like",
                     "--out", tmp_path / "c.pt") == 2
    assert "is a small_cnn network" in capsys.readouterr().err
    assert _classify("train", "images", *base, "--init-model", tmp_path / "b.pt", "--out", tmp_path / "c.pt") == 0
    assert read_model_config(tmp_path / "c.pt")["training"]["config"]["model"]["architecture"] == "small_cnn"


def test_classify_profiles_says_when_its_true_classes_do_not_fit(tmp_path, capsys):
    """A classes.csv of 6 rows beside 12 profiles: no metrics.json and no word (images and objects say it)."""
    from napari_microseg.cli import main

    assert main(["simulate", "nanoparticles", "--out", str(tmp_path / "np"), "--n", "12", "--seed", "3"]) == 0
    table = pd.read_csv(tmp_path / "np" / "classes.csv")
    table.iloc[:6].to_csv(tmp_path / "np" / "classes.csv", index=False)
    assert _classify("train", "profiles", "--simulated", "8", "--epochs", "1", "--out", tmp_path / "p.pt",
                     "--device", "cpu", "--threads", "1") == 0
    capsys.readouterr()
    assert _classify("profiles", "--model", tmp_path / "p.pt", "--input", tmp_path / "np", "--out", tmp_path / "o") == 0
    assert "holds 6 true classes for 12 particles: results are not scored" in capsys.readouterr().err


def test_cross_validation_says_when_a_score_comes_from_some_folds_only(tmp_path, capsys):
    """5 good images and 1 bad in 3 folds: "auc 1.000" was the AUC of the one fold that had both classes."""
    from napari_microseg.cli import main

    sim = tmp_path / "sim"
    assert main(["simulate", "response", "--n", "6", "--out", str(sim), "--seed", "5"]) == 0
    table = pd.read_csv(sim / "classes.csv")
    table["label"] = ["bad"] + ["good"] * 5
    table["is_good"] = [0] + [1] * 5
    table.to_csv(sim / "classes.csv", index=False)
    assert _classify("train", "images", "--input", sim, "--strategy", "real", "--epochs", "1", "--folds", "3",
                     "--out", tmp_path / "cv.pt", "--device", "cpu", "--threads", "1") == 0
    folds = pd.read_csv(tmp_path / "cv.cv_folds.csv")
    said = capsys.readouterr().out
    n_auc = int(folds["auc"].notna().sum())
    assert n_auc < 3 and f"(mean of the {n_auc} fold(s) that have one)" in said, said


def _segment_folder(tmp_path, n: int = 4):
    from napari_microseg.io.images import write_tiff
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(n):
        write_tiff(folder / f"im{i}.tif", simulate_nuclei_image((96, 96), 6, seed=i)[0])
    return folder


def _folder_state(out) -> dict:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()
            and p.name != ".batch.lock"}


def test_an_interrupted_segment_overwrite_leaves_the_earlier_run_whole(tmp_path, monkeypatch, capsys):
    """`segment DIR --overwrite` over an earlier run, stopped after 2 of 4 images: their labels were the new
    model's beside the earlier run's tables (SIGKILL), or the tables were cut to those 2 images (Ctrl-C). The
    earlier run's labels and tables stay as they were now; a finished run replaces them all."""
    import napari_microseg.cli.segment as segment_cli
    from napari_microseg.cli import main

    folder = _segment_folder(tmp_path)
    out = tmp_path / "out"
    assert main(["segment", "--model", "nuclei_fluorescence_fast", "--input", str(folder), "--out", str(out),
                 "--quiet"]) == 0
    before = _folder_state(out)
    real = segment_cli._segment_one
    calls = []

    def stopped_at_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(segment_cli, "_segment_one", stopped_at_the_third)
    again = ["segment", "--model", "nuclei_fluorescence", "--input", str(folder), "--out", str(out), "--quiet",
             "--overwrite"]
    assert main(again) == 130
    assert "the earlier run's labels and tables" in capsys.readouterr().err
    assert _folder_state(out) == before
    assert not [p for p in out.iterdir() if p.name.startswith(".microseg-segment-")]
    monkeypatch.setattr(segment_cli, "_segment_one", real)
    # a staging folder a killed run left (a process that is gone) is removed by the next run
    (out / ".microseg-segment-999999999-x").mkdir()
    from napari_microseg.cli._staging import host

    killed = out / f".microseg-segment-999999999-{host()}-abc"
    (killed / "labels").mkdir(parents=True)
    assert main(again) == 0
    assert not killed.exists()
    record = json.loads((out / "segment_run.json").read_text())
    assert record["model"] == "nuclei_fluorescence" and len(record["images"]) == 4
    assert all(Path(image["labels"]).parent == out / "labels" for image in record["images"])
    after = _folder_state(out)
    assert after["objects.csv"] != before["objects.csv"] and set(after) >= set(before)
    assert len(pd.read_csv(out / "objects.csv")["image"].unique()) == 4


def test_an_interrupted_batch_overwrite_leaves_no_tables_of_other_settings(tmp_path, monkeypatch, capsys):
    """`batch segment --overwrite` with another model, stopped after one item: that item's labels were the new
    model's while objects.csv, counts.csv and batch_run.json ("processed 4, failed 0") stayed the earlier
    run's. The earlier tables go when such a run starts; the rerun resumes and writes them."""
    import napari_microseg.batch.runner as runner
    from napari_microseg.cli import main

    folder = _segment_folder(tmp_path, 3)
    out = tmp_path / "out"
    first = ["batch", "segment", "--input", str(folder), "--out", str(out), "--workers", "0", "--quiet"]
    assert main([*first, "--model", "nuclei_fluorescence_fast"]) == 0
    assert (out / "objects.csv").is_file() and (out / "batch_run.json").is_file()
    real, calls = runner.run_item, []

    def stopped_at_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "run_item", stopped_at_the_second)
    again = [*first, "--model", "nuclei_fluorescence", "--overwrite"]
    assert main(again) == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    assert not (out / "objects.csv").exists() and not (out / "batch_run.json").exists()
    monkeypatch.setattr(runner, "run_item", real)
    assert main(again) == 0
    record = json.loads((out / "batch_run.json").read_text())
    assert record["processed"] + record["skipped"] == 3 and record["skipped"] >= 1
    assert len(pd.read_csv(out / "objects.csv")["image"].unique()) == 3


@pytest.mark.parametrize("terminated", [False, True])
def test_an_interrupt_wrapped_by_python_ends_the_run_as_an_interrupt(monkeypatch, capsys, terminated):
    """Ctrl-C (or TERM) while pydantic built a class during track's btrack import: Python 3.11 wraps it in a
    RuntimeError ("Error calling __set_name__"), and the run ended in a traceback, exit 1 (a scheduler's TERM
    reported as a failure)."""
    from napari_microseg.cli import main
    from napari_microseg.errors import Terminated

    def wrapped(args):
        try:
            raise Terminated() if terminated else KeyboardInterrupt()
        except KeyboardInterrupt as stop:
            raise RuntimeError("Error calling __set_name__ on '_FieldInfo' instance") from stop

    from napari_microseg.cli import build_parser

    parser = build_parser()
    monkeypatch.setattr("napari_microseg.cli.build_parser", lambda: parser)
    track_parser = parser._subparsers._group_actions[0].choices["track"]
    track_parser.set_defaults(func=wrapped)
    assert main(["track", "--labels", "x.tif", "--out", "o"]) == (143 if terminated else 130)
    assert ("terminated" if terminated else "interrupted") in capsys.readouterr().err


def test_a_classifier_stopped_while_pretraining_says_nothing_was_written(tmp_path, monkeypatch, capsys):
    """Stopped in the pre-training stage, `classify train images --input` said "the best model so far is kept
    in resp.pt" (there was none) and wrote the pre-training rows as the model's history (over an earlier
    run's, with --overwrite)."""
    import napari_microseg.progress as progress
    from napari_microseg.cli import main

    sim = tmp_path / "sim"
    assert main(["simulate", "response", "--n", "6", "--out", str(sim), "--seed", "5"]) == 0
    real = progress.run_with_text_progress

    def stopped_in_pretraining(gen, *args, **kwargs):
        if "train images" not in str(kwargs.get("label", "")):
            return real(gen, *args, **kwargs)
        for event in gen:
            if getattr(event, "kind", "") == "epoch" and getattr(event, "phase", "") == "pretrain":
                raise KeyboardInterrupt
        raise AssertionError("no pre-training epoch")

    monkeypatch.setattr(progress, "run_with_text_progress", stopped_in_pretraining)
    out = tmp_path / "resp.pt"
    assert _classify("train", "images", "--simulated", "8", "--input", sim, "--epochs", "2", "--out", out,
                     "--device", "cpu", "--threads", "1") == 130
    said = capsys.readouterr().err
    assert "interrupted while pre-training" in said and "no resp.pt was written" in said, said
    assert "best model so far is kept" not in said
    assert not out.exists() and not (tmp_path / "resp.history.csv").exists()


def test_read_only_output_folders_are_said_before_work_and_their_lock_error_hides_nothing(tmp_path, monkeypatch,
                                                                                          capsys):
    """`classify train --out ro/c.pt` trained a whole epoch before failing on a read-only folder; a run whose
    folder became read-only ended with the lock's removal error ("Read-only file system: .batch.lock") in
    place of its own."""
    import errno
    import tempfile as tempfile_module

    import napari_microseg.io.atomic as atomic
    from napari_microseg.batch.runner import release_out_lock

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(atomic.tempfile, "NamedTemporaryFile", read_only)
    assert _classify("train", "images", "--simulated", "8", "--epochs", "1", "--out", tmp_path / "c.pt",
                     "--device", "cpu", "--threads", "1") == 2
    assert "Read-only file system" in capsys.readouterr().err
    assert not (tmp_path / "c.history.csv").exists()
    monkeypatch.setattr(atomic.tempfile, "NamedTemporaryFile", tempfile_module.NamedTemporaryFile)
    lock = tmp_path / ".batch.lock"
    lock.write_text("{}")
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: read_only())
    release_out_lock(lock)  # no error of its own


def test_an_interrupted_training_says_how_to_go_on(tmp_path, monkeypatch, capsys):
    """Stopped after an epoch, `train` named the kept model but not how to continue the run."""
    import napari_microseg.progress as progress
    from napari_microseg.cli import main

    _image_label_folders(tmp_path, 3)
    real = progress.run_with_text_progress

    def stopped_after_an_epoch(gen, *args, **kwargs):
        if kwargs.get("label") != "train":
            return real(gen, *args, **kwargs)
        for event in gen:
            if getattr(event, "kind", "") == "epoch":
                raise KeyboardInterrupt
        raise AssertionError("no epoch")

    monkeypatch.setattr(progress, "run_with_text_progress", stopped_after_an_epoch)
    assert main(["train", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"), "--out",
                 str(tmp_path / "m.pt"), "--epochs", "3", "--patch", "32", "--patches-per-epoch", "8",
                 "--batch-size", "4", "--val-fraction", "0", "--threads", "1"]) == 130
    assert f"run the same command with --resume {tmp_path / 'm.pt.last.pt'}" in capsys.readouterr().err


@pytest.mark.gui
def test_layers_closed_together_during_a_run_are_freed_by_one_collection(make_napari_viewer, wait_worker, qtbot,
                                                                         monkeypatch):
    """Each layer closed during a run set off a full collection on the GUI thread (0.3-1.3 s each with a run's
    frozen objects): removing 5 layers froze the window for 2.5 s. Small layers wait for the run's end; big ones
    closed together are freed by one collection."""
    import threading

    import napari_microseg.widgets._base as base
    from napari_microseg.widgets.segmentation import SegmentationWidget

    collections = []
    real_collect = base._collect_now
    monkeypatch.setattr(base, "_collect_now", lambda: collections.append(1) or real_collect())
    monkeypatch.setattr(base, "COLLECT_CLOSED_BYTES", 32 * 32 * 4)
    viewer = make_napari_viewer(show=False)
    dock = SegmentationWidget(viewer)
    for i in range(5):
        viewer.add_image(np.zeros((8, 8), np.float32), name=f"small {i}")
        viewer.add_image(np.zeros((32, 32), np.float32), name=f"big {i}")
    release = threading.Event()
    worker = dock.start(_running_until(release), lambda _: None, label="a long run")
    try:
        qtbot.waitUntil(lambda: worker.is_running, timeout=10000)
        for i in range(5):
            viewer.layers.remove(f"small {i}")
        qtbot.wait(base.COLLECT_DELAY_MS + 300)
        assert not collections  # small layers: freed when the run ends
        for i in range(5):
            viewer.layers.remove(f"big {i}")
        qtbot.wait(base.COLLECT_DELAY_MS + 300)
        assert len(collections) == 1
    finally:
        release.set()
        wait_worker(worker)


@pytest.mark.gui
def test_ctc_export_finished_as_stop_was_pressed_is_said_written(make_napari_viewer, wait_worker, tmp_path):
    """Stop pressed after the CTC export's worker had written the folder, before the window handled its
    result: "stopped; ctc_RES was not written" of a complete folder (and the next export went to ctc_RES_2)."""
    import threading

    from qtpy.QtCore import Qt

    from napari_microseg.widgets.tracking import TrackingWidget

    viewer = make_napari_viewer()
    viewer.add_labels(_two_movers(), name="lab")
    widget = TrackingWidget(viewer)
    widget.labels_layer.value = "lab"
    wait_worker(widget.track())
    widget.export_dir.value = str(tmp_path)
    returned = threading.Event()
    worker = widget.export_ctc()
    worker.returned.connect(lambda *_: returned.set(), Qt.DirectConnection)  # in the worker's thread
    assert returned.wait(60)
    widget.stop()  # the user's Stop in that moment
    wait_worker(worker)
    assert (tmp_path / "ctc_RES" / "res_track.txt").is_file()
    assert "written CTC folder" in widget.status.text() and "not written" not in widget.status.text()


@pytest.mark.gui
def test_classification_dock_classifies_images_in_steps_with_the_roc_from_its_worker(make_napari_viewer, wait_worker,
                                                                                     tmp_path, monkeypatch):
    """Classify ran 5,000 response images as one step (no progress, Stop waited for the whole run), then built
    the ROC (importing sklearn) on the GUI thread, and refilled the whole table at each slider step."""
    import napari_microseg.widgets.classification as classification
    from napari_microseg.progress import drain
    from napari_microseg.simulate.samples import generate_response
    from napari_microseg.widgets.classification import ClassificationWidget

    monkeypatch.setattr(classification, "CLASSIFY_CHUNK", 8)
    viewer = make_napari_viewer()
    for data, kwargs, kind in drain(generate_response({"n_images": 30}, 7)):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = ClassificationWidget(viewer)
    widget.train_n.value, widget.train_epochs.value = 40, 1
    widget.train_out.value = str(tmp_path / "r.pt")
    wait_worker(widget.train())
    widget.image_layer.value = "sim response images"
    steps = []
    real_start = widget.start

    def counting_start(make, done, **kwargs):
        def counted():
            return (yield from _passing(make(), steps))
        return real_start(counted, done, **kwargs)

    monkeypatch.setattr(widget, "start", counting_start)
    wait_worker(widget.classify())
    assert [s for s in steps if s is not None] == [0, 8, 16, 24]
    table = widget.results
    assert len(table) == 30 and list(table["index"]) == list(range(30))
    assert "roc" in table.attrs  # made in the worker
    # a slider step updates the verdicts in place, as a refill shows them
    widget.threshold.value = 0.3
    shown = [widget.table.item(r, [widget.table.horizontalHeaderItem(c).text()
                                   for c in range(widget.table.columnCount())].index("verdict")).text()
             for r in range(widget.table.rowCount())]
    assert shown == list(widget.results["verdict"])
    assert list(widget.results["verdict"]) == list(np.where(widget.results["probability_bad"] >= 0.3, "bad", "good"))


def _passing(gen, seen: list):
    """Yield ``gen``'s events, noting each one's ``done``; return its value."""
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        seen.append(getattr(event, "done", None))
        yield event


def test_a_frame_segmented_as_one_object_is_warned_about():
    """A briefly trained network (its three classes ~1/3 each) made every frame one object of 65,536 px,
    count 1, reported as a success in the CLI and the dock. It is warned about now."""
    from napari_microseg.inference.segment import _one_object_covers_the_frame, segment
    from napari_microseg.io.models import load_model

    objects = pd.DataFrame({"t": [0, 1, 1], "label": [1, 1, 2], "area": [4000, 100, 3900]})
    said = _one_object_covers_the_frame(objects, 64 * 64)
    assert said.startswith("one object covers 98 % of the frame in 2 frame(s) (first: t=0)"), said
    assert _one_object_covers_the_frame(objects.assign(area=[100, 100, 100]), 64 * 64) is None
    # a network that calls every pixel foreground (a binary model's probability 0.67 everywhere)
    loaded = load_model("nuclei_fluorescence_fast")
    image = np.random.default_rng(0).random((2, 64, 64)).astype(np.float32)

    def everywhere(batch):  # background, interior, boundary, and the distance head's map
        return np.stack([np.full(batch.shape[:1] + batch.shape[2:], p, np.float32) for p in (0.1, 0.8, 0.1, 1.0)],
                        axis=1)

    result = segment(loaded, image, predict_fn=everywhere)
    assert "one object covers" in str(result.settings["coverage_warning"]), result.settings["coverage_warning"]
    normal = segment(loaded, (image > 2).astype(np.float32))
    assert normal.settings["coverage_warning"] is None


@pytest.mark.gui
def test_training_dock_says_a_low_validation_dice(make_napari_viewer, wait_worker, tmp_path):
    """The end message gave the validation loss only (2.01) where the Dice was 0.13: the model was then
    offered, and used, as if fine."""
    from test_hunt32_fixes import _tiny_training_dock

    import napari_microseg.widgets.training as training

    widget = _tiny_training_dock(make_napari_viewer, 3)
    widget.val_fraction.value = 0.34
    widget.out_path.value = str(tmp_path / "m.pt")
    said = []
    widget.show_message = widget.show_error = said.append
    wait_worker(widget.train())
    history = pd.read_csv(tmp_path / "m.history.csv")
    dice = float(history.loc[history["epoch"] == 1, "val_dice"].iloc[0])
    assert f"validation Dice {dice:.3f}" in said[-1], said[-1]
    assert ("The validation Dice is low" in said[-1]) == (dice < training.LOW_VALIDATION_DICE)
    # the other side of the bar (one tiny epoch's Dice is not known in advance)
    training.LOW_VALIDATION_DICE, before = (dice + 0.01 if dice >= training.LOW_VALIDATION_DICE else dice - 0.01), \
        training.LOW_VALIDATION_DICE
    try:
        widget._finished(widget.result)
        assert ("The validation Dice is low" in said[-1]) == (dice < training.LOW_VALIDATION_DICE)
    finally:
        training.LOW_VALIDATION_DICE = before


def test_fits_frames_open_with_contrast_of_their_percentiles(shared_data):
    """A real CCD frame opened by the reader showed almost black: napari's min-max limits (3427-9810 ADC) where
    99 % of the pixels lay below 3815. The limits are the 0.5-99.9 percentiles, as the Fe-55 sample's."""
    from napari_microseg._reader import get_reader
    from napari_microseg.io.images import read_image

    path = str(shared_data / "ccd_fe55" / "ESIS1_00002.fit.gz")
    [(data, kwargs, kind)] = get_reader(path)(path)
    low, high = kwargs["contrast_limits"]
    expected = np.percentile(read_image(path).data, [0.5, 99.9])
    assert kind == "image" and (low, high) == pytest.approx(tuple(expected), rel=0.02)
    assert high < float(np.max(data))


@pytest.mark.gui
def test_classification_dock_says_how_to_get_a_model_of_a_task_that_has_none(make_napari_viewer, monkeypatch):
    """Objects [T] and profiles [P] ship no model: Classify said "Choose a model file (.pt), or one of the
    models in the list" of a list holding only "model file ..."."""
    import napari_microseg.widgets.classification as classification
    from napari_microseg.widgets.classification import ClassificationWidget

    monkeypatch.setattr(classification, "RECENT_CLASSIFIERS", {})  # none trained in this session

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 3, 32), np.float32), name="profiles")
    widget = ClassificationWidget(viewer)
    widget.task.value = "profiles [P]"
    widget.image_layer.value = "profiles"
    errors = []
    widget.show_error = errors.append
    widget.classify()
    assert errors and "No profiles [P] model yet" in errors[-1] and "Train on simulated data" in errors[-1]


def test_training_on_simulated_ccd_frames_says_off_centre_steps_once_without_a_foreign_option(tmp_path, capsys):
    """The README's CCD training printed a tap warning per frame on the simulator's own frames (a glowing band
    at the edge), each pointing to 'autolabel ccd --taps', an option train does not have."""
    from napari_microseg.cli import main

    assert main(["simulate", "ccd", "--out", str(tmp_path / "ccd"), "--n", "6", "--balanced", "--shape", "256",
                 "256"]) == 0
    capsys.readouterr()
    assert main(["train", "--images", str(tmp_path / "ccd" / "frames"), "--labels", str(tmp_path / "ccd" / "classes"),
                 "--output-mode", "multiclass", "--out", str(tmp_path / "c.pt"), "--epochs", "1",
                 "--patches-per-epoch", "4", "--patch", "64", "--quiet", "--threads", "1"]) == 0
    err = capsys.readouterr().err
    assert err.count("have a pedestal step away from the middle column") == 1, err
    assert "--taps" not in err and "pedestal steps by" not in err


def test_segmenting_simulated_ccd_frames_says_off_centre_steps_once(tmp_path, capsys):
    """`segment --model ccd_classes` of the simulator's frames printed a tap warning per frame, naming no file."""
    from napari_microseg.cli import main

    assert main(["simulate", "ccd", "--out", str(tmp_path / "ccd"), "--n", "6", "--balanced", "--shape", "256",
                 "256"]) == 0
    capsys.readouterr()
    assert main(["segment", "--model", "ccd_classes", "--input", str(tmp_path / "ccd" / "frames"), "--out",
                 str(tmp_path / "s"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.count("have a pedestal step away from the middle column (first: ccd_0000") == 1, err
    assert "pedestal steps by" not in err


def test_an_export_gives_segments_probabilities_and_says_how_to_decode_them(tmp_path):
    """The exported U-Net padded to 2**depth = 8 px where segment pads its tiles to 16: up to 0.6 apart on a
    100 x 150 image; and a distance-head model's 4 outputs were to be "decoded as output_mode says" (a softmax
    over all 4 moved the class probabilities by up to 0.2)."""
    import torch

    from napari_microseg.cli import main
    from napari_microseg.inference.segment import segment
    from napari_microseg.io.export import load_torchscript
    from napari_microseg.io.models import load_model
    from napari_microseg.training.normalize import normalize

    assert main(["export", "--model", "nuclei_fluorescence", "--out", str(tmp_path / "n.ts.pt")]) == 0
    module, config = load_torchscript(str(tmp_path / "n.ts.pt"))
    assert config["n_outputs"] == 4 and any("sigmoid of the 4th" in step for step in config["preprocessing"])
    loaded = load_model("nuclei_fluorescence", device="cpu")
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    image = simulate_nuclei_image((100, 150), 8, seed=2)[0]
    ours = np.asarray(segment(loaded, image, precision="float32", keep_probabilities=True).probabilities)
    x = normalize(image[None].astype(np.float32), loaded.normalization)[0]
    with torch.no_grad():
        logits = module(torch.from_numpy(np.ascontiguousarray(x))[None, None])[0]
    exported = torch.softmax(logits[:3], 0).numpy()
    np.testing.assert_allclose(exported, ours[:3], atol=1e-4)


def test_segment_removes_only_its_own_stale_temporaries(tmp_path):
    """segment removed every hidden file and folder under OUT/labels (a user's .git, a Zarr array's .zarray):
    only the temporaries of its own outputs go."""
    import zarr

    from napari_microseg.cli import main

    folder = _segment_folder(tmp_path, 1)
    out = tmp_path / "out"
    (out / "labels" / ".git").mkdir(parents=True)
    (out / "labels" / ".notes").write_text("mine")
    zarr.open_array(str(out / "labels" / "manual_cells"), mode="w", shape=(4, 4), dtype="uint8", zarr_format=2)
    (out / "labels" / ".im0.tif.abc123").write_text("a killed run's")
    assert main(["segment", "--model", "nuclei_fluorescence_fast", "--input", str(folder), "--out", str(out),
                 "--quiet"]) == 0
    assert (out / "labels" / ".git").is_dir() and (out / "labels" / ".notes").is_file()
    assert zarr.open_array(str(out / "labels" / "manual_cells"), mode="r").shape == (4, 4)
    assert not (out / "labels" / ".im0.tif.abc123").exists() and (out / "labels" / "im0.tif").is_file()


def test_segment_shows_other_warnings_of_an_image_that_fails(tmp_path, capsys):
    """The tap-step summary recorded every warning of an image and replayed them after it: those of an image
    that failed were lost (a unit not understood, the likely cause), the others came after its result line."""
    import tifffile

    from napari_microseg.cli import main

    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(0)
    tifffile.imwrite(tmp_path / "in" / "a.tif", (rng.random((64, 64)) * 200).astype(np.uint8), imagej=True,
                     resolution=(2.0, 2.0), metadata={"unit": "bogus"})
    tifffile.imwrite(tmp_path / "in" / "b.tif", np.zeros((2, 2), np.uint8), imagej=True, resolution=(2.0, 2.0),
                     metadata={"unit": "bogus"})
    main(["segment", "--model", "nuclei_fluorescence_fast", "--input", str(tmp_path / "in"), "--out",
          str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert "b.tif: ImageJ length unit 'bogus' not understood" in err, err


def test_track_does_not_call_files_clashing_where_the_options_decide(tmp_path, capsys):
    from napari_microseg.cli import main

    labels = _two_movers()
    _ome_movie(tmp_path / "lab.ome.tif", labels, 0.5, interval_s=60)
    _ome_movie(tmp_path / "img.ome.tif", labels.astype(np.float32), 0.1, interval_s=120)
    assert main(["track", "--labels", str(tmp_path / "lab.ome.tif"), "--image", str(tmp_path / "img.ome.tif"),
                 "--out", str(tmp_path / "o"), "--pixel-size", "0.3", "--frame-interval", "2"]) == 0
    err = capsys.readouterr().err
    assert "calibrated differently" not in err and "--pixel-size 0.3 replaces the file's 0.5" in err


def test_a_closed_pyramid_counts_its_levels_bytes():
    """napari wraps a pyramid's levels in MultiScaleData (no list): a closed 4096^2 pyramid counted 0 bytes and
    was not freed during a run."""
    from napari.layers import Image

    from napari_microseg.widgets._base import _layer_bytes

    levels = [np.zeros((256, 256), np.float32), np.zeros((128, 128), np.float32)]
    assert _layer_bytes(Image(levels, multiscale=True)) == sum(level.nbytes for level in levels)


def test_autolabel_marks_nuclei_cut_by_the_edge_not_annotated_for_training():
    """With the border cleared, nuclei touching the image edge became background (0) in the training tiles: a
    network learned visible nuclei as background. They are -1 (not annotated), as nuclei above the size range."""
    from napari_microseg.autolabel.fluorescence import autolabel_frame as autolabel_fluorescence
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    image, truth = simulate_nuclei_image((128, 128), 25, seed=1)
    edge = set(np.unique(np.concatenate([truth[0], truth[-1], truth[:, 0], truth[:, -1]]))) - {0}
    assert edge  # the field has nuclei cut by its edge
    for_training = autolabel_fluorescence(image, too_large_value=-1)
    plain = autolabel_fluorescence(image)
    assert (for_training == -1).any() and not (plain < 0).any()
    cut = np.isin(truth, list(edge))  # the pixels of the true nuclei touching the edge
    assert (for_training[cut] == -1).mean() > 0.5, (for_training[cut] == -1).mean()  # mostly not annotated now
    assert (plain[cut] == 0).mean() > 0.9  # (the plain labels drop them, as before)
    assert (for_training[(plain > 0)] > 0).all()  # the objects kept are the same


def test_evaluate_reads_minus_one_in_float_truth_and_says_the_ignore_option(tmp_path, capsys):
    from napari_microseg.cli import main
    from napari_microseg.io.images import write_tiff

    truth = np.zeros((20, 20), np.float32)
    truth[2:8, 2:8], truth[10:16, 10:16], truth[0:4, 14:20] = 1, 2, -1
    write_tiff(tmp_path / "gt.tif", truth)
    write_tiff(tmp_path / "pred.tif", np.where(truth > 0, truth, 0).astype(np.uint16))
    assert main(["evaluate", "seg", "--gt", str(tmp_path / "gt.tif"), "--pred", str(tmp_path / "pred.tif"),
                 "--out", str(tmp_path / "m.csv")]) == 0
    assert pd.read_csv(tmp_path / "m.csv").iloc[-1]["ap@0.50"] == 1.0
    classes = np.where(truth < 0, -1, truth).astype(np.int16)
    write_tiff(tmp_path / "c.tif", classes)
    assert main(["evaluate", "classes", "--gt", str(tmp_path / "c.tif"), "--pred", str(tmp_path / "pred.tif"),
                 "--out", str(tmp_path / "c.csv")]) == 2
    assert "give --ignore -1" in capsys.readouterr().err


def test_info_says_an_onnx_file_is_an_export(tmp_path, capsys):
    from napari_microseg.cli import main

    (tmp_path / "m.onnx").write_bytes(b"\x08\x07onnx-ish")
    assert main(["info", "--model", str(tmp_path / "m.onnx")]) == 2
    assert "is an ONNX export" in capsys.readouterr().err


def test_an_interrupted_overwrite_of_single_exposures_leaves_the_earlier_run_whole(tmp_path, monkeypatch):
    """`segment --hot-repeats --overwrite` of single exposures moved their new labels into labels/ before the
    tables: stopped there, new labels stood beside the earlier run's tables. They are staged with the rest."""
    import napari_microseg.cli.segment as segment_cli
    from napari_microseg.cli import main

    assert main(["simulate", "ccd", "--out", str(tmp_path / "ccd"), "--n", "4", "--one-sensor", "--shape", "128",
                 "128"]) == 0
    run = ["segment", "--model", "ccd_classes", "--input", str(tmp_path / "ccd" / "frames"), "--out",
           str(tmp_path / "o"), "--hot-repeats", "--quiet"]
    assert main(run) == 0
    before = _folder_state(tmp_path / "o")

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(segment_cli, "_write_defect_mask", stopped)
    assert main([*run, "--overwrite", "--max-cluster-size", "3"]) == 130
    after = {name: data for name, data in _folder_state(tmp_path / "o").items()
             if not name.startswith(".microseg-repeats")}  # the exposures kept for a rerun to take up
    assert after == before


def test_segment_overwrite_publishes_across_file_systems_and_survives_a_failing_table(tmp_path, monkeypatch):
    """Staged files were moved by os.replace: a labels/ or probabilities/ folder linked to another file system
    failed with "Invalid cross-device link" after some labels were replaced; and a table that failed to write
    (a full disk) came after the labels were published. Copies are made first, tables are staged too."""
    import errno
    import os
    import shutil as shutil_module
    import tempfile

    from napari_microseg.cli import main

    other = Path("/dev/shm")
    if not other.is_dir() or os.stat(other).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second file system (tmpfs /dev/shm) on this machine")
    folder = _segment_folder(tmp_path, 3)
    out = tmp_path / "out"
    elsewhere = Path(tempfile.mkdtemp(dir=other))
    try:
        out.mkdir()
        (out / "probabilities").symlink_to(elsewhere)
        run = ["segment", "--model", "nuclei_fluorescence_fast", "--input", str(folder), "--out", str(out), "--quiet",
               "--save-probabilities"]
        assert main(run) == 0
        before = _folder_state(out)
        assert main([*run, "--overwrite", "--threshold", "0.7"]) == 0
        record = json.loads((out / "segment_run.json").read_text())
        assert record["threshold"] == 0.7 and len(list((out / "probabilities").iterdir())) == 3
        before = _folder_state(out)

        def full_disk(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        import napari_microseg.measure.tables as tables

        monkeypatch.setattr(tables, "write_table_csv", full_disk)
        assert main([*run, "--overwrite", "--threshold", "0.8"]) == 2
        assert _folder_state(out) == before
    finally:
        shutil_module.rmtree(elsewhere, ignore_errors=True)


def test_a_cluster_beside_a_glowing_band_keeps_a_positive_charge():
    """A cluster 1-2 px beside a glowing band: once grown, its pixels' nearest quiet pixel lay in the band, so
    the glow's level (1400 ADC) was taken off background pixels: charges of -6796 ADC for 1629."""
    from napari_microseg.autolabel.ccd import find_clusters

    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 3.0, (64, 64))
    classes = np.zeros((64, 64), np.uint8)
    image[:, 20:40] += 1400.0
    classes[:, 20:40] = 1
    yy, xx = np.mgrid[:64, :64]
    charge = 1600.0 * np.exp(-((yy - 30) ** 2 + (xx - 42.2) ** 2) / (2 * 0.7 ** 2)) / (2 * np.pi * 0.7 ** 2)
    image += charge
    classes[(charge > 40) & (classes == 0)] = 3
    table = find_clusters(classes, image)
    assert len(table) == 1
    assert table["charge_adc"].iloc[0] == pytest.approx(charge.sum(), rel=0.1), table


def test_batch_classify_notes_8_bit_images_given_to_a_16_bit_model(tmp_path):
    """`classify images` warned that 8-bit images look almost black to a --keep-16bit model; `batch classify`
    said nothing (no notes.csv)."""
    import tifffile

    from napari_microseg.cli import main

    assert _classify("train", "images", "--simulated", "8", "--epochs", "1", "--keep-16bit", "--out",
                     tmp_path / "k16.pt", "--device", "cpu", "--threads", "1") == 0
    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(0)
    tifffile.imwrite(tmp_path / "in" / "eight.tif", (rng.random((70, 60)) * 250).astype(np.uint8))
    tifffile.imwrite(tmp_path / "in" / "sixteen.tif", (rng.random((70, 60)) * 60000).astype(np.uint16))
    assert main(["batch", "classify", "--model", str(tmp_path / "k16.pt"), "--input", str(tmp_path / "in"), "--box",
                 "26", "2", "65", "44", "--out", str(tmp_path / "o"), "--workers", "0", "--quiet"]) == 0
    notes = pd.read_csv(tmp_path / "o" / "notes.csv")
    assert list(notes["image"]) == ["eight.tif"] and "looks almost black" in notes["note"].iloc[0]


def test_batch_classify_of_a_folder_of_plates_classifies_their_images_only(tmp_path):
    """A folder of response folders (a plate each) was walked whole: it asked for --box though every plate has
    its masks, and with one its masks and artefact images were classified as images (48 rows for 16)."""
    from napari_microseg.cli import main

    for plate in ("plate1", "plate2"):
        assert main(["simulate", "response", "--n", "3", "--out", str(tmp_path / "mp" / plate), "--seed", "5"]) == 0
    assert main(["batch", "classify", "--model", "response_good_bad", "--input", str(tmp_path / "mp"), "--out",
                 str(tmp_path / "o"), "--workers", "0", "--quiet"]) == 0
    flags = pd.read_csv(tmp_path / "o" / "flags.csv")
    assert len(flags) == 6 and flags["image"].str.contains("/images/").all(), flags["image"].tolist()


def test_batch_classify_stating_the_models_own_threshold_is_no_other_setting(tmp_path, capsys):
    """`batch classify --threshold 0.5` (the model's own) over a run without it was refused as "other settings"."""
    from napari_microseg.cli import main

    assert main(["simulate", "response", "--n", "3", "--out", str(tmp_path / "r"), "--seed", "5"]) == 0
    run = ["batch", "classify", "--model", "response_good_bad", "--input", str(tmp_path / "r"), "--out",
           str(tmp_path / "o"), "--workers", "0", "--quiet"]
    assert main(run) == 0
    capsys.readouterr()
    assert main([*run, "--threshold", "0.5"]) == 0
    assert "3 skipped" in capsys.readouterr().out
    assert main([*run, "--threshold", "0.3"]) == 2  # another threshold is another setting
