"""Reader, writer and sample-data hooks work without a viewer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_microseg._reader import get_reader
from napari_microseg._sample_data import ccd_fe55, dsb2018_nuclei
from napari_microseg._writer import write_labels_tiff, write_tracks_csv
from napari_microseg.errors import InputError, WriteRefused
from napari_microseg.io.images import read_image
from napari_microseg.io.tables import TRACKS_COLUMNS


def test_reader_claims_our_types_only(shared_data, tmp_path):
    assert get_reader(str(tmp_path / "a.png")) is None
    reader = get_reader(str(shared_data / "ccd_fe55" / "ESIS1_00099.fit.gz"))
    assert reader is not None
    (data, kwargs, kind), = reader(str(shared_data / "ccd_fe55" / "ESIS1_00099.fit.gz"))
    assert kind == "image" and data.shape == (1040, 2152)
    assert kwargs["name"] == "ESIS1_00099"
    assert kwargs["metadata"]["header"]["CAM_ID"].strip() == "ESIS1"


def test_masks_named_as_labels_open_as_labels_layers(shared_data, tmp_path):
    """A DSB2018 mask (in a labels/ folder) and an integer ``*_mask.tif`` open as Labels layers, ready to
    paint and train on; the image beside it, a float file named like a mask and an unnamed integer
    image open as images."""
    import numpy as np
    import tifffile

    name = sorted((shared_data / "dsb2018" / "labels").iterdir())[0].name
    for path, kind in ((shared_data / "dsb2018" / "labels" / name, "labels"),
                       (shared_data / "dsb2018" / "images" / name, "image")):
        assert get_reader(str(path))(str(path))[0][2] == kind, path
    tifffile.imwrite(tmp_path / "cells_mask.tif", np.eye(8, dtype=np.uint16))
    tifffile.imwrite(tmp_path / "cells_seg.tif", np.eye(8, dtype=np.float32))
    tifffile.imwrite(tmp_path / "cells.tif", np.eye(8, dtype=np.uint16))
    tifffile.imwrite(tmp_path / "cells_labels.ome.tif", np.eye(8, dtype=np.uint16), ome=True)
    names = ("cells_mask.tif", "cells_seg.tif", "cells.tif", "cells_labels.ome.tif")
    kinds = {p: get_reader(str(tmp_path / p))(str(tmp_path / p))[0][2] for p in names}
    assert kinds == {"cells_mask.tif": "labels", "cells_seg.tif": "image", "cells.tif": "image",
                     "cells_labels.ome.tif": "labels"}


def test_reader_bad_file_gives_clear_message(tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_text("nope")
    with pytest.raises(InputError, match="bad.tif"):
        get_reader(str(bad))(str(bad))


def test_sample_data_loads_fast():
    (image, _, kind_i), (labels, labels_kwargs, kind_l) = dsb2018_nuclei()
    assert kind_i == "image" and kind_l == "labels"
    assert image.shape == labels.shape == (256, 256)
    assert len(np.unique(labels)) - 1 == 62
    features = labels_kwargs["features"]  # the DESIGN's layer contract: a features table with a label column
    assert sorted(features["label"]) == sorted(np.unique(labels)[1:]) and (features["area"] > 0).all()
    (ccd, meta, _), = ccd_fe55()
    assert ccd.shape == (256, 512) and meta["contrast_limits"][1] > meta["contrast_limits"][0]


def test_labels_writer(tmp_path):
    labels = np.zeros((3, 20, 20), np.int32)
    labels[:, 5:9, 5:9] = 7
    (path,) = write_labels_tiff(str(tmp_path / "lab"), labels, {})
    back = read_image(path).data
    assert back.dtype == np.uint16 and path.endswith(".tif")
    np.testing.assert_array_equal(back, labels)
    # -1, "not annotated" (the Auto-label dock's marking), is kept: int32, as train and evaluate read it
    marked = labels.copy()
    marked[1, :2, :2] = -1
    (path,) = write_labels_tiff(str(tmp_path / "marked"), marked, {})
    back = read_image(path).data
    assert back.dtype == np.int32 and (back == -1).sum() == 4
    np.testing.assert_array_equal(back, marked)
    # ids a labels TIFF cannot hold are refused, not wrapped into other ids (-2 -> 4294967294)
    for bad in (-2, 2**33 + 1):
        wide = labels.astype(np.int64)
        wide[0, 0, 0] = bad
        with pytest.raises(WriteRefused, match="relabel"):
            write_labels_tiff(str(tmp_path / "bad.tif"), wide, {})
    assert not (tmp_path / "bad.tif").exists()


def test_written_layers_keep_the_calibration_the_reader_gave(tmp_path):
    """A calibrated movie opened in napari (scale in um and minutes) and saved again, as labels or
    as an image, reads back with the same pixel size and frame interval."""
    import tifffile

    from napari_microseg._writer import write_image_tiff

    movie = np.zeros((3, 24, 24), np.uint16)
    movie[:, 4:10, 4:10] = 9
    tifffile.imwrite(tmp_path / "movie.tif", movie, imagej=True, resolution=(4.0, 4.0),
                     metadata={"axes": "TYX", "unit": "micron", "finterval": 30})
    (layer,) = get_reader(str(tmp_path / "movie.tif"))(str(tmp_path / "movie.tif"))
    data, kwargs = layer[0], layer[1]
    assert tuple(kwargs["scale"]) == (0.5, 0.25, 0.25)
    for writer, name in ((write_labels_tiff, "labels.tif"), (write_image_tiff, "image.tif")):
        (path,) = writer(str(tmp_path / name), data, {"scale": kwargs["scale"], "units": kwargs["units"]})
        assert read_image(path).metadata["calibration"] == {"pixel_size_um": 0.25, "frame_interval_min": 0.5}
    # a pyramid (multiscale) layer is written at full resolution, with its own pixel size
    pyramid = [data, data[:, ::2, ::2]]
    for writer, name in ((write_labels_tiff, "pyramid_labels.tif"), (write_image_tiff, "pyramid.tif")):
        (path,) = writer(str(tmp_path / name), pyramid, {"scale": kwargs["scale"], "units": kwargs["units"],
                                                          "multiscale": True})
        written = read_image(path)
        assert written.data.shape == (3, 24, 24)
        assert written.metadata["calibration"] == {"pixel_size_um": 0.25, "frame_interval_min": 0.5}
    # napari's default scale (pixels) states no calibration
    (path,) = write_labels_tiff(str(tmp_path / "plain.tif"), data, {"scale": (1, 1, 1), "units": ("pixel",) * 3})
    assert "calibration" not in read_image(path).metadata


def test_tile_compressed_fits_is_read(tmp_path):
    from astropy.io import fits

    frame = (np.arange(64 * 64).reshape(64, 64) % 4000 + 1000).astype(np.uint16)
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(frame)]).writeto(tmp_path / "frame.fits.fz")
    np.testing.assert_array_equal(read_image(tmp_path / "frame.fits.fz").data, frame)
    assert get_reader(str(tmp_path / "frame.fits.fz")) is not None


def test_tracks_writer_contract(tmp_path):
    # track 1 (t 0-1) divides into 2 and 3 (t 2-3)
    data = np.array([[1, 0, 10, 10], [1, 1, 11, 10], [2, 2, 12, 8], [2, 3, 13, 7], [3, 2, 12, 12], [3, 3, 13, 13]], float)
    graph = {2: [1], 3: [1]}
    (path,) = write_tracks_csv(str(tmp_path / "tracks.csv"), data, {"graph": graph, "features": {"area": [5, 5, 3, 3, 3, 3]}})
    table = pd.read_csv(path)
    assert list(table.columns[:8]) == TRACKS_COLUMNS
    assert "area" in table.columns
    daughters = table[table.track_id.isin([2, 3])]
    assert set(daughters.parent_track_id) == {1} and set(daughters.root_track_id) == {1} and set(daughters.generation) == {1}
    root = table[table.track_id == 1]
    assert set(root.parent_track_id) == {0} and set(root.generation) == {0}


def test_simulated_samples_one_per_domain():
    from napari_microseg import _sample_data as samples

    kinds = {}
    for name in ("simulated_nuclei", "simulated_ccd", "simulated_response", "simulated_liposomes", "simulated_nanoparticles"):
        layers = getattr(samples, name)()
        assert layers and all(kind in ("image", "labels", "tracks") for _, _, kind in layers)
        kinds[name] = {kind for _, _, kind in layers}
    assert kinds["simulated_nuclei"] == {"image", "labels", "tracks"}
    assert "labels" in kinds["simulated_ccd"] and "labels" in kinds["simulated_liposomes"]
