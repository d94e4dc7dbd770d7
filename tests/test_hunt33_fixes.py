"""Regression tests for the bugs found by session 33's hunts: each failed on the code before its fix."""
from __future__ import annotations

import numpy as np
import pytest


def _image_label_folders(folder, n: int) -> None:
    """``folder/images`` and ``folder/labels`` of ``n`` simulated 64 x 64 nuclei images."""
    import tifffile

    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    (folder / "images").mkdir()
    (folder / "labels").mkdir()
    for i in range(n):
        image, labels = simulate_nuclei_image((64, 64), n_nuclei=6, seed=i)
        tifffile.imwrite(folder / "images" / f"im{i}.tif", image)
        tifffile.imwrite(folder / "labels" / f"im{i}.tif", labels.astype(np.uint16))


def test_a_run_whose_loss_blows_up_but_stays_finite_is_refused(tmp_path, capsys):
    """`--lr 1000` without validation: the loss rose from 1.4 to 5e5 (finite) and the run "completed", keeping
    a model that finds nothing. It is stopped as diverged and nothing is saved (no epoch was any good)."""
    from napari_microseg.cli import main

    _image_label_folders(tmp_path, 3)
    assert main(["train", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"), "--out",
                 str(tmp_path / "m.pt"), "--epochs", "3", "--patch", "32", "--patches-per-epoch", "16", "--batch-size",
                 "4", "--lr", "1000", "--val-fraction", "0", "--threads", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "training diverged: the training loss rose from" in err and "lower the learning rate" in err, err
    assert not (tmp_path / "m.pt").exists()


def test_an_ordinary_run_is_not_taken_for_a_blow_up(tmp_path):
    """The blow-up check must leave a run at the default learning rate alone (scratch, then fine-tuned)."""
    from napari_microseg.cli import main

    _image_label_folders(tmp_path, 3)
    common = ["--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"), "--epochs", "2",
              "--patch", "32", "--patches-per-epoch", "16", "--batch-size", "4", "--val-fraction", "0",
              "--threads", "1", "--quiet"]
    assert main(["train", *common, "--out", str(tmp_path / "m.pt")]) == 0
    assert main(["train", *common, "--out", str(tmp_path / "tuned.pt"), "--init-model", str(tmp_path / "m.pt")]) == 0
