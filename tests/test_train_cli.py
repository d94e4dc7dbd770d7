"""``microseg train`` on a tiny folder of TIFFs writes a model and history.csv."""

import csv

import numpy as np
import pytest
import tifffile

from napari_microseg.cli import main
from napari_microseg.io.models import load_model
from test_train_data import disk_set


def _folder(tmp_path, n=3):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    imgs, labs = disk_set(n, seed=8)
    for i, (im, lb) in enumerate(zip(imgs, labs)):
        tifffile.imwrite(tmp_path / "images" / f"f{i}.tif", (im * 200).clip(0, 255).astype(np.uint8))
        tifffile.imwrite(tmp_path / "labels" / f"f{i}.tif", lb.astype(np.uint16))
    return tmp_path / "images", tmp_path / "labels"


def test_cli_train_writes_model_and_history(tmp_path, capsys):
    images, labels = _folder(tmp_path)
    out = tmp_path / "run" / "model.pt"
    args = ["train", "--images", str(images), "--labels", str(labels), "--out", str(out), "--epochs", "2",
            "--patch", "64", "--patches-per-epoch", "16", "--batch-size", "8", "--threads", "2", "--seed", "3",
            "--split-seed", "1", "--output-mode", "three_class", "--device", "cpu"]
    assert main(args) == 0
    loaded = load_model(out)
    assert loaded.output_mode == "three_class" and loaded.config["training"]["seed"] == 3
    assert loaded.config["training"]["config"]["split_seed"] == 1
    held_out = loaded.config["training"]["validation_images"]  # by file name
    assert len(held_out) == 1 and held_out[0] in {"f0.tif", "f1.tif", "f2.tif"}, held_out
    assert "3 image(s)" in loaded.config["training"]["data"]
    with open(out.parent / "model.history.csv", newline="") as fh:  # named after the model: no clash in a shared folder
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert set(rows[0]) == {"epoch", "train_loss", "val_loss", "val_dice", "lr", "seconds"}
    assert float(rows[1]["val_dice"]) >= 0
    # refuses to overwrite without --overwrite; resume continues to epoch 3
    assert main(args) == 2
    assert "exists" in capsys.readouterr().err
    assert main(args[:-8] + ["--epochs", "3", "--resume", str(out), "--output-mode", "three_class"]) == 0
    with open(out.parent / "model.history.csv", newline="") as fh:
        assert [r["epoch"] for r in csv.DictReader(fh)] == ["1", "2", "3"]
    # resuming with no more epochs than it has done trains nothing and rewrites nothing: said
    before = out.read_bytes()
    capsys.readouterr()
    assert main(args[:-8] + ["--epochs", "3", "--resume", str(out), "--output-mode", "three_class"]) == 2
    assert "ask for more epochs" in capsys.readouterr().err and out.read_bytes() == before
    # resuming this run into another existing model file is refused: that file is not this run's
    victim = tmp_path / "run" / "victim.pt"
    victim.write_bytes(b"someone else's model")
    resume_into = args[:-8] + ["--epochs", "4", "--resume", str(out), "--output-mode", "three_class"]
    resume_into[resume_into.index("--out") + 1] = str(victim)
    assert main(resume_into) == 2
    assert "another run" in capsys.readouterr().err and victim.read_bytes() == b"someone else's model"
    # ... and into a new file it continues the epochs and writes that file (its first epoch is its best)
    fresh = tmp_path / "run" / "continued.pt"
    resume_into[resume_into.index("--out") + 1] = str(fresh)
    assert main(resume_into) == 0
    training = load_model(fresh).config["training"]
    assert training["best_epoch"] == 4 and training["resumed_from"] == str(out)


def test_cli_train_bad_input_exits_2(tmp_path, capsys):
    images, _ = _folder(tmp_path, 1)
    assert main(["train", "--images", str(images), "--labels", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m.pt")]) == 2
    assert "no label files found at" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "m.pt")]) == 2


