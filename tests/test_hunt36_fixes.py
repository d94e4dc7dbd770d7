"""Fixes from session 36's hunts: each test failed on the code before its fix."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest


def _nuclei(seed: int = 3, size: int = 160, n: int = 12):
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    image, labels = simulate_nuclei_image(shape=(size, size), n_nuclei=n, seed=seed)[:2]
    return image, labels


def _small_training_dock(make_napari_viewer, tmp_path, name: str = "run.pt", epochs: int = 3):
    from napari_microseg.widgets.training import TrainingWidget

    viewer = make_napari_viewer()
    image, labels = _nuclei()
    viewer.add_image(image, name="img")
    viewer.add_labels(labels.astype(np.uint16), name="lab")
    dock = TrainingWidget(viewer)
    viewer.window.add_dock_widget(dock, name="Training")
    dock.image_layer.value = ["img"]
    dock.labels_layer.value = ["lab"]
    dock.patch.value = 64
    dock.epochs.value = epochs
    dock.patches_per_epoch.value = 16
    dock.batch_size.value = 4
    dock.out_path.value = str(tmp_path / name)
    return viewer, dock


@pytest.mark.gui
def test_a_training_that_fails_after_an_epoch_says_and_offers_the_model_it_kept(make_napari_viewer, tmp_path,
                                                                             wait_worker, monkeypatch):
    """A run that diverged in epoch 2 kept epoch 1's model and its .last.pt, but the dock said only the error:
    no history beside it, not offered to the Segmentation dock, nothing about resuming it."""
    from napari_microseg.training import data as training_data
    from napari_microseg.widgets import segmentation

    original = training_data.PatchSampler.sample
    calls = [0]

    def sample(self, *args, **kwargs):  # epoch 2's third batch: a step whose loss is not finite
        calls[0] += 1
        x, y = original(self, *args, **kwargs)
        if calls[0] == 7:
            x = np.full_like(x, np.inf)
        return x, y

    monkeypatch.setattr(training_data.PatchSampler, "sample", sample)
    _, dock = _small_training_dock(make_napari_viewer, tmp_path)
    wait_worker(dock.train())
    text = dock.status.text()
    model = tmp_path / "run.pt"
    assert "diverged" in text and model.is_file()
    assert f"best epoch so far (1) is kept: {model}" in text and "tick 'resume'" in text, text
    assert (tmp_path / "run.history.csv").is_file() and "run.history.csv" in text
    assert str(model) in map(str, segmentation.RECENT_MODELS) and dock.model_path == str(model)


def test_training_says_it_prepares_the_data_and_stop_acts_before_the_first_step(tmp_path):
    """The data's preparation (20 s on a painted 20 x 1024^2 movie) said nothing and Stop waited for the first step."""
    import torch

    from napari_microseg.training.trainer import train

    image, labels = _nuclei()
    stop = threading.Event()
    cfg = {"preset": "small", "output_mode": "three_class", "patch_size": 64, "patches_per_epoch": 8, "batch_size": 4,
           "epochs": 1, "seed": 0, "num_threads": 1}
    threads = torch.get_num_threads()
    gen = train(cfg, ([image] * 2, [labels] * 2), out_path=tmp_path / "m.pt", stop_event=stop)
    first = next(gen)
    assert first.kind == "prepare" and first.total == 0 and "preparing" in first.message
    stop.set()
    kinds = []
    with pytest.raises(StopIteration) as ended:
        while True:
            kinds.append(next(gen).kind)
    result = ended.value.value
    assert set(kinds) <= {"prepare"}  # no training step was taken
    assert result.model_path is None and result.stop_reason == "stopped" and not list(tmp_path.iterdir())
    assert torch.get_num_threads() == threads


def test_object_sizes_are_measured_as_before_and_fast():
    """foreground_diameter took 0.6 s a 1024^2 frame in ndi.maximum (it sorts every pixel); same figures now."""
    from scipy import ndimage as ndi
    from skimage.data import binary_blobs

    from napari_microseg.inference.scale import foreground_diameter, object_size_of

    mask = binary_blobs(512, blob_size_fraction=0.03, volume_fraction=0.3, rng=1)
    comps, n = ndi.label(mask)
    dist = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    radius = np.asarray(ndi.maximum(dist, comps, np.arange(1, n + 1)))
    assert radius.max() * 2 + 0.5 >= foreground_diameter(mask) >= radius.min() * 2 + 0.5
    assert object_size_of([float("nan")]) is None
    size = object_size_of([10.0, 20.0, float("nan"), 30.0])
    assert size["diameter"] == 20.0 and size["measured_on"] == "3 training image(s)"


