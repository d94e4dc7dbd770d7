"""Readers/writers round-trip with real files, and reject bad files with clear messages."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
import tifffile
from astropy.io import fits

from napari_microseg.errors import InputError
from napari_microseg.io.images import read_image, write_fits, write_tiff, write_zarr


def test_tiff_round_trip_real_dsb(shared_data, tmp_path):
    src = sorted((shared_data / "dsb2018" / "images").glob("*.tif"))[0]
    original = tifffile.imread(src)
    image = read_image(src)
    assert image.kind == "tiff"
    np.testing.assert_array_equal(image.data, original)
    out = write_tiff(tmp_path / "copy.tif", image.data)
    np.testing.assert_array_equal(read_image(out).data, original)


def test_tiff_timelapse_multipage(tmp_path):
    stack = (np.arange(5 * 32 * 40) % 251).astype(np.uint8).reshape(5, 32, 40)
    out = write_tiff(tmp_path / "movie.tif", stack)
    back = read_image(out).data
    assert back.shape == (5, 32, 40)
    np.testing.assert_array_equal(back, stack)


def test_write_refuses_to_overwrite(tmp_path):
    target = tmp_path / "a.tif"
    write_tiff(target, np.ones((4, 4), np.uint8))
    with pytest.raises(InputError, match="exists already"):
        write_tiff(target, np.zeros((4, 4), np.uint8))
    assert read_image(target).data.max() == 1  # untouched


def test_fits_real_gz_and_round_trip(shared_data, tmp_path):
    src = shared_data / "ccd_fe55" / "ESIS1_00002.fit.gz"
    image = read_image(src)
    assert image.kind == "fits"
    assert image.data.shape == (1040, 2152)
    assert image.data.dtype == np.uint16  # BZERO-scaled int16 read as unsigned ADC
    assert image.metadata["CAM_ID"].strip() == "ESIS1"
    crop = image.data[:64, :80]
    out = write_fits(tmp_path / "crop.fits", crop, header={"origin": "test"})
    back = read_image(out)
    np.testing.assert_array_equal(back.data, crop)
    assert back.metadata["ORIGIN"] == "test"
    # the same file gzip-compressed by us also reads
    gz = tmp_path / "crop.fits.gz"
    with open(out, "rb") as f_in, gzip.open(gz, "wb") as f_out:
        shutil.copyfileobj(f_in, f_out)
    np.testing.assert_array_equal(read_image(gz).data, crop)


def test_fits_picks_first_hdu_with_image(tmp_path):
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    hdul = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data)])
    path = tmp_path / "ext.fits"
    hdul.writeto(path)
    np.testing.assert_array_equal(read_image(path).data, data)
    with pytest.raises(InputError, match="no image data"):
        read_image(path, hdu=0)


def test_zarr_round_trip_lazy(shared_data, tmp_path):
    import dask.array as da

    src = sorted((shared_data / "dsb2018" / "labels").glob("*.tif"))[1]
    labels = tifffile.imread(src)
    out = write_zarr(tmp_path / "labels.zarr", labels, chunks=(64, 64))
    image = read_image(out)
    assert image.kind == "zarr"
    assert isinstance(image.data, da.Array)
    np.testing.assert_array_equal(image.data.compute(), labels)


def test_reject_empty_file(tmp_path):
    path = tmp_path / "empty.tif"
    path.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_image(path)


def test_reject_text_named_tif(tmp_path):
    path = tmp_path / "notes.tif"
    path.write_text("this is not an image\n")
    with pytest.raises(InputError, match="not a readable TIFF"):
        read_image(path)


def test_reject_fits_without_image_hdu(tmp_path):
    from astropy.table import Table

    path = tmp_path / "table.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(Table({"a": [1, 2, 3]}))]).writeto(path)
    with pytest.raises(InputError, match="no HDU with image data"):
        read_image(path)


def test_reject_one_dimensional_array(tmp_path):
    path = tmp_path / "line.tif"
    tifffile.imwrite(path, np.arange(10, dtype=np.uint16))
    with pytest.raises(InputError, match="not an image"):
        read_image(path)


def test_reject_missing_and_unknown(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "nope.tif")
    other = tmp_path / "x.jp2"
    other.write_bytes(b"\x00\x00")
    with pytest.raises(InputError, match="unsupported"):
        read_image(other)
    broken = tmp_path / "x.png"
    broken.write_bytes(b"\x89PNG")
    with pytest.raises(InputError, match="x.png: not a readable image"):
        read_image(broken)


def test_fits_3d_hdu_is_a_stack(tmp_path):
    from astropy.io import fits

    cube = np.random.default_rng(0).normal(100, 5, (3, 32, 40)).astype(np.float32)
    fits.PrimaryHDU(cube).writeto(tmp_path / "cube.fits")
    image = read_image(tmp_path / "cube.fits")
    assert image.data.shape == (3, 32, 40)  # (T, Y, X) in FITS axis order reversed by astropy
    np.testing.assert_array_equal(np.asarray(image.data), cube)


def test_fits_bscale_bzero_applied(tmp_path):
    from astropy.io import fits

    stored = np.arange(32 * 40, dtype=np.int16).reshape(32, 40)
    hdu = fits.PrimaryHDU(stored)
    hdu.header["BSCALE"] = 2.0
    hdu.header["BZERO"] = 100.0
    hdu.writeto(tmp_path / "scaled.fits")
    image = read_image(tmp_path / "scaled.fits")
    np.testing.assert_allclose(np.asarray(image.data), 100.0 + 2.0 * stored)  # physical values, ADC


def test_fits_with_nan_reads_and_segmenting_it_says_why_not(tmp_path):
    from astropy.io import fits

    from napari_microseg.inference.segment import segment

    frame = np.full((64, 64), 3600.0, np.float32)
    frame[3, 4] = np.nan
    fits.PrimaryHDU(frame).writeto(tmp_path / "nan.fits")
    image = read_image(tmp_path / "nan.fits")
    assert np.isnan(np.asarray(image.data)).sum() == 1  # read as is: the user sees where
    with pytest.raises(InputError, match="NaN"):
        segment("ccd_classes", np.asarray(image.data))


def test_fits_edge_cases_on_writing_and_cropping(tmp_path):
    from napari_microseg.io.images import crop_data_section, read_image, write_fits

    mask = np.zeros((4, 5), bool)
    mask[1, 2] = True
    write_fits(tmp_path / "mask.fits", mask)
    np.testing.assert_array_equal(read_image(tmp_path / "mask.fits").data, mask.astype(np.uint8))
    frame = np.zeros((10, 12), np.float32)
    with pytest.raises(InputError, match="starts below 1"):
        crop_data_section(frame, {"DATASEC": "[0:0,0:0]"})
    with pytest.raises(InputError, match="outside"):
        crop_data_section(frame, {"DATASEC": "[20:30,1:5]"})
    with pytest.raises(InputError, match="outside"):
        crop_data_section(frame, {"DATASEC": "[2:13,1:10]"})  # one column too many: not silently cut
    assert crop_data_section(frame, {"DATASEC": "[2:11,1:10]"})[0].shape == (10, 10)


def test_ccd_pedestal_of_the_wrong_shape_is_a_clear_error():
    from napari_microseg.autolabel.ccd import autolabel_ccd

    with pytest.raises(InputError, match="pedestal of shape"):
        autolabel_ccd(np.full((64, 64), 8800.0, np.float32), pedestal=np.zeros((3, 3)))


@pytest.mark.parametrize("name", ["stack.tif", "stack.ome.tif"])
@pytest.mark.parametrize("n_frames", [3, 4])
def test_written_stacks_read_back_as_frames_not_colours_or_channels(tmp_path, name, n_frames):
    """tifffile alone tags a (3|4, Y, X) stack as one RGB(A) image and an .ome.tif time-lapse as channels."""
    import tifffile

    from napari_microseg.io.images import read_image, write_tiff

    stack = (np.arange(n_frames * 16 * 16).reshape(n_frames, 16, 16) % 251).astype(np.uint16)
    write_tiff(tmp_path / name, stack)
    with tifffile.TiffFile(tmp_path / name) as tif:
        assert tif.series[0].axes == "TYX" and tif.pages[0].photometric == tifffile.PHOTOMETRIC.MINISBLACK
    back = read_image(tmp_path / name)
    assert back.data.shape == stack.shape and np.array_equal(np.asarray(back.data), stack)


def test_physical_calibration_from_imagej_ome_and_ome_zarr_reaches_napari_layers(tmp_path):
    """The pixel size and frame interval a file states become the layer's scale and units (um, minutes)."""
    import json

    import zarr

    from napari_microseg._reader import read_layers

    stack = np.zeros((5, 32, 32), np.uint16)
    tifffile.imwrite(tmp_path / "ij.tif", stack, imagej=True, resolution=(1 / 0.325, 1 / 0.325),
                     metadata={"axes": "TYX", "unit": "micron", "finterval": 300})
    tifffile.imwrite(tmp_path / "ome.ome.tif", stack, metadata={"axes": "TYX", "PhysicalSizeX": 650,
                                                                "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 650,
                                                                "TimeIncrement": 2, "TimeIncrementUnit": "min"})
    group = zarr.open_group(str(tmp_path / "tyx.ome.zarr"), mode="w", zarr_format=2)
    group.create_array("0", shape=stack.shape, dtype=stack.dtype)
    group.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": "t", "type": "time", "unit": "second"},
                                                              {"name": "y", "type": "space", "unit": "micrometer"},
                                                              {"name": "x", "type": "space", "unit": "micrometer"}],
                                   "datasets": [{"path": "0", "coordinateTransformations": [
                                       {"type": "scale", "scale": [120.0, 0.5, 0.5]}]}]}]
    expected = {"ij.tif": (5.0, 0.325), "ome.ome.tif": (2.0, 0.65), "tyx.ome.zarr": (2.0, 0.5)}
    for name, (minutes, um) in expected.items():
        kwargs = read_layers(str(tmp_path / name))[0][1]
        np.testing.assert_allclose(kwargs["scale"], (minutes, um, um), err_msg=name)
        assert kwargs["units"] == ("minute", "micrometer", "micrometer"), name
    plain = tmp_path / "plain.tif"
    write_tiff(plain, stack)
    assert "scale" not in read_layers(str(plain))[0][1]  # no calibration stated: napari's pixels
    json.dumps(read_image(tmp_path / "ij.tif").metadata["calibration"])  # plain numbers, JSON-able


