"""Hunt 39 (review): a stale features table is kept, not deleted; ``x.tif`` and ``x.tiff`` keep apart tables;
the output-ownership rule knows classify's and the demo's folders and refuses only real overlaps; a
write-protected checkpoint is no divergence; write-protected outputs are not replaced by --overwrite."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
import pytest


def _read_one(path):
    from napari_microseg._reader import read_layers

    (data, kwargs, kind), = read_layers(str(path))
    return np.asarray(data), kwargs, kind


def _tables_holding(folder, text):
    return sorted(p.name for p in folder.iterdir() if p.suffix == ".csv" and text in p.read_text())


def test_stale_features_table_is_kept_when_labels_are_saved_without_them(tmp_path):
    """The labels TIFF edited by another tool (its saved table now stale, left out on reading), then the layer
    saved back without those features: the table with the annotations was deleted."""
    import tifffile

    from napari_microseg._writer import write_labels_tiff

    labels = np.zeros((32, 32), np.uint16)
    labels[2:8, 2:8] = 1
    labels[12:20, 12:20] = 2
    folder = tmp_path / "labels"  # (a TIFF another program wrote opens as labels from a labels folder)
    folder.mkdir()
    target = folder / "x.tif"
    write_labels_tiff(str(target), labels, {"features": pd.DataFrame({"label": [1, 2], "cls": ["good", "bad"]})})
    edited = tifffile.imread(target)
    edited[30, 30] = 3
    tifffile.imwrite(target, edited)  # another program saves the labels again
    with pytest.warns(UserWarning, match="saved with an earlier x.tif"):
        data, kwargs, _ = _read_one(target)
    assert "cls" not in kwargs["features"].columns
    with pytest.warns(UserWarning, match="kept as"):
        write_labels_tiff(str(target), data, {"features": kwargs["features"]})
    assert len(_tables_holding(folder, "good")) == 1, sorted(p.name for p in folder.iterdir())

    # saved with features of its own over a stale table: the stale one is kept apart, not replaced
    write_labels_tiff(str(target), data, {"features": pd.DataFrame({"label": [1, 2], "cls": ["fine", "poor"]})})
    tifffile.imwrite(target, edited[::-1].copy())
    with pytest.warns(UserWarning, match="kept as"):
        write_labels_tiff(str(target), data, {"features": pd.DataFrame({"label": [1], "cls": ["new"]})})
    assert len(_tables_holding(folder, "good")) == 1 and len(_tables_holding(folder, "fine")) == 1
    assert len(_tables_holding(folder, "new")) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _read_one(target)[1]["features"].set_index("label").loc[1, "cls"] == "new"


def test_tif_and_tiff_of_one_stem_keep_their_own_features(tmp_path):
    """``cells.tif`` and ``cells.tiff`` shared ``cells.features.csv``: saving one removed or replaced the
    other's features."""
    from napari_microseg._writer import features_path, write_labels_tiff

    a = np.zeros((16, 16), np.uint16)
    a[2:6, 2:6] = 1
    b = np.zeros((16, 16), np.uint16)
    b[8:14, 8:14] = 1
    written = write_labels_tiff(str(tmp_path / "cells.tif"), a, {"features": pd.DataFrame({"label": [1], "cls": ["mitotic"]})})
    assert os.path.basename(written[1]) == "cells.tif.features.csv"
    assert features_path(tmp_path / "cells.tiff").name == "cells.tiff.features.csv"
    write_labels_tiff(str(tmp_path / "cells.tiff"), b, {})  # no features: cells.tif's stay
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _read_one(tmp_path / "cells.tif")[1]["features"].set_index("label").loc[1, "cls"] == "mitotic"
    write_labels_tiff(str(tmp_path / "cells.tiff"), b, {"features": pd.DataFrame({"label": [1], "cls": ["other"]})})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _read_one(tmp_path / "cells.tif")[1]["features"].set_index("label").loc[1, "cls"] == "mitotic"
        assert _read_one(tmp_path / "cells.tiff")[1]["features"].set_index("label").loc[1, "cls"] == "other"


def _record(path, content, ns):
    """A run record ``path`` (JSON) dated ``ns`` (its mtime, nanoseconds)."""
    import json

    path.write_text(json.dumps(content))
    os.utime(path, ns=(ns, ns))