def test_cli_train_pedestal_normalisation_is_stored(tmp_path):
    images, labels = _folder(tmp_path)
    out = tmp_path / "ccd.pt"
    assert main(["train", "--images", str(images), "--labels", str(labels), "--out", str(out), "--epochs", "1",
                 "--patch", "64", "--patches-per-epoch", "8", "--batch-size", "4", "--threads", "2",
                 "--normalization", "pedestal", "--scale", "200", "--level-taps", "--device", "cpu"]) == 0
    config = load_model(out).config
    assert config["normalization"] == {"kind": "pedestal", "scale": 200.0, "estimator": "mode", "level_taps": True}
    # the training images' peak levels are kept, to recognise inputs on another intensity scale
    known = config["input_range"]
    assert 0 < known["low"] <= known["median"] and known["high"] > 0


def test_cli_train_distance_head_and_width(tmp_path, capsys):
    images, labels = _folder(tmp_path)
    out = tmp_path / "dist.pt"
    common = ["train", "--images", str(images), "--labels", str(labels), "--epochs", "1", "--patch", "64",
              "--patches-per-epoch", "8", "--batch-size", "4", "--threads", "2", "--device", "cpu"]
    assert main(common + ["--out", str(out), "--output-mode", "three_class", "--distance-head", "--base-filters", "8",
                          "--image-sampling", "objects", "--touching-weight", "3"]) == 0
    loaded = load_model(out)
    assert loaded.config["training"]["config"]["touching_weight"] == 3.0
    assert loaded.config["distance_head"] is True
    assert loaded.config["training"]["config"]["image_sampling"] == "objects"
    assert loaded.config["model"]["n_classes"] == 4 and loaded.config["model"]["base_filters"] == 8
    # a distance head on a binary model is refused with a one-line reason
    assert main(common + ["--out", str(tmp_path / "bad.pt"), "--distance-head"]) == 2
    assert main(common + ["--out", str(tmp_path / "bad.pt"), "--touching-weight", "2"]) == 2
    assert "three_class" in capsys.readouterr().err


def test_cli_train_refuses_settings_and_models_that_cannot_work(tmp_path, capsys):
    images, labels = _folder(tmp_path, 2)
    base = ["train", "--images", str(images), "--labels", str(labels), "--device", "cpu", "--epochs", "1"]
    for extra, message in ((["--batch-size", "0"], "batch_size must be a whole number >= 1"),
                           (["--patch", "0"], "patch_size must be a whole number >= 16"),
                           (["--lr", "-1"], "lr (learning rate) must be a number > 0"),
                           (["--lr", "0"], "lr (learning rate) must be a number > 0"),
                           (["--threads", "-2"], "num_threads (CPU threads) must be a whole number >= 1"),
                           (["--init-model", "response_good_bad"], "is a classifier (of images), not a segmentation model")):
        assert main(base + extra + ["--out", str(tmp_path / "m.pt")]) == 2, extra
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    # one image whose labels are all background
    (tmp_path / "one" / "images").mkdir(parents=True)
    (tmp_path / "one" / "labels").mkdir()
    tifffile.imwrite(tmp_path / "one" / "images" / "a.tif", tifffile.imread(images / "f0.tif"))
    tifffile.imwrite(tmp_path / "one" / "labels" / "a.tif", np.zeros_like(tifffile.imread(labels / "f0.tif")))
    assert main(["train", "--images", str(tmp_path / "one" / "images"), "--labels", str(tmp_path / "one" / "labels"),
                 "--out", str(tmp_path / "e.pt")]) == 2
    assert "hold no objects" in capsys.readouterr().err


def test_cli_train_cosine_schedule_lowers_the_lr_every_epoch(tmp_path):
    images, labels = _folder(tmp_path)
    out = tmp_path / "cos.pt"
    assert main(["train", "--images", str(images), "--labels", str(labels), "--out", str(out), "--epochs", "3",
                 "--patch", "64", "--patches-per-epoch", "8", "--threads", "2", "--device", "cpu", "--lr", "0.01",
                 "--lr-schedule", "cosine", "--patience", "0"]) == 0
    with open(tmp_path / "cos.history.csv", newline="") as fh:
        lrs = [float(r["lr"]) for r in csv.DictReader(fh)]
    assert lrs[0] == pytest.approx(0.01) and lrs[0] > lrs[1] > lrs[2] > 1e-6


