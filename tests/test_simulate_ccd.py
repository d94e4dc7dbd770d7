"""Property tests of the CCD frame simulator ([C])."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_microseg.errors import InputError
from napari_microseg.simulate.ccd import BALANCED_FRACTIONS, fe55_energies, simulate_ccd_frame, write_ccd_fits


def test_pedestal_and_noise_on_background():
    f = simulate_ccd_frame(seed=1, n_clusters=10, n_hot=2)
    bg = f.image[f.classes == 0]
    assert abs(bg.mean() - 8800) < 3
    assert abs(bg.std() - 60) < 2
    assert f.image.dtype == np.float32 and f.classes.dtype == np.uint8
    g = simulate_ccd_frame(seed=1, pedestal=1000, noise_sd=10, n_clusters=10)
    bg = g.image[g.classes == 0]
    assert abs(bg.mean() - 1000) < 1 and abs(bg.std() - 10) < 0.5


def test_balanced_fractions_with_glow_in_60_percent_of_the_tiles():
    """[C]: the balanced layout's 41/25/21/13 % in a tile with a glowing band, while the band stays in
    60 % of the tiles (in every tile it would teach the network that one is always there); a tile
    without one holds the glow's share as background."""
    frames = [simulate_ccd_frame(shape=(128, 128), seed=seed, balanced=True) for seed in range(40)]
    with_glow = np.array([f.params["glow_band"] is not None for f in frames])
    assert 0.45 <= with_glow.mean() <= 0.75, with_glow.mean()
    fractions = np.array([f.class_fractions for f in frames])
    assert np.allclose(fractions[with_glow], BALANCED_FRACTIONS, atol=0.03), fractions[with_glow]
    no_glow = np.array(BALANCED_FRACTIONS) + [BALANCED_FRACTIONS[1], -BALANCED_FRACTIONS[1], 0, 0]
    assert np.allclose(fractions[~with_glow], no_glow, atol=0.03), fractions[~with_glow]
    # the background stays the largest class of every tile: the pedestal is read on it
    assert np.all(fractions[:, 0] > fractions[:, 1:].max(axis=1))
    always = [simulate_ccd_frame(shape=(64, 64), seed=seed, balanced=True, glow_probability=1.0) for seed in range(3)]
    assert all(f.params["glow_band"] is not None for f in always)
    assert simulate_ccd_frame(shape=(64, 64), seed=3, balanced=True, glow_probability=0.0).params["glow_band"] is None


def test_classes_match_components():
    f = simulate_ccd_frame(seed=4, glow_probability=1.0, n_hot=4, n_clusters=30)
    img = f.image - 8800
    comp = f.components
    # glow: whole columns of one level in the glow range
    glow_cols = np.flatnonzero(comp["glow"].any(0))
    assert len(glow_cols) >= 1 and np.all(np.diff(glow_cols) == 1)
    only_glow = (f.classes == 1)
    assert 1400 - 10 < img[only_glow].mean() < 1500 + 10
    # hot pixels: level 2200 above pedestal (those without a cluster on them)
    hot = (f.classes == 2) & (comp["glow"] == 0)
    assert abs(img[hot].mean() - 2200) < 20
    # precedence cluster > hot > glow: every pixel with enough cluster charge is class 3
    assert np.all(f.classes[comp["clusters"] >= f.params["cluster_threshold"]] == 3)
    assert np.all(f.classes[(comp["hot"] > 0) & (comp["clusters"] < f.params["cluster_threshold"])] == 2)


def test_glow_column_is_random_and_hot_lines_thin():
    starts = set()
    for seed in range(12):
        f = simulate_ccd_frame(seed=seed, glow_probability=1.0, n_hot=1, n_clusters=0)
        starts.add(int(np.flatnonzero(f.components["glow"][0])[0]))
        hot = f.components["hot"] > 0
        (sl,) = ndi.find_objects(hot.astype(int))
        h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        assert min(h, w) == 1  # a 1-px line (or a single pixel)
    assert len(starts) >= 6 and starts != {0}


