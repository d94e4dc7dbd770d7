"""Behaviour found broken in session 27 (bug hunts and the known-gaps list); each test fails without its fix."""

from __future__ import annotations

import numpy as np
import pytest


def test_prominent_peaks_in_windows_agree_with_h_maxima_of_the_whole_image():
    """Auto-label's seed test made window by window (h-maxima of a whole frame took ~110 bytes
    per pixel, the peak of auto-label) keeps exactly the peaks that h-maxima of the whole image
    keeps, with blocks small enough that the objects fall into many windows."""
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.morphology import h_maxima

    from napari_microseg.autolabel.fluorescence import prominent_peaks
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    img, _ = simulate_nuclei_image((384, 384), n_nuclei=120, seed=5, cluster_fraction=0.5)
    height = ndi.gaussian_filter(img / img.max(), 2.0).astype(np.float32)
    objects, n = ndi.label(height > 0.25)
    assert n > 20
    peaks = peak_local_max(height, min_distance=3, labels=objects, exclude_border=False)
    for prominence in (0.02, 0.05, 0.15):
        whole = ndi.binary_dilation(h_maxima(height, prominence).astype(bool), iterations=1)[tuple(peaks.T)]
        windows = prominent_peaks(height, peaks, objects, prominence, margin=12, block=64)
        assert 0 < whole.sum() < len(peaks)  # the test can tell kept from dropped
        np.testing.assert_array_equal(windows, whole)
    assert prominent_peaks(height, peaks[:0], objects, 0.05).shape == (0,)
