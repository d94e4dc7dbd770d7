"""Pedestal normalisation: the same charge above different pedestals gives the same network input."""

from __future__ import annotations

import numpy as np
import pytest

from napari_microseg.errors import InputError
from napari_microseg.inference.segment import make_band_transform
from napari_microseg.training.normalize import make_normalization_spec, normalization_limits, normalize


def test_pedestal_removes_camera_offset_keeps_adc_scale():
    rng = np.random.default_rng(0)
    charge = np.zeros((64, 64), np.float32)
    charge[10:12, 20:22] = 1500.0  # a cluster, ADC above pedestal
    noise = rng.normal(0, 60, charge.shape).astype(np.float32)
    spec = {"kind": "pedestal", "scale": 1000.0}
    a = normalize(8800 + noise + charge, spec)
    b = normalize(3600 + noise + charge, spec)
    np.testing.assert_allclose(a, b, atol=1e-3)
    assert a[10, 20] == pytest.approx(1.5, abs=0.2)  # ADC / scale, no per-image stretch
    offset, scale = normalization_limits(3600 + noise + charge, spec)
    assert offset == pytest.approx(3600, abs=5) and scale == 1000.0


def test_band_transform_matches_whole_image_for_every_kind():
    rng = np.random.default_rng(1)
    image = rng.gamma(2.0, 300.0, (3, 80, 90)).astype(np.float32)
    for spec in ("percentile", "minmax", {"kind": "fixed", "offset": 100, "scale": 7}, {"kind": "pedestal", "scale": 50}, "none"):
        transform, _ = make_band_transform(image, make_normalization_spec(spec))
        for t in range(3):
            band = transform(image[t, 20:40], t)
            np.testing.assert_allclose(band, normalize(image[t], spec)[20:40], rtol=1e-5, atol=1e-5)


def test_pedestal_needs_nonzero_scale():
    with pytest.raises(InputError, match="non-zero scale"):
        make_normalization_spec({"kind": "pedestal", "scale": 0})


def test_pedestal_mode_stays_on_the_pedestal_when_signals_cover_most_of_the_frame():
    from napari_microseg.simulate.ccd import simulate_ccd_frame
    from napari_microseg.training.normalize import normalization_limits, pedestal_mode

    frame = simulate_ccd_frame(shape=(256, 256), seed=4, balanced=True, glow_probability=1.0)  # 41 % background
    assert abs(np.median(frame.image) - 8800) > 500  # the median sits in the signal
    assert abs(pedestal_mode(frame.image) - 8800) < 15  # the histogram peak does not (noise sd 60)
    offset, scale = normalization_limits(frame.image, {"kind": "pedestal", "scale": 200, "estimator": "mode"})
    assert abs(offset - 8800) < 15 and scale == 200
    # default estimator is still the median (models trained with it keep their scale)
    assert normalization_limits(frame.image, {"kind": "pedestal", "scale": 200})[0] == pytest.approx(float(np.median(frame.image)))
    natural = simulate_ccd_frame(shape=(256, 256), seed=5)
    assert abs(pedestal_mode(natural.image) - 8800) < 10
    assert pedestal_mode(np.full((8, 8), 7.0)) == 7.0  # flat frame


def test_pedestal_estimator_is_validated():
    from napari_microseg.errors import InputError
    from napari_microseg.training.normalize import make_normalization_spec

    assert make_normalization_spec({"kind": "pedestal", "scale": 2, "estimator": "mode"})["estimator"] == "mode"
    assert "estimator" not in make_normalization_spec({"kind": "pedestal", "scale": 2})
    with pytest.raises(InputError, match="estimator"):
        make_normalization_spec({"kind": "pedestal", "scale": 2, "estimator": "mean"})
