"""Session 39 training fixes: a crash records its stop_reason, the record's data says trained vs validated,
overlapping tiles of one field stay on one side of the train/validation split."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest


def _disks(shape=(64, 64), step=16, radius=5, offset=0) -> np.ndarray:
    """uint16 instance labels: a grid of disks (ids 1..N), the grid shifted by ``offset`` px."""
    from skimage.draw import disk

    labels = np.zeros(shape, np.uint16)
    label = 1
    for y in range(step // 2 + offset, shape[0], step):
        for x in range(step // 2 + offset, shape[1], step):
            rr, cc = disk((y, x), radius, shape=shape)
            labels[rr, cc] = label
            label += 1
    return labels


def _image(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    return ((labels > 0) * 120 + np.random.default_rng(seed).normal(20, 8, labels.shape)).astype(np.float32)


def _tiny(**more) -> dict:
    return {"patch_size": 32, "epochs": 1, "patches_per_epoch": 4, "batch_size": 2, "num_threads": 1,
            "device": "cpu", "augment": False, **more}


# ---------------------------------------------------------------- 1. a crash records its stop_reason
@pytest.mark.gui
def test_a_crash_in_the_training_dock_records_why_the_run_ended(make_napari_viewer, wait_worker, tmp_path, monkeypatch):
    """An error at epoch 3 (out of memory, a full disk ...) left the kept model (best epoch 1 or 2) without a
    stop_reason: its record could not be told from a run still going or one that completed. It now says
    "error: RuntimeError: ...", lists both epochs run, and the .last.pt checkpoint and the history stay."""
    from napari_microseg.io.models import read_model_file
    from napari_microseg.training.data import PatchSampler
    from napari_microseg.widgets.training import TrainingWidget

    calls = [0]
    sample = PatchSampler.sample

    def failing(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 5:  # 2 steps an epoch: the first step of epoch 3
            raise RuntimeError("simulated failure in a step")
        return sample(self, *args, **kwargs)

    monkeypatch.setattr(PatchSampler, "sample", failing)
    viewer = make_napari_viewer(show=False)
    labels = _disks((128, 128))
    viewer.add_image(_image(labels), name="field")
    viewer.add_labels(labels, name="field labels")
    widget = TrainingWidget(viewer)
    widget.image_layer.value = ["field"]
    widget.labels_layer.value = ["field labels"]
    widget.patch.value, widget.epochs.value = 32, 4
    widget.patches_per_epoch.value, widget.batch_size.value = 4, 2
    out = tmp_path / "crash.pt"
    widget.out_path.value = str(out)
    wait_worker(widget.train())
    assert calls[0] == 5 and widget.result is None, widget.status.text()
    assert "simulated failure in a step" in widget.status.text() and "is kept" in widget.status.text()
    training = read_model_file(out)["config"]["training"]
    assert training.get("stop_reason") == "error: RuntimeError: simulated failure in a step", training.get("stop_reason")
    assert [row["epoch"] for row in training["history"]] == [1, 2] and training["epochs_run"] == 2
    last = read_model_file(out.with_name(out.name + ".last.pt"))  # the resumable state: as epoch 2 left it
    assert "optimizer_state" in last and [row["epoch"] for row in last["config"]["training"]["history"]] == [1, 2]
    history = (tmp_path / "crash.history.csv").read_text().splitlines()
    assert len(history) == 3, history  # header + epochs 1, 2


def test_a_crash_in_train_keeps_the_model_and_says_so(tmp_path, monkeypatch):
    """The library (and so `microseg train`) records the error too, and an error before any epoch ended writes
    nothing (no model)."""
    from napari_microseg.io.models import read_model_file
    from napari_microseg.progress import drain
    from napari_microseg.training.data import PatchSampler
    from napari_microseg.training.trainer import train

    sample = PatchSampler.sample
    calls = [0]

    def failing(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:  # first step of epoch 2
            raise OSError(28, "No space left on device")
        return sample(self, *args, **kwargs)

    monkeypatch.setattr(PatchSampler, "sample", failing)
    labels = _disks((96, 96))
    with pytest.raises(OSError):
        drain(train(_tiny(epochs=3), ([_image(labels)], [labels]), out_path=tmp_path / "m.pt"))
    training = read_model_file(tmp_path / "m.pt")["config"]["training"]
    assert training["stop_reason"] == "error: OSError: [Errno 28] No space left on device"
    assert training["best_epoch"] == 1 and training["metrics"]["epoch"] == 1

    # the disk fills while epoch 2's better model is written: the file (epoch 1's weights) says epoch 1 is kept
    import napari_microseg.io.models as models

    monkeypatch.setattr(PatchSampler, "sample", sample)
    save, saves = models.save_model, []

    def full_disk(path, *args, **kwargs):
        saves.append(path)
        if len(saves) == 3:  # epoch 1: model, .last.pt; then epoch 2's first file
            raise OSError(28, "No space left on device")
        return save(path, *args, **kwargs)

    monkeypatch.setattr(models, "save_model", full_disk)
    with pytest.raises(OSError):
        drain(train(_tiny(epochs=3, val_fraction=0), ([_image(labels)], [labels]), out_path=tmp_path / "d.pt"))
    assert [Path(p).name for p in saves] == ["d.pt", "d.pt.last.pt", "d.pt"]  # (epoch 2 was better: its model failed)
    training = read_model_file(tmp_path / "d.pt")["config"]["training"]
    assert training["stop_reason"].startswith("error: OSError") and training["best_epoch"] == 1
    assert training["metrics"]["epoch"] == 1 and [row["epoch"] for row in training["history"]] == [1, 2]
    monkeypatch.setattr(models, "save_model", save)
    monkeypatch.setattr(PatchSampler, "sample", lambda *a, **k: (_ for _ in ()).throw(ValueError("bad")))
    with pytest.raises(ValueError):
        drain(train(_tiny(), ([_image(labels)], [labels]), out_path=tmp_path / "none.pt"))
    assert not (tmp_path / "none.pt").exists()


# ---------------------------------------------------------------- 2. data says trained vs validated
def test_the_record_says_how_many_images_trained_and_how_many_validated(tmp_path):
    """`data` read "3 labelled image(s), ..." when one of the three was held out for validation: it now adds
    "2 trained on, 1 held out for validation", with the counts apart (n_training_images, n_validation_images).
    Validation images given apart leave `data` as it was; a one-image strip split says so."""
    from napari_microseg.cli.info import model_summary
    from napari_microseg.io.models import read_model_config
    from napari_microseg.progress import drain
    from napari_microseg.training.trainer import train

    labels = [_disks((64, 64), offset=k) for k in range(3)]
    images = [_image(lab, k) for k, lab in enumerate(labels)]
    data = {"images": images, "labels": labels, "names": ["a.tif", "b.tif", "c.tif"]}
    drain(train(_tiny(val_fraction=0.34, data_description="3 image(s) from here"), data, out_path=tmp_path / "s.pt"))
    training = read_model_config(tmp_path / "s.pt")["training"]
    assert training["data"] == "3 image(s) from here; 2 trained on, 1 held out for validation", training["data"]
    assert (training["n_training_images"], training["n_validation_images"]) == (2, 1)
    assert len(training["validation_images"]) == 1
    summary = model_summary(str(tmp_path / "s.pt"))["training"]
    assert summary["n_training_images"] == 2 and summary["n_validation_images"] == 1

    given = {"images": images[:1], "labels": labels[:1], "names": ["v.tif"]}
    drain(train(_tiny(data_description="2 image(s)"), {**data, "images": images[1:], "labels": labels[1:],
                                                       "names": ["b.tif", "c.tif"]}, given, out_path=tmp_path / "g.pt"))
    training = read_model_config(tmp_path / "g.pt")["training"]
    assert training["data"] == "2 image(s)" and (training["n_training_images"], training["n_validation_images"]) == (2, 1)

    big = _disks((64, 160))
    drain(train(_tiny(), {"images": [_image(big)], "labels": [big], "names": ["one.tif"]}, out_path=tmp_path / "o.pt"))
    training = read_model_config(tmp_path / "o.pt")["training"]
    assert training["data"].endswith("; trained on the parts of one.tif beside its validation strip (held out)"), \
        training["data"]
    assert training["n_validation_images"] == 1 and training["validation_images"] == ["one.tif (validation strip)"]


# ---------------------------------------------------------------- 3. overlapping tiles on one side
def _tiles_folder(root, field=(160, 160), tile=64, frames=1, drop=()):
    """An `autolabel fluorescence --target` output: OUT/tiles/{images,labels}/tile_NNNNN.tif and OUT/tiles.csv,
    tiles of ``frames`` frames of one field placed as autolabel places them (the last row / column moved back
    to fit: starts 0, 64, 96 in 160 px). ``drop``: tile indices QC left out (no file). Returns the tiles' boxes
    by file name: (t, y, x, h, w)."""
    import pandas as pd
    import tifffile

    from napari_microseg.autolabel.pairing import tile_positions

    for folder in ("images", "labels"):
        (root / "tiles" / folder).mkdir(parents=True)
    positions, (th, tw) = tile_positions(field, tile)
    rows, boxes = [], {}
    for t in range(frames):
        whole = _disks(field, step=20, radius=6, offset=t)
        for y, x in positions:
            index = len(rows)
            name = f"tile_{index:05d}.tif"
            kept = index not in drop
            if kept:
                lab = whole[y:y + th, x:x + tw]
                tifffile.imwrite(root / "tiles" / "images" / name, _image(lab, index).astype(np.uint8))
                tifffile.imwrite(root / "tiles" / "labels" / name, lab)
                boxes[name] = (t, int(y), int(x), th, tw)
            rows.append(dict(tile=index, t=t, y=int(y), x=int(x), height=th, width=tw, kept=kept,
                             target_file=f"tiles/images/{name}" if kept else None,
                             labels_file=f"tiles/labels/{name}" if kept else None))
    pd.DataFrame(rows).to_csv(root / "tiles.csv", index=False)
    return boxes


def _overlapping_pairs(boxes: dict, val: set) -> list[tuple[str, str]]:
    def overlap(a, b):
        return a[0] == b[0] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3] and a[2] < b[2] + b[4] and b[2] < a[2] + a[4]

    return [(v, t) for v in val for t in boxes if t not in val and overlap(boxes[v], boxes[t])]


def test_overlapping_tiles_of_one_field_are_never_split(tmp_path):
    """Autolabel's tiles of one field: 9 tiles of 64 px over 160 px, the last row and column moved back to 96
    (32 px over the tiles before them). The random split by file put a tile in validation and the tile it
    overlaps in training (for most split seeds): validation pixels were trained on. Overlapping tiles are now
    grouped and held out together, for every split seed."""
    from napari_microseg.cli.train import _autolabel_tile_groups
    from napari_microseg.training.data import prepare_training_data, split_train_val

    boxes = _tiles_folder(tmp_path / "al")
    names = sorted(boxes)
    groups = _autolabel_tile_groups(str(tmp_path / "al" / "tiles" / "images"), names)
    assert len(set(groups.values())) == 3 and len(groups) == 8  # {x 64, 96}, {y 64, 96}, the 2x2 corner
    assert "tile_00000.tif" not in groups  # (the tile at 0, 0 overlaps none)
    labels = [_disks((64, 64), step=20, radius=6, offset=k % 5) for k in range(len(names))]
    data = prepare_training_data([_image(lab) for lab in labels], labels, names=names,
                                 groups=[groups.get(n) for n in names])
    for seed in range(12):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # (a clean grouping needs no warning)
            train_td, val_td = split_train_val(data, 0.25, seed=seed)
        val = {it.name for it in val_td.items}
        assert val and len(train_td) + len(val_td) == 9
        assert not _overlapping_pairs(boxes, val), (seed, sorted(val))


def test_microseg_train_on_one_fields_tiles_validates_on_tiles_it_does_not_train_on(tmp_path):
    """`microseg train --images OUT/tiles/images` on one frame's tiles: no validation tile overlaps a training
    tile, and the record says the overlapping tiles were kept on one side."""
    from napari_microseg.cli import main
    from napari_microseg.io.models import read_model_config

    boxes = _tiles_folder(tmp_path / "al")
    for seed in (0, 1, 2):  # (the old random split cut a group for each of these)
        out = tmp_path / f"m{seed}.pt"
        assert main(["train", "--images", str(tmp_path / "al" / "tiles" / "images"), "--labels",
                     str(tmp_path / "al" / "tiles" / "labels"), "--patch", "32", "--patches-per-epoch", "2",
                     "--batch-size", "2", "--threads", "1", "--quiet", "--epochs", "1", "--val-fraction", "0.25",
                     "--split-seed", str(seed), "--out", str(out)]) == 0
        training = read_model_config(out)["training"]
        val = set(training["validation_images"])
        assert val and not _overlapping_pairs(boxes, val), (seed, sorted(val))
        assert "overlap kept on one side" in training["validation"], training["validation"]
        assert training["n_training_images"] + training["n_validation_images"] == 9


def test_a_time_lapse_of_tiles_with_a_dropped_tile_holds_out_whole_frames(tmp_path):
    """Tiles of 3 frames, QC having dropped frame 2's tile at y 0, x 96: that place's last frame is 1, so its
    frame-1 tile was held out while the frame-1 tile at x 64 it overlaps trained. It is now held out too
    (said in a warning)."""
    from napari_microseg.cli.train import _autolabel_tile_groups, _autolabel_tile_places
    from napari_microseg.training.data import prepare_training_data, split_train_val

    dropped = 2 * 9 + 2  # frame 2, (y 0, x 96)
    boxes = _tiles_folder(tmp_path / "al", frames=3, drop=(dropped,))
    names = sorted(boxes)
    folder = str(tmp_path / "al" / "tiles" / "images")
    places, groups = _autolabel_tile_places(folder, names), _autolabel_tile_groups(folder, names)
    labels = [_disks((64, 64), step=20, radius=6, offset=k % 5) for k in range(len(names))]
    data = prepare_training_data([_image(lab) for lab in labels], labels, names=names,
                                 sequences=[places[n] for n in names], groups=[groups.get(n) for n in names])
    with pytest.warns(UserWarning, match="held out for validation too"):
        train_td, val_td = split_train_val(data, 0.34, seed=0)
    val = {it.name for it in val_td.items}
    assert not _overlapping_pairs(boxes, val), sorted(val)
    assert {boxes[n][0] for n in val} == {1, 2} and len(train_td) >= 9