def test_text_progress_estimates_from_the_steps_not_the_preparation():
    """The first estimates counted the time before the first step (reading, preparing): eta 320 s for 16 s left."""
    from napari_microseg.progress import Progress, run_with_text_progress

    def work():
        yield Progress(0, 0, "preparing")
        time.sleep(0.6)  # preparation
        for done in range(1, 11):
            time.sleep(0.01)
            yield Progress(done, 10, "step")
        return "ok"

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    assert run_with_text_progress(work(), stream=stream, label="train") == "ok"
    lines = [line.strip() for line in stream.getvalue().split("\r") if " 2/10" in line]
    eta = float(lines[0].split("eta")[1].split("s")[0])
    assert eta < 0.4, lines[0]  # 8 steps of 0.01 s left, not 8 x 0.3 s
    assert "] 0/0" not in stream.getvalue()  # a message before the count has no empty bar


@pytest.mark.gui
def test_dock_progress_estimates_from_the_steps_not_the_preparation(make_napari_viewer, wait_worker):
    from napari_microseg.progress import Progress
    from napari_microseg.widgets.training import TrainingWidget

    dock = TrainingWidget(make_napari_viewer())
    formats = []

    def work():
        yield Progress(0, 1, "reading")
        time.sleep(0.6)
        yield Progress(1, 1, "read")
        for done in range(1, 11):
            time.sleep(0.01)
            yield Progress(done, 10, "step")

    wait_worker(dock.start(work, lambda _: None, on_event=lambda _: formats.append(dock.progress.format())))
    eta = next(float(f.split("eta")[1].strip().rstrip("s")) for f in formats[2:] if "eta" in f)
    assert eta < 0.4, formats


def test_annotated_frames_leave_out_frames_marked_not_annotated_and_a_background_like_one_nucleus_is_said(tmp_path):
    from napari_microseg.progress import drain
    from napari_microseg.widgets.training import read_training_pairs

    image, labels = _nuclei()
    labels = labels.astype(np.int32)
    notes: list[str] = []
    # sparse: napari numbered the first nucleus painted 1, the default background id
    drain(read_training_pairs([image], [labels], ["lab"], True, background_value=1, notes=notes))
    assert any("background id 1 covers" in note for note in notes), notes
    painted = labels.copy()
    painted[:20] = 1  # a background stroke as large as a few nuclei
    painted[painted == 2] = 0
    notes.clear()
    drain(read_training_pairs([image], [np.where(labels == 1, 0, painted)], ["lab"], True, background_value=1,
                              notes=notes))
    assert not notes, notes


def _squares(n: int = 3, size: int = 64, dtype=np.uint16):
    labels = np.zeros((size, size), dtype)
    for i in range(n):
        labels[4 + 18 * i:14 + 18 * i, 4 + 18 * i:14 + 18 * i] = i + 1
    return labels


def test_evaluate_pairs_ome_zarr_and_fz_names_and_never_pairs_two_folders_by_count(tmp_path, capsys):
    """a.ome.zarr was keyed "a.ome" and scored as nothing found; one file in each folder was paired whatever its name."""
    import tifffile

    from napari_microseg.cli import main
    from napari_microseg.cli.evaluate import _key
    from napari_microseg.io.images import write_zarr

    assert _key("a.ome.zarr") == _key("a.fit.fz") == _key("a.fts.fz") == _key("a_seg.npy") == "a"
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    for name in "abc":
        tifffile.imwrite(gt / f"{name}.tif", _squares())
    write_zarr(pred / "a.ome.zarr", _squares())
    for name in "bc":
        tifffile.imwrite(pred / f"{name}.tif", _squares())
    assert main(["evaluate", "seg", "--gt", str(gt), "--pred", str(pred), "--out", str(tmp_path / "m.csv")]) == 0
    out = capsys.readouterr().out
    assert "3 image(s) scored" in out and "AP@0.50 1.000" in out and "without a prediction" not in out
    one_gt, one_pred = tmp_path / "g1", tmp_path / "p1"
    one_gt.mkdir()
    one_pred.mkdir()
    tifffile.imwrite(one_gt / "img1.tif", _squares())
    tifffile.imwrite(one_pred / "img7.tif", _squares())  # another image's leftover labels
    assert main(["evaluate", "seg", "--gt", str(one_gt), "--pred", str(one_pred), "--out", str(tmp_path / "o.csv")]) == 2
    assert "no file names" in capsys.readouterr().err
    # two files named are scored together, with a warning
    assert main(["evaluate", "seg", "--gt", str(one_gt / "img1.tif"), "--pred", str(one_pred / "img7.tif"),
                 "--out", str(tmp_path / "o.csv")]) == 0
    assert "names differ" in capsys.readouterr().err


