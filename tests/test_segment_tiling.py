"""Tiled prediction: equals untiled prediction, no seams, stacks, zarr and dask in/out, small images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_microseg.errors import InputError
from napari_microseg.inference.tiling import (
    fitted_tile,
    blending_window,
    count_tiles,
    predict_tiled,
    predict_tiled_iter,
    taper_1d,
    tile_starts,
)
from napari_microseg.progress import Progress


def smooth_predictor(batch: np.ndarray) -> np.ndarray:
    """Translation-equivariant 2-channel 'network': local mean (5x5) and the squared input."""
    x = batch[:, 0]
    return np.stack([ndi.uniform_filter(x, size=(1, 5, 5), mode="reflect"), x**2], axis=1)


def _conv_predictor(seed: int = 0):
    torch.manual_seed(seed)
    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(4, 3, 3, padding=1))
    conv.eval()

    def fn(batch: np.ndarray) -> torch.Tensor:
        with torch.inference_mode():
            return torch.softmax(conv(torch.from_numpy(batch)), dim=1)
    return fn


def test_tile_starts_cover_and_end_exactly():
    """Tiles start on the 16 px grid (a U-Net's output is the same only for shifts of a multiple of 16), overlap
    by the overlap asked for (or 16 px where that needs no more tiles than without the grid), and the last one
    reaches the image's end, by less than 16 px past it."""
    for length, tile, ov in [(1000, 256, 32), (256, 256, 32), (257, 256, 32), (100, 256, 0), (513, 64, 16),
                             (603, 512, 32), (1025, 512, 32), (1000, 100, 10), (1000, 512, 24), (1000, 512, 8)]:
        starts = tile_starts(length, tile, ov)
        assert starts[0] == 0 and all(s % 16 == 0 for s in starts)
        if length > tile:
            assert length <= starts[-1] + tile < length + 16
            assert all(b - a <= tile - min(ov, 16) for a, b in zip(starts, starts[1:]))
            covered = np.zeros(length, bool)
            for s in starts:
                covered[s:s + tile] = True
            assert covered.all()
    assert tile_starts(1000, 512, 24) == [0, 496]  # two tiles, as before the grid (not three)


def test_taper_is_partition_of_unity_and_positive():
    tile, ov = 64, 16
    w = taper_1d(tile, ov)
    assert w.min() > 0 and w.max() == 1
    # two neighbours offset by tile - overlap sum to one over the overlap
    np.testing.assert_allclose(w[tile - ov:] + w[:ov], 1.0, atol=1e-12)
    win = blending_window((64, 32), (16, 8), border=(True, False, False, True))
    assert win.shape == (64, 32) and win.dtype == np.float32
    assert np.all(win[0, 8:] == 1.0)  # top edge on the image border: not tapered
    assert np.all(win[8:-16, -1] == 1.0)  # right edge on the image border
    assert win[-1, 0] < 0.01  # inner corner tapered


def test_tiled_equals_untiled_away_from_tile_edges():
    rng = np.random.default_rng(1)
    img = rng.random((301, 517)).astype(np.float32)
    full = smooth_predictor(img[None, None])[0]
    out = predict_tiled(img, smooth_predictor, 2, tile=64, overlap=16, batch_size=3)
    assert out.shape == (2, 301, 517) and out.dtype == np.float32
    # pointwise channel is exact everywhere; neighbourhood channel differs only by
    # tile-edge effects weighted by the tiny taper weight
    np.testing.assert_allclose(out[1], full[1], rtol=1e-5)
    # away from the image's bottom / right border (2 px, the filter's reach), where the last tile, started on the
    # 16 px grid, runs past the image into the tiler's padding and the reference sees its own
    inner = (slice(None, -2), slice(None, -2))
    np.testing.assert_allclose(out[0][inner], full[0][inner], atol=5e-3)
    # without blending (plain stitching) the error at tile edges would be ~0.1
    assert np.abs(out[0][inner] - full[0][inner]).mean() < 1e-4


def test_conv_model_no_seams():
    fn = _conv_predictor()
    rng = np.random.default_rng(2)
    img = ndi.gaussian_filter(rng.random((200, 260)), 3).astype(np.float32)
    full = fn(img[None, None]).numpy()[0]
    out = predict_tiled(img, fn, 3, tile=64, overlap=0.25)
    np.testing.assert_allclose(out.sum(0), 1.0, atol=1e-5)  # blended softmax stays normalised
    err = np.abs(out - full)[:, :-2, :-2]  # away from the bottom / right border (the last tile's padding)
    assert err.max() < 2e-3
    # a seam would show as a jump in the difference along tile borders
    jumps = np.abs(np.diff(out[0], axis=1)).max()
    assert jumps < np.abs(np.diff(full[0], axis=1)).max() + 1e-3


def test_unet_tiles_on_the_16_px_grid_give_the_same_output_far_from_any_edge():
    """A U-Net's output is the same for inputs shifted by a multiple of 16 px only: the last tile, shifted back to
    end at the image's edge, lay off that grid (starts 0, 44 for 300 rows; 0, 49 for 305), and 5 rows added at
    the bottom changed probabilities by up to 0.5 some 100 px above them. On the grid they do not."""
    from napari_microseg.models.unet import UNet

    torch.manual_seed(0)
    net = UNet(depth=3, base_filters=4, batch_norm=False, dropout=0).eval()

    def fn(batch: np.ndarray) -> torch.Tensor:
        with torch.inference_mode():
            return torch.sigmoid(net(torch.from_numpy(batch)))

    img = ndi.gaussian_filter(np.random.default_rng(4).random((305, 96)), 2).astype(np.float32) * 4
    short = predict_tiled(img[:300], fn, 1, tile=256, overlap=32)
    longer = predict_tiled(img, fn, 1, tile=256, overlap=32)
    far = slice(110, 190)  # > 50 px from every tile edge and from the bottom
    np.testing.assert_allclose(short[0, far], longer[0, far], atol=1e-5)


def test_constant_predictor_is_constant():
    def const(batch):
        return np.full((batch.shape[0], 1) + batch.shape[2:], 0.7, np.float32)

    out = predict_tiled(np.zeros((130, 300), np.uint8), const, 1, tile=48, overlap=12)
    np.testing.assert_allclose(out, 0.7, rtol=1e-6)


def test_small_image_is_padded_and_batches_have_tile_shape():
    seen = []

    def fn(batch):
        seen.append(batch.shape)
        return smooth_predictor(batch)

    img = np.random.default_rng(3).random((20, 37)).astype(np.float32)
    out = predict_tiled(img, fn, 2, tile=64, overlap=16)
    assert out.shape == (2, 20, 37)
    assert all(s[1:] == (1, 64, 64) for s in seen)
    np.testing.assert_allclose(out[1], img**2, rtol=1e-6)


def test_stack_progress_and_per_frame_transform():
    img = np.stack([np.full((100, 90), 1.0), np.full((100, 90), 3.0)]).astype(np.float32)
    gen = predict_tiled_iter(img, smooth_predictor, 2, tile=48, overlap=8, batch_size=2,
                             transform=lambda band, t: band * (t + 1))
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            out = stop.value
            break
    assert all(isinstance(e, Progress) for e in events)
    assert events[-1].done == events[-1].total == count_tiles(img.shape, 48, 8)
    assert out.shape == (2, 2, 100, 90)
    np.testing.assert_allclose(out[0, 0], 1.0, rtol=1e-6)
    np.testing.assert_allclose(out[1, 0], 6.0, rtol=1e-6)  # frame 1: 3.0 * 2


def test_zarr_in_zarr_out_and_dask_in(tmp_path):
    import dask.array as da
    import zarr

    rng = np.random.default_rng(4)
    img = (rng.random((3, 150, 170)) * 1000).astype(np.uint16)
    src = zarr.open_array(str(tmp_path / "in.zarr"), mode="w", shape=img.shape, chunks=(1, 64, 64), dtype="uint16")
    src[:] = img
    dst = zarr.open_array(str(tmp_path / "out.zarr"), mode="w", shape=(3, 2, 150, 170), chunks=(1, 1, 64, 64),
                          dtype="float32")
    ref = predict_tiled(img, smooth_predictor, 2, tile=64, overlap=16)
    res = predict_tiled(src, smooth_predictor, 2, tile=64, overlap=16, out=dst)
    assert res is dst
    np.testing.assert_allclose(np.asarray(zarr.open_array(str(tmp_path / "out.zarr"), mode="r")[:]), ref, rtol=1e-6)
    res_dask = predict_tiled(da.from_array(img, chunks=(1, 50, 50)), smooth_predictor, 2, tile=64, overlap=16)
    np.testing.assert_allclose(res_dask, ref, rtol=1e-6)


def test_bad_inputs():
    with pytest.raises(InputError):
        predict_tiled(np.zeros((2, 3, 4, 5)), smooth_predictor, 2)
    with pytest.raises(ValueError, match="shape"):
        predict_tiled(np.zeros((40, 40)), smooth_predictor, 3, tile=32)  # wrong channel count
    with pytest.raises(ValueError, match="out has shape"):
        predict_tiled(np.zeros((40, 40)), smooth_predictor, 2, tile=32, out=np.zeros((2, 40, 41)))


@pytest.mark.parametrize("length, max_tile, overlap", [(2048, 256, 32), (1024, 512, 32), (520, 512, 32), (696, 512, 32),
                                                      (512, 512, 32), (100, 512, 32), (8192, 512, 32), (300, 256, 64)])
def test_fitted_tile_needs_no_more_tiles_and_no_more_pixels(length, max_tile, overlap):
    side = fitted_tile(length, max_tile, overlap)
    assert side % 16 == 0 and side <= max_tile
    n_max, n_fit = len(tile_starts(length, max_tile, overlap)), len(tile_starts(length, side, overlap))
    assert n_fit == n_max  # as many tiles, so each is no larger than needed
    if length > side:
        assert side - 16 < -(-(length + (n_fit - 1) * overlap) // n_fit)  # and no larger than that needs
    starts = tile_starts(length, side, overlap)
    assert starts[0] == 0 and max(length, side) <= starts[-1] + side < max(length, side) + 16
    assert all(b - a <= side - min(overlap, 16) for a, b in zip(starts, starts[1:]))  # neighbours overlap


def test_segment_fits_its_tiles_to_the_frame():
    """A 512 x 512 frame is one 512 px tile (was nine 256 px tiles: 2.25x the pixels); 520 x 696 takes 2 x 2."""
    from napari_microseg.inference.segment import segment
    from napari_microseg.io.models import load_model

    loaded = load_model("nuclei_fluorescence_fast", device="cpu")
    shapes = []

    def recording(batch):
        shapes.append(batch.shape)
        return np.full((batch.shape[0], 4) + batch.shape[2:], 0.25, np.float32)

    result = segment(loaded, np.zeros((512, 512), np.float32), predict_fn=recording, measure=False)
    assert shapes == [(1, 1, 512, 512)] and result.settings["tiles_yx"] == [512, 512]
    shapes.clear()
    segment(loaded, np.zeros((520, 696), np.float32), predict_fn=recording, measure=False)
    assert sum(s[0] for s in shapes) == 4 and {s[2:] for s in shapes} == {(288, 368)}
    shapes.clear()
    segment(loaded, np.zeros((600, 600), np.float32), predict_fn=recording, measure=False, tile=256, batch_size=4)
    assert {s[2:] for s in shapes} == {(224, 224)} and sum(s[0] for s in shapes) == 9


def test_the_run_records_the_overlap_used_not_the_one_asked():
    """An overlap above half the tile is clipped to half; segment_run.json and the settings say so."""
    import numpy as np

    from napari_microseg.inference.segment import segment
    from napari_microseg.io.models import load_model

    image = np.random.default_rng(1).random((96, 96)).astype(np.float32)
    result = segment(load_model("nuclei_fluorescence_fast"), image, tile=64, overlap=600, measure=False)
    assert result.settings["overlap"] == 32
    assert segment(load_model("nuclei_fluorescence_fast"), image, tile=64, overlap=0.25, measure=False).settings["overlap"] == 16
