"""CCD class maps by thresholds and shape rules ([C]): simulated frames (exact truth) and real ESIS frames."""

from __future__ import annotations

import numpy as np
import pytest

from napari_microseg.autolabel.ccd import (
    autolabel_ccd,
    autolabel_ccd_details,
    class_agreement,
    detect_taps,
    estimate_baseline,
    find_clusters,
)
from napari_microseg.errors import InputError
from napari_microseg.io.images import read_image
from napari_microseg.simulate.ccd import simulate_ccd_frame

SAMPLE = "src/napari_microseg/sample_data/ccd_fe55_ESIS1_00002_crop.fits.gz"


def test_agreement_with_exact_classes_on_simulated_frames():
    frames = [simulate_ccd_frame(seed=s) for s in range(4)]
    truth = np.stack([f.classes for f in frames])
    pred = np.stack([autolabel_ccd(f.image) for f in frames])
    tab = class_agreement(truth, pred).set_index("name")
    assert tab.loc["background", "f1"] > 0.99
    assert tab.loc["glowing", "f1"] > 0.95
    assert tab.loc["hot pixel", "f1"] > 0.9
    # cluster pixels are labelled from 2 x noise (120 ADC) of noise-free charge: fainter rims are
    # background; what is called a cluster mostly is one
    assert tab.loc["cluster", "precision"] > 0.7 and tab.loc["cluster", "recall"] > 0.35


def test_balanced_layout_glow_band_found():
    # glowing band ~40 % of the columns; cluster pixels from 30 ADC, so the balanced layout needs fewer
    # clusters (at 120 ADC it packs so many that their faint rims raise the noise estimate ~15 %)
    fr = simulate_ccd_frame(seed=0, balanced=True, cluster_threshold=30, glow_probability=1.0)
    res = autolabel_ccd_details(fr.image)
    band = fr.params["glow_band"]
    cols = set(range(band["column"], band["column"] + band["width"]))
    found = set(res.glow_columns.tolist())
    assert len(found & cols) >= 0.95 * len(cols)
    assert len(found - cols) <= 2
    assert abs(res.baseline.taps[0]["pedestal"] - 8800) < 30
    assert abs(res.baseline.taps[0]["noise"] - 60) < 10


def test_shape_rules_hot_lines_vs_clusters():
    rng = np.random.default_rng(0)
    img = 1000 + rng.normal(0, 10, (64, 64))
    img[10:30, 20] += 500  # vertical hot line (1 px wide)
    img[50, 5:40] += 500  # horizontal hot line
    img[40:43, 45:48] += 300  # compact cluster 3x3
    img[5, 55] += 5000  # isolated very bright pixel -> hot
    img[20:22, 50:52] += 400  # 2x2 cluster
    cls = autolabel_ccd(img, hot_pixel_adc=2000)
    assert (cls[10:30, 20] == 2).all() and (cls[50, 5:40] == 2).all()
    assert (cls[40:43, 45:48] == 3).all() and (cls[20:22, 50:52] == 3).all()
    assert cls[5, 55] == 2
    assert (cls == 1).sum() == 0
    assert ((cls > 0).sum() - (20 + 35 + 9 + 1 + 4)) <= 6  # a few rim / noise pixels at most
    # a 3-px-wide bar is no hot line
    img2 = 1000 + rng.normal(0, 10, (64, 64))
    img2[10:30, 20:23] += 500
    assert (autolabel_ccd(img2)[10:30, 20:23] == 3).all()


def test_hot_column_and_glow_band():
    rng = np.random.default_rng(1)
    img = 5000 + rng.normal(0, 20, (128, 128))
    img[:, 60:70] += 1400  # glowing band
    img[:, 100] += 2200  # full-height hot column
    img[30:33, 64:67] += 900  # cluster on the glowing band
    cls = autolabel_ccd(img)
    assert (cls[:, 60:64] == 1).all() and (cls[:, 67:70] == 1).all()
    assert (cls[:, 100] == 2).all()
    assert (cls[30:33, 64:67] == 3).all()
    assert (cls[:, :59] == 0).mean() > 0.99