def test_evaluate_leaves_out_unannotated_frames_refuses_pickles_and_ignores_a_uint16_void(tmp_path, capsys):
    import tifffile

    from napari_microseg.classify.evaluate import confusion_matrix
    from napari_microseg.cli import main
    from napari_microseg.errors import InputError

    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    truth = np.stack([_squares(), _squares(), np.full((64, 64), -1), np.full((64, 64), -1)]).astype(np.int32)
    found = np.stack([_squares(2), _squares(2), np.zeros((64, 64)), np.zeros((64, 64))]).astype(np.uint16)
    tifffile.imwrite(gt / "m.tif", truth)
    tifffile.imwrite(pred / "m.tif", found)
    assert main(["evaluate", "seg", "--gt", str(gt), "--pred", str(pred), "--out", str(tmp_path / "m.csv")]) == 0
    out = capsys.readouterr().out
    assert "2 image(s) scored" in out and "per-image mean 0.667" in out and "m.tif[2], m.tif[3]" in out
    # a pickled .npy (Cellpose's _seg.npy): one line, never unpickled
    (pred / "m.tif").unlink()
    np.save(pred / "m_seg.npy", np.array({"masks": _squares()}, dtype=object), allow_pickle=True)
    tifffile.imwrite(gt / "m.tif", _squares())
    assert main(["evaluate", "seg", "--gt", str(gt), "--pred", str(pred), "--out", str(tmp_path / "n.csv")]) == 2
    assert "pickled .npy" in capsys.readouterr().err
    # classes: a uint16 truth with its void 65535 left out by --ignore
    cgt, cpred = tmp_path / "cgt", tmp_path / "cpred"
    cgt.mkdir()
    cpred.mkdir()
    classes = (_squares() > 0).astype(np.uint16)
    void = classes.copy()
    void[:2] = 65535
    tifffile.imwrite(cgt / "a.tif", void)
    tifffile.imwrite(cpred / "a.tif", classes)
    assert main(["evaluate", "classes", "--gt", str(cgt), "--pred", str(cpred), "--ignore", "65535",
                 "--out", str(tmp_path / "c.csv")]) == 0
    assert "pixel accuracy 1.0000" in capsys.readouterr().out
    with pytest.raises(InputError, match="classes 0 to 2"):  # -1 was counted as class 2
        confusion_matrix([0, 1, 2], [0, 1, -1], 3)


def test_track_scores_of_ids_past_int32_are_right(tmp_path):
    """Track ids of 4e9 were wrapped to int32 in the masks but not in the graph: TRA 0, said nowhere."""
    from napari_microseg.tracking.metrics import ctc_scores
    from napari_microseg.tracking.track import TrackResult
    import pandas as pd

    def movie(offset: int):
        masks = np.zeros((3, 48, 48), np.uint32 if offset else np.uint16)
        rows = []
        for t in range(3):
            for k, (y, x) in enumerate(((10, 10 + 2 * t), (30, 30 - 2 * t))):
                masks[t, y - 4:y + 4, x - 4:x + 4] = offset + k + 1
                rows.append({"track_id": offset + k + 1, "t": t, "y": float(y) - 0.5, "x": float(x) - 0.5,
                             "parent_track_id": 0, "root_track_id": offset + k + 1, "generation": 0})
        table = pd.DataFrame(rows)
        return TrackResult(table, table[["track_id", "t", "y", "x"]].to_numpy(float), {}, masks, {})

    scores = ctc_scores(movie(4_000_000_000), movie(0))
    assert scores["TRA"] == pytest.approx(1.0) and scores["DET"] == pytest.approx(1.0)


def _jumping_movie(jump_px: float = 80.0, n_frames: int = 8, size: int = 256):
    """Labels (T, Y, X) of 12 still discs whose field jumps ``jump_px`` to the right from frame 4 on."""
    from skimage.draw import disk

    rng = np.random.default_rng(1)
    centres = rng.uniform(40, 150, (12, 2))
    labels = np.zeros((n_frames, size, size), np.uint16)
    for t in range(n_frames):
        shift = np.array([0.0, jump_px]) if t >= 4 else np.zeros(2)
        for i, (y, x) in enumerate(centres + shift):
            rr, cc = disk((y, x), 6, shape=(size, size))
            labels[t, rr, cc] = i + 1
    return labels