def _pyramid(base: np.ndarray, n_levels: int) -> list[np.ndarray]:
    """Each level half the last in Y and X (every second pixel), like a viewer's pyramid."""
    levels = [base]
    for _ in range(n_levels - 1):
        levels.append(levels[-1][..., ::2, ::2])
    return levels


def test_big_tiff_is_read_lazily_and_pyramids_keep_their_levels(tmp_path):
    """Over the size limit a TIFF is a dask array read chunk by chunk (same values); a pyramidal
    OME-TIFF gives its levels, full resolution first; under the limit (and by default) it is read whole."""
    import dask.array as da

    from napari_microseg._reader import read_layers

    rng = np.random.default_rng(0)
    stack = rng.integers(0, 4000, (4, 256, 320), dtype=np.uint16)
    write_tiff(tmp_path / "movie.tif", stack)
    eager = read_image(tmp_path / "movie.tif")
    lazy = read_image(tmp_path / "movie.tif", lazy_above_bytes=stack.nbytes - 1)
    small = read_image(tmp_path / "movie.tif", lazy_above_bytes=stack.nbytes)
    assert isinstance(eager.data, np.ndarray) and isinstance(small.data, np.ndarray)
    assert isinstance(lazy.data, da.Array) and lazy.levels == [] and lazy.metadata["axes"] == "TYX"
    np.testing.assert_array_equal(lazy.data[2].compute(), stack[2])
    np.testing.assert_array_equal(np.asarray(lazy.data), stack)

    levels = _pyramid(rng.integers(0, 4000, (2, 512, 640), dtype=np.uint16), 3)
    with tifffile.TiffWriter(tmp_path / "pyramid.ome.tif") as tif:
        options = {"tile": (128, 128), "photometric": "minisblack", "compression": "zlib"}
        tif.write(levels[0], subifds=2, metadata={"axes": "TYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5}, **options)
        for level in levels[1:]:
            tif.write(level, subfiletype=1, **options)
    image = read_image(tmp_path / "pyramid.ome.tif", lazy_above_bytes=1 << 40)  # pyramids always lazy
    assert [lvl.shape for lvl in image.levels] == [lvl.shape for lvl in levels]
    assert image.data is image.levels[0]
    for got, want in zip(image.levels, levels):
        np.testing.assert_array_equal(np.asarray(got), want)
    assert isinstance(read_image(tmp_path / "pyramid.ome.tif").data, np.ndarray)  # the CLI: full resolution in memory

    data, kwargs, kind = read_layers(str(tmp_path / "pyramid.ome.tif"))[0]  # napari: one multiscale layer
    assert kwargs["multiscale"] is True and [d.shape for d in data] == [lvl.shape for lvl in levels]
    assert kwargs["scale"] == (1.0, 0.5, 0.5)


def _ome_zarr_pyramid(root, levels: list[np.ndarray], axes: str = "tcyx", bioformats2raw: bool = False) -> None:
    import zarr

    top = zarr.open_group(str(root), mode="w", zarr_format=2)
    group = top
    if bioformats2raw:
        top.attrs["bioformats2raw.layout"] = 3
        group = top.create_group("0")
        top.create_group("OME")
    for i, level in enumerate(levels):
        group.create_array(str(i), shape=level.shape, dtype=level.dtype, chunks=(1, 1, 64, 64))[...] = level
    group.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": a} for a in axes], "datasets": [
        {"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0, 2.0 ** i, 2.0 ** i]}]}
        for i in range(len(levels))]}]