def test_classify_objects_overwrite_does_not_replace_a_segmentations_tables(tmp_path, capsys):
    """``classify objects --overwrite --out <segment folder>`` replaced segment's objects.csv and counts.csv."""
    from napari_microseg.cli import main

    out = tmp_path / "seg"
    out.mkdir()
    _record(out / "segment_run.json", {"model": "m", "images": []}, 2_000_000_000_000_000_000)
    for name in ("objects.csv", "counts.csv"):
        (out / name).write_text("segmentation's\n")
    image = tmp_path / "x.tif"
    import tifffile

    tifffile.imwrite(image, np.zeros((16, 16), np.uint16))
    rc = main(["classify", "objects", "--model", str(tmp_path / "absent.pt"), "--image", str(image), "--labels",
               str(image), "--out", str(out), "--overwrite"])
    err = capsys.readouterr().err
    assert rc != 0 and "objects.csv, counts.csv of another run: a segmentation's" in err, err
    assert (out / "objects.csv").read_text() == (out / "counts.csv").read_text() == "segmentation's\n"


def test_a_demos_folder_is_another_runs(tmp_path):
    """``track --out <demo folder> --overwrite`` replaced the demo's tracks.csv and counts.csv: the demo's
    records (its mark, its report) were not run records."""
    from napari_microseg.cli._staging import refuse_another_runs_outputs
    from napari_microseg.errors import InputError

    for record in (".microseg_demo", "demo_report.json"):
        out = tmp_path / record.strip(".")
        out.mkdir()
        _record(out / record, {"files": {}}, 2_000_000_000_000_000_000)
        with pytest.raises(InputError, match="tracks.csv, counts.csv of another run: a demo's"):
            refuse_another_runs_outputs(out, ["tracks.csv", "counts.csv"], "track_config.json", "track")


def test_only_files_the_newer_runs_command_writes_are_refused(tmp_path):
    """simulate -> segment -> simulate --overwrite -> segment --overwrite was refused, segment's own
    objects.csv, counts.csv and segment_run.json called the simulation's."""
    from napari_microseg.cli._staging import refuse_another_runs_outputs
    from napari_microseg.errors import InputError

    out = tmp_path / "sim"
    (out / "labels").mkdir(parents=True)
    _record(out / "segment_run.json", {"model": "m", "images": []}, 1_000_000_000_000_000_000)
    _record(out / "params.json", {"domain": "nuclei", "sample_seeds": [2]}, 2_000_000_000_000_000_000)
    own = ["objects.csv", "counts.csv", "labels/fluorescence.tif", "segment_run.json"]
    refuse_another_runs_outputs(out, own, "segment_run.json", "segment")  # segment's own files: replaced
    # the simulation's truth is still refused, its files only listed
    with pytest.raises(InputError, match=r"holds labels.tif of another run: a simulation's") as refused:
        refuse_another_runs_outputs(out, own + ["labels.tif"], "segment_run.json", "segment")
    assert "objects.csv" not in str(refused.value)
    with pytest.raises(InputError, match=r"holds tracks.csv of another run"):
        refuse_another_runs_outputs(out, ["tracks.csv", "counts.csv"], "track_config.json", "track")
    # a batch run's folder is all its own, but never this command's record
    _record(out / "batch_run.json", {"tables": []}, 3_000_000_000_000_000_000)
    with pytest.raises(InputError, match="holds objects.csv, counts.csv, labels/fluorescence.tif of another run: a batch") as refused:
        refuse_another_runs_outputs(out, own, "segment_run.json", "segment")
    assert "segment_run.json of another" not in str(refused.value) and "labels/fluorescence.tif" in str(refused.value)