def test_a_reused_track_config_brings_no_stage_offsets_and_long_jumps_are_said(tmp_path, capsys):
    """track_config.json carried its run's stage offsets into a new run (50 px off, or an IndexError); a jump
    longer than a quarter of the field was dropped without a word."""
    import json

    import tifffile

    from napari_microseg.cli import main
    from napari_microseg.progress import drain
    from napari_microseg.tracking.export import track_summary
    from napari_microseg.tracking.track import load_config, track, track_warnings

    labels = _jumping_movie()
    result = drain(track(labels, stage_shift="objects"))
    notes = " ".join(track_warnings(result))
    assert "left out 1 jump(s) longer than 64 px" in notes and "frame 4: 80 px" in notes
    assert result.n_tracks > 12  # broken across the jump
    allowed = drain(track(labels, stage_shift="objects", max_shift=100))
    assert allowed.n_tracks == 12 and not any("jump" in note for note in track_warnings(allowed))
    assert allowed.config["max_stage_shift"] == 100 and allowed.config["stage_offsets"][4] == [0.0, 80.0]
    record = tmp_path / "track_config.json"
    record.write_text(json.dumps(allowed.config))
    assert "stage_offsets" not in load_config(str(record)) and "edits" not in load_config({**allowed.config, "edits": []})
    # a new, unshifted run from that record measures its own movie (the record's offsets took 80 px off)
    still = drain(track(labels[:4], config=str(record)))
    assert "stage_offsets" not in still.config
    assert track_summary(still)["net_displacement_px"].max() < 1
    longer = dict(allowed.config, stage_offsets=allowed.config["stage_offsets"][:2])
    from napari_microseg.errors import InputError

    with pytest.raises(InputError, match="another movie"):
        track_summary(type(allowed)(allowed.table, allowed.tracks_data, allowed.graph, allowed.relabelled, longer))
    # the command line: the option, refused when not a length, and taken from a record given as --config
    tifffile.imwrite(tmp_path / "jump.tif", labels)
    assert main(["track", "--labels", str(tmp_path / "jump.tif"), "--stage-shift", "objects", "--max-stage-shift", "0",
                 "--out", str(tmp_path / "r0")]) == 2
    assert main(["track", "--labels", str(tmp_path / "jump.tif"), "--stage-shift", "objects", "--max-stage-shift",
                 "100", "--out", str(tmp_path / "r1")]) == 0
    assert main(["track", "--labels", str(tmp_path / "jump.tif"), "--config", str(tmp_path / "r1" / "track_config.json"),
                 "--out", str(tmp_path / "r2")]) == 0
    err = capsys.readouterr().err
    assert "max stage shift 100 px" in err and "left out" not in err


def test_tracking_measures_objects_frame_by_frame_so_stop_acts_within_a_frame():
    """One event before measuring the whole movie: the Tracking dock's Stop waited for all of it (4 s, 64 frames)."""
    from napari_microseg.tracking.track import track

    labels = _jumping_movie(0.0)
    gen = track(labels)
    messages = []
    for event in gen:
        messages.append(event.message)
        if event.message == "measuring objects: frame 3/8":
            gen.close()  # Stop, as the dock closes its generator
            break
    assert [m for m in messages if m.startswith("measuring")] == [f"measuring objects: frame {t}/8" for t in (1, 2, 3)]


@pytest.fixture(scope="module")
def tiny_objects_classifier(tmp_path_factory):
    """A liposome objects classifier trained for one epoch, and a simulated folder of two images."""
    from napari_microseg.cli import main

    folder = tmp_path_factory.mktemp("objects")
    model = folder / "o.pt"
    assert main(["classify", "train", "objects", "--simulated", "1", "--particles", "10", "--epochs", "1",
                 "--out", str(model), "--device", "cpu"]) == 0
    lip = folder / "lip"
    assert main(["simulate", "liposomes", "--n", "2", "--shape", "192", "192", "--particles", "5", "--out", str(lip)]) == 0
    return model, lip


def test_classify_runs_into_one_output_are_refused_and_a_damaged_image_skips_only_itself(tmp_path, capsys,
                                                                                         tiny_objects_classifier):
    """No lock: two `classify train` runs into one file left one's network under the other's record; one NaN pixel
    ended a folder's `classify objects` run without naming the file."""
    import json
    import socket
    import shutil

    import pandas as pd
    import tifffile

    from napari_microseg.cli import main
    from napari_microseg.batch.runner import LOCK_NAME

    import subprocess

    model, lip = tiny_objects_classifier
    other = subprocess.Popen(["sleep", "60"])  # another run, alive, holding the outputs
    try:
        held = {"pid": other.pid, "host": socket.gethostname(), "time": "2026-12-07T00:00:00Z"}
        out = tmp_path / "ob"
        out.mkdir()
        (out / LOCK_NAME).write_text(json.dumps(held))
        assert main(["classify", "objects", "--model", str(model), "--input", str(lip), "--out", str(out)]) == 2
        assert not (out / "objects.csv").exists()
        (tmp_path / ".m.pt.lock").write_text(json.dumps(held))
        assert main(["classify", "train", "objects", "--simulated", "1", "--particles", "4", "--epochs", "1",
                     "--out", str(tmp_path / "m.pt")]) == 2
        assert not (tmp_path / "m.pt").exists() and "in use by another run" in capsys.readouterr().err
    finally:
        other.kill()
        other.wait()
    capsys.readouterr()
    # one image of the folder damaged: skipped and named, the other classified, exit 1
    damaged = tmp_path / "lip"
    shutil.copytree(lip, damaged)
    first = sorted((damaged / "images").iterdir())[0]
    image = tifffile.imread(first).astype(np.float32)
    image[5, 5] = np.nan
    tifffile.imwrite(first, image)
    assert main(["classify", "objects", "--model", str(model), "--input", str(damaged), "--out", str(tmp_path / "o2")]) == 1
    err = capsys.readouterr().err
    assert f"images/{first.name}" in err and "NaN" in err
    record = json.loads((tmp_path / "o2" / "classify_run.json").read_text())
    assert [f["image"] for f in record["failures"]] == [f"images/{first.name}"] and record["images"] == 1
    counts = pd.read_csv(tmp_path / "o2" / "counts.csv")
    assert f"images/{first.name}" not in set(counts["image"])  # not counted 0: not classified
    assert not (tmp_path / "o2" / LOCK_NAME).exists()  # released
    # an objects model given to `classify images`: its task is said first, not a crop size
    assert main(["classify", "images", "--model", str(model), "--input", str(first), "--out", str(tmp_path / "i")]) == 2
    assert "objects" in capsys.readouterr().err