@pytest.mark.parametrize("bioformats2raw", [False, True])
def test_ome_zarr_pyramid_levels_and_bioformats2raw_layout(tmp_path, bioformats2raw):
    """An OME-Zarr multiscale image (plain, or under bioformats2raw's series group "0") gives every
    level with the size-1 channel axis dropped from each; napari gets a multiscale layer."""
    from napari_microseg._reader import read_layers

    rng = np.random.default_rng(1)
    levels = _pyramid(rng.integers(0, 255, (3, 1, 256, 192), dtype=np.uint8), 3)
    _ome_zarr_pyramid(tmp_path / "p.ome.zarr", levels, bioformats2raw=bioformats2raw)
    image = read_image(tmp_path / "p.ome.zarr")
    assert image.metadata["axes"] == "TYX"
    assert [lvl.shape for lvl in image.levels] == [lvl[:, 0].shape for lvl in levels]
    np.testing.assert_array_equal(np.asarray(image.levels[2]), levels[2][:, 0])
    np.testing.assert_array_equal(np.asarray(image.data[1]), levels[0][1, 0])
    data, kwargs, _ = read_layers(str(tmp_path / "p.ome.zarr"))[0]
    assert kwargs["multiscale"] is True and len(data) == 3 and data[0].shape == (3, 256, 192)


