"""Property tests of the response-image simulator ([R])."""

import numpy as np
import pytest

from napari_microseg.errors import InputError
from napari_microseg.simulate.response import (
    BAD_KINDS,
    KINDS,
    balanced_kind,
    build_balanced_set,
    fitted_limits,
    simulate_response_image,
)


def _background_stats(r, width):
    """Measured noise sd (far from the column) and right-edge dip depth, in the bed region."""
    p = r.params
    x0, nx = p["column_x0"], r.image.shape[1]
    img = r.image.astype(float)
    below = int(max(b[1] for b in p["bed"])) + 3
    region = img[below:]
    far = [c for c in range(nx) if c < x0 - 8 or c >= x0 + width + 8]
    sd = region[:, far].std()
    profile = region.mean(0)
    base = region[:, x0 + 3 : x0 + width - 4].mean()
    dip = base - profile[x0 + width - 3 : x0 + width + 3].min()
    return sd, dip


@pytest.mark.parametrize("seed", range(5))
def test_background_noise_and_edges_within_fitted_lines(seed):
    r = simulate_response_image("good_empty", shape=(300, 80), seed=seed)
    mu = r.params["background_mean"]
    assert 400 <= mu <= 1200
    lim = fitted_limits(mu)
    sd, dip = _background_stats(r, 29)
    lo, hi = lim["noise_sd"]
    assert lo * 0.9 - 0.5 <= sd <= hi * 1.1 + 0.5
    assert abs(sd - r.params["noise_sd"]) < 0.1 * r.params["noise_sd"] + 0.5
    lo, hi = lim["peak_diff"]
    assert lo * 0.85 - 2 <= dip <= hi * 1.15 + 2
    assert abs(dip - r.params["peak_diff"]) < 0.15 * r.params["peak_diff"] + 2
    r_lo, r_hi = lim["brightness_ratio"]
    assert r_lo <= r.params["brightness_ratio"] <= r_hi


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("width", [29, 31])
def test_integration_area_and_artefact_masks(kind, width):
    r = simulate_response_image(kind, column_width=width, seed=11)
    assert r.image.dtype == np.uint16 and r.image.shape == (96, 64)
    assert r.integration_mask.sum() == width * 30
    # vertical sides: the area spans exactly `width` columns
    assert np.count_nonzero(r.integration_mask.any(0)) == width
    assert r.label == ("good" if kind.startswith("good") else "bad") and r.subclass == kind
    if kind.startswith("good"):
        assert not r.artefact_mask.any()
    else:
        assert r.artefact_mask.any()
    if kind in ("spike", "fiber", "line", "dark_spot", "saturated"):
        assert not (r.artefact_mask & ~r.integration_mask).any()


@pytest.mark.parametrize("seed", range(4))
def test_dark_spot_never_below_image_minimum(seed):
    r = simulate_response_image("dark_spot", seed=seed, signal_peak=30000)
    floor = r.params["min_before_dark_spot"]
    assert r.image[r.artefact_mask].min() >= np.floor(floor)
    # same seed without the spot: identical image, except darker at the spot
    clean = simulate_response_image("good_signal", seed=seed, signal_peak=30000)
    diff = r.image.astype(float) - clean.image.astype(float)
    assert diff.max() <= 1
    assert diff[r.artefact_mask].mean() < -1000
    assert np.abs(diff[r.artefact_mask]).sum() > 0.7 * np.abs(diff).sum()  # the darkening is in the spot


def test_saturated_images_have_many_saturated_pixels():
    counts = []
    for seed in range(12):
        r = simulate_response_image("saturated", seed=seed)
        counts.append(np.count_nonzero(r.image == 65535))
        assert r.artefact_mask.any()  # saturation reaches the integration area
        good = simulate_response_image("good_signal", seed=seed)
        assert np.count_nonzero(good.image == 65535) == 0
    assert min(counts) >= 1 and np.median(counts) > 100


def test_signal_sits_under_the_bed_top_inside_the_column():
    r = simulate_response_image("good_signal", seed=3, signal_peak=30000)
    img = r.image.astype(float)
    y, x = np.unravel_index(np.argmax(img), img.shape)
    x0 = r.params["column_x0"]
    assert x0 <= x < x0 + 29
    bed_rows = [b[1] for b in r.params["bed"]]
    assert min(bed_rows) - 1 <= y <= max(bed_rows) + 20
    assert img.max() > 20000


def test_balanced_set_is_balanced_and_nested():
    big = build_balanced_set(48, seed=7, shape=(80, 50))
    small = build_balanced_set(24, seed=7, shape=(80, 50))
    labels = [r.label for r in big]
    assert labels.count("good") == labels.count("bad") == 24
    bad = [r.subclass for r in big if r.label == "bad"]
    counts = [bad.count(k) for k in BAD_KINDS]
    assert max(counts) - min(counts) <= 1
    for a, b in zip(small, big[:24]):
        assert np.array_equal(a.image, b.image) and a.subclass == b.subclass
    assert [balanced_kind(i) for i in range(4)] == ["good_signal", "spike", "good_empty", "fiber"]


def test_deterministic_and_seed_dependent():
    a = simulate_response_image("spike", seed=1)
    b = simulate_response_image("spike", seed=1)
    c = simulate_response_image("spike", seed=2)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.artefact_mask, b.artefact_mask)
    assert not np.array_equal(a.image, c.image)


def test_bad_input():
    with pytest.raises(InputError):
        simulate_response_image("smudge")
    with pytest.raises(InputError):
        simulate_response_image(shape=(40, 64))
    with pytest.raises(InputError):
        simulate_response_image(shape=(96, 30), column_width=29)


def test_column_bound_lines_lie_inside_the_integration_area():
    """[R]: artefacts lie inside the integration area. A two-segment line may bend by up to 45 degrees;
    one that would leave the 30 px tall area is redrawn, so most of each line is where the
    quantification reads it (before: 8 % of lines put under half their light inside)."""
    fractions = [simulate_response_image("line", seed=seed).params["line_inside_fraction"] for seed in range(40)]
    assert min(fractions) >= 0.8
    shapes = {simulate_response_image("line", seed=seed).params["line_shape"] for seed in range(40)}
    assert shapes == {"segments", "quadratic"}