def test_clusters_compact_with_fe55_peak():
    f = simulate_ccd_frame(seed=7, n_clusters=200, n_hot=0, glow_probability=0)
    lab, n = ndi.label(f.classes == 3)
    sizes = np.bincount(lab.ravel())[1:]
    assert n > 100 and np.median(sizes) <= 9 and sizes.max() < 60  # a few px across
    e = fe55_energies(20000, np.random.default_rng(0))
    hist, edges = np.histogram(e, bins=60, range=(0, 7))
    assert 5.6 < edges[np.argmax(hist)] < 6.1  # K-alpha peak
    assert np.mean(e < 4) > 0.15  # low-energy continuum
    # charge -> ADC with the gain: 5.9 keV ~ 1616 e-
    totals = f.clusters[:, 4]
    assert np.allclose(totals, f.clusters[:, 2] * 1000 / 3.65 * 1.0)


def test_tracks_are_class_cluster():
    f = simulate_ccd_frame(seed=3, muons=True, electrons=True, n_muons=1, n_electrons=2, n_clusters=0, n_hot=0, glow_probability=0)
    assert (f.components["tracks"] > 0).any()
    assert np.count_nonzero(f.classes == 3) > 100  # a muon crosses the tile
    # a muon is one unbroken line, not a string of cluster-sized pieces
    from scipy import ndimage as ndi

    muon = simulate_ccd_frame(seed=3, muons=True, n_muons=1, n_clusters=0, n_hot=0, glow_probability=0)
    pieces, n = ndi.label(muon.classes == 3, structure=np.ones((3, 3)))
    sizes = np.bincount(pieces.ravel())[1:]
    assert n >= 1 and sizes.max() >= 0.95 * sizes.sum() and sizes.max() > 200


def test_deterministic_and_seed_dependent():
    a, b, c = simulate_ccd_frame(seed=5), simulate_ccd_frame(seed=5), simulate_ccd_frame(seed=6)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.classes, b.classes)
    assert not np.array_equal(a.image, c.image)


def test_fits_roundtrip(tmp_path):
    from astropy.io import fits

    f = simulate_ccd_frame(seed=2, shape=(64, 80))
    path = write_ccd_fits(tmp_path / "frame.fits", f, classes_path=tmp_path / "classes.fits")
    with fits.open(path) as hdul:
        assert np.array_equal(hdul[0].data, f.image)
        h = hdul[0].header
        assert h["BUNIT"] == "ADU" and h["PEDESTAL"] == 8800.0 and h["NOISE"] == 60.0 and h["SEED"] == 2
    with fits.open(tmp_path / "classes.fits") as hdul:
        assert np.array_equal(hdul[0].data, f.classes)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left
    with pytest.raises(InputError):
        write_ccd_fits(path, f, overwrite=False)


def test_bad_input():
    with pytest.raises(InputError):
        simulate_ccd_frame(shape=(2, 2))
    with pytest.raises(InputError):
        simulate_ccd_frame(glow_probability=1.5)


def test_exposures_of_one_sensor_share_its_defects_and_nothing_else():
    """simulate_ccd_exposure: the sensor's hot pixels and glowing band in the same places in every exposure,
    charge and noise drawn anew; classes as simulate_ccd_frame's precedence; a balanced layout is refused."""
    from napari_microseg.errors import InputError
    from napari_microseg.simulate.ccd import simulate_ccd_exposure, simulate_ccd_sensor

    sensor = simulate_ccd_sensor(shape=(128, 128), seed=4, n_hot=3, glow_probability=1.0)
    hot, glow = sensor.components["hot"] > 0, sensor.components["glow"] > 0
    assert hot.any() and glow.any() and not (sensor.classes == 3).any()  # defects only, no charge
    a, b = (simulate_ccd_exposure(sensor, seed=s, n_clusters=30) for s in (1, 2))
    for frame in (a, b):
        free = frame.classes != 3
        assert (frame.classes[hot & free] == 2).all() and (frame.classes[glow & ~hot & free] == 1).all()
        assert set(np.unique(frame.classes[~hot & ~glow])) <= {0, 3}
        np.testing.assert_allclose(frame.image - frame.components["clusters"] - frame.components["tracks"]
                                   - frame.components["hot"] - frame.components["glow"], 8800, atol=60 * 6)
    assert not np.array_equal(a.classes == 3, b.classes == 3)  # the charge is each exposure's own
    assert a.params["glow_band"] == sensor.params["glow_band"]
    with pytest.raises(InputError, match="balanced"):
        simulate_ccd_exposure(sensor, seed=3, balanced=True)
    with pytest.raises(InputError, match="sensor's"):
        simulate_ccd_exposure(sensor, seed=3, n_hot=2)
