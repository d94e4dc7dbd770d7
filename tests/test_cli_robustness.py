"""The command line protects the user's inputs and answers bad input with one line, not a traceback."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_microseg.cli import main
from napari_microseg.io.atomic import guard_target, protect_inputs
from napari_microseg.io.images import read_image
from napari_microseg.simulate.nuclei import simulate_nuclei_image


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _label_folders(tmp_path: Path, gt_name: str, pred_name: str) -> tuple[Path, Path]:
    """``gt/`` and ``pred/`` folders holding one and the same 32 x 32 label image (one square object)."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir(), pred.mkdir()
    labels = np.zeros((32, 32), np.uint16)
    labels[4:12, 4:12] = 1
    tifffile.imwrite(gt / gt_name, labels)
    tifffile.imwrite(pred / pred_name, labels)
    return gt, pred


@pytest.fixture
def nuclei_image() -> np.ndarray:
    return simulate_nuclei_image(shape=(64, 64), n_nuclei=6, seed=3, vary_appearance=False)[0].astype(np.float32)


def test_overwrite_never_replaces_an_input_file(tmp_path, nuclei_image, capsys):
    """``--out`` chosen so that the labels would land on the input itself: refused, input unchanged."""
    source = tmp_path / "w" / "labels" / "cells.tif"
    source.parent.mkdir(parents=True)
    tifffile.imwrite(source, nuclei_image)
    before = _digest(source)
    code = main(["segment", "--model", "nuclei_fluorescence_fast", "--input", str(source), "--out",
                 str(tmp_path / "w"), "--overwrite", "--quiet"])
    assert code == 2
    assert "is one of this command's inputs" in capsys.readouterr().err
    assert _digest(source) == before


