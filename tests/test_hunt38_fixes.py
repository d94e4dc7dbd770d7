"""Session 38: fixes found by reading the code and by helpers' hunts (each test failed before its fix)."""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pytest


def _disks(shape=(64, 64), step=16, radius=5) -> np.ndarray:
    """uint16 instance labels: a grid of disks (ids 1..N)."""
    from skimage.draw import disk

    labels = np.zeros(shape, np.uint16)
    label = 1
    for y in range(step // 2, shape[0], step):
        for x in range(step // 2, shape[1], step):
            rr, cc = disk((y, x), radius, shape=shape)
            labels[rr, cc] = label
            label += 1
    return labels


@pytest.mark.parametrize("mode", ["binary", "three_class"])
def test_training_targets_are_kept_in_one_byte_a_pixel_and_batches_are_int64(mode):
    """int64 targets were 8 B/px held for the whole training (two thirds of the data's memory); they are int8 now,
    with the same values, and the batches the network gets are still int64."""
    from napari_microseg.training.data import PatchSampler, make_target, prepare_training_data, tile_for_validation

    labels = np.stack([_disks(), _disks()[::-1]])
    image = (labels > 0).astype(np.float32) * 100 + np.random.default_rng(0).normal(0, 5, labels.shape)
    data = prepare_training_data(image, labels, output_mode=mode)
    assert [item.target.dtype for item in data.items] == [np.dtype(np.int8)] * 2
    for item, frame in zip(data.items, labels):
        np.testing.assert_array_equal(item.target, make_target(frame, mode))  # the same classes
    x, y = PatchSampler(data, 32, seed=1).sample(4)
    assert x.dtype == np.float32 and y.dtype == np.int64 and y.min() >= 0 and y.max() == (2 if mode == "three_class" else 1)
    assert tile_for_validation(data, 32)[1].dtype == np.int64


def test_many_classes_get_a_wider_target_type():
    from napari_microseg.training.data import prepare_training_data, target_dtype

    assert target_dtype(2) == np.int8 and target_dtype(128) == np.int8 and target_dtype(129) == np.int16
    labels = np.arange(64 * 64, dtype=np.int32).reshape(64, 64) % 200
    data = prepare_training_data(np.random.default_rng(0).random((64, 64)), labels, output_mode="multiclass",
                                 n_classes=200)
    assert data.items[0].target.dtype == np.int16 and int(data.items[0].target.max()) == 199


def test_a_resumed_run_knows_its_validation_images_by_the_digests_recorded_with_int64_targets():
    """The run record names validation images by a digest of their targets: the int8 targets must give the digest
    the int64 ones gave, or runs recorded before could not be resumed."""
    from napari_microseg.training.data import make_target, prepare_training_data
    from napari_microseg.training.trainer import annotation_digest

    labels = _disks()
    item = prepare_training_data(labels.astype(np.float32), labels, output_mode="three_class").items[0]
    target64 = np.ascontiguousarray(make_target(labels, "three_class"), dtype=np.int64)
    recorded = hashlib.sha1(repr(target64.shape).encode() + target64.tobytes()).hexdigest()[:16]
    assert annotation_digest(item) == recorded


# ---------------------------------------------------------------- evaluate: inputs read as label images
def _gt_and_pred() -> tuple[np.ndarray, np.ndarray]:
    """3 truth objects; the prediction finds one exactly, half of another, and a false one (AP@0.5 = 1/4)."""
    truth = np.zeros((20, 20), np.uint8)
    truth[0:4, 0:4], truth[0:4, 10:14], truth[10:14, 0:4] = 1, 5, 9
    pred = np.zeros((20, 20), np.uint8)
    pred[0:4, 0:4], pred[0:4, 10:12], pred[15:17, 15:17] = 2, 7, 3
    return truth, pred


def _scores(out) -> dict:
    import pandas as pd

    table = pd.read_csv(out)
    return table[table["name"] == "ALL"].iloc[0].to_dict() | {"rows": len(table) - 1}


@pytest.mark.parametrize("form", ["grey_alpha", "palette_white_background"])
def test_evaluate_seg_reads_png_labels_as_the_tiff_of_the_same_ids(tmp_path, form):
    """A grey + alpha PNG was 20 frames 2 px wide ("20 images scored", AP 0.824); a palette PNG whose colour 0 is
    white (glasbey) made the background an object (AP 0.600): both now score as the TIFF does (AP 0.250... of 3)."""
    import tifffile
    from PIL import Image

    from napari_microseg.cli import main

    truth, pred = _gt_and_pred()
    palette = [255, 255, 255] + [int(v) for v in np.random.default_rng(0).integers(0, 255, 765)]

    def save(array, path):
        if form == "grey_alpha":
            Image.fromarray(np.stack([array, np.full_like(array, 255)], -1), "LA").save(path)
        else:
            picture = Image.fromarray(array, "P")
            picture.putpalette(palette)
            picture.save(path)

    for kind in ("tif", "png"):
        (tmp_path / kind / "truth").mkdir(parents=True)
        (tmp_path / kind / "pred").mkdir()
    tifffile.imwrite(tmp_path / "tif" / "truth" / "a.tif", truth)
    tifffile.imwrite(tmp_path / "tif" / "pred" / "a.tif", pred)
    save(truth, tmp_path / "png" / "truth" / "a.png")
    save(pred, tmp_path / "png" / "pred" / "a.png")
    for kind in ("tif", "png"):
        assert main(["evaluate", "seg", "--gt", str(tmp_path / kind / "truth"), "--pred", str(tmp_path / kind / "pred"),
                     "--out", str(tmp_path / f"{kind}.csv")]) == 0
    tif, png = _scores(tmp_path / "tif.csv"), _scores(tmp_path / "png.csv")
    assert png["rows"] == 1 and png["n_gt"] == 3 and png["pixel_tp"] == tif["pixel_tp"] == 24
    assert png["ap@0.50"] == pytest.approx(tif["ap@0.50"]) == pytest.approx(0.5)


def test_evaluate_classes_takes_palette_class_maps_in_any_folder(tmp_path):
    """VOC-style palette PNGs in a folder named 'pred' were refused as "a class map in colour" (their indices were
    read only in folders named like labels)."""
    from PIL import Image

    from napari_microseg.cli import main

    classes = np.zeros((32, 32), np.uint8)
    classes[4:12, 4:12], classes[20:28, 10:30] = 1, 2
    for folder in ("truth", "pred"):
        (tmp_path / folder).mkdir()
        picture = Image.fromarray(classes, "P")
        picture.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
        picture.save(tmp_path / folder / "a.png")
    assert main(["evaluate", "classes", "--gt", str(tmp_path / "truth"), "--pred", str(tmp_path / "pred"),
                 "--out", str(tmp_path / "classes.csv")]) == 0
    import pandas as pd

    table = pd.read_csv(tmp_path / "classes.csv")
    assert list(table["class"])[:3] == [0, 1, 2] and list(table["iou"])[:3] == [1.0, 1.0, 1.0]


def _ome_zarr_with_labels(path, labels: np.ndarray) -> None:
    import zarr

    group = zarr.open_group(str(path), mode="w")
    group.create_array("0", data=(np.random.default_rng(0).random(labels.shape) * 1000).astype(np.uint16))
    multiscales = [{"version": "0.4", "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
                    "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1]}]}]}]
    group.attrs["multiscales"] = multiscales
    label_group = group.create_group("labels")
    label_group.attrs["labels"] = ["nuclei"]
    nuclei = label_group.create_group("nuclei")
    nuclei.create_array("0", data=labels)
    nuclei.attrs["multiscales"] = multiscales
    nuclei.attrs["image-label"] = {"version": "0.4"}


def test_evaluate_opens_zarr_label_stores_whatever_their_names(tmp_path, capsys):
    """The OME-Zarr label image the reader points to (cells.ome.zarr/labels/nuclei) was "a folder that holds no label
    images"; two single Zarr stores of different names were "no file names match" (TIFFs were scored)."""
    import tifffile
    import zarr

    from napari_microseg.cli import main

    truth = np.zeros((64, 64), np.uint16)
    truth[5:15, 5:15], truth[30:40, 30:40] = 1, 2
    _ome_zarr_with_labels(tmp_path / "cells.ome.zarr", truth)
    zarr.save_array(str(tmp_path / "truth.zarr"), truth)
    zarr.save_array(str(tmp_path / "seg.zarr"), truth)
    tifffile.imwrite(tmp_path / "seg.tif", truth)
    for gt, pred in (("cells.ome.zarr/labels/nuclei", "seg.tif"), ("truth.zarr", "seg.zarr")):
        out = tmp_path / f"{pred}.csv"
        assert main(["evaluate", "seg", "--gt", str(tmp_path / gt), "--pred", str(tmp_path / pred),
                     "--out", str(out), "--overwrite"]) == 0, capsys.readouterr().err
        scores = _scores(out)
        assert scores["rows"] == 1 and scores["n_gt"] == 2 and scores["ap@0.50"] == 1.0


def test_evaluate_a_file_against_a_folder_pairs_by_name(tmp_path, capsys):
    """--gt img7.tif --pred labels/ (a failed run's folder holding img1.tif only) scored img1 against img7's truth
    with a warning: a folder's files pair by name, as between two folders."""
    import tifffile

    from napari_microseg.cli import main

    truth, pred = _gt_and_pred()
    (tmp_path / "labels").mkdir()
    tifffile.imwrite(tmp_path / "img7.tif", truth)
    tifffile.imwrite(tmp_path / "labels" / "img1.tif", pred)
    assert main(["evaluate", "seg", "--gt", str(tmp_path / "img7.tif"), "--pred", str(tmp_path / "labels"),
                 "--out", str(tmp_path / "m.csv")]) == 2
    err = capsys.readouterr().err
    assert "no file names" in err and "give that file as --pred" in err and str(tmp_path / "labels" / "img1.tif") in err
    tifffile.imwrite(tmp_path / "labels" / "img7_labels.tif", truth)
    assert main(["evaluate", "seg", "--gt", str(tmp_path / "img7.tif"), "--pred", str(tmp_path / "labels"),
                 "--out", str(tmp_path / "m.csv")]) == 0
    assert _scores(tmp_path / "m.csv")["ap@0.50"] == 1.0


def test_evaluate_classes_names_the_values_beyond_the_named_classes_and_hints_at_void(tmp_path, capsys):
    import tifffile

    from napari_microseg.cli import main

    truth = np.zeros((16, 16), np.uint8)
    truth[:4], truth[4:8], truth[-2:] = 1, 2, 255
    pred = np.where(truth == 255, 0, truth).astype(np.uint8)
    tifffile.imwrite(tmp_path / "t.tif", truth)
    tifffile.imwrite(tmp_path / "p.tif", pred)
    assert main(["evaluate", "classes", "--gt", str(tmp_path / "t.tif"), "--pred", str(tmp_path / "p.tif"),
                 "--class-names", "bg,a,b", "--out", str(tmp_path / "c.csv")]) == 0
    err = capsys.readouterr().err
    assert "also hold 255" in err and "--ignore 255" in err and "256" not in err


# ---------------------------------------------------------------- train: resumes
def _training_folders(tmp_path, n=3):
    import tifffile

    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for i in range(n):
        labels = _disks((64, 64), step=16, radius=4 + i % 2)
        tifffile.imwrite(tmp_path / "images" / f"im{i}.tif", ((labels > 0) * 120 + rng.normal(20, 8, labels.shape)).astype(np.uint8))
        tifffile.imwrite(tmp_path / "labels" / f"im{i}.tif", labels)
    return ["--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"), "--patch", "32",
            "--patches-per-epoch", "4", "--batch-size", "2", "--threads", "1", "--quiet"]


def test_a_resumed_run_never_writes_its_history_over_a_file_that_is_no_history(tmp_path, capsys):
    """`train --resume a.pt --out a.pt --history precious_model.pt` replaced a 1.9 MB model by a 128-byte CSV, with
    no --overwrite (a new run is refused so). A real history file is still rewritten by its run's resume."""
    from napari_microseg.cli import main

    common = _training_folders(tmp_path)
    model = str(tmp_path / "a.pt")
    assert main(["train", *common, "--out", model, "--epochs", "1"]) == 0
    precious = tmp_path / "precious_model.pt"
    precious.write_bytes(b"PK\x03\x04 a model of another study")
    assert main(["train", *common, "--out", model, "--resume", model, "--epochs", "2",
                 "--history", str(precious)]) == 2
    assert "no training history" in capsys.readouterr().err
    assert precious.read_bytes() == b"PK\x03\x04 a model of another study"
    history = tmp_path / "run_history.csv"
    history.write_text("epoch,train_loss,val_loss,val_dice,lr,seconds\n1,0.5,0.5,0.5,0.001,1.0\n")
    assert main(["train", *common, "--out", model, "--resume", model, "--epochs", "2", "--history", str(history)]) == 0
    assert [line.split(",")[0] for line in history.read_text().splitlines()] == ["epoch", "1", "2"]


def test_a_resume_stopped_before_its_first_epoch_keeps_the_kept_models_record(tmp_path):
    """Resumed with another loss and stopped before an epoch ended, the kept model (epoch 1's bce_dice weights) was
    recorded as loss focal, best epoch None, no metrics."""
    from napari_microseg.io.models import read_model_file
    from napari_microseg.progress import drain
    from napari_microseg.training.trainer import train

    labels = np.stack([_disks(), _disks()[::-1], _disks()[:, ::-1]])
    images = (labels > 0) * 100.0 + np.random.default_rng(0).normal(0, 5, labels.shape)
    config = dict(epochs=1, patch_size=32, patches_per_epoch=4, batch_size=2, device="cpu", num_threads=1,
                  loss="bce_dice")
    out = tmp_path / "a.pt"
    drain(train(config, (images, labels), out_path=out))
    before = read_model_file(out)["config"]["training"]
    assert before["loss"] == "bce_dice" and before["best_epoch"] == 1
    gen = train({**config, "epochs": 2, "loss": "focal"}, (images, labels), out_path=out, resume=out)
    for event in gen:
        if event.kind == "step":
            break
    gen.close()  # Stop before the resumed epoch ended
    after = read_model_file(out)["config"]["training"]
    assert after["loss"] == "bce_dice" and after["best_epoch"] == 1 and after["metrics"] == before["metrics"]


def test_an_interrupted_fine_tune_suggests_a_resume_command_that_runs(tmp_path, capsys, monkeypatch):
    """After Ctrl-C of `train --init-model base.pt`, "run the same command with --resume X" was refused ("not
    both"): the advice now says to leave --init-model out, and that command runs."""
    import re

    import napari_microseg.progress as progress
    from napari_microseg.cli import main

    common = _training_folders(tmp_path)
    base = str(tmp_path / "base.pt")
    assert main(["train", *common, "--out", base, "--epochs", "1"]) == 0
    real_run = progress.run_with_text_progress

    def interrupted_after_an_epoch(events, **kwargs):
        for event in events:
            if getattr(event, "kind", "") == "epoch":
                raise KeyboardInterrupt
        raise AssertionError("no epoch ended")

    monkeypatch.setattr(progress, "run_with_text_progress", interrupted_after_an_epoch)
    tuned = str(tmp_path / "tuned.pt")
    assert main(["train", *common, "--init-model", base, "--out", tuned, "--epochs", "2"]) == 130
    advice = capsys.readouterr().err
    match = re.search(r"--resume (\S+) and without --init-model", advice)
    assert match, advice
    monkeypatch.setattr(progress, "run_with_text_progress", real_run)
    assert main(["train", *common, "--out", tuned, "--epochs", "2", "--resume", match.group(1)]) == 0


# ---------------------------------------------------------------- track / evaluate tracks: whose folder
@pytest.fixture(scope="module")
def small_simulation(tmp_path_factory):
    from napari_microseg.cli import main

    folder = tmp_path_factory.mktemp("sim") / "sim"
    assert main(["simulate", "nuclei", "--out", str(folder), "--frames", "6", "--nuclei", "8", "--shape", "96", "96",
                 "--seed", "3"]) == 0
    return folder


def test_track_never_replaces_a_simulations_ground_truth(small_simulation, tmp_path, capsys):
    """`track --out <simulation> --overwrite` replaced the truth's tracks.csv (and `evaluate tracks --gt` then scored
    against the replacement, tracks_labels.tif being preferred): refused now, and such a folder is refused as
    ambiguous by evaluate."""
    import shutil

    from napari_microseg.cli import main

    sim = tmp_path / "sim"
    shutil.copytree(small_simulation, sim)
    truth = (sim / "tracks.csv").read_bytes()
    for extra in ([], ["--overwrite"]):
        assert main(["track", "--labels", str(sim / "labels.tif"), "--out", str(sim), *extra]) == 2
        err = capsys.readouterr().err
        assert "simulation's ground truth" in err and "use --overwrite" not in err
    assert (sim / "tracks.csv").read_bytes() == truth
    assert main(["track", "--labels", str(sim / "labels.tif"), "--out", str(tmp_path / "run")]) == 0
    assert main(["track", "--labels", str(sim / "labels.tif"), "--out", str(tmp_path / "run"), "--overwrite"]) == 0
    # a folder of one's own labels.tif (autolabel's, or saved from napari) tracked into: scored as the track run
    (tmp_path / "own").mkdir()
    shutil.copy(sim / "labels.tif", tmp_path / "own" / "labels.tif")
    assert main(["track", "--labels", str(tmp_path / "own" / "labels.tif"), "--out", str(tmp_path / "own")]) == 0
    assert main(["evaluate", "tracks", "--gt", str(sim), "--pred", str(tmp_path / "own"),
                 "--out", str(tmp_path / "own.csv")]) == 0
    shutil.copy(tmp_path / "run" / "tracks_labels.tif", sim / "tracks_labels.tif")  # a simulation mixed by hand
    assert main(["evaluate", "tracks", "--gt", str(sim), "--pred", str(tmp_path / "run"),
                 "--out", str(tmp_path / "t.csv")]) == 2
    assert "cannot be told" in capsys.readouterr().err


def test_evaluate_tracks_points_a_batch_folder_to_one_movie(small_simulation, tmp_path, capsys):
    """For a `batch track --ctc` folder the hint named <out>/ctc_RES, which was refused in turn: it now names the
    movies' folders, one of which scores."""
    import shutil

    from napari_microseg.cli import main

    (tmp_path / "labels").mkdir()
    for name in ("m0", "m1"):
        shutil.copy(small_simulation / "labels.tif", tmp_path / "labels" / f"{name}.tif")
    assert main(["batch", "track", "--input", str(tmp_path / "labels"), "--out", str(tmp_path / "out"),
                 "--workers", "0", "--ctc"]) == 0
    for given in ("out", "out/ctc_RES"):
        assert main(["evaluate", "tracks", "--gt", str(small_simulation), "--pred", str(tmp_path / given),
                     "--out", str(tmp_path / "t.csv")]) == 2
        assert str(tmp_path / "out" / "ctc_RES" / "m0") in capsys.readouterr().err
    assert main(["evaluate", "tracks", "--gt", str(small_simulation), "--pred", str(tmp_path / "out/ctc_RES/m0"),
                 "--out", str(tmp_path / "t.csv")]) == 0


# ---------------------------------------------------------------- train: what validation holds
def test_the_split_says_when_validation_holds_far_more_than_its_share_or_no_object():
    """5 stacks of 2 painted frames: validation took 5 of 10 frames (asked 20 %) without a word; a validation image
    holding no object gave val Dice 0.000 every epoch, without a word (the one-image strip warned of it)."""
    from napari_microseg.errors import MicrosegWarning
    from napari_microseg.training.data import prepare_training_data, split_train_val

    frames = np.stack([_disks(), _disks()[::-1]])
    stacks = prepare_training_data([frames.astype(np.float32)] * 5, [frames] * 5, output_mode="binary")
    with pytest.warns(MicrosegWarning, match=r"5 of 10 images \(50%, the share asked is 20%\)"):
        train, val = split_train_val(stacks, 0.2)
    assert len(val.items) == 5 and len(train.items) == 5
    empty = np.zeros((64, 64), np.uint16)
    images = [_disks().astype(np.float32), np.zeros((64, 64), np.float32), _disks().astype(np.float32)]
    for seed in range(20):  # a seed whose random choice holds out the empty field
        data = prepare_training_data(images, [_disks(), empty, _disks()], output_mode="binary")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train, val = split_train_val(data, 0.2, seed=seed)
        said = [str(w.message) for w in caught if "hold no object" in str(w.message)]
        assert bool(said) == (not any((item.target > 0).any() for item in val.items))
        if said:
            break
    else:
        pytest.fail("no seed held out the empty field")


# ---------------------------------------------------------------- batch in this process: Stop within an image
def test_an_in_process_batch_stops_between_an_images_tiles(tmp_path, tiny_nuclei_model, monkeypatch):
    """Stop in the Segmentation dock's batch "in this process" waited for the whole image (33 s on a 4096^2 TIFF):
    it now acts between tiles; the image is left for a rerun, which does it, and the images done are kept."""
    import threading

    import tifffile

    import sys

    from napari_microseg.batch import run_batch_sync
    from napari_microseg.batch.runner import run_batch
    from napari_microseg.progress import drain

    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(0)
    tifffile.imwrite(tmp_path / "in" / "a_small.tif", (rng.random((64, 64)) * 255).astype(np.uint8))
    tifffile.imwrite(tmp_path / "in" / "b_big.tif", (rng.random((256, 256)) * 255).astype(np.uint8))
    out = tmp_path / "out"
    segment_module = sys.modules["napari_microseg.inference.segment"]  # (the package's attribute is the function)
    stop, tiles_of_the_big_image = threading.Event(), []
    real_tiling = segment_module.predict_tiled_iter

    def tiling_with_stop_pressed(frame, *args, **kwargs):  # Stop pressed once the big image's first tiles are done
        for event in real_tiling(frame, *args, **kwargs):
            if frame.shape == (256, 256):
                tiles_of_the_big_image.append(event.done)
                stop.set()
            yield event

    monkeypatch.setattr(segment_module, "predict_tiled_iter", tiling_with_stop_pressed)
    gen = run_batch("segment", str(tmp_path / "in"), str(out), str(tiny_nuclei_model), workers=0, tile=64,
                    stop_event=stop)
    assert drain(gen) is None  # stopped
    assert len(tiles_of_the_big_image) == 1  # between its tiles, not after all of them
    assert (out / "labels" / "a_small.tif").is_file() and not (out / "labels" / "b_big.tif").exists()
    monkeypatch.setattr(segment_module, "predict_tiled_iter", real_tiling)
    summary = run_batch_sync("segment", str(tmp_path / "in"), str(out), model=str(tiny_nuclei_model), workers=0, tile=64)
    assert (summary.processed, summary.skipped, summary.failed) == (1, 1, 0)
    assert (out / "labels" / "b_big.tif").is_file()


def test_resume_messages_name_what_differs_and_what_to_do_with_a_shipped_model(tmp_path):
    """`--resume X --p-low 2` said "cannot resume with normalisation 'percentile': ... trained on 'percentile'";
    `--resume nuclei_fluorescence` said "not found" (--init-model takes that name)."""
    from napari_microseg.errors import InputError
    from napari_microseg.progress import drain
    from napari_microseg.training.trainer import read_checkpoint, train

    labels = np.stack([_disks(), _disks()[::-1]])
    images = (labels > 0) * 100.0 + np.random.default_rng(0).normal(0, 5, labels.shape)
    config = dict(epochs=1, patch_size=32, patches_per_epoch=4, batch_size=2, device="cpu", num_threads=1)
    out = tmp_path / "a.pt"
    drain(train(config, (images, labels), out_path=out))
    with pytest.raises(InputError, match=r"normalisation 'percentile' p_high 99.8 p_low 2.0: .* trained on "
                                         r"'percentile' p_high 99.8 p_low 1.0 images"):
        drain(train({**config, "epochs": 2, "normalization": {"kind": "percentile", "p_low": 2.0}}, (images, labels),
                    out_path=out, resume=out))
    with pytest.raises(InputError, match="shipped model, not a run of yours.*--init-model nuclei_fluorescence"):
        read_checkpoint("nuclei_fluorescence")
    with pytest.raises(InputError, match="not found"):
        read_checkpoint(tmp_path / "missing.pt")


# ---------------------------------------------------------------- docks: a Z stack's result keeps its axes' names
def test_a_z_stacks_segmentation_keeps_its_axis_names_and_saves_as_zyx(make_napari_viewer, wait_worker, tmp_path):
    """The Segmentation dock's labels of a Z stack (axis_labels z, y, x, as the reader opens one) had napari's default
    axis names, and were saved as a time-lapse (TYX); they now keep "z" and save as ZYX."""
    import tifffile

    from napari_microseg._writer import write_labels_tiff
    from napari_microseg.simulate.nuclei import simulate_nuclei_image
    from napari_microseg.widgets._base import layer_geometry
    from napari_microseg.widgets.segmentation import SegmentationWidget

    image = simulate_nuclei_image(shape=(96, 96), n_nuclei=6, seed=1)[0]
    viewer = make_napari_viewer(show=False)
    layer = viewer.add_image(np.stack([image, image[::-1], image[:, ::-1]]), name="planes", axis_labels=("z", "y", "x"))
    widget = SegmentationWidget(viewer)
    widget.image_layer.value = "planes"
    widget.model_choice.value = "nuclei_fluorescence_fast"
    widget.tile.value = 128
    widget.scope.value = "whole stack"
    wait_worker(widget.segment())
    result = viewer.layers["planes segmented"]
    assert tuple(result.axis_labels) == ("z", "y", "x")
    data, meta, _ = result.as_layer_data_tuple()
    written = write_labels_tiff(str(tmp_path / "planes_labels.tif"), data, meta)
    with tifffile.TiffFile(written[0]) as tif:
        assert tif.series[0].axes == "ZYX"
    plain = viewer.add_image(image, name="plain")  # napari's default names ("-2", "-1") are not passed on
    assert "axis_labels" not in layer_geometry(plain, 2) and layer_geometry(layer, 2)["axis_labels"] == ("y", "x")


def test_a_result_with_every_object_erased_is_added_to_the_training_set(make_napari_viewer, wait_worker):
    """Erasing every false object of a result (a quiet CCD frame's false hot pixels and clusters; an empty field's
    false nuclei) and pressing "Add to training set" said "the corrected labels are empty": such a frame is the
    correction that teaches the model not to make them. An empty labels layer of one's own is still refused."""
    from napari_microseg.simulate.nuclei import simulate_nuclei_image
    from napari_microseg.widgets.segmentation import SegmentationWidget

    image = simulate_nuclei_image(shape=(96, 96), n_nuclei=6, seed=1)[0]
    viewer = make_napari_viewer(show=False)
    viewer.add_image(image, name="field")
    widget = SegmentationWidget(viewer)
    widget.image_layer.value = "field"
    widget.model_choice.value = "nuclei_fluorescence_fast"
    widget.tile.value = 128
    wait_worker(widget.segment())
    result = viewer.layers["field segmented"]
    assert result.data.max() > 0
    result.data = np.zeros_like(result.data)  # every object erased
    widget.labels_for_training.value = "field segmented"
    assert widget.add_to_training_set() == 1
    assert "taught as an empty field" in widget.status.text()
    assert widget.fine_tune() is None  # empty fields alone teach nothing: said before any training
    assert "every corrected frame in the training set is an empty field" in widget.status.text()
    viewer.add_labels(np.zeros((96, 96), np.uint8), name="my empty layer")
    widget.labels_for_training.value = "my empty layer"
    assert widget.add_to_training_set() == 1
    assert "empty on this frame" in widget.status.text()


def test_a_cluster_beside_excluded_columns_is_measured_without_them(tmp_path):
    """`autolabel ccd --exclude-columns 0-7`: a 900 ADC cluster beside a prescan 300 ADC below the active area read
    -446 ADC (grown into the prescan, its baseline taken there); it now reads as the same cluster mid-frame, at_edge."""
    from astropy.io import fits

    from napari_microseg.cli import main

    rng = np.random.default_rng(1)
    frame = (1000 + rng.normal(0, 5, (128, 128))).astype(np.float32)
    frame[:, 0:8] -= 300  # prescan
    frame[40:43, 8:11] += 100  # a 3 x 3 cluster of 900 ADC beside it
    frame[80:83, 60:63] += 100  # the same cluster mid-frame
    fits.writeto(tmp_path / "excl.fits", frame)
    assert main(["autolabel", "ccd", "--input", str(tmp_path / "excl.fits"), "--out", str(tmp_path / "al"),
                 "--exclude-columns", "0-7"]) == 0
    import pandas as pd

    clusters = pd.read_csv(tmp_path / "al" / "clusters.csv").sort_values("x").reset_index(drop=True)
    assert len(clusters) == 2
    beside, middle = clusters.iloc[0], clusters.iloc[1]
    assert abs(beside["charge_adc"] - 900) < 100 and abs(middle["charge_adc"] - 900) < 100
    assert (beside["at_edge"], middle["at_edge"]) == (1, 0)


def test_autolabel_tiles_of_a_time_lapse_are_held_out_by_frame(tmp_path):
    """`train --images OUT/tiles/images` (autolabel's tiles, the [N] phase route): validation tiles were drawn at
    random, each beside its frame t +/- 1 twin at the same place in training (labels IoU 0.65-0.94). With OUT/tiles.csv
    they are now the last frames at every place."""
    import pandas as pd
    import tifffile

    from napari_microseg.cli import main
    from napari_microseg.io.models import read_model_config

    rows = []
    for folder in ("images", "labels"):
        (tmp_path / "al" / "tiles" / folder).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index, (t, x) in enumerate((t, x) for t in range(3) for x in (0, 64)):
        labels = _disks((64, 64), step=16, radius=4 + (t + x // 64) % 2)
        name = f"tile_{index:05d}.tif"
        tifffile.imwrite(tmp_path / "al" / "tiles" / "images" / name,
                         ((labels > 0) * 120 + rng.normal(20, 8, labels.shape)).astype(np.uint8))
        tifffile.imwrite(tmp_path / "al" / "tiles" / "labels" / name, labels)
        rows.append(dict(tile=index, t=t, y=0, x=x, height=64, width=64, kept=True,
                         target_file=f"tiles/images/{name}", labels_file=f"tiles/labels/{name}"))
    pd.DataFrame(rows).to_csv(tmp_path / "al" / "tiles.csv", index=False)
    assert main(["train", "--images", str(tmp_path / "al" / "tiles" / "images"), "--labels",
                 str(tmp_path / "al" / "tiles" / "labels"), "--patch", "32", "--patches-per-epoch", "4", "--batch-size",
                 "2", "--threads", "1", "--quiet", "--epochs", "1", "--out", str(tmp_path / "m.pt")]) == 0
    held_out = read_model_config(tmp_path / "m.pt")["training"]["validation_images"]
    assert sorted(held_out) == ["tile_00004.tif", "tile_00005.tif"]  # frame 2 at both places


def test_the_classification_dock_says_when_its_classifier_learned_nothing(make_napari_viewer, wait_worker, tmp_path):
    """The dock's defaults (20 epochs for every task) left a [P] hole classifier at chance (0.575) and said only
    "trained (completed)"; profiles now default to 100 epochs (a number typed in is kept), the end message gives the
    best validation accuracy, and one no better than always saying the commonest class is an error line; the loss
    plot no longer takes all but 54 px of the dock."""
    from napari_microseg.widgets.classification import TRAIN_EPOCHS_DEFAULT, ClassificationWidget

    viewer = make_napari_viewer()
    widget = ClassificationWidget(viewer)
    widget.task.value = "profiles [P]"
    assert widget.train_epochs.value == TRAIN_EPOCHS_DEFAULT["profiles"] == 100
    widget.task.value = "objects [T]"
    assert widget.train_epochs.value == TRAIN_EPOCHS_DEFAULT["objects"]
    widget.train_epochs.value = 7
    widget.task.value = "profiles [P]"
    assert widget.train_epochs.value == 7  # typed in: kept
    widget.train_n.value, widget.train_epochs.value = 40, 1
    widget.train_out.value = str(tmp_path / "hole.pt")
    wait_worker(widget.train())
    said = widget.status.text()
    assert "validation accuracy" in said and "no better than always saying the commonest class" in said, said
    assert widget.plot.maximumHeight() <= 240


@pytest.mark.gui
def test_autolabel_apply_summary_is_not_replaced_by_a_preview_asked_before_it(make_napari_viewer, wait_worker, qtbot):
    """A setting changed and Apply pressed within the preview's 0.4 s pause: the preview ran after Apply and its
    "preview: 4 nuclei on frame 9" replaced Apply's summary (objects left out as -1 ...)."""
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse
    from napari_microseg.widgets.autolabel import AutolabelWidget

    sim = simulate_nuclei_timelapse(n_frames=2, shape=(96, 128), n_nuclei=10, seed=5)
    viewer = make_napari_viewer()
    viewer.add_image(sim.fluorescence, name="DAPI")
    dock = AutolabelWidget(viewer)
    viewer.window.add_dock_widget(dock, name="Auto-label")
    dock.stain_layer.value = "DAPI"
    wait_worker(dock.preview())
    dock.max_diameter.value = 12.0  # a live preview is now waiting for the user's pause ...
    assert dock.timer.isActive()
    wait_worker(dock.apply())  # ... and Apply is pressed at once
    qtbot.wait(3 * dock.timer.interval())
    assert not dock.busy and dock.status.text().startswith("labelled"), dock.status.text()


def test_a_fits_frame_segmented_with_a_nuclei_model_is_said(make_napari_viewer, wait_worker):
    """The real Fe-55 frame (FITS) segmented with the default nuclei model gave 24 "nuclei", the glow two giant
    ones, without a word; the message now points to the CCD class model, and says nothing with it."""
    import numpy as np

    from napari_microseg._reader import get_reader
    from napari_microseg.widgets.segmentation import SegmentationWidget

    path = "src/napari_microseg/sample_data/ccd_fe55_ESIS1_00002_crop.fits.gz"
    viewer = make_napari_viewer(show=False)
    for data, kwargs, kind in get_reader(path)(path):
        getattr(viewer, f"add_{kind}")(np.asarray(data)[:256, :256], **kwargs)
    widget = SegmentationWidget(viewer)
    widget.image_layer.value = viewer.layers[0].name
    widget.model_choice.value = "nuclei_fluorescence_fast"
    widget.tile.value = 256
    wait_worker(widget.segment())
    assert "a FITS frame (a CCD exposure?) segmented with a nuclei model" in widget.status.text()
    widget.model_choice.value = "ccd_classes"
    wait_worker(widget.segment())
    assert "segmented with ccd_classes" in widget.status.text() and "FITS" not in widget.status.text()


@pytest.mark.gui
def test_the_autolabel_preview_takes_the_axis_names_of_the_stain_now_chosen(make_napari_viewer, wait_worker):
    """Result layers now take their image's axis names; the Auto-label preview, updated in place for another stain,
    kept a Z stack's ("z") for a time-lapse of napari's default names."""
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse
    from napari_microseg.widgets.autolabel import AutolabelWidget

    sim = simulate_nuclei_timelapse(n_frames=2, shape=(96, 128), n_nuclei=10, seed=5)
    viewer = make_napari_viewer()
    viewer.add_image(sim.fluorescence, name="planes", axis_labels=("z", "y", "x"))
    viewer.add_image(sim.fluorescence, name="movie")
    dock = AutolabelWidget(viewer)
    dock.live.value = False
    dock.stain_layer.value = "planes"
    wait_worker(dock.preview())
    assert tuple(dock.preview_layer.axis_labels) == ("z", "y", "x")
    dock.stain_layer.value = "movie"
    wait_worker(dock.preview())
    assert tuple(dock.preview_layer.axis_labels) == tuple(viewer.layers["movie"].axis_labels)