@pytest.mark.gui
def test_classification_dock_classifies_a_stack_frame_by_frame_and_reads_metadata_strictly(make_napari_viewer,
                                                                                        wait_worker,
                                                                                        tiny_objects_classifier):
    import tifffile

    from napari_microseg.widgets.classification import _metadata_boxes, _metadata_truth, ClassificationWidget

    model, lip = tiny_objects_classifier
    files = sorted((lip / "images").iterdir())
    image = np.stack([tifffile.imread(f) for f in files])
    labels = np.stack([tifffile.imread(lip / "labels" / f.name) for f in files])
    viewer = make_napari_viewer()
    viewer.add_image(image, name="lipos")
    viewer.add_labels(labels, name="objects")
    dock = ClassificationWidget(viewer)
    viewer.window.add_dock_widget(dock)
    messages = []
    dock.status.setText = lambda text, _set=dock.status.setText: (messages.append(text), _set(text))[1]
    from napari_microseg.widgets.classification import FILE_CHOICE

    dock.task.value = "objects [T]"
    dock.image_layer.value = "lipos"
    dock.labels_layer.value = "objects"
    dock.model_choice.value = FILE_CHOICE
    dock.model_file.value = str(model)
    wait_worker(dock.classify())
    assert "lipos classes" in viewer.layers, dock.status.text()
    n1 = int(np.count_nonzero(np.unique(labels[0])))
    assert f"classifying frame 1/2: {n1} objects so far" in messages, messages
    assert any(m.startswith("classifying frame 2/2") for m in messages)

    class Layer:
        name = "sim"

        def __init__(self, metadata):
            self.metadata = metadata

    assert _metadata_truth(Layer({"label": ["Bad", "good", "BAD "]}), 3) == ["bad", "good", "bad"]
    assert _metadata_truth(Layer({"label": "good"}), 4) is None  # a bare string: no truth, not g, o, o, d
    assert _metadata_boxes(Layer({"crop_box": [[0, 0, 39, 42]]})) == [[0, 0, 39, 42]]
    from napari_microseg.errors import InputError

    with pytest.raises(InputError, match="four numbers"):
        _metadata_boxes(Layer({"crop_box": [[0, 0, 39]]}))


def test_a_saturated_ccd_pixel_changes_no_other_pixel_and_fits_blank_pixels_are_missing(tmp_path):
    """A saturated pixel (65535 ADC: 310 normalised units, training's brightest 22) made the shipped CCD model call
    30 glowing and 21 cluster pixels around it; a uint16 FITS frame's BLANK pixels came back as 0 ADC."""
    from pathlib import Path

    from astropy.io import fits

    from napari_microseg.inference.segment import segment
    from napari_microseg.io.images import read_image
    from napari_microseg.io.models import load_model
    from napari_microseg.pretrained import pretrained_path
    from napari_microseg.training.normalize import input_limits

    sample = Path(__file__).resolve().parents[1] / "sample_data" / "ccd_fe55_ESIS1_00002_crop.fits.gz"
    frame = np.asarray(read_image(sample).data)[:, 100:356].astype(np.float32)
    model = load_model(pretrained_path("ccd_classes"))
    low, high = input_limits(model.config)
    assert low < 0 < 22 < high < 40
    assert input_limits(load_model(pretrained_path("nuclei_fluorescence_fast")).config) is None  # percentile models
    before = np.asarray(segment(model, frame, measure=False).labels)
    saturated = frame.copy()
    saturated[128, 128] = 65535
    after = np.asarray(segment(model, saturated, measure=False).labels)
    changed = after != before
    changed[128, 128] = False
    assert not changed.any(), int(changed.sum())
    # BLANK in a uint16 frame (BZERO 32768): read as 0 ADC without a word; now said (and still segmented)
    from napari_microseg.errors import MicrosegWarning

    raw = frame.astype(np.int64) - 32768
    raw[:, 30] = -32768
    hdu = fits.PrimaryHDU(raw.astype(np.int16))
    hdu.header["BZERO"], hdu.header["BSCALE"], hdu.header["BLANK"] = 32768, 1, -32768
    hdu.writeto(tmp_path / "blank.fits")
    with pytest.warns(MicrosegWarning, match=f"{frame.shape[0]} pixel\\(s\\) are BLANK"):
        read = np.asarray(read_image(tmp_path / "blank.fits").data)
    assert read.dtype == np.uint16 and np.array_equal(read[:, 31], frame[:, 31])
    blank_column = np.asarray(segment(model, read.astype(np.float32), measure=False).labels)
    changed = blank_column != before
    changed[:, 30] = False
    assert changed.sum() < 20  # (83 pixels beside a column at 0 ADC before the input cut)