def _disks(shape=(64, 64), step=16, radius=5):
    from skimage.draw import disk

    labels = np.zeros(shape, np.uint16)
    for k, (y, x) in enumerate(((y, x) for y in range(step // 2, shape[0], step) for x in range(step // 2, shape[1], step))):
        rr, cc = disk((y, x), radius, shape=shape)
        labels[rr, cc] = k + 1
    return labels


def test_a_write_protected_checkpoint_is_a_crash_not_divergence(tmp_path):
    """A write-protected ``.last.pt`` (0444), refused after epoch 1, recorded ``stop_reason: diverged``: every
    InputError was taken for divergence."""
    from napari_microseg.errors import InputError
    from napari_microseg.io.models import read_model_file
    from napari_microseg.progress import drain
    from napari_microseg.training.trainer import train

    labels = _disks((96, 96))
    image = ((labels > 0) * 120 + np.random.default_rng(0).normal(20, 8, labels.shape)).astype(np.float32)
    last = tmp_path / "m.pt.last.pt"
    last.write_bytes(b"an earlier checkpoint")
    os.chmod(last, 0o444)
    cfg = {"patch_size": 32, "epochs": 2, "patches_per_epoch": 4, "batch_size": 2, "num_threads": 1,
           "device": "cpu", "augment": False}
    with pytest.raises(InputError, match="write-protected") as raised:
        drain(train(cfg, ([image], [labels]), out_path=tmp_path / "m.pt"))
    reason = read_model_file(tmp_path / "m.pt")["config"]["training"]["stop_reason"]
    assert reason.startswith("error: InputError") and "write-protected" in reason, reason
    assert last.read_bytes() == b"an earlier checkpoint"
    from napari_microseg.errors import TrainingDiverged

    assert issubclass(TrainingDiverged, InputError) and not isinstance(raised.value, TrainingDiverged)


@pytest.mark.parametrize("protected", ["m.pt.last.pt", "m.pt", "h.csv"])
def test_microseg_train_refuses_write_protected_outputs_before_training(tmp_path, capsys, protected):
    """``microseg train --overwrite`` with a write-protected --out, .last.pt or --history trained (replacing the
    model) and failed after the first epoch."""
    import tifffile

    from napari_microseg.cli import main

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    labels = _disks((64, 64))
    tifffile.imwrite(tmp_path / "images" / "a.tif", ((labels > 0) * 100 + 10).astype(np.uint16))
    tifffile.imwrite(tmp_path / "labels" / "a.tif", labels)
    for name in ("m.pt", "m.pt.last.pt", "h.csv"):
        (tmp_path / name).write_bytes(b"earlier " + name.encode())
    os.chmod(tmp_path / protected, 0o444)
    rc = main(["train", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"), "--out",
               str(tmp_path / "m.pt"), "--history", str(tmp_path / "h.csv"), "--epochs", "1", "--patch", "32",
               "--patches-per-epoch", "2", "--batch-size", "2", "--device", "cpu", "--overwrite"])
    err = capsys.readouterr().err
    assert rc != 0 and f"{protected}: is write-protected" in err, err
    for name in ("m.pt", "m.pt.last.pt", "h.csv"):
        assert (tmp_path / name).read_bytes() == b"earlier " + name.encode()


@pytest.mark.parametrize("command", ["segment", "track"])
def test_overwrite_does_not_replace_write_protected_outputs(tmp_path, capsys, command):
    """``segment --overwrite`` and ``track --overwrite`` moved their outputs into place by rename, replacing
    write-protected (0444) ones that atomic_path refuses."""
    import tifffile

    from napari_microseg.cli import main

    stack = np.zeros((3, 32, 32), np.uint16)
    stack[:, 4:10, 4:10] = 1
    stack[:, 18:26, 18:26] = 2
    movie = tmp_path / ("movie.tif" if command == "segment" else "labels.tif")
    tifffile.imwrite(movie, (stack > 0).astype(np.uint16) * 200 + 10 if command == "segment" else stack)
    out = tmp_path / "out"
    out.mkdir()
    protected = out / ("objects.csv" if command == "segment" else "tracks.csv")
    protected.write_text("kept\n")
    os.chmod(protected, 0o444)
    if command == "segment":
        argv = ["segment", "--model", "nuclei_fluorescence_fast", "--input", str(movie), "--out", str(out), "--overwrite"]
    else:
        argv = ["track", "--labels", str(movie), "--out", str(out), "--overwrite", "--max-search-radius", "5"]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc != 0 and f"{protected.name}: is write-protected (mode 0444), so it is not replaced" in err, err
    assert protected.read_text() == "kept\n"
