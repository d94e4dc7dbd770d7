"""``microseg autolabel fluorescence|ccd`` through ``napari_microseg.cli.main``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_microseg.cli import main
from napari_microseg.io.images import write_tiff
from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse

SAMPLE_CCD = "src/napari_microseg/sample_data/ccd_fe55_ESIS1_00002_crop.fits.gz"


@pytest.fixture(scope="module")
def channels(tmp_path_factory):
    d = tmp_path_factory.mktemp("channels")
    sim = simulate_nuclei_timelapse(n_frames=2, shape=(160, 200), n_nuclei=25, seed=5)
    write_tiff(d / "stain.tif", sim.fluorescence[0])
    write_tiff(d / "phase.tif", sim.phase[0])
    write_tiff(d / "stain_t.tif", sim.fluorescence)
    write_tiff(d / "phase_t.tif", sim.phase)
    return d, sim


def test_fluorescence_with_target_and_qc(channels, tmp_path):
    d, sim = channels
    out = tmp_path / "out"
    rc = main(["autolabel", "fluorescence", "--stain", str(d / "stain.tif"), "--target", str(d / "phase.tif"),
               "--out", str(out), "--tile", "64", "--qc", "--quiet", "--keep-border"])
    assert rc == 0
    labels = tifffile.imread(out / "labels.tif")
    assert labels.shape == (160, 200) and labels.max() >= 15
    tiles = pd.read_csv(out / "tiles.csv")
    qc = pd.read_csv(out / "qc.csv")
    assert len(tiles) == len(qc) == 3 * 4
    assert {"tile", "t", "y", "x", "foreground_fraction", "n_objects", "kept", "reason"} <= set(qc.columns)
    assert (~qc.kept).sum() >= 3  # floor(0.25 * 12) lowest tiles at least
    kept = tiles[tiles.kept]
    for _, row in kept.iterrows():
        t_img = tifffile.imread(out / row.target_file)
        l_img = tifffile.imread(out / row.labels_file)
        np.testing.assert_array_equal(t_img, sim.phase[0][row.y : row.y + 64, row.x : row.x + 64])
        np.testing.assert_array_equal(l_img > 0, labels[row.y : row.y + 64, row.x : row.x + 64] > 0)
    assert tiles[~tiles.kept].target_file.isna().all()
    params = json.loads((out / "params.json").read_text())
    assert params["autolabel"]["otsu_window"] == 51 and params["n_kept"] == len(kept)
    # the tiles train as they are: images/ and labels/ with the same names (each image with its labels)
    images, labels_dir = out / "tiles" / "images", out / "tiles" / "labels"
    assert sorted(p.name for p in images.iterdir()) == sorted(p.name for p in labels_dir.iterdir())
    assert len(list(images.iterdir())) == len(kept)
    from napari_microseg.io.models import read_model_file

    common = ["--epochs", "1", "--patches-per-epoch", "2", "--patch", "64", "--batch-size", "2", "--device", "cpu",
              "--output-mode", "three_class"]
    assert main(["train", "--images", str(images), "--labels", str(labels_dir), "--out", str(tmp_path / "m.pt"), *common]) == 0
    assert f"{len(kept)} image(s)" in read_model_file(tmp_path / "m.pt")["config"]["training"]["data"]
    # a rerun with --overwrite leaves no earlier tiles behind to be trained on (a smaller tile: more of them first)
    assert main(["autolabel", "fluorescence", "--stain", str(d / "stain.tif"), "--target", str(d / "phase.tif"),
                 "--out", str(tmp_path / "again"), "--tile", "32", "--quiet", "--keep-border"]) == 0
    assert main(["autolabel", "fluorescence", "--stain", str(d / "stain.tif"), "--target", str(d / "phase.tif"),
                 "--out", str(tmp_path / "again"), "--tile", "64", "--qc", "--quiet", "--keep-border", "--overwrite"]) == 0
    again = pd.read_csv(tmp_path / "again" / "tiles.csv")
    assert len(list((tmp_path / "again" / "tiles" / "images").iterdir())) == again.kept.sum() == len(kept)
    # the same folder as images and labels is refused, not trained on as each file's own labels
    assert main(["train", "--images", str(images), "--labels", str(images), "--out", str(tmp_path / "same.pt"), *common]) == 2
    assert not (tmp_path / "same.pt").exists()
    # no overwrite without --overwrite
    rc = main(["autolabel", "fluorescence", "--stain", str(d / "stain.tif"), "--out", str(out), "--quiet"])
    assert rc == 2


def test_fluorescence_stack_without_target(channels, tmp_path, capsys):
    d, sim = channels
    rc = main(["autolabel", "fluorescence", "--stain", str(d / "stain_t.tif"), "--out", str(tmp_path), "--quiet"])
    assert rc == 0
    labels = tifffile.imread(tmp_path / "labels.tif")
    assert labels.shape == sim.fluorescence.shape
    assert not (tmp_path / "tiles.csv").exists()
    removed = json.loads((tmp_path / "params.json").read_text())["removed_by_diameter"]
    # the same stack with a max diameter below every nucleus: all left out, and said so
    rc = main(["autolabel", "fluorescence", "--stain", str(d / "stain_t.tif"), "--out", str(tmp_path / "tiny"), "--quiet",
               "--diameter-range", "2,4"])
    assert rc == 0 and tifffile.imread(tmp_path / "tiny" / "labels.tif").max() == 0
    assert "above the 4 px max diameter were left out" in capsys.readouterr().err
    tiny = json.loads((tmp_path / "tiny" / "params.json").read_text())["removed_by_diameter"]
    assert tiny["too_large"] >= int(labels.max(axis=(1, 2)).sum()) and tiny["too_large"] > removed["too_large"]
    # --qc without --target tiles the stain itself, frame by frame
    rc = main(["autolabel", "fluorescence", "--stain", str(d / "stain_t.tif"), "--out", str(tmp_path / "q"), "--quiet",
               "--qc", "--tile", "100"])
    assert rc == 0
    tiles = pd.read_csv(tmp_path / "q" / "tiles.csv")
    assert len(tiles) == 2 * 2 * 2 and sorted(tiles.t.unique()) == [0, 1]
    first = tiles[tiles.kept].iloc[0]
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "q" / first.target_file),
                                  sim.fluorescence[first.t][first.y : first.y + 100, first.x : first.x + 100])


def test_fluorescence_real_png_pair(shared_data, tmp_path):
    import skimage.io

    folder = shared_data / "isl_phase_dapi"
    # crop the real pair into small PNGs so the test stays fast
    skimage.io.imsave(tmp_path / "dapi.png", skimage.io.imread(folder / "dapi.png")[:256, 512:768], check_contrast=False)
    skimage.io.imsave(tmp_path / "phase.png", skimage.io.imread(folder / "phase_z6.png")[:256, 512:768], check_contrast=False)
    rc = main(["autolabel", "fluorescence", "--stain", str(tmp_path / "dapi.png"), "--target", str(tmp_path / "phase.png"),
               "--out", str(tmp_path / "o"), "--tile", "128", "--diameter-range", "10,60", "--quiet"])
    assert rc == 0
    assert tifffile.imread(tmp_path / "o" / "labels.tif").max() > 3
    assert len(pd.read_csv(tmp_path / "o" / "tiles.csv")) == 4


def test_nuclei_above_the_max_diameter_are_not_annotated_in_the_tiles(tmp_path, capsys):
    """Big nuclei (another magnification) left out by the diameter filter are background in labels.tif
    but -1 ("not annotated", training's default ignore value) in the tile labels, so a network
    trained on the tiles is not taught that they are background; QC counts them as nothing."""
    from napari_microseg.autolabel.fluorescence import autolabel_fluorescence
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    image, _ = simulate_nuclei_image((256, 256), 14, seed=6, diameter_range=(20.0, 44.0), cluster_fraction=0.0)
    write_tiff(tmp_path / "stain.tif", (image * 1000).astype(np.uint16))
    out = tmp_path / "o"
    assert main(["autolabel", "fluorescence", "--stain", str(tmp_path / "stain.tif"), "--qc", "--tile", "128",
                 "--qc-drop-lowest", "0", "--keep-border", "--out", str(out)]) == 0
    assert "in the tile labels they are -1" in capsys.readouterr().err
    labels = tifffile.imread(out / "labels.tif")
    expected = autolabel_fluorescence((image * 1000).astype(np.uint16), clear_border=False)
    np.testing.assert_array_equal(labels, expected)  # labels.tif: as before, big nuclei are background
    tiles = pd.read_csv(out / "tiles.csv")
    whole = np.zeros(labels.shape, np.int64)
    for row in tiles.itertuples():
        tile = tifffile.imread(out / row.labels_file)
        whole[row.y:row.y + row.height, row.x:row.x + row.width] = tile
    ignored = whole < 0
    assert ignored.sum() > 500 and (whole[ignored] == -1).all()
    assert not (labels[ignored]).any()  # only pixels labels.tif left as background
    qc = pd.read_csv(out / "qc.csv")
    assert (qc["foreground_pixels"].sum() == (whole > 0).sum())


def test_fluorescence_bad_input(channels, tmp_path, capsys):
    d, _ = channels
    write_tiff(tmp_path / "small.tif", np.zeros((10, 10), np.uint16))
    rc = main(["autolabel", "fluorescence", "--stain", str(d / "stain.tif"), "--target", str(tmp_path / "small.tif"),
               "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "differs" in capsys.readouterr().err
    assert main(["autolabel", "fluorescence", "--stain", str(tmp_path / "missing.tif"), "--out", str(tmp_path / "o2")]) == 2


def test_ccd_on_real_crop(tmp_path):
    out = tmp_path / "ccd"
    rc = main(["autolabel", "ccd", "--input", SAMPLE_CCD, "--out", str(out)])
    assert rc == 0
    classes = tifffile.imread(out / "classes.tif")
    assert classes.shape == (256, 512) and classes.dtype == np.uint8
    clusters = pd.read_csv(out / "clusters.csv")
    assert list(clusters.columns[:5]) == ["label", "y", "x", "size_px", "charge_adc"]
    assert len(clusters) > 50
    # the tables `segment` writes for a CCD class model, column for column
    counts, objects = pd.read_csv(out / "counts.csv"), pd.read_csv(out / "objects.csv")
    fractions = counts[[f"fraction_{n}" for n in ("background", "glowing", "hot_pixel", "cluster")]].iloc[0]
    np.testing.assert_allclose(fractions, np.bincount(classes.ravel(), minlength=4) / classes.size)
    assert counts.loc[0, "count_cluster"] == (objects["class"] == "cluster").sum() > 50
    joined = clusters.merge(objects, on="label", how="left", validate="one_to_one")  # the same ids in both tables
    assert (joined["class"] == "cluster").all() and (joined["area"] == joined["size_px"]).all()
    seg = tmp_path / "seg"
    assert main(["segment", "--model", "ccd_classes", "--input", SAMPLE_CCD, "--out", str(seg), "--quiet"]) == 0
    seg_counts, seg_objects = pd.read_csv(seg / "counts.csv"), pd.read_csv(seg / "objects.csv")
    assert list(counts.columns) == [c for c in seg_counts.columns if c != "image"]
    assert set(objects.columns) <= set(seg_objects.columns) and set(objects["class"]) <= set(seg_objects["class"])
    params = json.loads((out / "params.json").read_text())
    assert params["n_clusters"] == len(clusters) and len(params["taps"]) == 2
    assert main(["autolabel", "ccd", "--input", SAMPLE_CCD, "--out", str(out)]) == 2  # exists
    assert main(["autolabel", "ccd", "--input", SAMPLE_CCD, "--out", str(out), "--overwrite", "--taps", "1x1",
                 "--exclude-columns", "0-3,10"]) == 0
    classes = tifffile.imread(out / "classes.tif")
    assert (classes[:, [0, 1, 2, 3, 10]] == 0).all()


def test_ccd_bad_input(tmp_path):
    write_tiff(tmp_path / "stack.tif", np.zeros((2, 8, 8), np.uint16))
    assert main(["autolabel", "ccd", "--input", str(tmp_path / "stack.tif"), "--out", str(tmp_path / "o")]) == 2
    with pytest.raises(SystemExit):
        main(["autolabel", "ccd", "--input", SAMPLE_CCD, "--out", str(tmp_path / "o"), "--taps", "banana"])


def test_help():
    with pytest.raises(SystemExit) as err:
        main(["autolabel", "--help"])
    assert err.value.code == 0


def test_ccd_crop_with_an_off_centre_tap_boundary_is_warned(shared_data, tmp_path, capsys):
    """A crop of a real 2x2-tap ESIS frame whose column boundary is not in its middle: taps are looked
    for at the middle only, so the run goes on and says where the pedestal steps; the whole frame and a
    one-tap crop say nothing."""
    from astropy.io import fits

    from napari_microseg.io.images import read_image

    frame = read_image(shared_data / "ccd_fe55" / "ESIS1_00002.fit.gz").data
    fits.writeto(tmp_path / "crop.fits", frame[:256, 1000:1300])  # tap boundary at column 1076: 76 in the crop
    fits.writeto(tmp_path / "one_tap.fits", frame[:256, 1100:1400])
    assert main(["autolabel", "ccd", "--input", str(tmp_path / "crop.fits"), "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "microseg autolabel: warning: the pedestal steps by" in err and "near column 7" in err, err
    assert (tmp_path / "a" / "classes.tif").is_file()
    assert main(["autolabel", "ccd", "--input", str(tmp_path / "one_tap.fits"), "--out", str(tmp_path / "b")]) == 0
    assert "warning" not in capsys.readouterr().err