def test_png_and_jpeg_exports_are_read_and_segmented(tmp_path, shared_data, capsys):
    """PNG / JPEG exports (the ISL phase / DAPI pair, DSB2018's originals) are read as stored (grey or
    colour, 8 or 16 bit) and segmented by the CLI; napari keeps its own reader for them."""
    import skimage.io

    from napari_microseg._reader import get_reader
    from napari_microseg.cli import main

    grey16 = (np.arange(64 * 48, dtype=np.uint16).reshape(64, 48) * 7)
    skimage.io.imsave(tmp_path / "g.png", grey16, check_contrast=False)
    back = read_image(tmp_path / "g.png")
    assert back.kind == "plain" and back.data.dtype == np.uint16
    np.testing.assert_array_equal(back.data, grey16)
    rgb = np.zeros((40, 50, 3), np.uint8)
    rgb[10:20, 10:20] = 200
    skimage.io.imsave(tmp_path / "c.jpg", rgb, check_contrast=False)
    assert read_image(tmp_path / "c.jpg").data.shape == (40, 50, 3)
    grey_alpha = np.stack([grey16[:, :40].astype(np.uint8), np.full((64, 40), 255, np.uint8)], axis=-1)
    skimage.io.imsave(tmp_path / "la.png", grey_alpha, check_contrast=False)
    np.testing.assert_array_equal(read_image(tmp_path / "la.png").data, grey_alpha[..., 0])  # not a 64-frame stack
    assert get_reader(str(tmp_path / "g.png")) is None

    phase = shared_data / "isl_phase_dapi" / "dapi.png"
    crop = skimage.io.imread(phase)[:256, :256]
    skimage.io.imsave(tmp_path / "dapi_crop.png", crop, check_contrast=False)
    assert main(["segment", "--model", "nuclei_fluorescence_fast", "--input", str(tmp_path / "dapi_crop.png"),
                 "--out", str(tmp_path / "seg")]) == 0
    labels = tifffile.imread(tmp_path / "seg" / "labels" / "dapi_crop.tif")
    assert labels.shape == crop.shape[:2] and labels.max() > 5