def test_find_clusters_charge_and_position():
    img = np.full((40, 40), 100.0)
    img[10:12, 20:22] += [[50, 30], [20, 0]]
    img[30, 5] += 80
    cls = np.zeros((40, 40), np.uint8)
    cls[10:12, 20:22] = 3
    cls[30, 5] = 3
    tab = find_clusters(cls, img, pedestal=100.0)
    assert list(tab.columns[:5]) == ["label", "y", "x", "size_px", "charge_adc"]
    assert len(tab) == 2
    big = tab.sort_values("size_px").iloc[-1]
    assert big.size_px == 4 and big.charge_adc == pytest.approx(100.0)
    assert big.y == pytest.approx((50 * 10 + 30 * 10 + 20 * 11) / 100)
    assert big.x == pytest.approx((50 * 20 + 30 * 21 + 20 * 20) / 100)
    assert len(find_clusters(cls, img, pedestal=100.0, max_size=2)) == 1
    assert len(find_clusters(np.zeros_like(cls), img, 100.0)) == 0


def test_cluster_charge_is_measured_above_its_local_background_not_a_hot_column():
    """A cluster beside a hot column (most of it hot) keeps its true charge; before, the column
    baseline was the hot level and the charge came out negative."""
    rng = np.random.default_rng(0)
    img = 1000 + rng.normal(0, 5, (64, 64))
    cls = np.zeros((64, 64), np.uint8)
    img[:, 30] += 3000  # hot column (class 2) over the whole height
    cls[:, 30] = 2
    img[20:22, 30:32] = 1000 + 400  # a cluster straddling the hot column
    cls[20:22, 30:32] = 3
    img[5, 5] += 250  # one far away
    cls[5, 5] = 3
    table = find_clusters(cls, img).sort_values("size_px")
    assert table.charge_adc.iloc[0] == pytest.approx(250, abs=20)
    assert table.charge_adc.iloc[1] == pytest.approx(4 * 400, abs=40)
    assert (table.peak_adc > 0).all()


def test_simulated_cluster_charge_is_recovered():
    fr = simulate_ccd_frame(seed=3, n_clusters=30, glow_probability=0.0, n_hot=0, noise_sd=20.0)
    res = autolabel_ccd_details(fr.image)
    tab = find_clusters(res.classes, fr.image, res.baseline.baseline)
    assert 0.8 * 30 <= len(tab) <= 30
    # summed charge above the pedestal close to the simulated totals (noise-dominated rims lost)
    total_true = fr.clusters[:, 4].sum()
    assert 0.85 * total_true < tab.charge_adc.sum() < 1.05 * total_true


def test_real_fe55_crop(shared_data):
    img = read_image(SAMPLE).data
    assert detect_taps(img)[0] == [220]  # the crop spans the tap boundary at frame row 520
    res = autolabel_ccd_details(img)
    tab = find_clusters(res.classes, img, res.baseline.baseline)
    frac = res.class_fractions
    assert frac[0] > 0.97 and frac[1] == 0
    assert len(tab) > 50
    assert tab.size_px.median() <= 12  # compact clusters of a few pixels
    # both taps get their own pedestal (~80 ADC apart) and a noise of a few ADC
    peds = [t["pedestal"] for t in res.baseline.taps]
    assert len(peds) == 2 and abs(peds[0] - peds[1]) > 40
    assert all(1 < t["noise"] < 10 for t in res.baseline.taps)


def test_real_dark_frame_has_far_fewer_clusters(shared_data):
    crop = (slice(0, 520), slice(0, 1076))  # one tap
    fe = read_image(shared_data / "ccd_fe55" / "ESIS1_00002.fit.gz").data[crop]
    dark = read_image(shared_data / "ccd_fe55" / "ESIS1_00099.fit.gz").data[crop]
    n_fe = len(find_clusters(autolabel_ccd(fe), fe))
    n_dark = len(find_clusters(autolabel_ccd(dark), dark))
    assert n_fe > 300
    assert n_dark < n_fe / 10


