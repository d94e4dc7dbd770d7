"""Fixes from session 39's hunts: each test failed on the code before its fix."""

from __future__ import annotations

import json

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
