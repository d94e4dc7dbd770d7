"""``microseg classify``: train + classify end to end on tiny simulated sets."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_microseg.cli import build_parser, main


def test_classify_train_and_images_end_to_end(tmp_path, capsys):
    model = tmp_path / "m.pt"
    rc = main(["classify", "train", "images", "--simulated", "16", "--epochs", "2", "--batch-size", "8", "--out", str(model),
               "--device", "cpu", "--threads", "1", "--seed", "1"])
    assert rc == 0 and model.is_file()
    hist = pd.read_csv(tmp_path / "m.history.csv")
    assert list(hist["epoch"]) == [1, 2] and hist["train_loss"].notna().all()
    # a second run into the same file is refused (nothing trained), and --overwrite replaces it
    before = model.read_bytes()
    again = ["classify", "train", "images", "--simulated", "16", "--epochs", "1", "--batch-size", "8", "--out", str(model),
             "--device", "cpu", "--threads", "1", "--seed", "2"]
    assert main(again) == 2 and model.read_bytes() == before
    assert main(again + ["--overwrite"]) == 0 and model.read_bytes() != before
    assert len(pd.read_csv(tmp_path / "m.history.csv")) == 1
    sim = tmp_path / "sim"
    assert main(["simulate", "response", "--n", "6", "--out", str(sim), "--seed", "5"]) == 0
    out = tmp_path / "res"
    assert main(["classify", "images", "--model", str(model), "--input", str(sim), "--out", str(out), "--threshold", "0.4"]) == 0
    flags = pd.read_csv(out / "flags.csv")
    assert list(flags.columns) == ["index", "file", "probability_bad", "verdict", "threshold"]
    assert len(flags) == 6 and (flags["threshold"] == 0.4).all()
    assert ((flags["probability_bad"] >= 0.4) == (flags["verdict"] == "bad")).all()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 6 and 0 <= metrics["accuracy"] <= 1
    confusion = pd.read_csv(out / "confusion.csv").set_index("true class")
    assert metrics["class_names"] == ["good", "bad"] and list(confusion.index) == ["good", "bad"]
    assert confusion.to_numpy().tolist() == metrics["confusion"]
    assert confusion["predicted bad"].sum() == (flags["verdict"] == "bad").sum()
    roc = pd.read_csv(out / "roc.csv")
    assert roc["false_positive_rate"].is_monotonic_increasing and roc["true_positive_rate"].iloc[-1] == 1
    per_type = pd.read_csv(out / "subclass_accuracy.csv")
    assert per_type["n"].sum() == 6
    # the flags are a user's result: not replaced without --overwrite
    (out / "flags.csv").write_text("mine\n")
    assert main(["classify", "images", "--model", str(model), "--input", str(sim), "--out", str(out)]) == 2
    assert (out / "flags.csv").read_text() == "mine\n"
    assert main(["classify", "images", "--model", str(model), "--input", str(sim), "--out", str(out), "--overwrite"]) == 0
    # the images/ folder given itself: its integration masks are found beside it
    assert main(["classify", "images", "--model", str(model), "--input", str(sim / "images"), "--out", str(tmp_path / "by_folder")]) == 0
    by_folder = pd.read_csv(tmp_path / "by_folder" / "flags.csv")
    np.testing.assert_allclose(by_folder["probability_bad"], flags["probability_bad"], atol=0.05)
    # images without boxes or masks: the message names the file and says how to give the area
    shutil.copytree(sim / "images", tmp_path / "bare")
    assert main(["classify", "images", "--model", str(model), "--input", str(tmp_path / "bare"), "--out", str(tmp_path / "bare_out")]) == 2
    said = capsys.readouterr().err
    assert "response_00000.tif is" in said and "--box" in said and "integration/" in said


def test_flag_and_discard_thresholds_are_chosen_on_validation_images_and_used(tmp_path, capsys):
    """[R] use cases: training stores 'flag' / 'discard' thresholds; --threshold flag|discard applies them."""
    from napari_microseg.classify.data import simulated_response_data
    from napari_microseg.classify.evaluate import confusion_at_threshold
    from napari_microseg.classify.predict import predict_proba
    from napari_microseg.classify.trainer import USE_MAX_RATE, train_classifier
    from napari_microseg.io.models import read_model_file
    from napari_microseg.progress import drain

    model = tmp_path / "m.pt"
    train, val = simulated_response_data(48, seed=1), simulated_response_data(40, seed=2)
    drain(train_classifier({"task": "images", "model": {"architecture": "small_cnn"}, "epochs": 2, "batch_size": 16,
                            "num_threads": 1}, train, val, model))
    stored = read_model_file(model)["config"]["use_thresholds"]
    p_bad = predict_proba(str(model), val.x)[:, 1]
    flag, discard = (confusion_at_threshold(val.y, p_bad, stored[m]) for m in ("flag", "discard"))
    assert flag["bad_passed_rate"] <= USE_MAX_RATE and discard["good_discarded_rate"] <= USE_MAX_RATE
    assert stored["n_images"] == 40 and stored["max_rate"] == USE_MAX_RATE

    sim = tmp_path / "sim"
    assert main(["simulate", "response", "--n", "6", "--out", str(sim), "--seed", "5"]) == 0
    for mode in ("flag", "discard"):
        out = tmp_path / mode
        assert main(["classify", "images", "--model", str(model), "--input", str(sim), "--out", str(out),
                     "--threshold", mode]) == 0
        assert np.allclose(pd.read_csv(out / "flags.csv")["threshold"], stored[mode], rtol=1e-5)
    # a model without them (the shipped ones have them) and a word that is no threshold: one line, exit 2
    from napari_microseg.io.models import update_model_config

    update_model_config(model, use_thresholds=None)
    capsys.readouterr()
    assert main(["classify", "images", "--model", str(model), "--input", str(sim), "--out", str(tmp_path / "x"),
                 "--threshold", "flag"]) == 2
    assert "no 'flag' threshold" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["classify", "images", "--model", str(model), "--input", str(sim), "--out", str(tmp_path / "y"),
              "--threshold", "strict"])
    assert "expected a probability, 'flag' or 'discard'" in capsys.readouterr().err


def test_classify_cli_bad_input(tmp_path, capsys):
    sim = tmp_path / "sim"
    main(["simulate", "response", "--n", "2", "--out", str(sim)])
    # not a model file
    bogus = tmp_path / "bogus.pt"
    bogus.write_text("nope")
    assert main(["classify", "images", "--model", str(bogus), "--input", str(sim), "--out", str(tmp_path / "o")]) == 2
    # strategy that needs real data without --input
    assert main(["classify", "train", "images", "--simulated", "8", "--strategy", "pretrain_freeze", "--out", str(tmp_path / "x.pt")]) == 2
    # a folder is not a model file name: refused before any training
    assert main(["classify", "train", "profiles", "--simulated", "40", "--epochs", "1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_classify_images_skips_unreadable_files_and_goes_on(tmp_path, capsys):
    """A folder of response images with an empty file, a text file named .tif and a stack without its
    integration mask among them: those are skipped with their names (classify_run.json lists them), the
    rest are classified, exit 1. (A stack with its masks is classified image by image: test_hunt29_fixes.)"""
    import shutil

    import tifffile

    sim = tmp_path / "sim"
    assert main(["simulate", "response", "--n", "4", "--out", str(sim), "--seed", "3"]) == 0
    plain = tmp_path / "plain"
    shutil.copytree(sim / "images", plain)
    shutil.copytree(sim / "integration", plain / "integration")
    (plain / "empty.tif").write_bytes(b"")
    (plain / "notimage.tif").write_text("hello")
    tifffile.imwrite(plain / "stack.tif", np.zeros((3, 20, 20), np.uint16))
    first = sorted((sim / "images").glob("*.tif"))[0]
    holed = tifffile.imread(first).astype(np.float32)
    holed[0, 0] = np.nan  # a masked pixel: named and skipped, not the whole run stopped
    tifffile.imwrite(plain / "holed.tif", holed)
    shutil.copy(plain / "integration" / first.name, plain / "integration" / "holed.tif")
    out = tmp_path / "flags"
    capsys.readouterr()
    assert main(["classify", "images", "--model", "response_good_bad", "--input", str(plain), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "skipped empty.tif" in err and "skipped stack.tif: no readable integration mask" in err and "Traceback" not in err
    assert "skipped holed.tif: contains NaN" in err
    assert len(pd.read_csv(out / "flags.csv")) == 4
    run = json.loads((out / "classify_run.json").read_text())
    assert sorted(f["image"].rsplit("/", 1)[-1] for f in run["failures"]) == ["empty.tif", "holed.tif", "notimage.tif",
                                                                            "stack.tif"]
    # nothing readable at all: exit 2 with the reason
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.tif").write_bytes(b"")
    assert main(["classify", "images", "--model", "response_good_bad", "--input", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "none of the 1 images could be read" in capsys.readouterr().err
    # batch: images larger than the model's crop, without --box and without integration masks beside them,
    # is one line up front, not a failure per image
    shutil.copytree(sim / "images", tmp_path / "alone")
    assert main(["batch", "classify", "--model", "response_good_bad", "--input", str(tmp_path / "alone"),
                 "--out", str(tmp_path / "b"), "--workers", "0"]) == 2
    assert "give the integration area with --box" in capsys.readouterr().err and not (tmp_path / "b").exists()


def test_classify_train_profiles_and_objects_tiny(tmp_path, capsys):
    pm = tmp_path / "p.pt"
    assert main(["classify", "train", "profiles", "--simulated", "40", "--epochs", "1", "--views", "2", "--out", str(pm), "--device", "cpu",
                 "--folds", "2"]) == 0
    assert len(pd.read_csv(tmp_path / "p.cv_folds.csv")) == 2
    # fine-tuning it on profiles of other views or points: one line before any training, not a traceback
    capsys.readouterr()
    for other in (["--views", "1"], ["--views", "2", "--points", "64"]):
        assert main(["classify", "train", "profiles", "--simulated", "20", "--epochs", "1", "--init-model", str(pm),
                     *other, "--out", str(tmp_path / "ft.pt")]) == 2
        assert "do not fit the network of --init-model" in capsys.readouterr().err
    assert not (tmp_path / "ft.pt").exists()
    sim = tmp_path / "nano"
    assert main(["simulate", "nanoparticles", "--n", "10", "--views", "2", "--out", str(sim), "--renders", "0"]) == 0
    assert main(["classify", "profiles", "--model", str(pm), "--input", str(sim), "--out", str(tmp_path / "pr")]) == 0
    pop = pd.read_csv(tmp_path / "pr" / "population.csv")
    assert pop["count"].sum() == 10 and pop["percent"].sum() == pytest.approx(100)
    # the simulated folder knows the true classes: scored against them
    _check_scores(tmp_path / "pr", pd.read_csv(sim / "classes.csv")["class"], pd.read_csv(tmp_path / "pr" / "profiles.csv")["class"])
    # a folder of another task (its classes are none of the model's): said, not scored
    table = pd.read_csv(sim / "classes.csv")
    table.assign(**{"class": ["left-handed", "right-handed"] * 5}).to_csv(sim / "classes.csv", index=False)
    capsys.readouterr()
    assert main(["classify", "profiles", "--model", str(pm), "--input", str(sim), "--out", str(tmp_path / "pr"),
                 "--overwrite"]) == 0
    assert "none of this model's" in capsys.readouterr().err and not (tmp_path / "pr" / "metrics.json").exists()
    # a classes.csv without the classes only skips the scoring (and no earlier metrics stay behind)
    (sim / "classes.csv").write_text("index,kind\n0,x\n")
    assert main(["classify", "profiles", "--model", str(pm), "--input", str(sim), "--out", str(tmp_path / "pr"),
                 "--overwrite"]) == 0
    assert not (tmp_path / "pr" / "metrics.json").exists() and (tmp_path / "pr" / "profiles.csv").is_file()
    om = tmp_path / "o.pt"
    assert main(["classify", "train", "objects", "--simulated", "1", "--particles", "10", "--epochs", "1", "--out", str(om),
                 "--device", "cpu", "--history", str(tmp_path / "oh.csv")]) == 0
    lip = tmp_path / "lip"
    assert main(["simulate", "liposomes", "--n", "1", "--shape", "256", "256", "--particles", "6", "--out", str(lip)]) == 0
    assert main(["classify", "objects", "--model", str(om), "--input", str(lip), "--out", str(tmp_path / "ob")]) == 0
    objs = pd.read_csv(tmp_path / "ob" / "objects.csv")
    truth = pd.read_csv(lip / "classes.csv")
    assert sorted(objs["label"]) == sorted(truth["label"])
    assert list(objs.columns[:5]) == ["t", "label", "y", "x", "area"]
    assert {"class", "probability"} <= set(objs.columns)
    counts = pd.read_csv(tmp_path / "ob" / "counts.csv")
    assert list(counts.columns[:2]) == ["t", "count"] and counts["count"].sum() == len(objs)
    # per-class counts are named as `segment` names them: count_<class>
    per_class = [c for c in counts.columns if c not in ("t", "count", "image")]
    assert per_class and all(c.startswith("count_") for c in per_class)
    assert counts[per_class].to_numpy().sum() == len(objs)
    merged = objs.merge(truth, on="label")
    _check_scores(tmp_path / "ob", merged["lamellarity"], merged["class"])
    # the same objects under huge ids (3e9, as some tools number them), or as a 0/1 mask: the same classes
    import tifffile

    image_file = next((lip / "images").iterdir())
    labels = tifffile.imread(lip / "labels" / image_file.name).astype(np.int64)
    tifffile.imwrite(tmp_path / "huge.tif", np.where(labels > 0, labels + 3_000_000_000, 0))
    tifffile.imwrite(tmp_path / "mask.tif", (labels > 0).astype(np.uint8))
    capsys.readouterr()
    for name, shift in (("huge.tif", 3_000_000_000), ("mask.tif", None)):
        assert main(["classify", "objects", "--model", str(om), "--image", str(image_file), "--labels",
                     str(tmp_path / name), "--out", str(tmp_path / name.replace(".tif", "_out"))]) == 0
        got = pd.read_csv(tmp_path / name.replace(".tif", "_out") / "objects.csv")
        if shift is not None:
            assert sorted(got["label"] - shift) == sorted(objs["label"])
            assert list(got.sort_values("label")["class"]) == list(objs.sort_values("label")["class"])
        else:
            assert len(got) == len(objs) and "0/1 mask, not labels" in capsys.readouterr().err
    # a folder where one labels file holds no objects: a warning naming it, and 0 in counts.csv
    image = next((lip / "images").iterdir())
    shutil.copy(image, lip / "images" / "zz_empty.tif")
    tifffile.imwrite(lip / "labels" / "zz_empty.tif", np.zeros_like(tifffile.imread(lip / "labels" / image.name)))
    capsys.readouterr()
    assert main(["classify", "objects", "--model", str(om), "--input", str(lip), "--out", str(tmp_path / "ob2")]) == 0
    assert "labels/zz_empty.tif: no objects" in capsys.readouterr().err
    counts = pd.read_csv(tmp_path / "ob2" / "counts.csv")
    assert counts["image"].tolist() == [f"images/{image.name}", "images/zz_empty.tif"]
    assert counts["count"].tolist() == [len(objs), 0]
    # one empty labels file given by name: refused, naming the labels file
    assert main(["classify", "objects", "--model", str(om), "--image", str(image), "--labels",
                 str(lip / "labels" / "zz_empty.tif"), "--out", str(tmp_path / "ob3")]) == 2
    assert "zz_empty.tif: the label image is empty" in capsys.readouterr().err


def _check_scores(folder, truth, predicted):
    """metrics.json and confusion.csv agree with the true and predicted classes."""
    metrics = json.loads((folder / "metrics.json").read_text())
    confusion = pd.read_csv(folder / "confusion.csv").set_index("true class")
    assert metrics["n"] == len(truth) == confusion.to_numpy().sum()
    assert metrics["accuracy"] == pytest.approx((truth.to_numpy() == predicted.to_numpy()).mean())
    for name in set(truth):
        assert confusion.loc[name].sum() == (truth == name).sum()
    assert json.loads((folder / "classify_run.json").read_text())["scores"]["accuracy"] == metrics["accuracy"]


def test_parser_has_classify_help():
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["classify", "train", "images", "--help"])


def test_train_defaults_follow_the_studies_set_ups():
    """[R]: up to 300 epochs, early stopping patience 30, lr within 1e-4..3e-4 (batch 64, below the
    study's 70-128: better on simulated images, see cli/classify.py); [P]: Adadelta (lr 1), up to 200
    epochs with early stopping; [T]: batch 32."""
    parser = build_parser()
    images = parser.parse_args(["classify", "train", "images", "--out", "m.pt"])
    assert (images.epochs, images.patience) == (300, 30) and 1e-4 <= images.lr <= 3e-4
    profiles = parser.parse_args(["classify", "train", "profiles", "--out", "m.pt"])
    assert profiles.epochs == 200 and profiles.patience > 0 and profiles.optimizer == "adadelta"
    assert profiles.lr is None  # resolved per optimiser when the run starts: 1 for adadelta
    assert parser.parse_args(["classify", "train", "objects", "--out", "m.pt"]).batch_size == 32


def test_hdu_picks_the_fits_extension_to_classify(tmp_path, capsys):
    """Response images in FITS files with two image HDUs: --hdu 2 gives the verdicts of the TIFFs the
    second HDUs hold; a missing HDU is named (the file is skipped) and a negative one refused."""
    import tifffile
    from astropy.io import fits

    sim = tmp_path / "sim"
    assert main(["simulate", "response", "--n", "3", "--out", str(sim), "--seed", "5"]) == 0
    tiffs = sorted((sim / "images").glob("*.tif"))
    box = ["30", "10", "90", "60"]
    assert main(["classify", "images", "--model", "response_good_bad", "--input", *map(str, tiffs), "--box", *box,
                 "--out", str(tmp_path / "tif")]) == 0
    fits_files = []
    for path in tiffs:
        pixels = tifffile.imread(path)
        fits_files.append(tmp_path / f"{path.stem}.fits")
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(pixels[::-1].copy()), fits.ImageHDU(pixels)]).writeto(fits_files[-1])
    assert main(["classify", "images", "--model", "response_good_bad", "--input", *map(str, fits_files), "--box", *box,
                 "--hdu", "2", "--out", str(tmp_path / "fits")]) == 0
    expected = pd.read_csv(tmp_path / "tif" / "flags.csv")["probability_bad"]
    np.testing.assert_allclose(pd.read_csv(tmp_path / "fits" / "flags.csv")["probability_bad"], expected, rtol=1e-5)
    assert main(["classify", "images", "--model", "response_good_bad", "--input", *map(str, fits_files), "--box", *box,
                 "--out", str(tmp_path / "first")]) == 0  # without --hdu: the first image HDU (upside down)
    assert not np.allclose(pd.read_csv(tmp_path / "first" / "flags.csv")["probability_bad"], expected, rtol=1e-3)
    capsys.readouterr()
    assert main(["classify", "images", "--model", "response_good_bad", "--input", str(fits_files[0]), "--box", *box,
                 "--hdu", "4", "--out", str(tmp_path / "missing")]) == 2
    assert "HDU 4" in capsys.readouterr().err
    assert main(["classify", "objects", "--model", "response_good_bad", "--image", str(fits_files[0]), "--labels",
                 str(fits_files[0]), "--hdu", "-1", "--out", str(tmp_path / "neg")]) == 2
    assert "--hdu must be >= 0" in capsys.readouterr().err


def test_init_model_of_other_classes_starts_its_output_layer_afresh(tmp_path, capsys):
    """Fine-tuning an encapsulation classifier (full/empty/uncertain) for lamellarity reuses its
    features but not its output layer, whose outputs meant other classes; same classes keep it."""
    from napari_microseg.io.models import read_model_file

    common = ["--simulated", "1", "--particles", "8", "--epochs", "1", "--device", "cpu"]
    enc, lam, again = tmp_path / "enc.pt", tmp_path / "lam.pt", tmp_path / "again.pt"
    assert main(["classify", "train", "objects", "--task", "encapsulation", "--out", str(enc), *common]) == 0
    capsys.readouterr()
    assert main(["classify", "train", "objects", "--task", "lamellarity", "--init-model", str(enc), "--out", str(lam), *common]) == 0
    said = capsys.readouterr().err
    afresh = read_model_file(lam)["config"]["training"]["reinitialised"]
    assert afresh and all(k.startswith("head.") for k in afresh) and "started afresh" in said
    assert read_model_file(lam)["config"]["class_names"] != read_model_file(enc)["config"]["class_names"]
    assert main(["classify", "train", "objects", "--task", "lamellarity", "--init-model", str(lam), "--out", str(again), *common]) == 0
    assert read_model_file(again)["config"]["training"]["reinitialised"] == []
    assert "started afresh" not in capsys.readouterr().err