def test_model_files_of_two_channel_binary_damaged_weights_or_unknown_normalisation(tmp_path, capsys):
    """A binary file of two channels got a sigmoid on each (0.27 foreground read 0.88); `info` called a damaged
    file fine; an unknown normalisation kind was blamed on each image."""
    import torch

    from napari_microseg.cli import main
    from napari_microseg.io.export import exported_config
    from napari_microseg.training.predict import logits_to_probabilities

    logits = torch.tensor([[[[3.0]], [[2.0]]]])  # (1, 2, 1, 1): a softmax pair
    probabilities = logits_to_probabilities(logits, "binary")
    assert float(probabilities[0, 1]) == pytest.approx(float(torch.softmax(logits, 1)[0, 1])) and \
        float(probabilities.sum()) == pytest.approx(1.0)
    assert float(logits_to_probabilities(logits[:, 1:], "binary")[0, 0]) == pytest.approx(float(torch.sigmoid(logits[0, 1])))
    # a damaged byte of the weights: `info` says so
    from napari_microseg.pretrained import pretrained_path

    damaged = tmp_path / "damaged.pt"
    data = bytearray(pretrained_path("nuclei_fluorescence_fast").read_bytes())
    start = data.find(b"data/0") + 200  # inside the first stored tensor
    data[start] ^= 0xFF
    damaged.write_bytes(bytes(data))
    assert main(["info", "--model", str(damaged)]) == 2
    assert "damaged" in capsys.readouterr().err
    # an unknown normalisation kind: said of the model file
    from napari_microseg.io.models import load_model, save_model, update_model_config

    future = tmp_path / "future.pt"
    loaded = load_model(pretrained_path("nuclei_fluorescence_fast"))
    save_model(future, loaded.model, loaded.config)
    update_model_config(future, normalization={"kind": "zscore"})
    assert main(["info", "--model", str(future)]) == 2
    assert "future.pt: its normalisation cannot be applied here" in capsys.readouterr().err
    # what an export says of a class model's output and a masked crop
    said = " ".join(exported_config({"task": "objects", "crop": {"kind": "object", "mode": "masked", "margin": 50,
                                                                  "size": [28, 28]}})["preprocessing"])
    assert "margin" not in said and "one channel: sigmoid" in said


