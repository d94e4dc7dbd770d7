"""The vectorised object table is the same whatever the row-band size, label dtype or intensity dtype."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from napari_microseg.measure.tables import _fast_props


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.int32, np.uint64])
def test_band_size_does_not_change_measurements(dtype):
    rng = np.random.default_rng(1)
    field = ndi.gaussian_filter(rng.random((97, 131)), 2.5)
    lab, n = ndi.label(field > np.percentile(field, 55))
    lab = lab.astype(dtype)
    inten = rng.integers(0, 255, lab.shape).astype(np.uint8)
    whole = _fast_props(lab, inten)
    assert len(whole) == n > 10
    for band_pixels in (1, 131 * 7, 131 * 40 + 3):  # one row, 7 rows, 40 rows per band
        pd.testing.assert_frame_equal(_fast_props(lab, inten, band_pixels=band_pixels), whole,
                                      check_exact=False, rtol=1e-10)
    # coordinates are global: an object in the last band has its true centroid and bbox
    last = whole.loc[whole["label"] == int(lab[-40:].max())].iloc[0]
    ys, xs = np.nonzero(lab == last["label"])
    assert last["y"] == pytest.approx(ys.mean()) and last["x"] == pytest.approx(xs.mean())
    assert (last["bbox_y0"], last["bbox_y1"]) == (ys.min(), ys.max() + 1)
