"""Command-line behaviour found wrong by the session-24 bug hunt: training data that silently differed
from what was given, empty paths taken for the current folder, (Y, X, 1) TIFFs read as frames, RGB
time-lapses, tile overlaps clamped without a word."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_microseg.cli import main
from napari_microseg.errors import InputError
from napari_microseg.simulate.nuclei import simulate_nuclei_image


def _nuclei_files(folder: Path, names: list[str], label_names: list[str] | None = None, size: int = 64) -> tuple[Path, Path]:
    """``images/`` and ``labels/`` under ``folder`` with simulated nuclei; labels named ``label_names``."""
    images, labels = folder / "images", folder / "labels"
    images.mkdir(parents=True), labels.mkdir(parents=True)
    for i, name in enumerate(names):
        image, truth = simulate_nuclei_image(shape=(size, size), n_nuclei=5, seed=i)[:2]
        tifffile.imwrite(images / name, image.astype(np.float32))
    for i, name in enumerate(label_names if label_names is not None else names):
        tifffile.imwrite(labels / name, simulate_nuclei_image(shape=(size, size), n_nuclei=5, seed=i)[1].astype(np.uint16))
    return images, labels


def test_training_pairs_name_what_is_left_out_and_refuse_two_candidates(tmp_path, capsys):
    from napari_microseg.training.data import find_image_label_pairs

    images, labels = _nuclei_files(tmp_path / "some", ["a.tif", "b.tif", "c.tif"], ["a.tif", "b_mask.tif"])
    pairs = find_image_label_pairs(images, labels)
    assert [(p.name, q.name) for p, q in pairs] == [("a.tif", "a.tif"), ("b.tif", "b_mask.tif")]
    assert "1 of 3 images have no labels file and are left out: c.tif" in capsys.readouterr().err

    images, labels = _nuclei_files(tmp_path / "two", ["a.tif"], ["a.tif", "a_mask.tif"])
    with pytest.raises(InputError, match=r"a.tif matches 2 label files \(a.tif, a_mask.tif\)"):
        find_image_label_pairs(images, labels)

    # one folder given as both, images beside their masks: each image with its mask, the masks not as images
    both = tmp_path / "both"
    both.mkdir()
    for name in ("a.tif", "a_mask.tif", "b.tif", "b_mask.tif"):
        tifffile.imwrite(both / name, np.zeros((16, 16), np.uint16))
    pairs = find_image_label_pairs(both, both)
    assert [(p.name, q.name) for p, q in pairs] == [("a.tif", "a_mask.tif"), ("b.tif", "b_mask.tif")]
    assert "left out" not in capsys.readouterr().err
    tifffile.imwrite(both / "c.tif", np.zeros((16, 16), np.uint16))  # an image without a mask there: named
    assert len(find_image_label_pairs(both, both)) == 2
    assert "1 of 5 images have no labels file and are left out: c.tif" in capsys.readouterr().err
    # two images of one name (a.tif, a.png) for one labels file: refused, as two label files for one image
    images, labels = _nuclei_files(tmp_path / "twin", ["a.tif"])
    from skimage.io import imsave

    imsave(images / "a.png", np.zeros((64, 64), np.uint8), check_contrast=False)
    with pytest.raises(InputError, match="both match the label file a.tif"):
        find_image_label_pairs(images, labels)


def test_training_reads_zarr_stores_and_names_a_nan_image(tmp_path):
    import zarr

    from napari_microseg.training.data import load_training_pairs

    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir(), labels.mkdir()
    image, truth = simulate_nuclei_image(shape=(64, 64), n_nuclei=5, seed=1)[:2]
    zarr.save_array(str(images / "field.zarr"), image.astype(np.float32))
    zarr.save_array(str(labels / "field.zarr"), truth.astype(np.uint16))
    read_images, read_labels, names = load_training_pairs(images, labels)
    assert names == ["field.zarr"] and read_images[0].shape == (64, 64)
    np.testing.assert_array_equal(read_labels[0], truth)

    holed = image.astype(np.float32).copy()
    holed[3, 3] = np.nan
    tifffile.imwrite(images / "holed.tif", holed)
    tifffile.imwrite(labels / "holed.tif", truth.astype(np.uint16))
    with pytest.raises(InputError, match=r"image .*holed\.tif contains NaN"):
        load_training_pairs(images, labels)


def test_train_refuses_what_it_would_silently_change(tmp_path, capsys):
    images, labels = _nuclei_files(tmp_path, ["a.tif"])
    # --simulated with files: it would train on the simulated images alone
    assert main(["train", "--simulated", "2", "--sim-size", "64", "--images", str(images), "--labels", str(labels),
                 "--epochs", "1", "--out", str(tmp_path / "m.pt")]) == 2
    assert "--simulated N trains on simulated images only" in capsys.readouterr().err
    # multiclass on nuclei ids: one class per id
    ids = np.zeros((64, 64), np.uint16)
    for k in range(40):
        ids[(k // 8) * 8:(k // 8) * 8 + 6, (k % 8) * 8:(k % 8) * 8 + 6] = k + 1
    tifffile.imwrite(labels / "a.tif", ids)
    assert main(["train", "--images", str(images), "--labels", str(labels), "--output-mode", "multiclass",
                 "--normalization", "percentile", "--epochs", "1", "--patch", "64", "--out", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err
    assert "values up to 40" in err and "instance labels" in err
    assert not (tmp_path / "m.pt").exists()
    # class maps with an "ignore" value (255): that value is no class
    from napari_microseg.training.data import prepare_training_data

    classes = np.zeros((32, 32), np.int64)
    classes[:5], classes[5:10], classes[10:12] = 1, 2, 255
    prepared = prepare_training_data([np.random.default_rng(0).random((32, 32))], [classes], output_mode="multiclass",
                                     ignore_value=255)
    assert prepared.n_classes == 3


def test_evaluate_refuses_one_prediction_for_two_truths(tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir(), pred.mkdir()
    square = np.zeros((32, 32), np.uint16)
    square[4:12, 4:12] = 1
    for path in (gt / "im0.tif", gt / "im0_mask.tif", pred / "im0.tif"):
        tifffile.imwrite(path, square)
    assert main(["evaluate", "seg", "--gt", str(gt), "--pred", str(pred), "--out", str(tmp_path / "m.csv")]) == 2
    assert "im0.tif in" in capsys.readouterr().err and not (tmp_path / "m.csv").exists()


def test_empty_paths_are_refused_not_taken_for_the_current_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    image, _ = simulate_nuclei_image(shape=(64, 64), n_nuclei=5, seed=1)[:2]
    tifffile.imwrite(tmp_path / "a.tif", image.astype(np.float32))
    for argv in (["segment", "--model", "nuclei_fluorescence_fast", "--input", "a.tif", "--out", ""],
                 ["segment", "--model", "nuclei_fluorescence_fast", "--input", "", "--out", "o"],
                 ["track", "--labels", "a.tif", "--out="],
                 ["simulate", "nuclei", "--out", " "],
                 ["segment", "--model", "nuclei_fluorescence_fast", "--input", "a.tif", "--ou", ""],  # abbreviated
                 ["classify", "images", "--model", "response_good_bad", "--input", "a.tif", "", "--out", "o"]):
        assert main(argv) == 2, argv
        assert "is empty (an unset variable?)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif"]  # nothing written here
    # an optional path left empty still means "not given"
    labels = np.zeros((64, 64), np.uint16)
    labels[4:12, 4:12] = 1
    tifffile.imwrite(tmp_path / "l.tif", labels)
    assert main(["evaluate", "seg", "--gt", "l.tif", "--pred", "l.tif", "--compare", "", "--out", "m.csv"]) == 0


def test_odd_tiff_layouts_rgb_time_lapses_and_tile_overlaps(tmp_path, capsys):
    from napari_microseg.io.images import read_image

    image, _ = simulate_nuclei_image(shape=(64, 64), n_nuclei=5, seed=1)[:2]
    tifffile.imwrite(tmp_path / "yx1.tif", image[..., None].astype(np.float32))
    assert read_image(tmp_path / "yx1.tif").data.shape == (64, 64)  # not 64 frames of 64 x 1 px
    tifffile.imwrite(tmp_path / "yx2.tif", np.stack([image, image * 0], -1).astype(np.float32))
    with pytest.raises(InputError, match="2 channels"):
        read_image(tmp_path / "yx2.tif")
    assert read_image(tmp_path / "yx2.tif", channel=0).data.shape == (64, 64)

    # an RGB time-lapse (T, Y, X, 3): grey frames, or one colour with --channel (here other nuclei in green)
    other, _ = simulate_nuclei_image(shape=(64, 64), n_nuclei=5, seed=7)[:2]
    byte = lambda a: (a / a.max() * 255).astype(np.uint8)  # noqa: E731
    frame = np.stack([byte(image), byte(other), np.zeros((64, 64), np.uint8)], -1)
    tifffile.imwrite(tmp_path / "tyxc.tif", np.stack([frame, frame]))
    tifffile.imwrite(tmp_path / "green.tif", np.stack([byte(other), byte(other)]))
    for source, extra, out in (("tyxc.tif", [], "grey"), ("tyxc.tif", ["--channel", "1"], "green_of_rgb"),
                               ("green.tif", [], "green_alone")):
        assert main(["segment", "--model", "nuclei_fluorescence_fast", "--input", str(tmp_path / source),
                     "--out", str(tmp_path / out), *extra]) == 0
    green = tifffile.imread(tmp_path / "green_of_rgb" / "labels" / "tyxc.tif")
    assert green.shape == (2, 64, 64)
    np.testing.assert_array_equal(green, tifffile.imread(tmp_path / "green_alone" / "labels" / "green.tif"))
    assert not np.array_equal(green, tifffile.imread(tmp_path / "grey" / "labels" / "tyxc.tif"))
    assert "no channels" not in capsys.readouterr().err

    # a fraction of the tile over half is refused, as pixels over half are; a small tile keeps the default
    assert main(["segment", "--model", "nuclei_fluorescence_fast", "--input", str(tmp_path / "yx1.tif"),
                 "--out", str(tmp_path / "o1"), "--tile", "128", "--overlap", "0.9"]) == 2
    assert "at most 0.5" in capsys.readouterr().err
    assert main(["segment", "--model", "nuclei_fluorescence_fast", "--input", str(tmp_path / "yx1.tif"),
                 "--out", str(tmp_path / "o2"), "--tile", "32"]) == 0


def test_validation_images_that_are_training_images_are_named(tmp_path, capsys):
    images, labels = _nuclei_files(tmp_path, ["a.tif", "b.tif"])
    assert main(["train", "--images", str(images), "--labels", str(labels), "--val-images", str(images / "b.tif"),
                 "--val-labels", str(labels / "b.tif"), "--epochs", "1", "--patch", "64", "--patches-per-epoch", "4",
                 "--batch-size", "2", "--out", str(tmp_path / "m.pt"), "--quiet"]) == 0
    assert "1 of the 1 validation image file(s) are training images too (b.tif)" in capsys.readouterr().err


def test_autolabel_takes_a_colour_and_never_removes_an_input_tile(tmp_path, capsys):
    """--channel picks the blue of an RGB stain (as segment does); a rerun with --overwrite whose stain is a
    tile of the earlier run is refused before anything is removed or written."""
    image, _ = simulate_nuclei_image(shape=(128, 128), n_nuclei=8, seed=1)[:2]
    noise = np.random.default_rng(0).random((128, 128))
    byte = lambda a: (a / a.max() * 255).astype(np.uint8)  # noqa: E731
    tifffile.imwrite(tmp_path / "rgb.tif", np.stack([byte(noise), byte(noise), byte(image)], -1))
    tifffile.imwrite(tmp_path / "blue.tif", byte(image))
    for stain, extra, out in (("rgb.tif", ["--channel", "2"], "from_rgb"), ("blue.tif", [], "from_blue")):
        assert main(["autolabel", "fluorescence", "--stain", str(tmp_path / stain), "--out", str(tmp_path / out), *extra]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "from_rgb" / "labels.tif"),
                                  tifffile.imread(tmp_path / "from_blue" / "labels.tif"))

    out = tmp_path / "tiled"
    assert main(["autolabel", "fluorescence", "--stain", str(tmp_path / "blue.tif"), "--qc", "--tile", "64",
                 "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in (out / "tiles" / "images").iterdir()}
    before_labels = (out / "labels.tif").read_bytes()
    stain = out / "tiles" / "images" / sorted(before)[0]
    capsys.readouterr()
    assert main(["autolabel", "fluorescence", "--stain", str(stain), "--qc", "--tile", "32", "--out", str(out),
                 "--overwrite"]) == 2
    assert "is one of this command's inputs" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (out / "tiles" / "images").iterdir()} == before
    assert (out / "labels.tif").read_bytes() == before_labels


def test_json_records_hold_no_nan_and_simulate_refuses_settings_it_ignored(tmp_path, capsys):
    import json

    from napari_microseg.simulate._common import jsonable

    record = jsonable({"auc": np.float64("nan"), "scores": np.array([0.5, np.inf]), "n": np.int64(3)})
    assert json.loads(json.dumps(record, allow_nan=False)) == {"auc": None, "scores": [0.5, None], "n": 3}
    assert main(["simulate", "nuclei", "--mode", "images", "--n", "1", "--dtype", "uint16", "--out", str(tmp_path / "a")]) == 2
    assert "--dtype uint16 applies to time-lapses" in capsys.readouterr().err
    assert main(["simulate", "nanoparticles", "--n", "2", "--renders", "-1", "--out", str(tmp_path / "b")]) == 2
    assert "--renders must be >= 0" in capsys.readouterr().err
