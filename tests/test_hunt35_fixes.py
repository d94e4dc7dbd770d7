"""Regression tests for the gaps closed and bugs found in session 35: each failed on the code before its fix."""
from __future__ import annotations

import numpy as np
import pandas as pd


def _segmented_stack(make_napari_viewer, wait_worker, export_dir, n_frames: int, size: int = 96, n_nuclei: int = 8):
    """A viewer with a simulated movie ("movie") segmented whole by the Segmentation dock; (viewer, dock)."""
    from test_gui_hunt_fixes import _segmentation_dock

    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse

    viewer = make_napari_viewer(show=False)
    sim = simulate_nuclei_timelapse(n_frames=n_frames, shape=(size, size), n_nuclei=n_nuclei, seed=5)
    viewer.add_image(sim.fluorescence, name="movie")
    seg = _segmentation_dock(viewer, "movie")
    seg.scope.value = "whole stack"
    seg.export_dir.value = str(export_dir)
    wait_worker(seg.segment())
    return viewer, seg


def test_batch_flags_of_a_stack_list_its_frames_in_number_order(tmp_path):
    """flags.csv sorted a stack's frames as text: stack.tif[10] came between stack.tif[1] and stack.tif[2]."""
    import glob

    import tifffile

    from napari_microseg.cli import main

    assert main(["simulate", "response", "--out", str(tmp_path / "rs"), "--n", "11", "--seed", "3"]) == 0
    files = sorted(glob.glob(str(tmp_path / "rs" / "images" / "*.tif")))
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "stack.tif", np.stack([tifffile.imread(f) for f in files]))
    out = tmp_path / "out"
    assert main(["batch", "classify", "--model", "response_good_bad", "--input", str(tmp_path / "in"), "--out", str(out),
                 "--workers", "0", "--box", "30", "10", "69", "52", "--quiet"]) == 0
    flags = pd.read_csv(out / "flags.csv")
    assert flags["image"].tolist() == [f"stack.tif[{i}]" for i in range(11)]


def test_merged_tables_put_image_numbers_in_number_order(tmp_path):
    """objects.csv / counts.csv of img2.tif and img10.tif: img10 came first (text order)."""
    from napari_microseg.batch.runner import merge_tables

    records = []
    for name in ("img10.tif", "img2.tif", "b.tif"):
        shard = f"{name}.counts.csv"
        pd.DataFrame({"image": [name], "t": [0], "count": [1]}).to_csv(tmp_path / shard, index=False)
        records.append({"outputs": {"counts": shard}})
    merge_tables(tmp_path, records)
    assert pd.read_csv(tmp_path / "counts.csv")["image"].tolist() == ["b.tif", "img2.tif", "img10.tif"]


def test_batch_takes_of_a_simulated_movie_the_images_its_task_reads(tmp_path):
    """`batch autolabel` of a `simulate nuclei` folder auto-labelled its truth (labels.tif) and its phase image
    as nuclear stains, and `batch track` tracked the fluorescence image as labels: each task now takes the
    images it reads (autolabel the stain, track the truth, segment both channels) and lists the others."""
    import json

    from napari_microseg.batch.runner import find_batch_inputs, simulation_inputs
    from napari_microseg.cli import main

    sim = tmp_path / "sim"
    assert main(["simulate", "nuclei", "--out", str(sim), "--frames", "2", "--shape", "96", "96", "--seed", "1"]) == 0
    out = tmp_path / "auto"
    assert main(["batch", "autolabel", "--input", str(sim), "--out", str(out), "--workers", "0", "--quiet"]) == 0
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["fluorescence.tif"]
    assert set(pd.read_csv(out / "counts.csv")["image"]) == {"fluorescence.tif"}
    run = json.loads((out / "batch_run.json").read_text())
    assert any(str(p).endswith("labels.tif") for p in run["ignored_files"]) and any(str(p).endswith("phase.tif") for p in run["ignored_files"])
    for task, reads_labels, names in (("track", True, ["labels.tif"]), ("segment", False, ["fluorescence.tif", "phase.tif"])):
        found = find_batch_inputs(sim, simulation_inputs=simulation_inputs(task, reads_labels))
        assert [p.name for p, _ in found] == names
    # a folder that merely holds files of those names is no simulation: all are inputs
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in ("fluorescence.tif", "labels.tif"):
        (plain / name).write_bytes((sim / name).read_bytes())
    assert len(find_batch_inputs(plain, simulation_inputs=("fluorescence.tif",))) == 2
    # several movies (movie_NNN/ folders), by a pattern too
    many = tmp_path / "many"
    assert main(["simulate", "nuclei", "--out", str(many), "--n", "2", "--frames", "2", "--shape", "64", "64"]) == 0
    found = find_batch_inputs(str(many / "*" / "*.tif"), simulation_inputs=simulation_inputs("autolabel", False))
    assert [rel for _, rel in found] == ["movie_000/fluorescence.tif", "movie_001/fluorescence.tif"]


