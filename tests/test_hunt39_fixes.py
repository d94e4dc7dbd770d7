"""Fixes from session 39's hunts: each test failed on the code before its fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def test_autolabel_overwrite_keeps_run_named_tiles_no_autolabel_run_wrote(tmp_path):
    """`autolabel fluorescence --target ... --overwrite` deleted every tiles/*/tile_NNNNN.tif of the output folder,
    also a user's own (or another command's) that no auto-label run wrote there; only an earlier auto-label
    run's tiles (its params.json says so) are removed now."""
    import tifffile

    from napari_microseg.cli import main
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    image = (simulate_nuclei_image((128, 128), n_nuclei=10, seed=1)[0] * 4000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "stain.tif", image)
    out = tmp_path / "out"
    mine = [out / "tiles" / sub / f"tile_{i:05d}.tif" for sub in ("images", "labels") for i in (50, 51)]
    for path in mine:
        path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(path, image)
    (out / "params.json").write_text(json.dumps({"command": "train"}))  # not an auto-label run's record
    base = ["autolabel", "fluorescence", "--stain", str(tmp_path / "stain.tif"), "--target", str(tmp_path / "stain.tif"),
            "--out", str(out), "--quiet", "--overwrite"]
    assert main([*base, "--tile", "64"]) == 0
    assert all(path.exists() for path in mine)
    assert sorted(p.name for p in (out / "tiles" / "images").glob("tile_0000*.tif")) == [f"tile_0000{i}.tif" for i in range(4)]
    # an earlier auto-label run's own tiles are replaced: a second run of 128 px tiles leaves one tile of its own
    assert main([*base, "--tile", "128"]) == 0
    assert sorted(p.name for p in (out / "tiles" / "images").glob("tile_0000*.tif")) == ["tile_00000.tif"]
    assert all(path.exists() for path in mine)


def test_local_otsu_window_wider_than_the_image_is_capped():
    """`--otsu-window 20001` on a 128 x 128 image built a 20001 x 20001 footprint (8.8 GB; 100000 was killed):
    a window past the image's reach gives the same map as that reach, so it is capped there."""
    from skimage.filters import rank
    from skimage.morphology import disk, footprint_rectangle

    from napari_microseg.autolabel.fluorescence import local_otsu_threshold

    image = np.random.default_rng(0).random((40, 30)).astype(np.float32)
    u8 = np.round(image * 255).astype(np.uint8)
    np.testing.assert_array_equal(local_otsu_threshold(image, 301),
                                  rank.otsu(u8, footprint_rectangle((301, 301))).astype(np.float32) / 255)
    np.testing.assert_array_equal(local_otsu_threshold(image, 301, "disk"), rank.otsu(u8, disk(150)).astype(np.float32) / 255)
    import tracemalloc

    tracemalloc.start()
    local_otsu_threshold(image, 20001)
    local_otsu_threshold(image, 20001, "disk")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50e6, peak  # (the footprint alone was 400 MB)


def test_segment_overwrite_removes_the_same_images_earlier_labels_in_the_other_format(tmp_path, capsys):
    """`segment --zarr-above 0` then `segment --overwrite` (TIFF labels) kept labels/x.zarr of the first run
    beside the new labels/x.tif, called "of an earlier run for other images": the same image's stale result."""
    import tifffile

    from napari_microseg.cli import main
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    tifffile.imwrite(tmp_path / "x.tif", (simulate_nuclei_image((96, 96), n_nuclei=6, seed=2)[0] * 3000).astype(np.uint16))
    out = tmp_path / "out"
    base = ["segment", "--model", "nuclei_fluorescence", "--input", str(tmp_path / "x.tif"), "--out", str(out), "--quiet"]
    assert main([*base, "--zarr-above", "0"]) == 0
    assert (out / "labels" / "x.zarr").is_dir()
    (out / "labels" / "y.zarr").mkdir()  # a store no run here wrote: kept
    capsys.readouterr()
    assert main([*base, "--overwrite"]) == 0
    assert (out / "labels" / "x.tif").is_file() and not (out / "labels" / "x.zarr").exists()
    assert (out / "labels" / "y.zarr").is_dir()
    err = capsys.readouterr().err
    assert "x.zarr" not in err and "y.zarr" in err, err
    record = json.loads((out / "segment_run.json").read_text())
    assert [Path(r["labels"]).name for r in record["images"]] == ["x.tif"]
