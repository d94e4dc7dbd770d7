"""Fixes from session 37's hunts: each test failed on the code before its fix."""

from __future__ import annotations

import json
import socket
import subprocess
import warnings

import numpy as np
import pytest

SAMPLE_CCD = "src/napari_microseg/sample_data/ccd_fe55_ESIS1_00002_crop.fits.gz"


@pytest.fixture(scope="module")
def stain_and_phase(tmp_path_factory):
    """A simulated field: (stain.tif, phase.tif) paths, 128 x 160 px, uint16 / float32."""
    from napari_microseg.io.images import write_tiff
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse

    folder = tmp_path_factory.mktemp("pair")
    sim = simulate_nuclei_timelapse(n_frames=1, shape=(128, 160), n_nuclei=12, seed=5)
    write_tiff(folder / "stain.tif", sim.fluorescence[0])
    write_tiff(folder / "phase.tif", sim.phase[0].astype(np.float32))
    return folder / "stain.tif", folder / "phase.tif", sim


def test_autolabel_into_a_folder_another_run_holds_is_refused(stain_and_phase, tmp_path, capsys):
    """No lock: two `autolabel` runs into one --out both checked the folder before either wrote, and the last
    to finish left its labels beside the other's tiles (both exit 0); `autolabel ccd` replaced all five files."""
    from napari_microseg.batch.runner import LOCK_NAME
    from napari_microseg.cli import main

    stain, phase, _ = stain_and_phase
    other = subprocess.Popen(["sleep", "60"])  # another run, alive, holding the folders
    try:
        held = json.dumps({"pid": other.pid, "host": socket.gethostname(), "time": "2026-12-07T00:00:00Z"})
        for name in ("fl", "ccd"):
            (tmp_path / name).mkdir()
            (tmp_path / name / LOCK_NAME).write_text(held)
        assert main(["autolabel", "fluorescence", "--stain", str(stain), "--target", str(phase), "--qc", "--tile", "64",
                     "--out", str(tmp_path / "fl"), "--quiet"]) == 2
        assert "in use by another run" in capsys.readouterr().err
        assert main(["autolabel", "ccd", "--input", SAMPLE_CCD, "--out", str(tmp_path / "ccd")]) == 2
        assert sorted(p.name for p in (tmp_path / "fl").iterdir()) == [LOCK_NAME]
        assert sorted(p.name for p in (tmp_path / "ccd").iterdir()) == [LOCK_NAME]
    finally:
        other.kill()
        other.wait()
    # the lock is taken over once its run is gone, and released by the run that took it (also on a refusal)
    assert main(["autolabel", "ccd", "--input", SAMPLE_CCD, "--out", str(tmp_path / "ccd")]) == 0
    assert (tmp_path / "ccd" / "classes.tif").exists() and not (tmp_path / "ccd" / LOCK_NAME).exists()
    assert main(["autolabel", "ccd", "--input", SAMPLE_CCD, "--out", str(tmp_path / "ccd")]) == 2  # exists already
    assert not (tmp_path / "ccd" / LOCK_NAME).exists()