def test_multiclass_training_on_a_simulated_ccd_folder_keeps_its_class_names(tmp_path):
    """Without --class-names the names come from the folder's params.json, so 'cluster' stays 'cluster'."""
    sim = tmp_path / "ccd"
    assert main(["simulate", "ccd", "--n", "2", "--shape", "64", "64", "--out", str(sim), "--seed", "1"]) == 0
    out = tmp_path / "ccd.pt"
    assert main(["train", "--images", str(sim / "frames"), "--labels", str(sim / "classes"), "--output-mode",
                 "multiclass", "--normalization", "pedestal", "--epochs", "1", "--patch", "32",
                 "--patches-per-epoch", "4", "--batch-size", "2", "--out", str(out), "--device", "cpu"]) == 0
    config = load_model(out).config
    assert config["class_names"] == ["background", "glowing", "hot pixel", "cluster"] and config["n_classes"] == 4
    # the CCD options take such a model: shape rules and the charge-cluster table
    seg = tmp_path / "seg"
    assert main(["segment", "--model", str(out), "--input", str(sim / "frames"), "--out", str(seg), "--shape-rules",
                 "--max-cluster-size", "50", "--quiet", "--device", "cpu"]) == 0
    assert (seg / "clusters.csv").is_file()


def test_multiclass_trains_on_raw_ccd_adc_unless_told_otherwise(tmp_path, capsys):
    """[C]: without --normalization a multiclass model keeps absolute levels (pedestal / 200 ADC, the
    Training widget's default) and says so; --normalization percentile still stretches each image."""
    sim = tmp_path / "ccd"
    assert main(["simulate", "ccd", "--n", "2", "--shape", "64", "64", "--out", str(sim), "--seed", "1"]) == 0
    common = ["--images", str(sim / "frames"), "--labels", str(sim / "classes"), "--output-mode", "multiclass",
              "--epochs", "1", "--patch", "32", "--patches-per-epoch", "4", "--batch-size", "2", "--device", "cpu"]
    capsys.readouterr()
    assert main(["train", *common, "--out", str(tmp_path / "raw.pt")]) == 0
    assert "raw CCD ADC" in capsys.readouterr().err
    norm = load_model(tmp_path / "raw.pt").config["normalization"]
    assert norm["kind"] == "pedestal" and norm["scale"] == 200.0 and norm["level_taps"] is True
    # written out, pedestal means the same; its options are taken when given
    assert main(["train", *common, "--normalization", "pedestal", "--out", str(tmp_path / "ped.pt")]) == 0
    assert load_model(tmp_path / "ped.pt").config["normalization"] == norm
    assert main(["train", *common, "--scale", "50", "--no-level-taps", "--out", str(tmp_path / "ped50.pt")]) == 0
    changed = load_model(tmp_path / "ped50.pt").config["normalization"]
    assert changed["scale"] == 50.0 and not changed.get("level_taps")
    assert main(["train", *common, "--normalization", "percentile", "--optimizer", "adadelta", "--lr", "1",
                 "--weight-decay", "0.01", "--out", str(tmp_path / "pct.pt")]) == 0  # the [C] study's optimiser
    config = load_model(tmp_path / "pct.pt").config
    assert config["normalization"]["kind"] == "percentile"
    assert config["training"]["config"]["optimizer"] == "adadelta" and config["training"]["config"]["weight_decay"] == 0.01
    capsys.readouterr()
    assert main(["train", *common, "--weight-decay", "-1", "--out", str(tmp_path / "bad.pt")]) == 2
    assert "weight_decay must be a number >= 0" in capsys.readouterr().err
    assert main(["train", "--simulated", "2", "--sim-size", "64", "--epochs", "1", "--patch", "32",
                 "--patches-per-epoch", "4", "--out", str(tmp_path / "bin.pt"), "--device", "cpu"]) == 0
    assert load_model(tmp_path / "bin.pt").config["normalization"]["kind"] == "percentile"  # not multiclass


