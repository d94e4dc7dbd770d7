"""``microseg simulate ...`` writes the promised files (run in-process via cli.main)."""

import json

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_microseg.cli import main


def test_nuclei_timelapse(tmp_path):
    out = tmp_path / "nuc"
    assert main(["simulate", "nuclei", "--out", str(out), "--seed", "4", "--frames", "5", "--shape", "96", "96", "--nuclei", "8"]) == 0
    fl = tifffile.imread(out / "fluorescence.tif")
    ph = tifffile.imread(out / "phase.tif")
    lab = tifffile.imread(out / "labels.tif")
    assert fl.shape == ph.shape == lab.shape == (5, 96, 96) and lab.dtype == np.uint16
    tracks = pd.read_csv(out / "tracks.csv")
    assert list(tracks.columns[:5]) == ["track_id", "t", "y", "x", "parent_track_id"]
    for t in range(5):
        assert set(tracks[tracks.t == t].track_id) == set(np.unique(lab[t])) - {0}
    params = json.loads((out / "params.json").read_text())
    assert params["domain"] == "nuclei" and params["seed"] == 4 and params["simulation"]["n_frames"] == 5
    # the same seed reproduces the files; the folder is protected against overwriting
    assert main(["simulate", "nuclei", "--out", str(out), "--seed", "4", "--frames", "5", "--shape", "96", "96", "--nuclei", "8"]) == 2
    assert main(["simulate", "nuclei", "--out", str(out), "--seed", "4", "--frames", "5", "--shape", "96", "96", "--nuclei", "8", "--overwrite"]) == 0
    assert np.array_equal(tifffile.imread(out / "labels.tif"), lab)


