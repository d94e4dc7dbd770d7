"""Fixes of session 32's bug hunts, each test failing on the code before its fix."""

from __future__ import annotations

import numpy as np
import pytest


def _disc_stack(n_frames: int = 4, side: int = 96) -> np.ndarray:
    """(T, Y, X) float32 frames, each with four bright discs (radius 6 px) on a dark background."""
    from skimage.draw import disk

    stack = np.full((n_frames, side, side), 0.05, np.float32)
    for t in range(n_frames):
        for y, x in ((25, 25), (25, 70), (70, 25), (70, 70)):
            stack[t][disk((y, x + t), 6, shape=(side, side))] = 1.0
    return stack


def test_a_frame_a_one_frame_run_did_not_segment_is_not_added(make_napari_viewer, wait_worker):
    """A "current frame" run on frame 1 leaves the stack's other frames empty in its result layer. One nucleus
    painted on frame 3 was added without a word: fine-tuning taught that frame's other nuclei as background
    and Fine-tune's before / after counted them as removed by the user. Such a frame is refused."""
    from napari_microseg.widgets.segmentation import SegmentationWidget

    viewer = make_napari_viewer(show=False)
    viewer.add_image(_disc_stack(), name="movie")
    widget = SegmentationWidget(viewer)
    widget.model_choice.value = "nuclei_fluorescence_fast"
    widget.scope.value = "current frame"
    viewer.dims.set_current_step(0, 1)
    wait_worker(widget.segment())
    result = widget.result_layer
    assert result is not None and (result.data[1] > 0).any() and not (result.data[3] > 0).any()
    viewer.dims.set_current_step(0, 3)
    result.data[3, 20:30, 20:30] = 9  # the user paints one nucleus there
    widget.labels_for_training.value = result.name
    errors = []
    widget.show_error = errors.append
    assert widget.add_to_training_set() == 0
    assert errors and "frame 3" in errors[-1] and "not segmented" in errors[-1]
    viewer.dims.set_current_step(0, 1)  # the frame it segmented is taken
    assert widget.add_to_training_set() == 1


def _tiny_training_dock(make_napari_viewer, n_frames: int):
    """A Training dock over a simulated (n_frames, 64, 64) movie and its labels, set for one tiny epoch."""
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse
    from napari_microseg.widgets.training import TrainingWidget

    sim = simulate_nuclei_timelapse(n_frames=n_frames, shape=(64, 64), n_nuclei=6, seed=4)
    viewer = make_napari_viewer(show=False)
    viewer.add_image(sim.fluorescence, name="movie")
    viewer.add_labels(sim.labels.astype(np.uint16), name="nuclei")
    widget = TrainingWidget(viewer)
    widget.image_layer.value, widget.labels_layer.value = ["movie"], ["nuclei"]
    widget.patch.value, widget.epochs.value, widget.patches_per_epoch.value, widget.batch_size.value = 32, 1, 4, 2
    return widget


def test_training_dock_resume_names_every_form_value_it_replaces(make_napari_viewer, wait_worker, tmp_path):
    """Resuming with another learning rate, validation share, network and intensities in the form trained
    with the run's own (as it must) but named only the patch: each replaced value is now said."""
    from napari_microseg.widgets.training import RAW_CCD

    widget = _tiny_training_dock(make_napari_viewer, 3)
    widget.val_fraction.value, widget.lr.value = 0.34, 0.001
    widget.out_path.value = str(tmp_path / "m.pt")
    wait_worker(widget.train())
    messages = []
    widget.show_message = messages.append
    widget.resume.value, widget.epochs.value = True, 2
    widget.lr.value, widget.val_fraction.value, widget.normalization.value = 0.01, 0.0, RAW_CCD
    widget.preset.value = next(p for p in widget.preset.choices if p != "small")
    wait_worker(widget.train())
    said = " ".join(messages)
    for expected in ("learning rate 0.001", "validation share 0.34", "network small", "intensities 'per image"):
        assert expected in said, said
    assert "patch" not in said.split("resuming with the run's own")[-1].split(";")[0]  # unchanged: not named


def test_a_hot_pixel_on_an_empty_field_does_not_open_the_signal_gate():
    """Noise of sd 10 with one hot camera pixel (1000 counts) scored 28 noise sd and gave 194 "nuclei";
    a faint real nucleus still opens the gate."""
    from napari_microseg.autolabel.fluorescence import MIN_SIGNAL_ABOVE_NOISE, autolabel_frame_iter, signal_above_noise
    from napari_microseg.progress import drain

    rng = np.random.default_rng(0)
    noise = rng.normal(100, 10, (512, 512))
    for speck in ([(200, 200)], [(200, 200), (200, 201)], [(200, 200), (201, 201)],  # a pixel, pairs, a 2 x 2
                  [(200, 200), (200, 201), (201, 200), (201, 201)]):
        hot = noise.copy()
        for yx in speck:
            hot[yx] = 1100
        report = {}
        labels = drain(autolabel_frame_iter(np.clip(hot, 0, None).astype(np.uint16), size_report=report))
        assert labels.max() == 0 and report.get("no_signal") == 1, speck
        assert signal_above_noise(hot) < MIN_SIGNAL_ABOVE_NOISE
    yy, xx = np.mgrid[:512, :512]
    one = noise + 25 * ((yy - 256) ** 2 + (xx - 256) ** 2 < 25)  # radius 5 px, 2.5 noise sd
    assert signal_above_noise(one) > MIN_SIGNAL_ABOVE_NOISE