def test_batch_item_replaced_by_an_unreadable_file_loses_its_old_labels(tmp_path):
    """A done image replaced by a corrupt file failed on the rerun, but its labels (of the earlier image) stayed
    in labels/ as if they were this input's; they go now, and failures.csv says so. An item that fails with its
    input unchanged keeps them."""
    import tifffile

    from napari_microseg.batch.runner import _remove_outputs_of_another_version
    from napari_microseg.cli import main
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    (tmp_path / "in").mkdir()
    for i in range(2):
        tifffile.imwrite(tmp_path / "in" / f"a{i}.tif", simulate_nuclei_image((96, 96), 6, seed=i)[0])
    out = tmp_path / "out"
    run = ["batch", "autolabel", "--input", str(tmp_path / "in"), "--out", str(out), "--workers", "0", "--quiet"]
    assert main(run) == 0
    assert (out / "labels" / "a0.tif").exists()
    data = (tmp_path / "in" / "a0.tif").read_bytes()
    (tmp_path / "in" / "a0.tif").write_bytes(data[:300])
    assert main(run) == 1
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["a1.tif"]
    assert not (out / "shards" / "objects" / "a0.csv").exists()
    reason = pd.read_csv(out / "failures.csv")["reason"].iloc[0]
    assert "not a readable TIFF" in reason and "earlier version of this input were removed" in reason
    # same input (a worker that died, checksum unknown or equal): its results stay
    (out / "keep.tif").write_bytes(b"x")
    earlier = {"status": "done", "checksum": "sha256:1", "outputs": {"labels": "keep.tif"}}
    assert _remove_outputs_of_another_version(out, earlier, {"checksum": None}) == []
    assert _remove_outputs_of_another_version(out, earlier, {"checksum": "sha256:1"}) == []
    assert (out / "keep.tif").exists()