def test_png_previews_beside_tiffs_are_left_out_but_a_folder_of_pngs_is_read(tmp_path, capsys):
    """A PNG preview next to its TIFF (same name) must not stop a folder run: it is left out and named;
    a folder holding only PNG exports is segmented."""
    import skimage.io

    from napari_microseg.batch.runner import find_batch_inputs
    from napari_microseg.cli.segment import find_inputs

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    image = (np.random.default_rng(0).random((40, 40)) * 200).astype(np.uint8)
    tifffile.imwrite(mixed / "x.tif", image)
    skimage.io.imsave(mixed / "x.png", image, check_contrast=False)
    skimage.io.imsave(mixed / "overview.png", image, check_contrast=False)
    assert [p.name for p in find_inputs(str(mixed))] == ["x.tif"]
    assert "overview.png" in capsys.readouterr().err
    assert [p.name for p in find_inputs(str(mixed / "*"))] == ["x.tif"]
    ignored = []
    assert [p.name for p, _ in find_batch_inputs(mixed, ignored=ignored)] == ["x.tif"]
    assert sorted(p.name for p in ignored) == ["overview.png", "x.png"]
    only = tmp_path / "pngs"
    only.mkdir()
    for name in ("a.png", "b.png"):
        skimage.io.imsave(only / name, image, check_contrast=False)
    assert [p.name for p in find_inputs(str(only))] == ["a.png", "b.png"]
    assert [p.name for p, _ in find_batch_inputs(only)] == ["a.png", "b.png"]


def test_bioformats2raw_layout_of_ngff_05_is_found(tmp_path):
    """NGFF 0.5 (Zarr v3) puts the layout key under "ome"; the first series is read as in 0.4."""
    import zarr

    top = zarr.open_group(str(tmp_path / "b2r.zarr"), mode="w", zarr_format=3)
    top.attrs["ome"] = {"version": "0.5", "bioformats2raw.layout": 3}
    series = top.create_group("0")
    data = np.arange(2 * 32 * 48, dtype=np.uint16).reshape(2, 32, 48)
    series.create_array("0", shape=data.shape, dtype=data.dtype)[...] = data
    series.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": [{"name": "t"}, {"name": "y"}, {"name": "x"}],
                                                              "datasets": [{"path": "0", "coordinateTransformations": [
                                                                  {"type": "scale", "scale": [1.0, 1.0, 1.0]}]}]}]}
    image = read_image(tmp_path / "b2r.zarr")
    np.testing.assert_array_equal(np.asarray(image.data), data)