def test_nuclei_timelapse_warns_once_when_the_field_is_too_crowded(tmp_path, capsys):
    out = tmp_path / "crowd"
    assert main(["simulate", "nuclei", "--out", str(out), "--n", "2", "--frames", "1", "--shape", "64", "64",
                 "--nuclei", "3000"]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: only about") == 1 and "of the 3000 nuclei asked for fit in the 64 x 64 px field" in err
    assert tifffile.imread(out / "movie_001" / "labels.tif").max() > 0


def test_nuclei_training_images(tmp_path, capsys):
    assert main(["simulate", "nuclei", "--mode", "images", "--n", "3", "--out", str(tmp_path), "--shape", "64", "64"]) == 0
    table = pd.read_csv(tmp_path / "images.csv")
    assert len(table) == 3
    img = tifffile.imread(tmp_path / table.image[0])
    lab = tifffile.imread(tmp_path / table.labels[0])
    assert img.shape == lab.shape == (64, 64)
    assert "3/3" in capsys.readouterr().err  # the text progress bar


def test_response_balanced(tmp_path):
    assert main(["simulate", "response", "--n", "12", "--out", str(tmp_path), "--seed", "2"]) == 0
    cls = pd.read_csv(tmp_path / "classes.csv")
    assert len(cls) == 12 and cls.is_good.sum() == 6
    img = tifffile.imread(tmp_path / cls.image[1])
    assert img.dtype == np.uint16
    area = tifffile.imread(tmp_path / "integration" / cls.image[1].split("/")[-1])
    assert area.sum() == 29 * 30
    assert main(["simulate", "response", "--n", "2", "--out", str(tmp_path / "x"), "--kind", "smudge"]) == 2
    assert not (tmp_path / "x").exists()


def test_liposomes(tmp_path, capsys):
    assert main(["simulate", "liposomes", "--n", "2", "--out", str(tmp_path), "--shape", "128", "128", "--particles", "5"]) == 0
    cls = pd.read_csv(tmp_path / "classes.csv")
    assert {"image", "label", "lamellarity", "encapsulation"} <= set(cls.columns)
    for name, g in cls.groupby("image"):
        lab = tifffile.imread(tmp_path / name.replace("images/", "labels/"))
        assert set(g.label) == set(np.unique(lab)) - {0}
    # a field too small for the particles asked for: said, with the number that fitted
    assert main(["simulate", "liposomes", "--n", "1", "--out", str(tmp_path / "crowded"), "--shape", "64", "64",
                 "--particles", "30"]) == 0
    fitted = len(pd.read_csv(tmp_path / "crowded" / "classes.csv"))
    assert fitted < 30 and f"{fitted:.1f} of 30 particles per image fitted on average" in capsys.readouterr().err
    assert main(["simulate", "liposomes", "--n", "1", "--out", str(tmp_path / "room"), "--shape", "512", "512",
                 "--particles", "2"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_nanoparticles(tmp_path):
    assert main(["simulate", "nanoparticles", "--n", "30", "--views", "2", "--task", "chirality", "--out", str(tmp_path), "--renders", "4"]) == 0
    prof = tifffile.imread(tmp_path / "profiles.tif")
    assert prof.shape == (30, 2, 32)
    cls = pd.read_csv(tmp_path / "classes.csv")
    assert set(cls["class"]) == {"clockwise", "anticlockwise"}
    assert tifffile.imread(tmp_path / "renders.tif").shape == (4, 128, 128)


def test_ccd(tmp_path):
    from astropy.io import fits

    assert main(["simulate", "ccd", "--n", "2", "--balanced", "--out", str(tmp_path), "--shape", "64", "64"]) == 0
    cls = pd.read_csv(tmp_path / "classes.csv")
    assert len(cls) == 2
    with fits.open(tmp_path / cls.image[0]) as h:
        data = h[0].data
        assert h[0].header["BUNIT"] == "ADU"
    classes = tifffile.imread(tmp_path / cls.classes[0])
    assert data.shape == classes.shape == (64, 64)
    assert abs(np.mean(data[classes == 0]) - 8800) < 20


def test_ccd_one_sensor_feeds_the_repeat_rule(tmp_path, capsys):
    """simulate ccd --one-sensor: every frame has the sensor's hot pixels; segment --hot-repeats finds them
    as the sensor's defects (the mask is the hot pixels of the truth) without a warning."""
    sim = tmp_path / "sim"
    assert main(["simulate", "ccd", "--n", "3", "--one-sensor", "--out", str(sim), "--shape", "128", "128",
                 "--seed", "2"]) == 0
    truth = np.stack([tifffile.imread(sim / "classes" / f"ccd_{i:05d}.tif") for i in range(3)])
    sensor_hot = (truth == 2).any(axis=0)
    assert sensor_hot.any() and all(np.isin(frame[sensor_hot], (2, 3)).all() for frame in truth)  # hot, or under a hit
    capsys.readouterr()
    assert main(["segment", "--model", "ccd_classes", "--input", str(sim / "frames"), "--out", str(tmp_path / "seg"),
                 "--hot-repeats", "--quiet"]) == 0
    assert "warning" not in capsys.readouterr().err
    mask = tifffile.imread(tmp_path / "seg" / "defect_masks" / "all_exposures.tif").astype(bool)
    assert (mask & sensor_hot).sum() >= 0.95 * sensor_hot.sum() and (mask & ~sensor_hot).sum() <= 0.05 * sensor_hot.sum()
    assert main(["simulate", "ccd", "--n", "2", "--one-sensor", "--balanced", "--out", str(tmp_path / "b")]) == 2
    assert "do not go together" in capsys.readouterr().err


def test_bad_input_exits_2(tmp_path):
    assert main(["simulate", "ccd", "--out", str(tmp_path / "a"), "--n", "0"]) == 2
    assert main(["simulate", "nuclei", "--out", str(tmp_path / "b"), "--frames", "0"]) == 2
    with pytest.raises(SystemExit):
        main(["simulate", "bogus", "--out", str(tmp_path)])


def test_simulate_refuses_a_folder_holding_files(tmp_path, capsys):
    from napari_microseg.cli import main

    out = tmp_path / "mine"
    out.mkdir()
    (out / "classes.csv").write_text("my table\n")
    assert main(["simulate", "response", "--n", "2", "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err and (out / "classes.csv").read_text() == "my table\n"
    assert main(["simulate", "response", "--n", "2", "--out", str(out), "--overwrite"]) == 0


def test_overwrite_leaves_none_of_an_earlier_simulations_samples(tmp_path):
    """A run of 3 samples, then one of 1 into the same folder with --overwrite: only the new sample is
    left to be trained on (the earlier ones went with their tables), and the user's own file stays."""
    from napari_microseg.cli import main

    out = tmp_path / "sim"
    assert main(["simulate", "nuclei", "--mode", "images", "--n", "3", "--shape", "64", "64", "--out", str(out)]) == 0
    (out / "notes.txt").write_text("mine\n")
    assert main(["simulate", "nuclei", "--mode", "images", "--n", "1", "--seed", "7", "--shape", "64", "64",
                 "--out", str(out), "--overwrite"]) == 0
    assert len(list((out / "images").iterdir())) == len(list((out / "labels").iterdir())) == 1
    assert (out / "notes.txt").read_text() == "mine\n"
    # a time-lapse run after several: the movie folders go too
    assert main(["simulate", "nuclei", "--n", "2", "--frames", "2", "--shape", "48", "48", "--out", str(out),
                 "--overwrite"]) == 0
    assert not (out / "images").exists() and sorted(p.name for p in out.glob("movie_*")) == ["movie_000", "movie_001"]
    assert main(["simulate", "nuclei", "--frames", "2", "--shape", "48", "48", "--out", str(out), "--overwrite"]) == 0
    assert not list(out.glob("movie_*")) and (out / "labels.tif").is_file()
    # the user's own images beside a simulation's, or beside a params.json simulate did not write, stay
    import tifffile

    mine = tmp_path / "mine"
    (mine / "images").mkdir(parents=True)
    tifffile.imwrite(mine / "images" / "my_cells.tif", np.zeros((8, 8), np.uint8))
    (mine / "params.json").write_text('{"my": "settings"}')
    assert main(["simulate", "response", "--n", "1", "--out", str(mine), "--overwrite"]) == 0
    assert (mine / "images" / "my_cells.tif").is_file()
    assert main(["simulate", "response", "--n", "1", "--seed", "3", "--out", str(mine), "--overwrite"]) == 0
    assert sorted(p.name for p in (mine / "images").iterdir()) == ["my_cells.tif", "response_00000.tif"]
