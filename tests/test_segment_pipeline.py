"""segment_image / segment: whole-frame normalisation, tiled == untiled, stacks, zarr out, dask in, tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_microseg.errors import InputError
from napari_microseg.inference.segment import SegmentResult, make_band_transform, segment, segment_image
from napari_microseg.io.models import LoadedModel
from napari_microseg.models.registry import build_model
from napari_microseg.progress import Progress
from napari_microseg.training.normalize import normalize
from napari_microseg.training.predict import predict_image


def tiny_loaded(output_mode="binary", n_classes=1, seed=0, normalization=None):
    torch.manual_seed(seed)
    cfg_model = {"preset": "small", "n_classes": n_classes, "depth": 2, "base_filters": 4}
    net = build_model(cfg_model).eval()
    config = {"model": cfg_model, "output_mode": output_mode, "patch_size": [64, 64],
              "normalization": normalization or {"kind": "percentile", "p_low": 1.0, "p_high": 99.8}}
    if output_mode == "three_class":
        config["class_names"] = ["background", "interior", "boundary"]
    return LoadedModel(model=net, config=config, device="cpu")


def identity_fg(batch):
    """'Network' whose foreground probability is the normalised input itself."""
    return np.clip(batch, 0, 1).astype(np.float32)


def three_class_fake(batch):
    """background / interior / boundary probabilities from the normalised input."""
    x = np.clip(batch[:, 0], 0, 1)
    edge = np.clip(np.abs(x - 0.5) < 0.15, 0, 1) * 0.5
    return np.stack([1 - x, x * (1 - edge), x * edge], axis=1).astype(np.float32)


def blobs_image(shape=(150, 170), seed=0, gradient=True):
    rng = np.random.default_rng(seed)
    img = np.zeros(shape, np.float32)
    for _ in range(12):
        y, x = rng.integers(8, np.array(shape) - 8)
        yy, xx = np.ogrid[: shape[0], : shape[1]]
        img[(yy - y) ** 2 + (xx - x) ** 2 <= rng.integers(4, 7) ** 2] = 200
    img = ndi.gaussian_filter(img, 1) + 20
    if gradient:  # right half much brighter background: per-tile normalisation would disagree
        img[:, shape[1] // 2:] += 60
    return img.astype(np.float32)


def test_band_transform_uses_whole_frame_statistics():
    img = blobs_image()
    transform, limits = make_band_transform(img, {"kind": "percentile", "p_low": 1, "p_high": 99.8})
    band = transform(img[40:80], 0)
    np.testing.assert_allclose(band, normalize(img, {"kind": "percentile", "p_low": 1, "p_high": 99.8})[40:80],
                               rtol=1e-5, atol=1e-6)
    stack = np.stack([img, img * 3])
    transform, _ = make_band_transform(stack, {"kind": "minmax"})
    np.testing.assert_allclose(transform(stack[1, :10], 1), normalize(stack[1], "minmax")[:10], atol=1e-6)
    fixed, _ = make_band_transform(img, {"kind": "fixed", "offset": 20, "scale": 10})
    np.testing.assert_allclose(fixed(img[:5], 0), (img[:5] - 20) / 10, rtol=1e-6)
    bad = img.copy()
    bad[3, 3] = np.nan
    transform, _ = make_band_transform(bad, "percentile")
    with pytest.raises(InputError, match="NaN"):
        transform(bad[:10], 0)


def test_segment_identity_network_matches_whole_image_threshold():
    img = blobs_image()
    loaded = tiny_loaded()
    res = segment(loaded, img, tile=64, overlap=16, predict_fn=identity_fg, min_size=0, fill_holes=False)
    assert isinstance(res, SegmentResult)
    expected, n = ndi.label(normalize(img, loaded.normalization) > 0.5, structure=np.ones((3, 3)))
    assert res.labels.dtype == np.uint16 and res.labels.shape == img.shape
    assert res.labels.max() == n
    np.testing.assert_array_equal(res.labels > 0, expected > 0)
    # probabilities kept for small inputs, (K, Y, X)
    assert res.probabilities.shape == (1,) + img.shape
    # objects and counts tables agree with the labels
    assert list(res.objects.columns[:5]) == ["t", "label", "y", "x", "area"]
    assert len(res.objects) == n
    assert res.counts.loc[0, "count"] == n
    assert res.objects.area.sum() == (res.labels > 0).sum()
    assert res.settings["tile"] == 64 and res.settings["output_mode"] == "binary"


def test_unet_tiled_close_to_untiled():
    img = blobs_image((140, 200), gradient=False)
    loaded = tiny_loaded(seed=3)
    res = segment(loaded, img, tile=64, overlap=24)
    full = predict_image(loaded, img)
    diff = np.abs(res.probabilities - full)
    assert np.percentile(diff, 99) < 0.05
    assert diff.mean() < 0.01


def test_three_class_stack_zarr_out_dask_in(tmp_path):
    import dask.array as da
    import zarr

    img = np.stack([blobs_image(seed=s) for s in range(3)])
    loaded = tiny_loaded("three_class", 3, seed=1)
    out = zarr.open_array(str(tmp_path / "labels.zarr"), mode="w", shape=img.shape, chunks=(1, 64, 64), dtype="uint32")
    gen = segment_image(loaded, da.from_array(img, chunks=(1, 75, 85)), tile=64, overlap=16, out=out,
                        keep_probabilities=False, predict_fn=three_class_fake)
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            res = stop.value
            break
    assert all(isinstance(e, Progress) for e in events) and events[-1].done == events[-1].total
    assert res.labels is out and res.probabilities is None
    ref = segment(loaded, img, tile=64, overlap=16, predict_fn=three_class_fake)
    assert ref.labels.max() >= 5
    np.testing.assert_array_equal(np.asarray(zarr.open_array(str(tmp_path / "labels.zarr"), mode="r")[:]), ref.labels)
    assert ref.probabilities.shape == (3, 3) + img.shape[1:]
    np.testing.assert_allclose(ref.probabilities.sum(1), 1.0, atol=1e-5)
    assert res.counts.t.tolist() == [0, 1, 2]
    assert res.counts["count"].tolist() == [int((np.unique(f) > 0).sum()) for f in ref.labels]
    assert set(res.objects.t) == {0, 1, 2}
    # the random-weight network runs through the same path
    rand = segment(loaded, img[:1], tile=64, overlap=16)
    assert rand.labels.shape == (1,) + img.shape[1:] and rand.probabilities.shape == (1, 3) + img.shape[1:]


def test_multiclass_counts_and_fractions():
    loaded = tiny_loaded("multiclass", 4)
    loaded.config["class_names"] = ["background", "glowing", "hot pixel", "cluster"]

    def fake(batch):
        x = batch[:, 0]
        p = np.zeros((x.shape[0], 4) + x.shape[1:], np.float32)
        p[:, 0] = 0.2
        p[:, 3] = (x > 0.6) * 0.8
        return p

    img = np.zeros((80, 90), np.float32)
    img[10:14, 10:14] = 1
    img[50:53, 60:63] = 1
    res = segment(loaded, img, tile=64, overlap=16, predict_fn=fake)
    assert res.labels.dtype == np.uint8 and set(np.unique(res.labels).tolist()) == {0, 3}
    # class names become column names without spaces ("hot pixel" -> count_hot_pixel)
    assert res.counts.loc[0, "count_cluster"] == 2 and res.counts.loc[0, "count_hot_pixel"] == 0
    assert res.counts.loc[0, "fraction_cluster"] == pytest.approx((16 + 9) / img.size)
    assert set(res.objects["class"]) == {"cluster"}
    # each object's mean probability of its class (objects.csv: ..., class, probability)
    np.testing.assert_allclose(res.objects["probability"], 0.8, atol=1e-3)


def test_bad_input():
    loaded = tiny_loaded()
    with pytest.raises(InputError):
        segment(loaded, np.zeros((2, 3, 10, 10)))
    with pytest.raises(InputError):
        segment(loaded, np.zeros((0, 10)))
    with pytest.raises(InputError):
        segment(loaded, np.zeros((10, 10)), out=np.zeros((10, 11)))
    img = blobs_image((40, 40))
    for settings, message in (({"tile": 0}, "tile must be"), ({"tile": 2.5}, "tile must be"),
                              ({"overlap": float("nan")}, "overlap must be"), ({"batch_size": 0}, "batch_size must be"),
                              ({"threshold": float("nan")}, "threshold must be"), ({"threshold": 2.0}, "threshold must be"),
                              ({"postprocess_options": {"bogus": 1}}, "three-class models only")):
        with pytest.raises(InputError, match=message):
            segment(loaded, img, predict_fn=identity_fg, **settings)
    three = tiny_loaded("three_class", 3)
    with pytest.raises(InputError, match="unknown post-processing option"):
        segment(three, img, predict_fn=three_class_fake, postprocess_options={"bogus": 1})
    with pytest.raises(InputError, match="unknown seed_method"):
        segment(three, img, predict_fn=three_class_fake, postprocess_options={"seed_method": "foo"})


def test_flip_averaged_predictor_is_flip_equivariant():
    from napari_microseg.inference.segment import flip_averaged

    rng = np.random.default_rng(0)
    weights = rng.random((3, 5, 5)).astype(np.float32)

    def asymmetric(batch):  # a predictor that is not flip-equivariant: correlation with fixed kernels
        from scipy import ndimage as ndi

        return np.stack([np.stack([ndi.correlate(b[0], w) for w in weights]) for b in batch]).astype(np.float32)

    batch = rng.random((2, 1, 16, 20)).astype(np.float32)
    tta = flip_averaged(asymmetric)
    out = tta(batch)
    assert out.shape == (2, 3, 16, 20)
    flipped = tta(np.ascontiguousarray(batch[..., ::-1]))
    np.testing.assert_allclose(flipped[..., ::-1], out, atol=1e-5)  # averaging made it equivariant
    assert not np.allclose(asymmetric(np.ascontiguousarray(batch[..., ::-1]))[..., ::-1], asymmetric(batch), atol=1e-3)


def test_out_array_too_small_for_the_labels_is_refused():
    """400 separate dots do not fit a uint8 output array: refused, never wrapped around."""
    img = np.zeros((60, 60), np.float32)
    img[::3, ::3] = 100.0
    loaded = tiny_loaded(normalization={"kind": "fixed", "scale": 100.0, "offset": 0.0})
    with pytest.raises(InputError, match="does not fit the output array's dtype uint8"):
        segment(loaded, img, tile=64, predict_fn=identity_fg, min_size=0, fill_holes=False,
                out=np.zeros(img.shape, np.uint8))
    out = np.zeros(img.shape, np.uint16)
    res = segment(loaded, img, tile=64, predict_fn=identity_fg, min_size=0, fill_holes=False, out=out)
    assert out.max() == 400 and len(res.objects) == 400


def test_multiclass_probability_follows_the_shape_rules():
    """A compact 'hot' blob becomes a cluster by the shape rules: its probability is P(cluster), not P(hot)."""
    loaded = tiny_loaded("multiclass", 4)
    loaded.config["class_names"] = ["background", "glowing", "hot pixel", "cluster"]

    def fake(batch):
        x = batch[:, 0]
        p = np.zeros((x.shape[0], 4) + x.shape[1:], np.float32)
        blob = x > 0.6
        p[:, 0] = np.where(blob, 0.1, 0.9)
        p[:, 2] = np.where(blob, 0.85, 0.0)
        p[:, 3] = np.where(blob, 0.05, 0.0)
        return p

    img = np.zeros((64, 64), np.float32)
    img[20:24, 30:34] = 1
    plain = segment(loaded, img, tile=64, predict_fn=fake)
    assert plain.objects["class"].tolist() == ["hot pixel"]
    np.testing.assert_allclose(plain.objects["probability"], 0.85, atol=1e-3)
    ruled = segment(loaded, img, tile=64, predict_fn=fake, postprocess_options={"shape_rules": True})
    assert ruled.objects["class"].tolist() == ["cluster"]
    np.testing.assert_allclose(ruled.objects["probability"], 0.05, atol=1e-3)