def test_evaluate_refuses_to_write_its_table_over_a_ground_truth_file(tmp_path, capsys):
    gt, pred = _label_folders(tmp_path, "a.tif", "a.tif")
    before = _digest(gt / "a.tif")
    code = main(["evaluate", "seg", "--gt", str(gt), "--pred", str(pred), "--out", str(gt / "a.tif"), "--overwrite"])
    assert code == 2 and "give a .csv file name" in capsys.readouterr().err  # (an input besides)
    assert _digest(gt / "a.tif") == before
    # a folder given as --out (existing, or new with a trailing slash): the tables go inside it under
    # their default names, not into a file named as the folder (nor an IsADirectoryError)
    assert main(["evaluate", "seg", "--gt", str(gt), "--pred", str(pred), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "metrics.csv").is_file() and (tmp_path / "metrics_thresholds.csv").is_file()
    assert main(["evaluate", "seg", "--gt", str(gt), "--pred", str(pred), "--out", f"{tmp_path / 'new'}/"]) == 0
    assert (tmp_path / "new" / "metrics.csv").is_file()
    assert main(["evaluate", "classes", "--gt", str(gt), "--pred", str(pred), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "class_metrics.csv").is_file()
    # an empty path (an unset shell variable) is refused, not taken for the current folder
    capsys.readouterr()
    assert main(["evaluate", "seg", "--gt", str(gt), "--pred", str(pred), "--out", ""]) == 2
    assert "--out is empty" in capsys.readouterr().err


def test_protection_covers_files_of_input_folders_and_zarr_stores_and_is_lifted(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.tif").write_bytes(b"x")
    store = tmp_path / "stack.zarr"
    (store / "0").mkdir(parents=True)
    protect_inputs([str(folder), str(store)])
    try:
        with pytest.raises(Exception, match="inputs"):
            guard_target(folder / "a.tif")
        with pytest.raises(Exception, match="inputs"):
            guard_target(store / "0" / "0.0")
        guard_target(folder / "labels" / "a.tif")  # a new file next to the inputs is fine
    finally:
        protect_inputs([])
    guard_target(folder / "a.tif")  # nothing protected any more


def test_multichannel_tiff_is_not_taken_for_a_time_lapse(tmp_path, nuclei_image, capsys):
    """A (C, Y, X) ImageJ file: refused with its channels named; ``--channel`` picks one."""
    path = tmp_path / "two_channels.tif"
    other = np.flipud(nuclei_image)
    tifffile.imwrite(path, np.stack([nuclei_image, other]), imagej=True, metadata={"axes": "CYX"})
    with pytest.raises(Exception, match="2 channels"):
        read_image(path)
    np.testing.assert_array_equal(read_image(path, channel=1).data, other)
    assert read_image(path, channel="all").metadata["channel_axis"] == 0
    with pytest.raises(Exception, match="does not exist"):
        read_image(path, channel=2)
    assert main(["segment", "--model", "nuclei_fluorescence_fast", "--input", str(path), "--out",
                 str(tmp_path / "a"), "--quiet"]) == 2
    assert "--channel" in capsys.readouterr().err
    assert main(["segment", "--model", "nuclei_fluorescence_fast", "--input", str(path), "--out",
                 str(tmp_path / "b"), "--channel", "0", "--quiet"]) == 0
    labels = tifffile.imread(tmp_path / "b" / "labels" / "two_channels.tif")
    assert labels.shape == nuclei_image.shape and labels.max() >= 3


def test_a_time_lapse_with_channels_is_segmented_with_channel(tmp_path, nuclei_image, capsys):
    """A (T, C, Y, X) ImageJ hyperstack: ``--channel`` gives a (T, Y, X) result, not a shape error."""
    path = tmp_path / "hyper.tif"
    frames = np.stack([np.stack([nuclei_image, np.zeros_like(nuclei_image)]),
                       np.stack([np.flipud(nuclei_image), np.zeros_like(nuclei_image)])])
    tifffile.imwrite(path, frames, imagej=True, metadata={"axes": "TCYX"})
    assert main(["segment", "--model", "nuclei_fluorescence_fast", "--input", str(path), "--out",
                 str(tmp_path / "a" / "deeper"), "--quiet"]) == 2
    assert "2 channels" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()  # a refused run leaves no empty output folder
    assert main(["segment", "--model", "nuclei_fluorescence_fast", "--input", str(path), "--out",
                 str(tmp_path / "b"), "--channel", "0", "--quiet"]) == 0
    labels = tifffile.imread(tmp_path / "b" / "labels" / "hyper.tif")
    assert labels.shape == (2,) + nuclei_image.shape and labels[0].max() >= 3 and labels[1].max() >= 3


def test_a_failed_command_keeps_an_output_folder_that_existed_or_has_files(tmp_path):
    """Only folders the failed command created and left empty are removed."""
    kept = tmp_path / "kept"
    kept.mkdir()
    assert main(["track", "--labels", str(tmp_path / "missing.tif"), "--out", str(kept)]) == 2
    assert kept.is_dir()
    assert main(["track", "--labels", str(tmp_path / "missing.tif"), "--out", str(tmp_path / "new")]) == 2
    assert not (tmp_path / "new").exists()


def test_a_stack_of_four_frames_stays_four_frames(tmp_path):
    """tifffile tags a (4, Y, X) array written without metadata as planar RGBA: it must stay 4 frames."""
    stack = np.arange(4 * 16 * 16, dtype=np.uint16).reshape(4, 16, 16)
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    np.testing.assert_array_equal(read_image(tmp_path / "stack.tif").data, stack)


def test_autolabel_reads_rgb_as_grey(tmp_path, nuclei_image):
    """Before, (Y, X, 3) was read as Y frames of X x 3 pixels and gave 0 nuclei."""
    grey = (nuclei_image / nuclei_image.max() * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "grey.tif", grey)
    tifffile.imwrite(tmp_path / "rgb.tif", np.dstack([grey] * 3), photometric="rgb")
    for name in ("grey", "rgb"):
        assert main(["autolabel", "fluorescence", "--stain", str(tmp_path / f"{name}.tif"), "--out",
                     str(tmp_path / name), "--quiet", "--keep-border"]) == 0
    from_rgb = tifffile.imread(tmp_path / "rgb" / "labels.tif")
    assert from_rgb.shape == grey.shape and from_rgb.max() >= 3
    np.testing.assert_array_equal(from_rgb, tifffile.imread(tmp_path / "grey" / "labels.tif"))


def test_track_labels_connected_objects_of_a_binary_mask_stack(tmp_path, capsys):
    masks = np.zeros((3, 40, 40), np.uint8)
    masks[:, 5:10, 5:10] = 1
    masks[:, 25:32, 25:32] = 1
    tifffile.imwrite(tmp_path / "masks.tif", masks)
    assert main(["track", "--labels", str(tmp_path / "masks.tif"), "--out", str(tmp_path / "t")]) == 0
    captured = capsys.readouterr()
    assert "0/1 mask" in captured.err and captured.out.startswith("2 tracks")


@pytest.mark.parametrize("argv, message", [
    (["simulate", "nuclei", "--motion-sd", "-1"], "--motion-sd must be"),
    (["simulate", "nuclei", "--drift", "nan", "0"], "--drift must be finite"),
    (["simulate", "nuclei", "--seed", "-1"], "--seed must be from 0 to"),
    (["simulate", "ccd", "--gain", "0"], "--gain must be"),
    (["segment", "--model", "nuclei_fluorescence_fast", "--threads", "-1"], "--threads must be >= 1"),
    (["segment", "--model", "nuclei_fluorescence_fast", "--min-size", "-3"], "--min-size must be >= 0"),
    (["segment", "--model", "nuclei_fluorescence_fast", "--tile", "32", "--overlap", "300"], "at most half the tile"),
    (["autolabel", "fluorescence", "--otsu-window", "-3"], "--otsu-window must be"),
    (["autolabel", "fluorescence", "--clahe-kernel", "-1"], "--clahe-kernel must be"),
    (["autolabel", "ccd", "--seed-sigma", "-1"], "--seed-sigma must be > 0"),
    (["segment", "--model", "nuclei_fluorescence_fast", "--channel", "-1"], "--channel must be >= 0"),
    (["train", "--base-filters", "0"], "--base-filters must be >= 1"),
    (["train", "--max-images", "0"], "--max-images must be >= 1"),
    (["train", "--patience", "-1"], "--patience must be >= 0"),
    (["train", "--output-mode", "multiclass", "--n-classes", "1"], "--n-classes must be >= 2"),
])
def test_bad_numbers_get_one_line_errors(tmp_path, nuclei_image, capsys, argv, message):
    image = tmp_path / "img.tif"
    tifffile.imwrite(image, nuclei_image)
    inputs = {"simulate": [], "segment": ["--input", str(image)], "autolabel": [],
              "train": ["--images", str(image), "--labels", str(image)]}[argv[0]]
    if argv[0] == "train":
        argv = argv + ["--out", str(tmp_path / "model.pt")]
    if argv[:2] == ["autolabel", "fluorescence"]:
        inputs = ["--stain", str(image)]
    elif argv[:2] == ["autolabel", "ccd"]:
        inputs = ["--input", str(image)]
    assert main(argv + inputs + ([] if argv[0] == "train" else ["--out", str(tmp_path / "out")])) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_missing_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["evaluate"])
    assert stop.value.code == 2
    assert main([]) == 2


def test_evaluate_explains_a_reversed_range_and_warns_about_unmatched_names(tmp_path, capsys):
    gt, pred = _label_folders(tmp_path, "good.tif", "other.tif")
    assert main(["evaluate", "seg", "--gt", str(gt), "--pred", str(pred), "--thresholds", "0.9:0.5:0.1",
                 "--out", str(tmp_path / "m.csv")]) == 2
    assert "start <= stop" in capsys.readouterr().err
    # two folders pair by name, even of one file each (another image's labels left in pred/ were scored)
    assert main(["evaluate", "seg", "--gt", str(gt), "--pred", str(pred), "--out", str(tmp_path / "m.csv")]) == 2
    assert "no file names" in capsys.readouterr().err
    # two files named: scored together, with a warning
    assert main(["evaluate", "seg", "--gt", str(gt / "good.tif"), "--pred", str(pred / "other.tif"),
                 "--out", str(tmp_path / "m.csv")]) == 0
    assert "the names differ" in capsys.readouterr().err


def test_segment_names_the_file_and_refuses_images_too_small_to_segment(tmp_path, nuclei_image, capsys):
    bad = nuclei_image.copy()
    bad[3, 3] = np.nan
    tifffile.imwrite(tmp_path / "with_nan.tif", bad)
    assert main(["segment", "--model", "nuclei_fluorescence_fast", "--input", str(tmp_path / "with_nan.tif"),
                 "--out", str(tmp_path / "a"), "--quiet"]) == 2
    assert "with_nan.tif: the image contains NaN" in capsys.readouterr().err
    tifffile.imwrite(tmp_path / "column.tif", nuclei_image[:, :1])
    assert main(["segment", "--model", "nuclei_fluorescence_fast", "--input", str(tmp_path / "column.tif"),
                 "--out", str(tmp_path / "b"), "--quiet"]) == 2
    assert "too small to segment" in capsys.readouterr().err


def test_export_checks_the_suffix_and_classify_checks_the_box(tmp_path, capsys):
    assert main(["export", "--model", "nuclei_fluorescence_fast", "--out", str(tmp_path / "m.txt")]) == 2
    assert "should end in .pt" in capsys.readouterr().err
    assert main(["classify", "images", "--model", "response_good_bad", "--input", str(tmp_path),
                 "--out", str(tmp_path / "c"), "--box", "-5", "-5", "30", "30"]) == 2
    assert "0 <= Y0 < Y1" in capsys.readouterr().err


def test_napari_reader_opens_each_channel_as_a_layer(tmp_path, nuclei_image):
    from napari_microseg._reader import read_layers

    path = tmp_path / "two.tif"
    tifffile.imwrite(path, np.stack([nuclei_image, nuclei_image * 2]), imagej=True, metadata={"axes": "CYX"})
    [(data, kwargs, kind)] = read_layers(str(path))
    assert kind == "image" and data.shape == (2, 64, 64) and kwargs["channel_axis"] == 0
    assert kwargs["name"] == ["two [channel 0]", "two [channel 1]"]


def test_results_written_into_the_input_folder_can_be_redone(tmp_path, nuclei_image):
    """Tables a run wrote next to its images are outputs, not inputs: ``--overwrite`` may replace them."""
    data = tmp_path / "data"
    data.mkdir()
    tifffile.imwrite(data / "cells.tif", nuclei_image)
    before = _digest(data / "cells.tif")
    argv = ["segment", "--model", "nuclei_fluorescence_fast", "--input", str(data), "--out", str(data), "--quiet"]
    assert main(argv) == 0
    assert main(argv + ["--overwrite"]) == 0
    assert (data / "objects.csv").exists() and _digest(data / "cells.tif") == before


def test_ome_zarr_channels_are_named_and_one_can_be_picked(tmp_path):
    """An OME-Zarr (t, c, z, y, x) with two channels is not read as a 2-frame time-lapse."""
    import zarr

    data = np.stack([np.full((32, 32), 1, np.uint16), np.full((32, 32), 2, np.uint16)])[None, :, None]
    group = zarr.open_group(str(tmp_path / "cells.ome.zarr"), mode="w")
    group.create_array("0", shape=data.shape, dtype=data.dtype)[:] = data
    group.attrs["multiscales"] = [{"axes": [{"name": a} for a in "tczyx"], "datasets": [{"path": "0"}]}]
    with pytest.raises(Exception, match="2 channels"):
        read_image(tmp_path / "cells.ome.zarr")
    picked = read_image(tmp_path / "cells.ome.zarr", channel=1)
    assert picked.data.shape == (32, 32) and int(picked.data.max().compute()) == 2


def test_autolabel_never_writes_over_its_target_image(tmp_path, nuclei_image, capsys):
    out = tmp_path / "out"
    out.mkdir()
    tifffile.imwrite(tmp_path / "stain.tif", nuclei_image)
    tifffile.imwrite(out / "labels.tif", nuclei_image)  # the target image happens to sit where labels go
    before = _digest(out / "labels.tif")
    assert main(["autolabel", "fluorescence", "--stain", str(tmp_path / "stain.tif"), "--target",
                 str(out / "labels.tif"), "--out", str(out), "--overwrite", "--quiet"]) == 2
    assert "inputs" in capsys.readouterr().err and _digest(out / "labels.tif") == before


def test_track_takes_a_boolean_mask_stack(tmp_path):
    masks = np.zeros((2, 30, 30), bool)
    masks[:, 3:8, 3:8] = True
    tifffile.imwrite(tmp_path / "masks.tif", masks)
    assert main(["track", "--labels", str(tmp_path / "masks.tif"), "--out", str(tmp_path / "t")]) == 0
    assert tifffile.imread(tmp_path / "t" / "tracks_labels.tif").max() == 1


def test_train_refuses_to_replace_its_side_files_and_inputs_before_training(tmp_path, capsys):
    """history.csv / .last.pt of an earlier run are the user's files too; an input is refused before an epoch."""
    model = tmp_path / "m.pt"
    (tmp_path / "m.history.csv").write_text("earlier\n")
    args = ["train", "--simulated", "2", "--sim-size", "64", "--epochs", "1", "--patch", "32", "--patches-per-epoch", "4"]
    assert main(args + ["--out", str(model)]) == 2
    assert "m.history.csv exists" in capsys.readouterr().err
    assert (tmp_path / "m.history.csv").read_text() == "earlier\n" and not model.exists()
    image = tmp_path / "img.tif"
    tifffile.imwrite(image, np.zeros((64, 64), np.uint8))
    tifffile.imwrite(tmp_path / "lab.tif", np.ones((64, 64), np.uint16))
    assert main(["train", "--images", str(image), "--labels", str(tmp_path / "lab.tif"), "--epochs", "1",
                 "--out", str(image), "--overwrite"]) == 2
    assert "is one of this command's inputs" in capsys.readouterr().err


def test_classifier_training_refuses_a_model_of_another_kind(tmp_path, capsys):
    """--init-model / --resume from a segmentation model or another task's classifier: one line, exit 2."""
    for task, other in (("images", "nuclei_fluorescence_fast"), ("objects", "response_good_bad")):
        assert main(["classify", "train", task, "--simulated", "8", "--epochs", "1", "--out",
                     str(tmp_path / f"{task}.pt"), "--init-model", other]) == 2
        err = capsys.readouterr().err
        assert "--init-model" in err and f"trains a classifier of {task}" in err and "Traceback" not in err
    assert not list(tmp_path.glob("*.pt"))


def test_a_crop_box_outside_the_image_is_refused(tmp_path, capsys):
    image = tmp_path / "r.tif"
    tifffile.imwrite(image, np.full((96, 64), 1000, np.uint16))
    assert main(["classify", "images", "--model", "response_good_bad", "--input", str(image), "--box", "500", "500",
                 "539", "542", "--out", str(tmp_path / "o")]) == 2
    assert "does not lie inside the image of 96 x 64 px" in capsys.readouterr().err


def test_classify_runs_record_model_and_device_and_refuse_bad_object_inputs(tmp_path, capsys):
    """classify_run.json holds the device; negative labels, --input with --image, pickled .npy: one line each."""
    import json

    sim = tmp_path / "sim"
    assert main(["simulate", "response", "--n", "4", "--out", str(sim), "--seed", "2"]) == 0
    assert main(["classify", "images", "--model", "response_good_bad", "--input", str(sim), "--out",
                 str(tmp_path / "r"), "--threshold", "discard"]) == 0
    run = json.loads((tmp_path / "r" / "classify_run.json").read_text())
    assert run["device"] == "cpu" and run["images"] == 4 and run["threshold_setting"] == "discard"
    assert 0 < run["threshold"] < 1

    image = np.full((64, 64), 100, np.uint8)
    labels = np.zeros((64, 64), np.int32)
    labels[10:20, 10:20] = -3
    tifffile.imwrite(tmp_path / "i.tif", image)
    tifffile.imwrite(tmp_path / "l.tif", labels)
    # (models of the task: a model of another is refused before any input is read)
    threads = ["--epochs", "1", "--device", "cpu", "--threads", "1"]
    assert main(["classify", "train", "objects", "--simulated", "1", "--particles", "4", *threads,
                 "--out", str(tmp_path / "obj.pt")]) == 0
    assert main(["classify", "train", "profiles", "--simulated", "8", *threads, "--out", str(tmp_path / "prof.pt")]) == 0
    capsys.readouterr()
    common = ["classify", "objects", "--model", str(tmp_path / "obj.pt"), "--out", str(tmp_path / "o")]
    assert main(common + ["--image", str(tmp_path / "i.tif"), "--labels", str(tmp_path / "l.tif"),
                          "--input", str(sim)]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(common + ["--image", str(tmp_path / "i.tif"), "--labels", str(tmp_path / "l.tif")]) == 2
    assert "labels must be >= 0" in capsys.readouterr().err
    np.save(tmp_path / "p.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert main(["classify", "profiles", "--model", str(tmp_path / "prof.pt"), "--input", str(tmp_path / "p.npy"),
                 "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "not a numeric .npy array" in err and "Traceback" not in err


def test_float_labels_blank_stains_and_two_valued_float_stacks_get_a_message(tmp_path, capsys):
    """Fractional labels are refused by train; a blank stain is named; {0.5, 1.5} is not taken for a mask."""
    from napari_microseg.measure.labels import masks_to_labels

    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir(), labels.mkdir()
    rng = np.random.default_rng(0)
    tifffile.imwrite(images / "a.tif", (rng.random((64, 64)) * 255).astype(np.uint8))
    tifffile.imwrite(labels / "a.tif", (rng.random((64, 64)) * 0.4).astype(np.float32))  # probabilities, not labels
    assert main(["train", "--images", str(images), "--labels", str(labels), "--epochs", "1", "--patch", "32",
                 "--out", str(tmp_path / "m.pt")]) == 2
    assert "non-integer values" in capsys.readouterr().err and not (tmp_path / "m.pt").exists()

    tifffile.imwrite(tmp_path / "blank.tif", np.zeros((64, 64), np.uint16))
    assert main(["autolabel", "fluorescence", "--stain", str(tmp_path / "blank.tif"), "--out", str(tmp_path / "al")]) == 0
    assert "blank.tif is constant" in capsys.readouterr().err
    tifffile.imwrite(tmp_path / "tiny.tif", np.ones((1, 1), np.uint16))
    assert main(["autolabel", "fluorescence", "--stain", str(tmp_path / "tiny.tif"), "--out", str(tmp_path / "t")]) == 2

    floats = np.full((2, 16, 16), 0.5, np.float32)
    floats[:, 4:8, 4:8] = 1.5
    same, converted = masks_to_labels(floats)
    assert not converted and same is floats
    mask = np.zeros((16, 16), bool)
    mask[2:5, 2:5] = mask[10:12, 10:12] = True
    labelled, converted = masks_to_labels(mask)
    assert converted and labelled.max() == 2


def test_classifier_training_options_are_checked_in_one_line(tmp_path, capsys):
    from napari_microseg.cli.classify import IMAGE_ARCHITECTURES
    from napari_microseg.models.classifiers import CLASSIFIER_ARCHITECTURES

    assert set(IMAGE_ARCHITECTURES) == set(CLASSIFIER_ARCHITECTURES)
    with pytest.raises(SystemExit):  # a segmentation network is no classifier
        main(["classify", "train", "images", "--simulated", "8", "--arch", "unet", "--out", str(tmp_path / "a.pt")])
    for option, value in (("--undersample", "1.5"), ("--label-smoothing", "2"), ("--margin", "-20")):
        capsys.readouterr()
        assert main(["classify", "train", "objects", "--simulated", "2", "--epochs", "1", option, value,
                     "--out", str(tmp_path / "o.pt")]) == 2
        err = capsys.readouterr().err
        assert option in err and "Traceback" not in err


def test_a_torchscript_export_and_a_missing_gpu_index_are_named(tmp_path, capsys, monkeypatch):
    import torch

    from napari_microseg.device import resolve_device

    exported = tmp_path / "e.pt"
    assert main(["export", "--model", "nuclei_fluorescence_fast", "--out", str(exported)]) == 0
    tifffile.imwrite(tmp_path / "i.tif", np.zeros((32, 32), np.uint8))
    capsys.readouterr()
    assert main(["segment", "--model", str(exported), "--input", str(tmp_path / "i.tif"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "TorchScript export" in err and "UserWarning" not in err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == "cuda:0"
    with pytest.raises(ValueError, match="does not exist"):
        resolve_device("cuda:7")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("cudax")


def test_a_ccd_frame_rescaled_to_8_bits_gets_a_warning_and_raw_frames_do_not(tmp_path, capsys):
    """The commonest silent failure: an image on another intensity scale than the model's training images."""
    from napari_microseg.io.models import read_model_file
    from napari_microseg.simulate.ccd import simulate_ccd_frame
    from napari_microseg.training.normalize import scale_mismatch

    config = read_model_file("ccd_classes")["config"]
    raw = simulate_ccd_frame(shape=(128, 128), seed=5).image
    eight = ((raw - raw.min()) / (raw.max() - raw.min()) * 255).astype(np.uint8)
    assert scale_mismatch(raw, config) is None and scale_mismatch(raw - np.median(raw), config) is None
    assert "far below" in scale_mismatch(eight, config)
    assert scale_mismatch(eight, read_model_file("nuclei_fluorescence_fast")["config"]) is None  # percentile: any scale
    tifffile.imwrite(tmp_path / "raw.tif", raw.astype(np.float32))
    tifffile.imwrite(tmp_path / "eight.tif", eight)
    for name, warned in (("raw", False), ("eight", True)):
        assert main(["segment", "--model", "ccd_classes", "--input", str(tmp_path / f"{name}.tif"), "--out",
                     str(tmp_path / name), "--quiet"]) == 0
        assert ("intensity scale the model was trained on" in capsys.readouterr().err) == warned
        # the thresholds of autolabel ccd are in ADC too
        assert main(["autolabel", "ccd", "--input", str(tmp_path / f"{name}.tif"), "--out", str(tmp_path / f"al_{name}")]) == 0
        assert ("a rescaled frame (e.g. to 8 bits)" in capsys.readouterr().err) == warned
    assert main(["autolabel", "ccd", "--input", str(tmp_path), "--out", str(tmp_path / "al_folder")]) == 2
    assert "is a folder: give one image file" in capsys.readouterr().err
    assert main(["train", "--images", str(tmp_path / "raw.tif"), "--labels", str(tmp_path / "none"), "--out",
                 str(tmp_path / "m.pt")]) == 2
    assert "no label files found at" in capsys.readouterr().err


def test_channel_picks_a_colour_of_an_rgb_image(tmp_path, nuclei_image, capsys):
    rgb = np.zeros(nuclei_image.shape + (3,), np.uint8)
    rgb[..., 2] = (nuclei_image / nuclei_image.max() * 255).astype(np.uint8)  # nuclei in blue, as a DAPI overlay
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    common = ["segment", "--model", "nuclei_fluorescence_fast", "--input", str(tmp_path / "rgb.tif"), "--quiet"]
    assert main(common + ["--out", str(tmp_path / "blue"), "--channel", "2"]) == 0
    assert tifffile.imread(tmp_path / "blue" / "labels" / "rgb.tif").max() >= 3
    assert main(common + ["--out", str(tmp_path / "red"), "--channel", "0"]) == 0
    assert tifffile.imread(tmp_path / "red" / "labels" / "rgb.tif").max() == 0  # the red channel is blank
    capsys.readouterr()
    assert main(common + ["--out", str(tmp_path / "x"), "--channel", "7"]) == 2
    assert "colour 7 does not exist" in capsys.readouterr().err


def test_classify_images_warns_about_blank_images(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "blank.tif", np.zeros((39, 42), np.uint16))
    assert main(["classify", "images", "--model", "response_good_bad", "--input", str(tmp_path / "blank.tif"),
                 "--out", str(tmp_path / "o")]) == 0
    assert "1 image(s) are constant" in capsys.readouterr().err
    model = tmp_path / "k16.pt"
    assert main(["classify", "train", "images", "--simulated", "8", "--epochs", "1", "--keep-16bit", "--batch-size", "4",
                 "--out", str(model), "--device", "cpu"]) == 0
    tifffile.imwrite(tmp_path / "eight.tif", (np.random.default_rng(0).random((39, 42)) * 255).astype(np.uint8))
    capsys.readouterr()
    assert main(["classify", "images", "--model", str(model), "--input", str(tmp_path / "eight.tif"),
                 "--out", str(tmp_path / "e")]) == 0
    assert "8-bit images look almost black" in capsys.readouterr().err


def test_simulator_settings_out_of_range_get_one_line(tmp_path, capsys):
    from napari_microseg.errors import InputError
    from napari_microseg.simulate.ccd import simulate_ccd_frame
    from napari_microseg.simulate.liposomes import simulate_liposome_image
    from napari_microseg.simulate.nanoparticles import simulate_profiles
    from napari_microseg.simulate.response import simulate_response_image

    for call in (lambda: simulate_profiles(4, hole_radius=5.0), lambda: simulate_profiles(4, view_angle_deg=float("nan")),
                 lambda: simulate_ccd_frame(shape=(32, 32), gain=-1),
                 lambda: simulate_ccd_frame(shape=(32, 32), balanced=True, target_fractions=(0.5, 0.5, 0.5, 0.5)),
                 lambda: simulate_liposome_image(n_ice=-1), lambda: simulate_response_image(fiber_scale="huge")):
        with pytest.raises(InputError):
            call()
    # the [P] experiment set-ups from the command line: hole radius 0.05, centred particles
    assert main(["simulate", "nanoparticles", "--n", "4", "--hole-radius", "0.05", "--offset-sd", "0", "--renders", "0",
                 "--out", str(tmp_path / "np")]) == 0
    import json

    params = json.loads((tmp_path / "np" / "params.json").read_text())
    assert params["simulation"]["hole_radius"] == 0.05 and params["simulation"]["offset_sd"] == 0.0


def test_review_fixes_scale_check_is_robust_and_optional_outputs_do_not_go_stale(tmp_path, capsys):
    """A hot pixel or NaN never triggers the scale warning; a rerun with --overwrite leaves no earlier
    clusters.csv / metrics.json behind; a broken classes.csv only skips the scoring; class names are
    found beside a labels file or glob."""
    from napari_microseg.cli.train import class_names_near
    from napari_microseg.io.models import read_model_file
    from napari_microseg.simulate.ccd import simulate_ccd_frame
    from napari_microseg.training.normalize import scale_mismatch

    config = read_model_file("ccd_classes")["config"]
    frame = simulate_ccd_frame(shape=(128, 128), seed=5).image.astype(np.float32)
    hot = frame.copy()
    hot[3, 3] = 65535
    blank_corner = frame.copy()
    blank_corner[:2, :2] = np.nan
    assert scale_mismatch(hot, config) is None and scale_mismatch(blank_corner, config) is None

    tifffile.imwrite(tmp_path / "ccd.tif", frame)
    assert main(["segment", "--model", "ccd_classes", "--input", str(tmp_path / "ccd.tif"), "--out", str(tmp_path / "s"),
                 "--quiet"]) == 0
    assert (tmp_path / "s" / "clusters.csv").is_file()
    assert main(["segment", "--model", "nuclei_fluorescence_fast", "--input", str(tmp_path / "ccd.tif"), "--out",
                 str(tmp_path / "s"), "--quiet", "--overwrite"]) == 0
    assert not (tmp_path / "s" / "clusters.csv").exists()

    sim = tmp_path / "resp"
    assert main(["simulate", "response", "--n", "4", "--out", str(sim), "--seed", "1"]) == 0
    assert main(["classify", "images", "--model", "response_good_bad", "--input", str(sim), "--out", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c" / "metrics.json").is_file()
    one = sim / "images" / "response_00000.tif"
    assert main(["classify", "images", "--model", "response_good_bad", "--input", str(one), "--box", "28", "14", "67",
                 "56", "--out", str(tmp_path / "c"), "--overwrite"]) == 0
    assert not (tmp_path / "c" / "metrics.json").exists() and not (tmp_path / "c" / "roc.csv").exists()

    ccd = tmp_path / "ccdsim"
    assert main(["simulate", "ccd", "--n", "1", "--shape", "32", "32", "--out", str(ccd)]) == 0
    for given in (ccd / "classes", next((ccd / "classes").iterdir()), ccd / "classes" / "*.tif"):
        assert class_names_near(given) == ["background", "glowing", "hot pixel", "cluster"], given


def test_blank_ccd_frames_and_flat_profiles_are_named(tmp_path, capsys):
    from astropy.io import fits

    fits.PrimaryHDU(np.zeros((64, 64), np.float32)).writeto(tmp_path / "zero.fits")
    assert main(["autolabel", "ccd", "--input", str(tmp_path / "zero.fits"), "--out", str(tmp_path / "a")]) == 0
    assert "zero.fits is constant" in capsys.readouterr().err
    np.save(tmp_path / "flat.npy", np.zeros((3, 1, 32), np.float32))
    assert main(["classify", "train", "profiles", "--simulated", "8", "--epochs", "1", "--device", "cpu",
                 "--threads", "1", "--out", str(tmp_path / "prof.pt")]) == 0
    capsys.readouterr()
    assert main(["classify", "profiles", "--model", str(tmp_path / "prof.pt"), "--input", str(tmp_path / "flat.npy"),
                 "--out", str(tmp_path / "p")]) == 0
    assert "3 of 3 profile(s) are flat" in capsys.readouterr().err


@pytest.mark.parametrize("argv, says", [
    (["classify", "images", "--model", "m", "--input", "i", "--out", "o", "--threshold", "foo"], "--threshold"),
    (["segment"], "required: --model, --input, --out"),
    (["train", "--out", "m.pt", "--epochs", "two"], "--epochs"),
])
def test_option_errors_are_one_line_naming_the_help(argv, says, capsys):
    """A wrong option is one line (argparse printed its whole usage block first), exit status 2."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0] and "--help" in err[0]


def test_two_number_options_take_either_spelling(tmp_path, capsys):
    """--diameter-range 5,30 and --diameter-range 5 30 mean the same in autolabel and batch autolabel."""
    from napari_microseg.cli import build_parser

    parser = build_parser()
    for spelled in (["5,30"], ["5", "30"]):
        args = parser.parse_args(["autolabel", "fluorescence", "--stain", "s.tif", "--out", "o", "--diameter-range", *spelled,
                                  "--threshold-bounds", *(["0.1", "0.9"] if len(spelled) == 2 else ["0.1,0.9"])])
        assert args.diameter_range == (5.0, 30.0) and args.threshold_bounds == (0.1, 0.9)
        args = parser.parse_args(["batch", "autolabel", "--input", "i", "--out", "o", "--diameter-range", *spelled])
        assert args.diameter_range == (5.0, 30.0)
    with pytest.raises(SystemExit):
        parser.parse_args(["autolabel", "fluorescence", "--stain", "s.tif", "--out", "o", "--diameter-range", "5"])
    assert "expected two numbers" in capsys.readouterr().err