def test_a_patch_larger_than_every_image_is_fitted_to_them(tmp_path, capsys):
    """--patch 1000 on 64-px images trained on 1000-px patches, all padding (16 s a patch); it is now
    the images' size, said on stderr and recorded in the model."""
    from napari_microseg.training.trainer import fitted_patch_size

    assert fitted_patch_size(1000, [(64, 64), (60, 70)]) == 80 and fitted_patch_size(48, [(64, 64)]) == 48
    assert fitted_patch_size(72, [(70, 70)]) == 72  # never larger than asked
    assert main(["train", "--simulated", "2", "--sim-size", "64", "--epochs", "1", "--patch", "1000",
                 "--patches-per-epoch", "2", "--batch-size", "2", "--out", str(tmp_path / "m.pt"), "--device", "cpu"]) == 0
    assert "training on 64 px patches" in capsys.readouterr().err
    assert load_model(tmp_path / "m.pt").config["patch_size"] == [64, 64]


def test_hdu_picks_the_fits_extension_to_train_on(tmp_path, capsys):
    """FITS images with two image HDUs (e.g. two amplifiers): without --hdu the first (here a blank
    one) is read, with a warning; --hdu 2 trains on the second; a missing HDU is a one-line error."""
    from astropy.io import fits

    images, labels = _folder(tmp_path, n=2)
    fits_dir = tmp_path / "fits"
    fits_dir.mkdir()
    for path in sorted(images.iterdir()):
        pixels = tifffile.imread(path).astype(np.float32)
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros_like(pixels)), fits.ImageHDU(pixels)]).writeto(
            fits_dir / f"{path.stem}.fits")
    common = ["train", "--images", str(fits_dir), "--labels", str(labels), "--epochs", "1", "--patch", "32",
              "--patches-per-epoch", "4", "--batch-size", "2", "--device", "cpu"]
    assert main(common + ["--out", str(tmp_path / "first.pt")]) == 0
    assert "f0.fits is constant" in capsys.readouterr().err
    assert main(common + ["--out", str(tmp_path / "second.pt"), "--hdu", "2"]) == 0
    assert "constant" not in capsys.readouterr().err
    assert "(FITS HDU 2)" in str(load_model(tmp_path / "second.pt").config)
    assert main(common + ["--out", str(tmp_path / "none.pt"), "--hdu", "5"]) == 2
    err = capsys.readouterr().err
    assert "HDU 5" in err and "Traceback" not in err


def test_fine_tuning_keeps_the_models_output_mode_unless_told(tmp_path, capsys):
    """--init-model without --output-mode fine-tunes the model as it is (three-class stays three-class,
    its head kept), not as a fresh binary model; a different mode given is said."""
    images, labels = _folder(tmp_path)
    common = ["--images", str(images), "--labels", str(labels), "--epochs", "1", "--patch", "64",
              "--patches-per-epoch", "4", "--batch-size", "4", "--device", "cpu"]
    base = tmp_path / "base.pt"
    assert main(["train", *common, "--out", str(base), "--output-mode", "three_class"]) == 0
    capsys.readouterr()
    assert main(["train", *common, "--out", str(tmp_path / "ft.pt"), "--init-model", str(base)]) == 0
    assert "output mode three_class, as base.pt has it" in capsys.readouterr().err
    assert load_model(tmp_path / "ft.pt").output_mode == "three_class"
    assert main(["train", *common, "--out", str(tmp_path / "bin.pt"), "--init-model", str(base), "--output-mode", "binary"]) == 0
    assert "differs from base.pt's (three_class)" in capsys.readouterr().err
    assert load_model(tmp_path / "bin.pt").output_mode == "binary"
    assert main(["train", *common, "--out", str(tmp_path / "plain.pt"), "--quiet"]) == 0  # no model to follow: binary
    assert load_model(tmp_path / "plain.pt").output_mode == "binary"
    said = capsys.readouterr()
    assert "epoch" not in said.err and "model: " in said.out  # --quiet: no progress bar, the summary still
