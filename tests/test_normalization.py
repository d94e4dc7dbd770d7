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