def test_autolabel_says_a_target_with_nan_before_labelling_and_a_blank_one_without_a_library_warning(
        stain_and_phase, tmp_path, capsys):
    """A NaN in --target gave scikit-image's traceback ("use the reference_mask keywords") after the whole stain
    was labelled; a constant target gave its "Could not determine RMS error" UserWarning and nothing else."""
    import tifffile

    from napari_microseg.autolabel.pairing import check_registration
    from napari_microseg.cli import main
    from napari_microseg.errors import InputError

    stain, phase, sim = stain_and_phase
    damaged = sim.phase[0].astype(np.float32)
    damaged[10:20, 10:20] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", damaged)
    assert main(["autolabel", "fluorescence", "--stain", str(stain), "--target", str(tmp_path / "nan.tif"),
                 "--out", str(tmp_path / "o1"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--target" in err and "NaN or infinite" in err and "Traceback" not in err
    assert not (tmp_path / "o1" / "labels.tif").exists()
    with pytest.raises(InputError, match="target holds NaN"):
        check_registration(sim.fluorescence[0], np.where(np.isnan(damaged), np.inf, damaged))

    tifffile.imwrite(tmp_path / "zero.tif", np.zeros((128, 160), np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no library warning leaks
        assert check_registration(sim.fluorescence[0], np.zeros((128, 160))) == ((0.0, 0.0), 1.0)
    assert main(["autolabel", "fluorescence", "--stain", str(stain), "--target", str(tmp_path / "zero.tif"),
                 "--out", str(tmp_path / "o2"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "is constant in 1 of 1 frame(s)" in err and "UserWarning" not in err


def test_qc_drops_empty_tiles_only_within_the_lowest_share_unless_asked(stain_and_phase, tmp_path):
    """--qc dropped every tile without a labelled nucleus whatever --qc-drop-lowest said (56 % of the ISL tiles
    at 0.25, 36 of 64 at 0): the study's filter drops the lowest share only; --qc-drop-empty drops them all."""
    import pandas as pd
    import tifffile

    from napari_microseg.cli import main

    stain, phase, sim = stain_and_phase
    sparse = sim.fluorescence[0].copy()
    sparse[:, 80:] = np.median(sparse)  # the right half holds no nuclei: 4 of 8 tiles of 64 px are empty
    tifffile.imwrite(tmp_path / "half.tif", sparse)
    common = ["autolabel", "fluorescence", "--stain", str(tmp_path / "half.tif"), "--target", str(phase), "--qc",
              "--tile", "64", "--quiet", "--keep-border"]
    assert main(common + ["--qc-drop-lowest", "0", "--out", str(tmp_path / "keep")]) == 0
    qc = pd.read_csv(tmp_path / "keep" / "qc.csv")
    empty = qc.foreground_pixels == 0
    assert empty.sum() >= 2 and qc.kept[empty].all()  # drop-lowest 0 drops nothing
    assert main(common + ["--qc-drop-lowest", "0", "--qc-drop-empty", "--out", str(tmp_path / "drop")]) == 0
    qc = pd.read_csv(tmp_path / "drop" / "qc.csv")
    assert (qc.reason[qc.foreground_pixels == 0] == "empty").all() and qc.kept[qc.foreground_pixels > 0].all()
    assert json.loads((tmp_path / "drop" / "params.json").read_text())["qc_drop_empty"] is True
    assert main(common + ["--out", str(tmp_path / "default")]) == 0  # the study's 25 %: floor(0.25 * 8) = 2 tiles
    qc = pd.read_csv(tmp_path / "default" / "qc.csv")
    assert (~qc.kept).sum() == int(0.25 * len(qc)) and qc.kept[qc.foreground_pixels == 0].any()


@pytest.mark.gui
def test_autolabel_dock_says_a_target_with_nan_and_a_blank_target(make_napari_viewer, wait_worker, qtbot):
    """The dock showed scikit-image's sentence about its Python keywords for a NaN in the target layer, after
    labelling every frame; a blank target layer was paired without a word."""
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse
    from napari_microseg.widgets.autolabel import AutolabelWidget

    sim = simulate_nuclei_timelapse(n_frames=2, shape=(96, 128), n_nuclei=10, seed=5)
    damaged = sim.phase.astype(np.float32)
    damaged[1, 5:9, 5:9] = np.nan
    blank = sim.phase.astype(np.float32)
    blank[1] = 0
    viewer = make_napari_viewer()
    viewer.add_image(sim.fluorescence, name="DAPI")
    viewer.add_image(damaged, name="damaged phase")
    viewer.add_image(blank, name="blank phase")
    dock = AutolabelWidget(viewer)
    viewer.window.add_dock_widget(dock, name="Auto-label")
    dock.live.value = False
    dock.stain_layer.value = "DAPI"
    dock.target_layer.value = "damaged phase"
    wait_worker(dock.apply())
    text = dock.status.text()
    assert "'damaged phase' holds NaN or infinite values" in text and "reference_mask" not in text
    assert dock.labels_layer is None
    dock.target_layer.value = "blank phase"
    wait_worker(dock.apply())
    qtbot.waitUntil(lambda: dock.labels_layer is not None, timeout=5000)
    assert "'blank phase' is constant in 1 frame(s)" in dock.status.text()