def test_autolabel_refuses_a_clahe_clip_of_zero(tmp_path, capsys):
    """scikit-image reads a clip limit of 0 as no limit: --clahe-clip 0 gave the strongest contrast (the same
    labels as 1; F1 0.12 where 0.001 gave 0.92), the opposite of every small value."""
    import tifffile

    from napari_microseg.autolabel.fluorescence import autolabel_frame
    from napari_microseg.cli import main
    from napari_microseg.errors import InputError
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    image = simulate_nuclei_image((128, 128), n_nuclei=8, seed=1)[0]
    tifffile.imwrite(tmp_path / "nuclei.tif", image)
    assert main(["autolabel", "fluorescence", "--stain", str(tmp_path / "nuclei.tif"), "--out", str(tmp_path / "o"),
                 "--clahe-clip", "0", "--quiet"]) == 2
    assert "--clahe-clip must lie in (0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(InputError, match="clip limit"):
        autolabel_frame(image, clahe_clip=0.0)
    assert autolabel_frame(image, clahe_clip=0.0, clahe_kernel=None).max() > 0  # no CLAHE: no clip limit asked


def test_autolabel_says_an_inverted_image_may_be_why_objects_are_too_large(tmp_path, capsys, shared_data):
    """Dark nuclei on a bright field (a DSB2018 image inverted): the background was labelled as objects above
    the maximum diameter and the only advice was to raise --diameter-range."""
    import tifffile

    from napari_microseg.cli import main

    image = tifffile.imread(shared_data / "dsb2018" / "images" / "04acab7636c4cf61.tif")
    tifffile.imwrite(tmp_path / "inverted.tif", 255 - image)
    assert main(["autolabel", "fluorescence", "--stain", str(tmp_path / "inverted.tif"), "--out", str(tmp_path / "o"),
                 "--quiet"]) == 0
    assert "inverted" in capsys.readouterr().err
    tifffile.imwrite(tmp_path / "upright.tif", image)
    assert main(["autolabel", "fluorescence", "--stain", str(tmp_path / "upright.tif"), "--out", str(tmp_path / "p"),
                 "--quiet"]) == 0
    assert "inverted" not in capsys.readouterr().err
    yy, xx = np.mgrid[:96, :96]  # one large bright nucleus in a crop: too large, but no inverted background
    big = (10 + 200 * ((yy - 48) ** 2 + (xx - 48) ** 2 < 30 ** 2) + np.random.default_rng(0).normal(0, 3, (96, 96)))
    tifffile.imwrite(tmp_path / "big.tif", big.astype(np.float32))
    assert main(["autolabel", "fluorescence", "--stain", str(tmp_path / "big.tif"), "--out", str(tmp_path / "q"),
                 "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "above the 30 px max diameter" in err and "inverted" not in err, err


def test_classification_dock_keeps_the_shown_results_true_classes_when_a_run_is_refused(make_napari_viewer,
                                                                                        wait_worker, tmp_path):
    """Classify layer A, then choose layer B (other true classes) and a file that is not a model: the run was
    refused, yet A's results were then scored, and exported, against B's true classes."""
    from napari_microseg.progress import drain
    from napari_microseg.simulate.samples import generate_response
    from napari_microseg.widgets.classification import FILE_CHOICE, ClassificationWidget

    data, kwargs, _ = next(iter(drain(generate_response({"n_images": 12}, 7))))
    viewer = make_napari_viewer(show=False)
    metadata = dict(kwargs["metadata"])
    viewer.add_image(np.asarray(data), name="A", metadata=metadata)
    flipped = ["good" if label == "bad" else "bad" for label in metadata["label"]]
    viewer.add_image(np.asarray(data), name="B", metadata={**metadata, "label": flipped})
    widget = ClassificationWidget(viewer)
    widget.image_layer.value, widget.model_choice.value = "A", "response_good_bad"
    wait_worker(widget.classify())
    truth_a = list(widget.results["truth"])
    assert truth_a == list(metadata["label"])
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    widget.image_layer.value = "B"
    widget.model_choice.value = FILE_CHOICE
    widget.model_file.value = str(tmp_path / "junk.pt")
    assert widget.classify() is None
    widget.threshold.value = 0.51  # the verdicts are set again, and scored
    assert list(widget.results["truth"]) == truth_a


def test_batch_classify_reads_an_rgb_image_as_classify_images_does(tmp_path):
    """An RGB TIFF that `classify images` takes (the mean of its colours) failed in `batch classify` with
    "expected a 2-D image (or an (N, Y, X) stack with --box)"."""
    import pandas as pd
    import tifffile

    from napari_microseg.cli import main
    from napari_microseg.progress import drain
    from napari_microseg.simulate.samples import generate_response

    data, kwargs, _ = next(iter(drain(generate_response({"n_images": 1}, 3))))
    image = np.asarray(data[0])
    box = [str(int(v)) for v in kwargs["metadata"]["crop_box"][0]]
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "rgb.tif", np.stack([image] * 3, axis=-1), photometric="rgb")
    assert main(["classify", "images", "--model", "response_good_bad", "--input", str(tmp_path / "in"), "--box", *box,
                 "--out", str(tmp_path / "single")]) == 0
    assert main(["batch", "classify", "--model", "response_good_bad", "--input", str(tmp_path / "in"), "--box", *box,
                 "--out", str(tmp_path / "batch"), "--workers", "0", "--quiet"]) == 0
    single = pd.read_csv(tmp_path / "single" / "flags.csv")
    batch = pd.read_csv(tmp_path / "batch" / "flags.csv")
    assert len(batch) == 1
    np.testing.assert_allclose(batch["probability_bad"], single["probability_bad"], atol=1e-6)


def test_classify_train_warns_of_a_class_without_training_samples(tmp_path, capsys):
    """Three liposomes, all unilamellar: a 3-class model trained on class counts [3, 0, 0] without a word."""
    from napari_microseg.cli import main

    assert main(["classify", "train", "objects", "--simulated", "1", "--particles", "3", "--seed", "3",
                 "--no-oversample", "--epochs", "1", "--out", str(tmp_path / "m.pt")]) == 0
    err = capsys.readouterr().err
    assert "no training sample of class 'multilamellar', 'uncertain'" in err, err


def test_evaluate_seg_takes_a_seed_for_its_bootstrap(tmp_path, capsys):
    """DESIGN: every command takes --seed where randomness enters; evaluate seg's bootstrap interval had none."""
    import tifffile

    from napari_microseg.cli import main

    rng = np.random.default_rng(0)
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    for i in range(12):  # images of 1-4 true squares, some of them found
        gt = np.zeros((40, 40), np.uint16)
        pred = np.zeros((40, 40), np.uint16)
        for k in range(int(rng.integers(1, 5))):
            gt[4 + 9 * k:10 + 9 * k, 5:11] = k + 1
            if rng.random() < 0.6:
                pred[4 + 9 * k:10 + 9 * k, 5:11] = k + 1
        tifffile.imwrite(tmp_path / "gt" / f"{i}.tif", gt)
        tifffile.imwrite(tmp_path / "pred" / f"{i}.tif", pred)
    intervals = []
    for seed in ("0", "0", "7"):
        assert main(["evaluate", "seg", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"), "--seed", seed,
                     "--out", str(tmp_path / "m.csv"), "--overwrite"]) == 0
        intervals.append([line for line in capsys.readouterr().out.splitlines() if "95 % interval" in line])
    assert intervals[0] and intervals[0] == intervals[1] and intervals[2] != intervals[0]



@pytest.mark.parametrize("argv", [
    ["simulate", "ccd", "--shape", "64", "64", "--pedestal", "1e39"],  # wrote frames of inf with exit 0
    ["autolabel", "ccd", "--seed-sigma", "inf"],  # found nothing, wrote Infinity into params.json
    ["autolabel", "ccd", "--hot-pixel-adc", "nan"],  # acted as -1 (off), wrote NaN into params.json
    ["simulate", "nuclei", "--diameter", "1e308", "1e308"],  # OverflowError traceback
    ["segment", "--model", "nuclei_fluorescence_fast", "--threads", "99999999999999999999"],  # traceback
    ["autolabel", "fluorescence", "--diameter-range", "inf,inf"],  # OverflowError traceback
])
def test_numeric_options_beyond_any_use_get_one_line_errors(tmp_path, capsys, argv):
    import tifffile

    from napari_microseg.cli import main

    image = tmp_path / "img.tif"
    tifffile.imwrite(image, np.random.default_rng(0).normal(100, 5, (64, 64)).astype(np.float32))
    inputs = {"segment": ["--input", str(image)], "autolabel": ["--stain" if argv[1] == "fluorescence" else "--input",
                                                                 str(image)]}.get(argv[0], [])
    assert main(argv + inputs + ["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "must be finite and at most 1e+12" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_segment_warns_when_the_resize_limit_leaves_nuclei_off_size():
    """--diameter 1000 was resized x0.1 (the limit) without a word: nuclei 100 px wide for a 16.5 px model."""
    from napari_microseg.errors import MicrosegWarning
    from napari_microseg.inference.segment import segment
    from napari_microseg.io.models import load_model
    from napari_microseg.pretrained import resolve_model
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    model = load_model(str(resolve_model("nuclei_fluorescence_fast")))
    image = simulate_nuclei_image((96, 96), n_nuclei=6, seed=1)[0]
    with pytest.warns(MicrosegWarning, match="resized x0.1, the limit"):
        segment(model, image, diameter=1000.0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", MicrosegWarning)
        segment(model, image, diameter=60.0)  # within reach: no warning


def test_autolabel_refuses_a_smoothing_sigma_beyond_the_frame():
    """--smooth-sigma 1e6 ran for over a minute on two 128 x 128 frames (a Gaussian kernel of millions of px)."""
    from napari_microseg.autolabel.fluorescence import autolabel_frame
    from napari_microseg.errors import InputError

    image = np.zeros((64, 64), np.float32)
    with pytest.raises(InputError, match="smoothing sigma must lie from 0 to the frame's side"):
        autolabel_frame(image, smooth_sigma=1e6)


def test_the_classification_docks_gui_thread_helpers_do_not_import_torch():
    """The dock's notes (classify.data) and threshold (classify.predict) are imported on the GUI thread: the
    package's own import pulled torch in, freezing the window for ~3 s on the first Classify or 'flag'."""
    import subprocess
    import sys

    code = ("import sys; from napari_microseg.classify.data import same_samples_note; "
            "from napari_microseg.classify.predict import resolve_threshold; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_fits_comment_and_history_cards_keep_every_line(tmp_path):
    """A FITS header's repeated COMMENT / HISTORY cards were read as a dict: only the last line of each was
    kept (a reduced frame's processing history lost); they now come back whole, and write back as cards."""
    from astropy.io import fits

    from napari_microseg.io.images import read_image, write_fits

    hdu = fits.PrimaryHDU(np.zeros((8, 8), np.uint16))
    for line in ("bias subtracted", "flat fielded"):
        hdu.header.add_history(line)
    hdu.header.add_comment("first note")
    hdu.header.add_comment("second note")
    hdu.writeto(tmp_path / "frame.fits")
    header = read_image(tmp_path / "frame.fits").metadata
    assert header["HISTORY"] == "bias subtracted\nflat fielded" and header["COMMENT"] == "first note\nsecond note"
    write_fits(tmp_path / "again.fits", np.zeros((8, 8), np.uint16), header={"HISTORY": header["HISTORY"], "OBJECT": "x"})
    with fits.open(tmp_path / "again.fits") as again:
        assert list(again[0].header["HISTORY"]) == ["bias subtracted", "flat fielded"] and again[0].header["OBJECT"] == "x"


def _held_lock(path, sleeper) -> None:
    """Write a run lock at ``path`` as a live process (``sleeper``) on this host holds it."""
    import json
    import socket

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(), "time": "now"}))


@pytest.mark.parametrize("command", ["track", "simulate", "train"])
def test_a_second_run_into_a_folder_or_model_in_use_is_refused(tmp_path, capsys, command):
    """Two `track`, `simulate` or `train` runs into one place both exited 0: the first's results silently
    replaced, a simulation's samples removed as they were written (--overwrite) or mixed with another's, a
    model file's weights under the other run's training record. The second run is now refused."""
    import subprocess
    import sys

    import tifffile

    from napari_microseg.cli import main

    out = tmp_path / "out"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        if command == "track":
            tifffile.imwrite(tmp_path / "labels.tif", np.repeat(np.pad(np.ones((6, 6), np.uint16), 10)[None], 3, axis=0))
            _held_lock(out / ".batch.lock", sleeper)
            argv = ["track", "--labels", str(tmp_path / "labels.tif"), "--out", str(out)]
        elif command == "simulate":
            _held_lock(out / ".batch.lock", sleeper)
            argv = ["simulate", "response", "--n", "2", "--out", str(out), "--overwrite"]
        else:
            _held_lock(out / ".m.pt.lock", sleeper)
            argv = ["train", "--simulated", "2", "--sim-size", "64", "--epochs", "1", "--patch", "32",
                    "--patches-per-epoch", "2", "--out", str(out / "m.pt")]
        assert main(argv) == 2
        assert "is in use by another run" in capsys.readouterr().err
        assert sorted(p.name for p in out.iterdir()) == [".batch.lock" if command != "train" else ".m.pt.lock"]
    finally:
        sleeper.kill()
        sleeper.wait()
    assert main(argv) == 0  # the holder gone: its stale lock is taken over
    assert not any(p.name.endswith(".lock") for p in out.iterdir())


def _image_label_folders(folder, n: int) -> np.ndarray:
    """``folder/images`` and ``folder/labels`` of ``n`` simulated 64 x 64 nuclei images; returns the last image."""
    import tifffile

    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    (folder / "images").mkdir()
    (folder / "labels").mkdir()
    for i in range(n):
        image, labels = simulate_nuclei_image((64, 64), n_nuclei=6, seed=i)
        tifffile.imwrite(folder / "images" / f"im{i}.tif", image)
        tifffile.imwrite(folder / "labels" / f"im{i}.tif", labels.astype(np.uint16))
    return image


def test_a_network_whose_output_overflows_is_not_saved_and_segment_says_so(tmp_path, capsys):
    """--lr 1e3 (a typo for 1e-3) without validation: the training loss stayed finite (batch statistics) while
    the saved network's output (running statistics) was all NaN; `train` said "completed" and `segment` found
    0 objects, both exit 0."""
    from napari_microseg.cli import main
    from napari_microseg.errors import MicrosegWarning
    from napari_microseg.inference.segment import segment
    from napari_microseg.io.models import load_model
    from napari_microseg.pretrained import resolve_model

    image = _image_label_folders(tmp_path, 2)
    assert main(["train", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"), "--out",
                 str(tmp_path / "m.pt"), "--epochs", "1", "--patch", "32", "--patches-per-epoch", "4",
                 "--batch-size", "4", "--lr", "1e3", "--val-fraction", "0", "--quiet"]) == 2
    assert "the network's output is not finite" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()
    import torch

    model = load_model(str(resolve_model("nuclei_fluorescence_fast")))
    with torch.no_grad():
        next(iter(model.model.parameters())).fill_(float("nan"))  # a broken model file, as such a run saved
    with pytest.warns(MicrosegWarning, match="output is not finite"):
        segment(model, image)



def test_a_loss_not_finite_before_any_update_blames_the_inputs_not_the_learning_rate(tmp_path, capsys):
    """Float images of about 1e30, not normalised: "training diverged ... lower the learning rate", though no
    weight had been updated."""
    import tifffile

    from napari_microseg.cli import main
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    image, labels = simulate_nuclei_image((64, 64), n_nuclei=6, seed=1)
    tifffile.imwrite(tmp_path / "im.tif", (image.astype(np.float32) + 1) * np.float32(1e30))
    tifffile.imwrite(tmp_path / "im_labels.tif", labels.astype(np.uint16))
    assert main(["train", "--images", str(tmp_path / "im.tif"), "--labels", str(tmp_path / "im_labels.tif"), "--out",
                 str(tmp_path / "m.pt"), "--epochs", "1", "--patch", "32", "--patches-per-epoch", "4",
                 "--normalization", "none", "--val-fraction", "0", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "at the first step, before any training" in err and "learning rate" not in err, err


def test_a_run_that_diverges_records_it_in_the_model_it_keeps(tmp_path, monkeypatch):
    """The best model kept by a run that then diverged recorded no stop reason (and `info` showed none).
    (The blow-up check, which stops this run at its first epoch, is lifted: this run must reach NaN.)"""
    from napari_microseg.cli import main
    from napari_microseg.io.models import read_model_config
    from napari_microseg.training import trainer

    monkeypatch.setattr(trainer, "BLOW_UP_FACTOR", float("inf"))

    _image_label_folders(tmp_path, 4)
    assert main(["train", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"), "--out",
                 str(tmp_path / "m.pt"), "--epochs", "6", "--patch", "32", "--patches-per-epoch", "8", "--batch-size",
                 "4", "--lr", "100", "--optimizer", "sgd", "--threads", "1", "--quiet"]) == 2
    training = read_model_config(tmp_path / "m.pt")["training"]  # kept: diverged after its best epoch
    assert training["stop_reason"] == "diverged" and training["epochs_run"] > training["best_epoch"]


def test_training_label_files_with_nan_or_huge_ids_are_named(tmp_path):
    """NaN in one of many label files was refused without naming it; float ids of 1e20 were called negative
    (wrapped by the int64 conversion). An image's NaN names its folder (a --val-images file has the name of a
    training one)."""
    import tifffile

    from napari_microseg.errors import InputError
    from napari_microseg.training.data import load_training_pairs

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    image = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    tifffile.imwrite(tmp_path / "images" / "a.tif", image)
    labels = np.zeros((32, 32), np.float64)
    labels[5:10, 5:10] = 1e20
    tifffile.imwrite(tmp_path / "labels" / "a.tif", labels)
    with pytest.raises(InputError, match=r"labels .*a\.tif hold values up to 1e\+20"):
        load_training_pairs(tmp_path / "images", tmp_path / "labels")
    labels[0, 0] = np.nan
    tifffile.imwrite(tmp_path / "labels" / "a.tif", labels)
    with pytest.raises(InputError, match=r"labels .*labels/a\.tif contain NaN"):
        load_training_pairs(tmp_path / "images", tmp_path / "labels")


def test_a_demo_stopped_over_an_earlier_demo_leaves_no_file_of_the_earlier_run(tmp_path):
    """Ctrl-C during a demo into a previous demo's folder left the new movie and model beside the earlier
    run's labels, tracks, picture and report (which named the earlier seed)."""
    from napari_microseg.demo import run_demo
    from napari_microseg.progress import drain

    out = tmp_path / "demo"
    options = dict(n_frames=3, size=64, n_nuclei=4, train_epochs=0)
    drain(run_demo(out, seed=1, **options))
    assert (out / "labels.tif").is_file() and (out / "demo_report.json").is_file()
    earlier_movie = (out / "movie.tif").stat().st_mtime_ns
    run = run_demo(out, seed=2, **options)
    for _ in run:  # stopped once the new movie is written
        if (out / "movie.tif").is_file() and (out / "movie.tif").stat().st_mtime_ns != earlier_movie:
            break
    run.close()
    left = {p.name for p in out.iterdir()}
    assert "movie.tif" in left
    assert not left & {"labels.tif", "tracks.csv", "objects.csv", "summary.png", "demo_report.json", "ctc_RES"}, left


def test_a_ctrl_c_while_autolabel_ccd_writes_its_outputs_leaves_one_runs_files(tmp_path, monkeypatch):
    """Ctrl-C as `autolabel ccd --overwrite` wrote its five files left the new class map beside the earlier
    run's tables and params.json."""
    import json
    import signal

    import napari_microseg.io.tables as tables
    from napari_microseg.cli import main
    from napari_microseg.io.images import write_fits

    rng = np.random.default_rng(0)
    frame = rng.normal(1000, 10, (64, 64))
    frame[20:23, 30:33] += 400  # a cluster
    write_fits(tmp_path / "frame.fits", frame.astype(np.float32))
    out = tmp_path / "out"
    argv = ["autolabel", "ccd", "--input", str(tmp_path / "frame.fits"), "--out", str(out)]
    assert main(argv) == 0
    real_write = tables.write_csv

    def interrupted_write(path, table, *args, **kwargs):
        if str(path).endswith("clusters.csv"):
            signal.raise_signal(signal.SIGINT)  # Ctrl-C between the class map and the tables
        return real_write(path, table, *args, **kwargs)

    monkeypatch.setattr(tables, "write_csv", interrupted_write)
    assert main(argv + ["--seed-sigma", "8", "--overwrite"]) == 130
    assert json.loads((out / "params.json").read_text())["settings"]["seed_sigma"] == 8  # this run's, as the map


def test_a_ctrl_c_while_segment_writes_its_tables_leaves_one_runs_tables(tmp_path, monkeypatch):
    """A (second) Ctrl-C as `segment --overwrite` wrote its tables left this run's objects.csv beside the
    earlier run's counts.csv and segment_run.json."""
    import json
    import signal

    import tifffile

    import napari_microseg.measure.tables as tables
    from napari_microseg.cli import main
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    tifffile.imwrite(tmp_path / "a.tif", simulate_nuclei_image((96, 96), n_nuclei=6, seed=1)[0])
    out = tmp_path / "out"
    argv = ["segment", "--model", "nuclei_fluorescence_fast", "--input", str(tmp_path / "a.tif"), "--out", str(out)]
    assert main(argv) == 0
    real_write = tables.write_table_csv

    def interrupted_write(table, path, *args, **kwargs):
        if str(path).endswith("counts.csv"):
            signal.raise_signal(signal.SIGINT)
        return real_write(table, path, *args, **kwargs)

    monkeypatch.setattr(tables, "write_table_csv", interrupted_write)
    assert main(argv + ["--min-size", "200", "--overwrite"]) == 130
    record = json.loads((out / "segment_run.json").read_text())
    assert record["min_size"] == 200, record.get("min_size")  # this run's record, as its tables


def test_training_on_an_unfinished_simulation_is_warned(tmp_path, capsys):
    """A simulation stopped early (params.json: complete false) was trained on without a word."""
    import json

    from napari_microseg.cli import main

    sim = tmp_path / "sim"
    assert main(["simulate", "nuclei", "--mode", "images", "--n", "2", "--shape", "64", "64", "--out", str(sim)]) == 0
    record = json.loads((sim / "params.json").read_text())
    (sim / "params.json").write_text(json.dumps({"domain": "nuclei", "n": 300, "sample_seeds": record["sample_seeds"],
                                                 "complete": False}))  # as a run stopped after 2 of 300
    capsys.readouterr()
    assert main(["train", "--images", str(sim / "images"), "--labels", str(sim / "labels"), "--out",
                 str(tmp_path / "m.pt"), "--epochs", "1", "--patch", "32", "--patches-per-epoch", "2", "--quiet"]) == 0
    assert "stopped before its end" in capsys.readouterr().err


def test_training_dock_resume_names_a_distance_head_it_keeps(make_napari_viewer, wait_worker, tmp_path):
    """A three-class run with a distance head resumed with the box unticked kept its head without a word."""
    from napari_microseg.io.models import read_model_config

    widget = _tiny_training_dock(make_napari_viewer, 2)
    widget.output_mode.value, widget.distance_head.value, widget.val_fraction.value = "three_class", True, 0.0
    widget.out_path.value = str(tmp_path / "m.pt")
    wait_worker(widget.train())
    messages = []
    widget.show_message = messages.append
    widget.resume.value, widget.epochs.value, widget.distance_head.value = True, 2, False
    wait_worker(widget.train())
    assert "distance head on" in " ".join(messages), messages
    assert read_model_config(tmp_path / "m.pt")["distance_head"] is True


def test_an_empty_run_lock_left_by_a_failed_write_does_not_block_later_runs(tmp_path, monkeypatch):
    """A run whose lock could not be written (a full disk) left an empty .batch.lock: every later run on the
    host was refused as "in use by another run (pid 0 on None)"."""
    import os

    import napari_microseg.batch.runner as runner

    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(runner.json, "dump", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space left")))
    with pytest.raises(OSError):
        runner.acquire_out_lock(out)
    assert not (out / ".batch.lock").exists()  # not left behind
    monkeypatch.undo()
    (out / ".batch.lock").write_text("")  # one left by an older run, some time ago
    os.utime(out / ".batch.lock", (1, 1))
    lock = runner.acquire_out_lock(out)
    assert lock.read_text().startswith("{")


def test_segment_refuses_a_diameter_beyond_any_nucleus(tmp_path, capsys):
    """--diameter 1e300 (a string option, past the numeric guard) ran and printed a 300-digit width."""
    import tifffile

    from napari_microseg.cli import main

    tifffile.imwrite(tmp_path / "a.tif", np.zeros((32, 32), np.float32))
    assert main(["segment", "--model", "nuclei_fluorescence_fast", "--input", str(tmp_path / "a.tif"), "--out",
                 str(tmp_path / "o"), "--diameter", "1e300"]) == 2
    assert "at most 1e+06" in capsys.readouterr().err


def test_segmentation_dock_says_when_the_resize_limit_is_reached(make_napari_viewer, wait_worker):
    """A nucleus diameter of 400 px: tiles resized x0.10, the limit, said only as "tiles resized x0.10"."""
    from napari_microseg.widgets.segmentation import SegmentationWidget

    viewer = make_napari_viewer(show=False)
    viewer.add_image(_disc_stack(1)[0], name="image")
    widget = SegmentationWidget(viewer)
    widget.model_choice.value = "nuclei_fluorescence_fast"
    widget.estimate_diameter.value = False
    widget.diameter.value = 400.0
    messages = []
    widget.show_message = messages.append
    wait_worker(widget.segment())
    assert any("the limit" in m for m in messages), messages


def test_a_tzyx_layer_of_no_z_step_keeps_its_frame_interval_when_saved(make_napari_viewer, tmp_path):
    """A (T, Z, Y, X) movie with pixel size and frame interval but no Z step, saved from napari (image or
    labels) and reopened: the frame interval was dropped (later tracking had no time calibration)."""
    import tifffile

    data = (np.random.default_rng(0).random((4, 3, 32, 32)) * 100).astype(np.uint16)
    tifffile.imwrite(tmp_path / "movie.ome.tif", data, ome=True,
                     metadata={"axes": "TZYX", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25, "TimeIncrement": 5,
                               "TimeIncrementUnit": "min"})
    viewer = make_napari_viewer(show=False)
    (image,) = viewer.open(str(tmp_path / "movie.ome.tif"), plugin="napari-microseg")
    np.testing.assert_allclose(image.scale, (5, 1, 0.25, 0.25))
    labels = viewer.add_labels((data > 50).astype(np.uint16), scale=image.scale, units=image.units, name="labels")
    image.save(str(tmp_path / "copy.tif"), plugin="napari-microseg")
    labels.save(str(tmp_path / "labels.tif"), plugin="napari-microseg")
    for name in ("copy.tif", "labels.tif"):
        (again,) = viewer.open(str(tmp_path / name), plugin="napari-microseg")
        np.testing.assert_allclose(again.scale, (5, 1, 0.25, 0.25), err_msg=name)


def test_the_package_data_ships_every_file_of_the_shipped_models():
    """pyproject's package-data listed pretrained/*.pt and *.md but not the *.json beside them: a wheel (or
    `pip install .`) lost each model's task, and the Classification dock offered no shipped classifier."""
    import fnmatch
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["napari_microseg"]
    package = root / "src" / "napari_microseg"
    for file in sorted((package / "pretrained").iterdir()):
        if file.suffix != ".py" and file.name != "__pycache__":
            rel = file.relative_to(package).as_posix()
            assert any(fnmatch.fnmatch(rel, pattern) for pattern in patterns), f"{rel} is not shipped"


def _freed_when_closed(viewer, alive) -> bool:
    """Close every layer of ``viewer``; whether the array ``alive`` (a weak reference) was then freed."""
    import gc

    from qtpy.QtWidgets import QApplication

    viewer.layers.select_all()
    viewer.layers.remove_selected()
    for _ in range(5):
        QApplication.processEvents()
        gc.collect()
    return alive() is None


def test_a_closed_layer_a_dock_ran_on_is_freed(make_napari_viewer, wait_worker):
    """napari keeps every finished worker for as long as the window: the dock's callbacks and the closure of
    its job held the layer's data, so each movie closed after an auto-label preview stayed in memory (RSS
    862 -> 1267 -> 1671 MB over three 400 MB movies opened, previewed and closed)."""
    import weakref

    from napari_microseg.widgets.autolabel import AutolabelWidget

    viewer = make_napari_viewer(show=False)
    widget = AutolabelWidget(viewer)
    movie = _disc_stack(4)
    alive = weakref.ref(movie)
    viewer.add_image(movie, name="movie")
    del movie
    widget.stain_layer.value = "movie"
    wait_worker(widget.preview())
    assert _freed_when_closed(viewer, alive)


def test_tracking_undo_after_the_tracks_layers_were_closed_is_refused(make_napari_viewer, wait_worker):
    """Track, delete a track, close every layer, simulate another movie under the same names, Undo: the old
    movie's tracks came back over the new one (and Export wrote them under the new layer's name)."""
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse
    from napari_microseg.widgets.tracking import TrackingWidget

    viewer = make_napari_viewer(show=False)
    viewer.add_labels(simulate_nuclei_timelapse(n_frames=5, shape=(96, 96), n_nuclei=6, seed=7).labels, name="nuclei")
    widget = TrackingWidget(viewer)
    widget.labels_layer.value = "nuclei"
    wait_worker(widget.track())
    first = int(widget.result.table["track_id"].iloc[0])
    widget.table.selectRow(0)
    assert widget.selected_track_ids() == [first]
    wait_worker(widget.delete_selected())
    assert widget.edits
    viewer.layers.select_all()
    viewer.layers.remove_selected()
    viewer.add_labels(simulate_nuclei_timelapse(n_frames=5, shape=(96, 96), n_nuclei=6, seed=2).labels, name="nuclei")
    errors = []
    widget.show_error = errors.append
    assert widget.undo() is False
    assert errors and "closed" in errors[-1]
    assert [layer.name for layer in viewer.layers] == ["nuclei"]


def test_the_fine_tuning_set_says_which_frames_are_of_closed_images(make_napari_viewer):
    """After closing an image whose frame was added and opening another under its name, the set read
    "dsb t=0, dsb t=0": two entries alike, one of them of the closed image."""
    from napari_microseg.widgets.segmentation import SegmentationWidget

    viewer = make_napari_viewer(show=False)
    widget = SegmentationWidget(viewer)
    for _ in range(2):
        image = viewer.add_image(_disc_stack(1)[0], name="dsb")
        labels = viewer.add_labels((image.data > 0.5).astype(np.int32), name="painted")
        widget.image_layer.value, widget.labels_for_training.value = "dsb", "painted"
        widget.add_to_training_set()
        viewer.layers.remove(labels)
        if len(widget.corrections) == 1:
            viewer.layers.remove(image)
    assert widget.training_set_label.value == "training set: 2 frame(s): dsb (closed) t=0, dsb t=0"


def test_segmentation_export_says_when_it_writes_a_closed_results_tables(make_napari_viewer, wait_worker, tmp_path):
    """Export after the result layer was closed wrote the last run's tables with a plain "written:", even
    with a new layer of that name on screen."""
    from napari_microseg.widgets.segmentation import SegmentationWidget

    viewer = make_napari_viewer(show=False)
    viewer.add_image(_disc_stack(1)[0], name="image")
    widget = SegmentationWidget(viewer)
    widget.model_choice.value = "nuclei_fluorescence_fast"
    widget.export_dir.value = str(tmp_path)
    wait_worker(widget.segment())
    name = widget.result_layer.name
    viewer.layers.remove(widget.result_layer)
    viewer.add_labels(np.zeros((96, 96), np.int32), name=name)
    messages = []
    widget.show_message = messages.append
    assert widget.export()
    assert "is closed" in messages[-1] and "as segmented" in messages[-1]


def test_the_signal_gate_looking_at_spots_one_by_one_decides_as_capping_the_whole_frame():
    """The gate caps windows around the brightest spots first (capping the whole 4096 x 4096 frame made it 5x
    slower); its open / shut answer is that of the whole frame capped."""
    from scipy import ndimage as ndi

    from napari_microseg.autolabel.ccd import robust_noise
    from napari_microseg.autolabel.fluorescence import MIN_SIGNAL_ABOVE_NOISE, _capped, signal_above_noise
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    def whole_frame(data, sigma=2.0):
        data = np.asarray(data, np.float64)
        noise = robust_noise(np.diff(data, axis=1).ravel()) / np.sqrt(2)
        background = np.percentile(ndi.gaussian_filter(data, sigma), 10)
        peak = ndi.gaussian_filter(_capped(data), sigma).max()
        return (peak - background) / (noise / (2 * np.sqrt(np.pi) * sigma))

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:256, :256]
    frames = [simulate_nuclei_image((256, 256), n_nuclei=12, seed=1)[0], rng.normal(100, 10, (256, 256)),
              rng.poisson(0.5, (256, 256)).astype(np.float64)]
    for radius, amplitude in ((3, 25), (4, 20), (6, 15), (2, 40)):
        faint = rng.normal(100, 10, (256, 256)) + amplitude * ((yy - 90) ** 2 + (xx - 150) ** 2 < radius ** 2)
        faint[30, 40:42] = 2000  # a hot pair elsewhere
        frames.append(faint)
    for frame in frames:
        opened = signal_above_noise(frame) >= MIN_SIGNAL_ABOVE_NOISE
        assert opened == (whole_frame(frame) >= MIN_SIGNAL_ABOVE_NOISE)


def test_an_image_closed_after_segmenting_it_is_freed(make_napari_viewer, wait_worker):
    """The Segmentation dock held the last run's image layer strongly: a closed movie stayed in memory until
    the next run."""
    import weakref

    from napari_microseg.widgets.segmentation import SegmentationWidget

    viewer = make_napari_viewer(show=False)
    image = _disc_stack(1)[0]
    alive = weakref.ref(image)
    viewer.add_image(image, name="image")
    del image
    widget = SegmentationWidget(viewer)
    widget.model_choice.value = "nuclei_fluorescence_fast"
    wait_worker(widget.segment())
    assert _freed_when_closed(viewer, alive)


def test_constant_frames_of_a_zarr_store_are_said(tmp_path):
    """A Zarr store whose chunks were not all written (an incompletely copied store) read as frames of the
    fill value: "0 objects" without a word, where an all-zero TIFF is warned about."""
    import zarr

    from napari_microseg.errors import MicrosegWarning
    from napari_microseg.inference.segment import segment

    store = zarr.create_array(str(tmp_path / "movie.zarr"), shape=(3, 96, 96), chunks=(1, 96, 96), dtype="float32",
                              zarr_format=3)
    store[1] = _disc_stack(1)[0]  # frames 0 and 2 never written
    with pytest.warns(MicrosegWarning, match=r"2 of 3 frame\(s\) \(0, 2\) constant"):
        segment("nuclei_fluorescence_fast", zarr.open_array(str(tmp_path / "movie.zarr"), mode="r"), measure=False)


def test_segmentation_dock_says_a_damaged_zarr_chunk_is_damaged(make_napari_viewer, wait_worker, tmp_path):
    """A corrupted chunk gave the dock's status "RuntimeError: Zstd decompression error ..." and a traceback,
    where the command line says the store is damaged."""
    import os

    import zarr

    from napari_microseg.widgets.segmentation import SegmentationWidget

    path = tmp_path / "movie.zarr"
    store = zarr.create_array(str(path), shape=(2, 96, 96), chunks=(1, 96, 96), dtype="float32", zarr_format=3)
    store[:] = _disc_stack(2)
    chunk = path / "c" / "1" / "0" / "0"
    with open(chunk, "r+b") as fh:
        fh.seek(20)
        fh.write(os.urandom(max(1, chunk.stat().st_size - 40)))
    viewer = make_napari_viewer(show=False)
    (layer,) = viewer.open(str(path), plugin="napari-microseg")
    widget = SegmentationWidget(viewer)
    widget.model_choice.value = "nuclei_fluorescence_fast"
    widget.image_layer.value, widget.scope.value = layer.name, "whole stack"
    errors = []
    widget.show_error = errors.append
    wait_worker(widget.segment())
    assert errors and "cannot decode the layer's data" in errors[-1], errors


def test_a_dock_job_that_fails_as_it_is_made_frees_the_dock(make_napari_viewer, qtbot):
    """A job whose factory raised RuntimeError when called left the dock busy for good ("Already running"):
    superqt takes a bare RuntimeError for a deleted worker and sends no end signal."""
    from napari_microseg.widgets.tracking import TrackingWidget

    widget = TrackingWidget(make_napari_viewer(show=False))
    errors = []
    widget.show_error = errors.append

    def factory():
        raise RuntimeError("the job could not be made")

    assert widget.start(factory, lambda result: None) is not None
    qtbot.waitUntil(lambda: not widget.busy, timeout=10000)
    assert errors and "the job could not be made" in errors[-1]