def test_two_trainings_at_once_each_repeat_their_own_result(tmp_path):
    """Two trainings in one process (the Training and Classification docks at once) drew their weight
    initialisation and dropout from torch's one global generator in turns: neither was repeatable from its
    seed. Each now holds the generator, seeded from its own seed, while it draws."""
    import threading

    import torch

    from napari_microseg.classify.data import simulated_profile_data
    from napari_microseg.classify.trainer import train_with_strategy
    from napari_microseg.progress import drain

    data = simulated_profile_data(64, n_views=1, seed=0)

    def train(name: str, seed: int) -> dict:
        path = tmp_path / f"{name}.pt"
        drain(train_with_strategy("simulated", {"task": "profiles", "epochs": 3, "batch_size": 4, "device": "cpu",
                                                "seed": seed, "num_threads": 1}, simulated=data, out_path=path))
        return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]

    alone = {seed: train(f"alone{seed}", seed) for seed in (1, 2)}
    together: dict = {}
    threads = [threading.Thread(target=lambda s=seed: together.__setitem__(s, train(f"together{s}", s))) for seed in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for seed in (1, 2):
        assert all(torch.equal(alone[seed][k], together[seed][k]) for k in alone[seed]), seed


def test_undone_erase_after_an_export_keeps_the_objects_frame_label(make_napari_viewer, tmp_path, wait_worker):
    """Erase an object, Export, then Ctrl+Z: the object was back but exported with frame_label 0 (as painted anew:
    it no longer joined the first objects.csv), and the counts line still read as the last export's."""
    viewer, seg = _segmented_stack(make_napari_viewer, wait_worker, tmp_path, n_frames=3)
    seg.export()
    first = pd.read_csv(tmp_path / "objects.csv")
    row = first[first["t"] == 1].iloc[0]
    layer = viewer.layers["movie segmented"]
    viewer.dims.set_current_step(0, 1)
    y, x = np.argwhere(layer.data[1] == row["label"])[0]
    layer.fill((1, y, x), 0)  # the fill tool, with its undo history
    assert not (layer.data == row["label"]).any()
    wait_worker(seg.export())
    assert row["label"] not in set(pd.read_csv(tmp_path / "objects_2.csv")["label"])
    line = seg.counts_label.value
    layer.undo()
    assert (layer.data[1] == row["label"]).any()
    assert seg.counts_label.value != line and "edited since" in seg.counts_label.value  # not the last export's counts
    wait_worker(seg.export())
    again = pd.read_csv(tmp_path / "objects_3.csv")
    back = again[again["label"] == row["label"]]
    assert back["frame_label"].tolist() == [row["frame_label"]] and back["t"].tolist() == [1]
    # a later paint says the line is the last export's, not "as segmented"
    seg._drop_outdated_measurements(layer)
    assert "(as segmented" not in seg.counts_label.value


def test_a_training_frame_erased_after_add_is_said_and_export_while_busy_never_advises_stop(make_napari_viewer,
                                                                                             tmp_path, wait_worker):
    """A frame added to the training set, then erased whole, was trained on as added without a word; Export of
    corrected labels during a Fine-tune said "Already running: press Stop first." (Stop ends the training)."""
    import threading

    from test_hunt33_fixes import _running_until

    viewer, seg = _segmented_stack(make_napari_viewer, wait_worker, tmp_path, n_frames=2)
    layer = viewer.layers["movie segmented"]
    viewer.dims.set_current_step(0, 1)
    seg.labels_for_training.value = layer.name
    assert seg.add_to_training_set() == 1, seg.status.text()
    layer.data[1] = 0
    layer.refresh()
    note = seg._take_corrections_made_since_added()
    assert "now empty: trained on as added" in note and "t=1" in note
    # while the dock's worker runs, Export of corrected labels says to export when it ends
    layer.data[0, :5, :5] = 77
    seg.result_edited = True
    release = threading.Event()
    worker = seg.start(_running_until(release), lambda _: None, label="fine-tuning")
    try:
        seg.export()
        assert "press Export again" in seg.status.text() and "Stop" not in seg.status.text()
    finally:
        release.set()
        wait_worker(worker)


def test_atomic_write_over_a_link_writes_the_linked_file_and_keeps_the_mode(tmp_path):
    """Saving labels over work/labels.tif -> shared/final.tif replaced the link by a file of its own (the shared
    file never got the edit), and a 0640 file became 0644."""
    import os
    import stat

    from napari_microseg.io.atomic import atomic_write_text

    (tmp_path / "shared").mkdir()
    (tmp_path / "work").mkdir()
    final = tmp_path / "shared" / "final.csv"
    final.write_text("old\n")
    os.chmod(final, 0o640)
    link = tmp_path / "work" / "labels.csv"
    link.symlink_to(final)
    atomic_write_text(link, "new\n")
    assert link.is_symlink() and final.read_text() == "new\n"
    assert stat.S_IMODE(final.stat().st_mode) == 0o640
    assert not [p for p in (tmp_path / "shared").iterdir() if p.name.startswith(".")]  # no temporary left
    fresh = tmp_path / "work" / "fresh.csv"  # a new file: the mode a new file gets
    atomic_write_text(fresh, "x\n")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask


def test_ome_tif_name_keeps_a_one_frame_stack_and_writes_any_dtype(tmp_path):
    """Saved as x.ome.tif (the name alone makes tifffile write OME-XML), a one-frame calibrated stack came back as
    (Y, X) without its scale or origin, and an uncalibrated int64 / uint64 / float16 image failed with a raw
    OmeXmlError; as x.tif both were right."""
    from napari_microseg.io.images import MICROSEG_SOFTWARE, read_image, write_tiff

    stack = np.arange(2 * 24 * 32, dtype=np.uint16).reshape(1, 48, 32)
    calibration = {"pixel_size_um": 0.5, "frame_interval_min": 2.0}
    write_tiff(tmp_path / "frame.ome.tif", stack, calibration=calibration, origin={"Y": 10.0, "X": 20.0},
               software=MICROSEG_SOFTWARE)  # (as the napari writer saves a layer)
    back = read_image(tmp_path / "frame.ome.tif")
    assert back.data.shape == (1, 48, 32)
    np.testing.assert_array_equal(np.asarray(back.data), stack)
    assert back.metadata["calibration"]["pixel_size_um"] == 0.5
    assert back.metadata["calibration"]["frame_interval_min"] == 2.0
    assert back.metadata.get("origin") == {"Y": 10.0, "X": 20.0}
    write_tiff(tmp_path / "plain.ome.tif", stack)  # uncalibrated, one frame: its shape kept
    assert read_image(tmp_path / "plain.ome.tif").data.shape == (1, 48, 32)
    for dtype in ("int64", "uint64", "float16"):
        image = (np.arange(12 * 16).reshape(12, 16) % 200).astype(dtype)
        write_tiff(tmp_path / f"{dtype}.ome.tif", image)
        np.testing.assert_array_equal(np.asarray(read_image(tmp_path / f"{dtype}.ome.tif").data), image)


def test_rgb_layer_keeps_its_place_and_zipped_zarr_advice_works(tmp_path):
    """A calibrated RGB layer saved and opened again lost its translate (a grey one kept it); a zipped x.zarr was
    answered with `unzip x.zarr -d x.zarr`, which fails (the folder's name is the file's)."""
    import zipfile

    import pytest
    import zarr

    from napari_microseg._reader import read_layers
    from napari_microseg._writer import write_image_tiff
    from napari_microseg.errors import InputError
    from napari_microseg.io.images import read_image

    rgb = (np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)
    write_image_tiff(str(tmp_path / "rgb.tif"), rgb, {"rgb": True, "scale": (0.5, 0.5), "translate": (3.0, 4.0),
                                                       "units": ("micrometer", "micrometer")})
    (data, kwargs, _), = read_layers(str(tmp_path / "rgb.tif"))
    np.testing.assert_array_equal(np.asarray(data), rgb)
    assert kwargs["rgb"] and tuple(kwargs["translate"]) == (3.0, 4.0) and tuple(kwargs["scale"]) == (0.5, 0.5)
    # a zipped store holding its folder, named x.zarr: the advice unzips and names the store inside
    store = tmp_path / "x.zarr"
    zarr.open(str(store), mode="w", shape=(8, 8), dtype="u2")[:] = 7
    with zipfile.ZipFile(tmp_path / "x.zip", "w") as archive:
        for file in store.rglob("*"):
            archive.write(file, file.relative_to(tmp_path).as_posix())
    import shutil

    shutil.rmtree(store)
    (tmp_path / "x.zip").rename(store)
    with pytest.raises(InputError) as err:
        read_image(store)
    message = str(err.value)
    command = message.split("(", 1)[1].split(")", 1)[0]
    unzip, name, flag, folder = command.split()
    assert (unzip, name, flag) == ("unzip", "x.zarr", "-d") and not (tmp_path / folder).exists()
    with zipfile.ZipFile(tmp_path / name) as archive:  # what `unzip x.zarr -d folder` does
        archive.extractall(tmp_path / folder)
    given = message.rsplit("give the folder ", 1)[1]
    np.testing.assert_array_equal(np.asarray(read_image(tmp_path / given).data), np.full((8, 8), 7, np.uint16))


def test_tracking_dock_export_reopens_over_a_translated_movie(make_napari_viewer, tmp_path, wait_worker):
    """tracks.csv exported by the Tracking dock from labels at scale (3, .5, .5) and translate (0, 10, 20) um
    reopened at translate 0: 10 / 20 um off the movie (`microseg track` keeps the origin)."""
    import json

    from napari_microseg._reader import read_tracks_layer
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse
    from napari_microseg.widgets.tracking import TrackingWidget

    sim = simulate_nuclei_timelapse(n_frames=3, shape=(64, 64), n_nuclei=4, seed=5)
    viewer = make_napari_viewer(show=False)
    viewer.add_labels(sim.labels, name="nuclei", scale=(3.0, 0.5, 0.5), translate=(0.0, 10.0, 20.0),
                      units=("minute", "micrometer", "micrometer"))
    dock = TrackingWidget(viewer)
    dock.labels_layer.value = "nuclei"
    dock.export_dir.value = str(tmp_path)
    wait_worker(dock.track())
    assert dock.result is not None, dock.status.text()
    dock.export_csv()
    assert json.loads((tmp_path / "track_config.json").read_text())["units"]["origin_um"] == {"Y": 10.0, "X": 20.0}
    (_, tracks, _), = read_tracks_layer(str(tmp_path / "tracks.csv"))
    np.testing.assert_allclose(tracks["translate"][-2:], dock.tracks_layer.translate[-2:])
    np.testing.assert_allclose(tracks["translate"][-2:], (10.0, 20.0))
    np.testing.assert_allclose(tracks["scale"][-2:], (0.5, 0.5))


def test_unfinished_batch_label_store_is_warned_on_open_and_refused_by_the_tracking_dock(make_napari_viewer, tmp_path,
                                                                                         wait_worker):
    """A label store a stopped `batch segment` run left (frames after the last written empty) opened in napari
    without a word, and the Tracking dock tracked it ("7 disappeared before the end"); `microseg track`
    refuses it."""
    import pytest
    import zarr

    from napari_microseg._reader import read_layers
    from napari_microseg.errors import MicrosegWarning
    from napari_microseg.widgets.tracking import TrackingWidget

    store = tmp_path / "labels" / "movie.zarr"  # where batch segment writes it
    arr = zarr.open(str(store), mode="w", shape=(4, 32, 32), dtype="u2", chunks=(1, 32, 32))
    arr[:2, 8:12, 8:12] = 1
    arr.attrs["microseg_batch"] = {"complete": False, "frames": 4}
    with pytest.warns(MicrosegWarning, match="has not finished.*opened as it is"):
        (data, kwargs, _), = read_layers(str(store))
    viewer = make_napari_viewer(show=False)
    with pytest.warns(MicrosegWarning):
        layer, = viewer.open(str(store), plugin="napari-microseg")
    dock = TrackingWidget(viewer)
    dock.labels_layer.value = layer.name
    assert dock.track() is None
    assert "has not finished" in dock.status.text()
    # the run finishes while the store is open: the store as it is now is tracked (its record read again)
    arr[2:, 8:12, 8:12] = 1
    arr.attrs["microseg_batch"] = {"complete": True, "frames": 4}
    worker = dock.track()
    assert worker is not None, dock.status.text()
    wait_worker(worker)


def test_auto_class_weights_balance_an_undersampled_majority_and_one_view_profiles_train(tmp_path):
    """With undersampling (the CLI's default 0.2) and no oversampling, --class-weights balanced the raw counts:
    60/20/10 samples, 48/20/10 seen per epoch, weights 0.5/1.5/3 -> total weight 24/30/30. Profiles given as
    (N, points), as classify_profiles takes them, failed with an IndexError."""
    from napari_microseg.classify.data import ClassificationData, simulated_profile_data
    from napari_microseg.classify.trainer import train_classifier
    from napari_microseg.io.models import read_model_config
    from napari_microseg.progress import drain

    y = np.repeat([0, 1, 2], [60, 20, 10])
    x = np.random.default_rng(0).random((len(y), 1, 32, 32)).astype(np.float32)
    data = ClassificationData(x, y, ["a", "b", "c"])
    config = {"task": "objects", "epochs": 1, "batch_size": 32, "device": "cpu", "val_fraction": 0.0,
              "oversample": False, "undersample_fraction": 0.2, "class_weights": "auto",
              "model": {"architecture": "small_cnn"}}
    drain(train_classifier(config, data, out_path=tmp_path / "w.pt"))
    weights = read_model_config(tmp_path / "w.pt")["training"]["class_weights"]
    seen = np.array([48, 20, 10])
    np.testing.assert_allclose(np.asarray(weights) * seen, (np.asarray(weights) * seen)[0], rtol=1e-6)
    profiles = simulated_profile_data(24, n_views=1, seed=0)
    flat = ClassificationData(profiles.x[:, 0, :], profiles.y, profiles.class_names)
    drain(train_classifier({"task": "profiles", "epochs": 1, "batch_size": 8, "device": "cpu"}, flat,
                           out_path=tmp_path / "p.pt"))
    assert (tmp_path / "p.pt").exists()


def test_values_at_the_edges_of_their_types_are_measured_and_segmented_right(tmp_path):
    """float16 images: tracks.csv's mean intensities were rounded to float16 (off by up to 4 where objects.csv
    was right); float64 images of values around 1e-44 segmented to 0 objects without a word; means over an
    offset of 2**40 were all written as 1.0995116e+12; filter_labels gave numpy tracebacks (-1, a float or bool
    image) or silently nothing (negative ids); `evaluate classes` told a prediction holding -1 to use --ignore
    -1, which applies to the truth only."""
    import pytest

    from napari_microseg.cli import main
    from napari_microseg.errors import InputError
    from napari_microseg.inference import filter_labels, segment
    from napari_microseg.io.images import write_tiff
    from napari_microseg.io.models import load_model
    from napari_microseg.measure.tables import write_table_csv
    from napari_microseg.simulate.nuclei import simulate_nuclei_image
    from napari_microseg.tracking.track import objects_from_labels

    labels = np.zeros((2, 16, 16), np.uint16)
    labels[:, 2:6, 2:6] = 1
    image = np.zeros(labels.shape, np.float16)
    image[:, 2:6, 2:6] = 11704.0
    image[:, 2, 2] = 11712.0  # mean 11704.5: between float16's steps of 8 there
    mean = objects_from_labels(labels, image)["mean_intensity"].to_numpy()
    np.testing.assert_allclose(mean, (15 * 11704.0 + 11712.0) / 16, rtol=0, atol=1e-9)

    model = load_model("nuclei_fluorescence_fast", device="cpu", segmentation=True)
    frame, _ = simulate_nuclei_image((96, 96), 8, seed=2)
    expected = len(segment(model, frame).objects)
    assert expected > 0
    assert len(segment(model, frame.astype(np.float64) * 1e-44 / float(frame.max())).objects) == expected

    table = pd.DataFrame({"t": [0, 0], "mean_intensity": [2.0**40 + 101.25, 2.0**40 + 7.5]})
    write_table_csv(table, tmp_path / "o.csv")
    np.testing.assert_array_equal(pd.read_csv(tmp_path / "o.csv")["mean_intensity"], table["mean_intensity"])

    for bad, match in ((np.array([[0, -1], [1, 1]]), "negative"), (np.array([[0, 1.5]], np.float32), "non-integer"),
                       (np.ones((4, 4), bool), "not a mask"), (np.full((3, 3), -2), "negative")):
        with pytest.raises(InputError, match=match):
            filter_labels(bad)
    np.testing.assert_array_equal(filter_labels(np.array([[0, 3.0], [3.0, 0]], np.float32)), [[0, 1], [1, 0]])

    truth = np.zeros((8, 8), np.uint8)
    write_tiff(tmp_path / "truth.tif", truth)
    write_tiff(tmp_path / "pred.tif", np.full((8, 8), -1, np.int16))
    assert main(["evaluate", "classes", "--gt", str(tmp_path / "truth.tif"), "--pred", str(tmp_path / "pred.tif"),
                 "--ignore", "-1", "--out", str(tmp_path / "e.csv")]) == 2


def test_resume_with_another_loss_chooses_the_best_epoch_anew(tmp_path):
    """Resumed with --loss bce_dice after 2 epochs of focal loss, every new epoch's validation loss (0.7) was
    compared with focal's best (0.03): none counted as better, early stopping ended the run and the resumed
    training was thrown away; the model kept said bce_dice with focal's weights."""
    import warnings

    from test_train_data import disk_set
    from test_train_trainer import TINY, run

    from napari_microseg.errors import MicrosegWarning
    from napari_microseg.training import TrainConfig, train
    from napari_microseg.training.trainer import _measure_changed_on_resume, last_checkpoint_path, read_checkpoint

    imgs, labs = disk_set(4, seed=1, gradient=0.6, noise=0.06)
    path = tmp_path / "m.pt"
    base = dict(TINY, output_mode="binary", val_fraction=0.25, seed=0)
    run(train(TrainConfig(epochs=2, loss="focal", **base), (imgs, labs), out_path=path))
    resumed = TrainConfig(epochs=5, loss="bce_dice", **{**base, "early_stopping_patience": 2})
    assert _measure_changed_on_resume(read_checkpoint(last_checkpoint_path(path)), resumed) == ["loss"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, result = run(train(resumed, (imgs, labs), out_path=path, resume=last_checkpoint_path(path)))
    assert any(isinstance(w.message, MicrosegWarning) and "best epoch is chosen anew" in str(w.message) for w in caught)
    assert result.best_epoch >= 3 and result.epochs_run == 5
    # the same loss given again: nothing changed, the run's best stays comparable
    same = TrainConfig(epochs=6, loss="bce_dice", **base)
    assert _measure_changed_on_resume(read_checkpoint(last_checkpoint_path(path)), same) == []


def test_one_image_validation_strip_holds_objects_or_is_warned_about(tmp_path):
    """One densely labelled image with its nuclei in its left 2/3: the validation strip at its right end held no
    nucleus (validation Dice 0 every epoch, the best epoch chosen on background), and nothing was said."""
    import warnings

    import pytest

    from napari_microseg.errors import MicrosegWarning
    from napari_microseg.simulate.nuclei import simulate_nuclei_image
    from napari_microseg.training.data import prepare_training_data, split_train_val

    im, lb = simulate_nuclei_image((160, 160), 12, seed=11)
    background = np.full((160, 80), float(np.median(im[lb == 0])), np.float32)
    image = np.concatenate([im, background], 1)
    labels = np.concatenate([lb, np.zeros((160, 80), lb.dtype)], 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MicrosegWarning)
        train, val = split_train_val(prepare_training_data([image], [labels], output_mode="three_class"), 0.25, seed=0)
    assert (val.items[0].target > 0).any() and any((it.target > 0).any() for it in train.items)
    # objects in one column at the edge: no strip leaves some on each side; said
    one = np.zeros((96, 160), np.uint16)
    one[10:20, 0] = 1
    with pytest.warns(MicrosegWarning, match="validation strip holds no object"):
        split_train_val(prepare_training_data([np.random.default_rng(0).random((96, 160)).astype(np.float32)], [one],
                                              output_mode="binary"), 0.25, seed=0)


def test_class_weights_a_loss_does_not_use_are_refused_not_recorded(tmp_path):
    """class_weights given with loss ce / dice / binary focal were written into the model's record but never
    applied; a list of the wrong length gave torch's RuntimeError; a negative focal gamma was taken."""
    import pytest

    from test_train_data import disk_set
    from test_train_trainer import TINY, run

    from napari_microseg.errors import InputError
    from napari_microseg.training import TrainConfig, train

    imgs, labs = disk_set(2, seed=1, gradient=0.6, noise=0.06)
    base = dict(TINY, epochs=1, val_fraction=0.0)
    for mode, loss, weights, match in (("three_class", "ce", [1, 2, 50], "takes no class weights"),
                                       ("three_class", "dice", [1, 2, 50], "takes no class weights"),
                                       ("binary", "focal", [1, 5], "takes no class weights"),
                                       ("three_class", "weighted_ce", [1, 2], "2 class weights .* for 3 classes")):
        with pytest.raises(InputError, match=match):
            run(train(TrainConfig(output_mode=mode, loss=loss, class_weights=weights, **base), (imgs, labs),
                      out_path=tmp_path / "m.pt"))
    with pytest.raises(InputError, match="focal gamma"):
        run(train(TrainConfig(output_mode="three_class", loss="focal", focal_gamma=-1, **base), (imgs, labs),
                  out_path=tmp_path / "m.pt"))
    # a binary network's background / foreground pair is taken
    run(train(TrainConfig(output_mode="binary", loss="weighted_ce", class_weights=[1, 3], **base), (imgs, labs),
              out_path=tmp_path / "b.pt"))
    assert (tmp_path / "b.pt").exists()


def test_resume_messages_name_a_missing_checkpoint_and_an_unused_lr(tmp_path, capsys):
    """A run's model whose .last.pt was moved was called "a shipped or exported model"; --lr given on resume was
    dropped without a word."""
    import shutil

    from napari_microseg.cli import main
    from napari_microseg.training.trainer import last_checkpoint_path

    model = tmp_path / "m.pt"
    common = ["--simulated", "2", "--sim-size", "64", "--patch", "32", "--patches-per-epoch", "8", "--batch-size", "4",
              "--val-fraction", "0", "--threads", "1", "--quiet"]
    assert main(["train", *common, "--out", str(model), "--epochs", "1"]) == 0
    shutil.move(last_checkpoint_path(model), tmp_path / "moved.pt")
    capsys.readouterr()
    assert main(["train", *common, "--out", str(model), "--epochs", "2", "--resume", str(model)]) == 2
    err = capsys.readouterr().err
    assert "m.pt.last.pt" in err and "is not beside it" in err and "shipped" not in err
    shutil.move(tmp_path / "moved.pt", last_checkpoint_path(model))
    assert main(["train", *common, "--out", str(model), "--epochs", "2", "--resume", str(model), "--lr", "0.1"]) == 0
    assert "--lr 0.1 is not used" in capsys.readouterr().err


def test_review_mends_natural_key_zip_advice_undo_and_links(tmp_path, make_napari_viewer, wait_worker):
    """Session 35 review: a superscript digit in an image name crashed the merged tables' sort; a macOS zip
    (__MACOSX/ beside the store) was answered with the wrong folder; Ctrl+Z with nothing to undo marked a fresh
    result as edited; writing through a link into a read-only content store (git-annex) failed or overwrote the
    shared object."""
    import os
    import zipfile

    import pytest
    import zarr

    from napari_microseg.batch.runner import _natural_key
    from napari_microseg.errors import InputError
    from napari_microseg.io.atomic import atomic_write_text
    from napari_microseg.io.images import read_image

    assert sorted(["a1²2.tif", "a1.tif", "a10.tif"], key=_natural_key) == ["a1.tif", "a1²2.tif", "a10.tif"]

    store = tmp_path / "s.zarr"
    zarr.open(str(store), mode="w", shape=(4, 4), dtype="u1")[:] = 3
    with zipfile.ZipFile(tmp_path / "cells.zarr", "w") as archive:
        for file in store.rglob("*"):
            archive.write(file, file.relative_to(tmp_path).as_posix())
        archive.writestr("__MACOSX/._s.zarr", b"x")
    with pytest.raises(InputError) as err:
        read_image(tmp_path / "cells.zarr")
    assert str(err.value).endswith("give the folder cells_unzipped/s.zarr")

    annex = tmp_path / ".git" / "annex" / "objects" / "ab"
    annex.mkdir(parents=True)
    obj = annex / "SHA256E-s4--x.csv"
    obj.write_text("old\n")
    link = tmp_path / "objects.csv"
    link.symlink_to(obj)
    atomic_write_text(link, "new\n")
    assert obj.read_text() == "old\n" and not link.is_symlink() and link.read_text() == "new\n"
    assert os.access(obj, os.R_OK)

    viewer, seg = _segmented_stack(make_napari_viewer, wait_worker, tmp_path, n_frames=2, size=64, n_nuclei=4)
    line = seg.counts_label.value
    viewer.layers["movie segmented"].undo()  # nothing to undo
    assert not seg.result_edited and seg.counts_label.value == line


def test_autolabel_dock_previews_a_flat_stain_once_and_says_what_qc_and_pairing_read(make_napari_viewer, qtbot,
                                                                                     wait_worker):
    """A 2-D stain was previewed again at every move of any movie's slider (the buttons greyed out each time);
    QC again after painting into the "(QC)" layer read the Apply result without saying so; a target of another
    pixel size than the stain was paired without a word (the command line warns)."""
    from napari_microseg.simulate.nuclei import simulate_nuclei_image, simulate_nuclei_timelapse
    from napari_microseg.widgets.autolabel import AutolabelWidget

    image, _ = simulate_nuclei_image(shape=(128, 128), n_nuclei=12, seed=4)
    viewer = make_napari_viewer(show=False)
    viewer.add_image(image, name="dapi")
    viewer.add_image(simulate_nuclei_timelapse(n_frames=3, shape=(64, 64), n_nuclei=4, seed=1).fluorescence,
                     name="movie")
    widget = AutolabelWidget(viewer)
    widget.stain_layer.value = "dapi"
    qtbot.waitUntil(lambda: widget.preview_layer is not None and not widget.busy, timeout=60000)
    widget.timer.stop()
    viewer.dims.set_current_step(0, 2)
    assert not widget.timer.isActive()  # a flat stain: nothing new to preview
    sim = simulate_nuclei_timelapse(n_frames=2, shape=(96, 96), n_nuclei=6, seed=2)
    viewer.add_image(sim.fluorescence, name="stack")
    widget.stain_layer.value = "stack"
    qtbot.waitUntil(lambda: not widget.busy and not widget.timer.isActive(), timeout=60000)
    viewer.dims.set_current_step(0, 0 if widget._previewed_frame else 1)
    assert widget.timer.isActive()  # a stack shown at another frame: previewed again
    widget.timer.stop()
    widget.live.value = False

    viewer.add_image(sim.phase, name="phase", scale=(1, 0.5, 0.5))
    widget.target_layer.value = "phase"
    wait_worker(widget.apply())
    assert "are they the same field" in widget.status.text()
    wait_worker(widget.run_qc())
    first = widget.qc_labels_layer
    wait_worker(widget.run_qc())
    assert f"edits made in '{first.name}' are not in it" in widget.status.text()


def test_a_batch_task_whose_run_has_ended_writes_nothing(tmp_path):
    """With --scheduler, a task already running on a remote worker goes on after its run was stopped (a cancel
    cannot stop it): it wrote its labels and shards 75 s later over those of the run that took the folder since.
    A task now writes only while its run still holds the output folder's lock."""
    import json

    import tifffile

    from napari_microseg.batch.manifest import LOCK_NAME
    from napari_microseg.batch.runner import find_batch_inputs, plan_items
    from napari_microseg.batch.tasks import TaskSpec, run_item
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "a.tif", simulate_nuclei_image((96, 96), 6, seed=1)[0])
    out = tmp_path / "out"
    out.mkdir()
    items, _, _ = plan_items(find_batch_inputs(tmp_path / "in"), "autolabel")
    ours = {"pid": 1, "host": "here", "time": "2026-12-07T12:00:00+00:00"}
    (out / LOCK_NAME).write_text(json.dumps({**ours, "pid": 2}))  # another run holds the folder now
    spec = TaskSpec(task="autolabel", out=str(out), lock_owner=ours)
    record = run_item(items[0], spec)
    assert record["status"] == "failed" and "has ended" in record["reason"]
    assert not (out / "labels").exists() or not any((out / "labels").iterdir())
    assert not (out / "shards").exists() or not any((out / "shards").rglob("*.csv"))
    (out / LOCK_NAME).write_text(json.dumps(ours))  # still this run's: written
    assert run_item(items[0], spec)["status"] == "done"
    assert (out / "labels" / "a.tif").exists()


def test_negative_memory_limit_is_one_line():
    """--memory-limit=-1 gave an OverflowError and "Nanny failed to start" (exit 1)."""
    import pytest

    from napari_microseg.batch.runner import check_memory_limit
    from napari_microseg.errors import InputError

    for value in ("-1", "-1GB"):
        with pytest.raises(InputError, match="negative"):
            check_memory_limit(value)
    check_memory_limit("4GB")


def test_local_cluster_options_with_a_scheduler_are_said_unused(tmp_path, capsys, monkeypatch):
    """--workers / --memory-limit / --threads-per-worker were dropped without a word with --scheduler."""
    import napari_microseg.batch.runner as runner
    from napari_microseg.cli import main
    from napari_microseg.errors import InputError

    def unreachable(*args, **kwargs):
        raise InputError("cannot reach the Dask scheduler (test)")

    monkeypatch.setattr(runner, "run_batch", unreachable)
    import tifffile

    (tmp_path / "in").mkdir()

    tifffile.imwrite(tmp_path / "in" / "a.tif", np.zeros((32, 32), np.uint16))
    assert main(["batch", "autolabel", "--input", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                 "--scheduler", "tcp://127.0.0.1:9", "--workers", "3", "--memory-limit", "4GB", "--quiet"]) == 2
    assert "--workers, --memory-limit not used" in capsys.readouterr().err


def test_a_scheduler_without_workers_is_said_while_the_run_waits(tmp_path, monkeypatch):
    """A remote cluster with no workers left the progress at 0/1 with no word, for ever."""
    import time

    import tifffile
    from distributed import LocalCluster

    import napari_microseg.batch.runner as runner

    monkeypatch.setattr(runner, "STALL_CHECK_SECONDS", 0.2)
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "a.tif", np.zeros((32, 32), np.uint16))
    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        gen = runner.run_batch("autolabel", tmp_path / "in", tmp_path / "out", scheduler=cluster.scheduler_address,
                               heartbeat=0.1)
        said, start = False, time.time()
        try:
            while time.time() - start < 60:
                event = next(gen)
                if "no workers" in str(getattr(event, "message", "")):
                    said = True
                    break
        finally:
            gen.close()
    assert said
    assert not (tmp_path / "out" / ".batch.lock").exists()  # the lock is released when the run is closed