def test_a_batch_started_from_a_script_without_a_main_guard_runs(tmp_path):
    """Dask's worker processes ran the user's script again (spawn): one that opens napari without an
    `if __name__ == "__main__":` guard blocked each worker ("Nanny failed to start", or a dock stuck at 0 done)."""
    import os
    import subprocess
    import sys

    import tifffile

    image, _ = _nuclei(size=96, n=5)
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "a.tif", image)
    script = tmp_path / "unguarded.py"
    script.write_text('print("script ran", flush=True)\n'
                      "from napari_microseg.batch.runner import run_batch_sync\n"
                      'summary = run_batch_sync("segment", "in", "out", "nuclei_fluorescence_fast", workers=1)\n'
                      'print("processed", summary.processed, flush=True)\n')
    src = str(__import__("pathlib").Path(__import__("napari_microseg").__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("script ran") == 1 and "processed 1" in done.stdout


def test_labels_files_open_with_their_ids_and_a_run_records_each_images_tiling(tmp_path, capsys):
    """Labels opened by the reader had no features table (DESIGN: label column); segment_run.json of two images
    recorded the last one's tiles for the run."""
    import json

    import tifffile

    from napari_microseg._reader import read_layers
    from napari_microseg.cli import main
    from napari_microseg.simulate.liposomes import simulate_liposome_image

    labels = _squares()
    (tmp_path / "labels").mkdir()
    tifffile.imwrite(tmp_path / "labels" / "a.tif", labels)
    (data, kwargs, kind), = read_layers(str(tmp_path / "labels" / "a.tif"))
    assert kind == "labels"
    assert list(kwargs["features"]["label"]) == [1, 2, 3] and list(kwargs["features"]["pixels"]) == [100] * 3
    # two images of other sizes: each one's tiles in its own record
    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(0)
    tifffile.imwrite(tmp_path / "in" / "big.tif", rng.random((600, 600)).astype(np.float32))
    tifffile.imwrite(tmp_path / "in" / "small.tif", rng.random((200, 280)).astype(np.float32))
    assert main(["segment", "--model", "nuclei_fluorescence_fast", "--input", str(tmp_path / "in"),
                 "--out", str(tmp_path / "seg"), "--quiet"]) == 0
    record = json.loads((tmp_path / "seg" / "segment_run.json").read_text())
    tiles = {image["image"].rsplit("/", 1)[-1]: image["tiles_yx"] for image in record["images"]}
    assert tiles["small.tif"] != tiles["big.tif"] and "tiles_yx" not in record
    assert simulate_liposome_image(shape=(128, 128), n_particles=40, seed=1).params["n_placed"] < 40


@pytest.mark.parametrize("config, radius", [("particle", 30.0), ("particle", 45.0), ("cell", 60.0)])
def test_steps_up_to_the_search_radius_link(config, radius):
    """README: objects moving up to R px per frame are linked; the particle model left steps of 0.97 R unlinked
    (each a one-frame track), the cell model a step of exactly R at 60 px."""
    import pandas as pd

    from napari_microseg.tracking import track_points

    for fraction in (0.97, 1.0):
        points = pd.DataFrame([{"t": t, "y": 40.0 + 200 * k, "x": 10 + radius * fraction * t}
                               for t in range(8) for k in range(2)])
        assert track_points(points, config=config, max_search_radius=radius).n_tracks == 2


def _dividing_movie(speed: float, asymmetric: bool = False, n_frames: int = 10):
    """Labels (T, 100, 140): a disc moving ``speed`` px a frame along x divides at frame 5 into two smaller discs
    parting along y (or, ``asymmetric``, one on the mother's spot and one beside it, the cell standing still)."""
    from skimage.draw import disk

    labels = np.zeros((n_frames, 100, 140), np.uint16)
    for t in range(n_frames):
        x = 20 + speed * t
        if t < 5:
            objects = [(1, 50, x, 7)]
        elif asymmetric:
            objects = [(2, 50, x, 5), (3, 62 + (t - 5), x, 5)]
        else:
            apart = 6 + 2 * (t - 5)
            objects = [(2, 50 - apart, x, 5), (3, 50 + apart, x, 5)]
        for value, y, cx, radius in objects:
            rr, cc = disk((y, cx), radius, shape=labels.shape[1:])
            labels[t, rr, cc] = value
    return labels


@pytest.mark.parametrize("speed, asymmetric", [(6.0, False), (8.0, False), (0.0, True)])
def test_a_division_is_found_when_the_cell_moves_or_one_daughter_stays_on_its_spot(speed, asymmetric):
    """Daughters were measured from the mother's last position: a cell moving 6 px a frame had both ahead of it
    (no division found); a daughter on the mother's very spot gave no direction (no division either)."""
    from napari_microseg.progress import drain
    from napari_microseg.tracking.track import track

    result = drain(track(_dividing_movie(speed, asymmetric)))
    assert result.n_tracks == 3
    daughters = result.table.groupby("track_id")["parent_track_id"].first()
    parents = daughters[daughters > 0]
    assert len(parents) == 2 and parents.nunique() == 1 and daughters[parents.iloc[0]] == 0, daughters  # one mother


def test_simulate_overwrite_removes_only_its_own_files_and_refuses_options_it_would_not_use(tmp_path, capsys):
    """--overwrite deleted a user's movie_007/ and top-level labels.tif beside an earlier run of two movies;
    --mode images recorded --no-touching / --frames as if used; --drift with --no-enter-leave piled nuclei up."""
    import tifffile

    from napari_microseg.cli import main

    out = tmp_path / "sim"
    small = ["--frames", "2", "--shape", "64", "64", "--nuclei", "3"]
    assert main(["simulate", "nuclei", "--n", "2", *small, "--out", str(out)]) == 0
    (out / "movie_007").mkdir()
    tifffile.imwrite(out / "movie_007" / "labels.tif", np.zeros((4, 4), np.uint16))
    tifffile.imwrite(out / "labels.tif", np.zeros((4, 4), np.uint16))
    assert main(["simulate", "nuclei", "--n", "2", *small, "--seed", "5", "--out", str(out), "--overwrite"]) == 0
    assert (out / "movie_007" / "labels.tif").is_file() and (out / "labels.tif").is_file()  # the user's own
    assert (out / "movie_001" / "tracks.csv").is_file()
    capsys.readouterr()
    assert main(["simulate", "nuclei", "--mode", "images", "--no-touching", "--n", "1", "--out", str(tmp_path / "i")]) == 2
    assert "--no-touching applies to time-lapses" in capsys.readouterr().err
    assert main(["simulate", "nuclei", "--drift", "3", "0", "--no-enter-leave", *small, "--out", str(tmp_path / "d")]) == 2
    assert "piles the nuclei" in capsys.readouterr().err


def test_simulated_nuclei_sample_without_any_nucleus_in_the_field_adds_no_tracks_layer():
    """A 64 px field whose one nucleus lies outside it: napari's Tracks layer failed on the empty table (IndexError)."""
    from napari_microseg.progress import drain
    from napari_microseg.simulate.samples import generate_nuclei

    layers = drain(generate_nuclei({"n_frames": 1, "size": 64, "n_nuclei": 1, "stage_shift": 0, "enter_leave": True},
                                   11))  # (seed 11: its one nucleus lies outside the field)
    assert not np.asarray(layers[2][0]).any()
    assert [kind for *_, kind in layers] == ["image", "image", "labels"]
    assert "no nucleus lies in the field" in layers[2][1]["metadata"]["simulation_note"]


@pytest.mark.gui
def test_a_flood_of_progress_events_updates_the_dock_at_most_every_tenth_of_a_second(make_napari_viewer, wait_worker,
                                                                                       monkeypatch):
    """One event per simulated image (70 a second) repainted the bar each time: the window stalled 0.5-1.6 s."""
    from napari_microseg.progress import Progress
    from napari_microseg.widgets import _base
    from napari_microseg.widgets.simulation import SimulationWidget

    PROGRESS_INTERVAL_S = 0.1
    monkeypatch.setattr(_base, "PROGRESS_INTERVAL_S", PROGRESS_INTERVAL_S)  # (the tests' conftest shows every one)

    dock = SimulationWidget(make_napari_viewer())
    shown, seen = [], []
    dock.status.setText = lambda text, _set=dock.status.setText: (shown.append(text), _set(text))[1]

    def work():
        for i in range(1, 301):
            time.sleep(0.002)
            yield Progress(i, 300, f"image {i}")

    started = time.perf_counter()
    wait_worker(dock.start(work, lambda _: None, on_event=lambda event: seen.append(event.done)))
    took = time.perf_counter() - started
    assert seen == list(range(1, 301))  # every event still reaches the dock's own handler
    progress_messages = [text for text in shown if text.startswith("image")]
    assert progress_messages[-1] == "image 300"  # (the last step at once)
    assert len(progress_messages) <= took / PROGRESS_INTERVAL_S + 3, len(progress_messages)


@pytest.mark.gui
def test_painting_while_export_measures_leaves_the_layer_marked_edited(make_napari_viewer, tmp_path, wait_worker):
    """Export set the hover table and counts line from what it measured, and called the layer up to date, though
    the user painted a new object meanwhile (its hover values missing, nothing said)."""
    from test_hunt35_fixes import _segmented_stack

    viewer, seg = _segmented_stack(make_napari_viewer, wait_worker, tmp_path, n_frames=3)
    layer = seg.result_layer
    layer.data[0, :6, :6] = 0
    layer.paint((0, 2, 2), int(layer.data.max()) + 1)  # an edit before Export: measured
    worker = seg.export()
    layer.paint((1, 3, 3), int(layer.data.max()) + 2)  # painted while the worker measures
    wait_worker(worker)
    assert seg._measurements_outdated
    assert "was edited while it was measured" in seg.status.text()


def test_review_of_session_36(tmp_path, capsys):
    """Open as stack mixed files (features of an image: TypeError) or labels (the first file's ids only);
    --overwrite over an images run kept its images.csv; Cellpose's _cp_masks names; --max-stage-shift alone."""
    import tifffile

    from napari_microseg._reader import read_layers
    from napari_microseg.cli import main
    from napari_microseg.cli.evaluate import _key

    (tmp_path / "labels").mkdir()
    (tmp_path / "other").mkdir()
    first, second = _squares(2), _squares(3)
    second[second == 3] = 7
    tifffile.imwrite(tmp_path / "labels" / "f0.tif", first)
    tifffile.imwrite(tmp_path / "labels" / "f1.tif", second)
    tifffile.imwrite(tmp_path / "other" / "g1.tif", np.random.default_rng(0).random(first.shape).astype(np.float32))
    (data, kwargs, kind), = read_layers([str(tmp_path / "labels" / "f0.tif"), str(tmp_path / "other" / "g1.tif")])
    assert kind == "image" and "features" not in kwargs
    (data, kwargs, kind), = read_layers([str(tmp_path / "labels" / "f0.tif"), str(tmp_path / "labels" / "f1.tif")])
    assert kind == "labels" and list(kwargs["features"]["label"]) == [1, 2, 7]
    assert list(kwargs["features"]["pixels"]) == [200, 200, 100]
    sim = tmp_path / "sim"
    assert main(["simulate", "nuclei", "--mode", "images", "--n", "2", "--shape", "64", "64", "--out", str(sim)]) == 0
    assert main(["simulate", "ccd", "--n", "1", "--shape", "64", "64", "--out", str(sim), "--overwrite"]) == 0
    assert not (sim / "images.csv").exists()
    assert _key("img1_cp_masks.tif") == "img1"
    tifffile.imwrite(tmp_path / "jump.tif", _jumping_movie())
    capsys.readouterr()
    assert main(["track", "--labels", str(tmp_path / "jump.tif"), "--max-stage-shift", "100",
                 "--out", str(tmp_path / "t")]) == 2
    assert "needs --stage-shift" in capsys.readouterr().err