def test_taps_forced_and_excluded_columns():
    rng = np.random.default_rng(2)
    img = rng.normal(0, 5, (64, 64)) + 1000
    img[:, 32:] += 300  # right tap
    img[:, 0] += 100  # a prescan-like column
    base = estimate_baseline(img, taps=(1, 2))
    assert base.tap_cols == [32]
    cls = autolabel_ccd(img, taps=(1, 2), exclude_columns=[0])
    assert (cls == 0).all()
    assert (autolabel_ccd(img, taps=(1, 1)) > 0).any()  # one pedestal for both halves is wrong


@pytest.mark.parametrize("bad", [np.zeros((3, 3, 3)), np.array([[np.nan] * 8] * 8), np.zeros((2, 2))])
def test_bad_input(bad):
    with pytest.raises(InputError):
        autolabel_ccd(bad)


def test_class_agreement_refuses_classes_outside_the_range():
    truth = np.zeros(10, int)
    predicted = truth.copy()
    predicted[3] = 4
    with pytest.raises(InputError, match="outside 0..3"):
        class_agreement(truth, predicted)
    with pytest.raises(InputError, match="outside 0..3"):
        class_agreement(truth - 1, truth)


def test_clipped_column_medians_equal_nanmedian_of_the_kept_pixels():
    """The sorted-column shortcut gives np.nanmedian of each column's pixels below the clip (odd and even
    counts, a column with a charge streak, a glowing column)."""
    from napari_microseg.autolabel.ccd import _lowest_values_median

    rng = np.random.default_rng(3)
    data = rng.normal(1000, 10, (301, 40)).astype(np.float32)
    data[::7, 5] += 900  # charge in one column
    data[:, 9] += 300  # a glowing column
    limit = np.median(data, axis=0) + 25
    keep = data < limit
    expected = np.nanmedian(np.where(keep, data, np.nan), axis=0)
    got = _lowest_values_median(np.sort(data, axis=0), keep.sum(axis=0))
    assert (keep.sum(axis=0) % 2 == 0).any() and (keep.sum(axis=0) % 2 == 1).any()
    np.testing.assert_array_equal(got, expected.astype(np.float32))


def test_cluster_on_the_edge_of_a_glowing_band_gets_each_side_its_own_baseline():
    """A cluster straddling a glowing band's edge: with one median of the ring (mostly glow) its pixels
    beside the band went below zero; each pixel now takes the level of the quiet class nearest to it."""
    from napari_microseg.autolabel.ccd import find_clusters

    rng = np.random.default_rng(0)
    image = 8800 + rng.normal(0, 5, (40, 40))
    classes = np.zeros((40, 40), np.uint8)
    image[:, 20:] += 1400  # a glowing band from column 20
    classes[:, 20:] = 1
    image[18:21, 18:24] += 500  # 18 px of charge: 6 beside the band, 12 on it (the ring is mostly glow)
    classes[18:21, 18:24] = 3
    table = find_clusters(classes, image)
    assert len(table) == 1
    assert table.charge_adc.iloc[0] == pytest.approx(18 * 500, rel=0.02)  # one glow-level median: 18*500 - 6*1400
    assert table.peak_adc.iloc[0] == pytest.approx(500, abs=30)
    # away from the edge, one quiet class: the ring's median, as before
    image[30:32, 5:7] += 300
    classes[30:32, 5:7] = 3
    far = find_clusters(classes, image, grow=0).iloc[1]  # the class pixels only: exact arithmetic
    ring = image[27:35, 2:10][classes[27:35, 2:10] == 0]
    assert far.charge_adc == pytest.approx((image[30:32, 5:7] - np.median(ring)).sum(), rel=1e-4)