def test_late_hunt_mends_zip_top_level_read_only_links_and_bool_shift(tmp_path):
    """A zipped group whose arrays were listed first was answered with an array's folder; a link to a 0444 raw
    image was written through when running as root (and a replaced link took its target's read-only mode); a
    bool mask shifted onto a target got a strip of True (foreground) along its edge."""
    import os
    import stat
    import zipfile

    import pytest
    import zarr

    from napari_microseg.autolabel.pairing import shift_labels
    from napari_microseg.errors import InputError
    from napari_microseg.io.atomic import atomic_write_text
    from napari_microseg.io.images import read_image

    group = zarr.open_group(str(tmp_path / "img.zarr"), mode="w")
    for name in ("2", "0"):
        group.create_array(name, shape=(4, 4), dtype="u1") if hasattr(group, "create_array") else \
            group.create_dataset(name, shape=(4, 4), dtype="u1")
    files = sorted((tmp_path / "img.zarr").rglob("*"), key=lambda p: (p.parent == tmp_path / "img.zarr", str(p)))
    with zipfile.ZipFile(tmp_path / "z.zarr", "w") as archive:  # the arrays' entries first, as `zip -r` may list them
        for file in files:
            if file.is_file():
                archive.write(file, file.relative_to(tmp_path / "img.zarr").as_posix())
    with pytest.raises(InputError) as err:
        read_image(tmp_path / "z.zarr")
    assert str(err.value).endswith("give the folder z_unzipped")

    (tmp_path / "raw").mkdir()
    raw = tmp_path / "raw" / "a.csv"
    raw.write_text("raw\n")
    os.chmod(raw, 0o444)
    link = tmp_path / "out.csv"
    link.symlink_to(raw)
    atomic_write_text(link, "new\n")
    assert raw.read_text() == "raw\n" and not link.is_symlink() and link.read_text() == "new\n"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(link.stat().st_mode) == 0o666 & ~umask  # a new file's mode, not the raw file's 0444

    mask = np.zeros((6, 6), bool)
    mask[3, 3] = True
    moved = shift_labels(mask, (2, 0))
    assert (moved[:2] == -1).all() and moved[5, 3] == 1 and moved.sum() == 1 - 12
