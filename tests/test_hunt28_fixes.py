"""Behaviour found broken in session 28 (bug hunts); each test fails without its fix."""

from __future__ import annotations

import numpy as np
import pytest


def test_ome_zarr_scale_of_the_multiscales_applies_after_the_datasets(tmp_path):
    """NGFF 0.4 / 0.5: a scale transformation on the multiscales (not only on its datasets) multiplies the
    dataset's; it was ignored, so a 0.25 um pixel was read as 1 um (areas 16 x)."""
    import zarr

    from napari_microseg._reader import get_reader
    from napari_microseg.io.images import read_image

    path = tmp_path / "global.ome.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("0", data=np.zeros((3, 32, 32), np.uint16))
    axes = [{"name": "t", "type": "time", "unit": "second"}, {"name": "y", "type": "space", "unit": "micrometer"},
            {"name": "x", "type": "space", "unit": "micrometer"}]
    group.attrs["multiscales"] = [{"version": "0.4", "axes": axes,
                                   "datasets": [{"path": "0", "coordinateTransformations": [
                                       {"type": "scale", "scale": [60.0, 0.5, 0.5]}]}],
                                   "coordinateTransformations": [{"type": "scale", "scale": [2.0, 0.5, 0.5]}]}]
    calibration = read_image(path).metadata["calibration"]
    assert calibration["pixel_size_um"] == pytest.approx(0.25)
    assert calibration["frame_interval_min"] == pytest.approx(2.0)
    assert get_reader(str(path))(str(path))[0][1]["scale"] == pytest.approx((2.0, 0.25, 0.25))


@pytest.mark.gui
def test_big_endian_zarr_labels_open_in_napari_in_native_order(make_napari_viewer, tmp_path):
    """A labels array stored big-endian (``>u4``) crashed napari's Labels layer ("Big-endian buffer not
    supported"); it is read in native byte order, values unchanged."""
    import zarr

    labels = np.zeros((40, 40), np.uint32)
    labels[5:15, 5:15], labels[20:30, 22:35] = 7, 70000
    (tmp_path / "labels").mkdir()
    path = tmp_path / "labels" / "cells.zarr"
    zarr.create_array(str(path), shape=labels.shape, dtype=">u4", zarr_format=2)[:] = labels
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="napari-microseg")
    (layer,) = viewer.layers
    assert layer.__class__.__name__ == "Labels" and layer.data.dtype.byteorder in ("=", "<")
    np.testing.assert_array_equal(np.asarray(layer.data), labels)


def test_plain_zarr_group_reads_its_first_image_array_and_names_the_others(tmp_path):
    """A Zarr group of several arrays was read as its alphabetically first array without a word (and
    refused when that one was 1-D beside a 2-D image)."""
    import zarr

    from napari_microseg.errors import InputError, MicrosegWarning
    from napari_microseg.io.images import read_image

    group = zarr.open_group(str(tmp_path / "two.zarr"), mode="w", zarr_format=3)
    group.create_array("raw", data=np.ones((16, 16), np.uint16))
    group.create_array("background", data=np.zeros((16, 16), np.uint16))
    with pytest.warns(MicrosegWarning, match=r"read 'background'.*\(raw\) are left out"):
        assert int(read_image(tmp_path / "two.zarr").data.max()) == 0
    assert int(read_image(tmp_path / "two.zarr" / "raw").data.max()) == 1  # the way to the other one
    group = zarr.open_group(str(tmp_path / "coords.zarr"), mode="w", zarr_format=3)
    group.create_array("coords", data=np.arange(16.0))
    group.create_array("image", data=np.full((16, 16), 3, np.uint16))
    with pytest.warns(MicrosegWarning, match="coords"):
        assert int(read_image(tmp_path / "coords.zarr").data.max()) == 3
    group = zarr.open_group(str(tmp_path / "flat.zarr"), mode="w", zarr_format=3)
    group.create_array("coords", data=np.arange(16.0))
    with pytest.raises(InputError, match="no image array.*coords"):
        read_image(tmp_path / "flat.zarr")


def test_tracks_csv_saved_by_a_spreadsheet_with_a_byte_order_mark_opens(tmp_path):
    """Excel / LibreOffice "CSV UTF-8" start the file with a byte-order mark; the reader then saw a column
    "\\ufefftrack_id" and napari found no reader for the table."""
    from napari_microseg._reader import get_reader

    path = tmp_path / "tracks.csv"
    path.write_bytes("\ufefftrack_id,t,y,x,parent_track_id\n1,0,5.0,6.0,0\n1,1,5.5,6.5,0\n".encode("utf-8"))
    reader = get_reader(str(path))
    assert reader is not None
    ((data, _, kind),) = reader(str(path))
    assert kind == "tracks" and np.asarray(data).shape == (2, 4)


def test_autolabel_labels_keep_the_stains_calibration(tmp_path):
    """`autolabel fluorescence` wrote labels.tif (and its tiles) without the stain's pixel size and frame
    interval, so `track` on them had no units and napari placed them at twice the stain's size."""
    import tifffile

    from napari_microseg.cli import main
    from napari_microseg.io.images import read_image
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    frames = [simulate_nuclei_image((96, 96), n_nuclei=8, seed=seed)[0] for seed in (1, 2)]
    stain = np.stack([f / f.max() * 4000 for f in frames]).astype(np.uint16)
    tifffile.imwrite(tmp_path / "stain.tif", stain, imagej=True, resolution=(2, 2),
                     metadata={"axes": "TYX", "unit": "um", "finterval": 300.0})
    assert main(["autolabel", "fluorescence", "--stain", str(tmp_path / "stain.tif"), "--target",
                 str(tmp_path / "stain.tif"), "--tile", "48", "--out", str(tmp_path / "out"), "--quiet"]) == 0
    calibration = read_image(tmp_path / "out" / "labels.tif").metadata["calibration"]
    assert calibration == pytest.approx({"pixel_size_um": 0.5, "frame_interval_min": 5.0})
    tile = sorted((tmp_path / "out" / "tiles" / "labels").glob("tile_*.tif"))[0]
    assert read_image(tile).metadata["calibration"]["pixel_size_um"] == pytest.approx(0.5)


def test_writer_refusal_keeps_its_message_through_layer_save(tmp_path):
    """napari's ``layer.save(path, plugin=...)`` takes a ValueError for "no writer" and drops its message;
    the writer's refusals (InputError, a ValueError) now come as WriteRefused, message kept."""
    from napari.layers import Labels

    from napari_microseg.errors import WriteRefused

    huge = np.zeros((10, 10), np.int64)
    huge[0, 0] = 2**33
    with pytest.raises(WriteRefused, match="relabel"):
        Labels(huge).save(str(tmp_path / "huge.tif"), plugin="napari-microseg")
    assert not (tmp_path / "huge.tif").exists()
