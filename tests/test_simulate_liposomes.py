"""Property tests of the TEM liposome simulator ([T])."""

import numpy as np
import pytest

from napari_microseg.errors import InputError
from napari_microseg.simulate.liposomes import ENCAPSULATION, LAMELLARITY, simulate_liposome_image


@pytest.fixture(scope="module")
def sample():
    return simulate_liposome_image(shape=(256, 256), n_particles=14, seed=3, radius_range=(10, 28))


def test_one_label_per_particle_with_classes(sample):
    ids = set(np.unique(sample.labels).tolist()) - {0}
    assert ids == set(sample.classes.label)
    assert len(ids) >= 8
    assert set(sample.classes.lamellarity) <= set(LAMELLARITY)
    assert set(sample.classes.encapsulation) <= set(ENCAPSULATION)
    assert sample.image.dtype == np.float32 and sample.labels.dtype == np.uint16
    assert not (sample.ice & (sample.labels > 0)).any()  # ice is never labelled


def test_membranes_dark_and_full_interiors_darker_than_empty():
    r = simulate_liposome_image(shape=(384, 384), n_particles=24, seed=5, n_ice=0, noise_sd=0.01,
                                class_weights={"lamellarity": {"unilamellar": 1}, "encapsulation": {"full": 1, "empty": 1}})
    yy, xx = np.mgrid[: r.image.shape[0], : r.image.shape[1]]
    bg = np.median(r.image[r.labels == 0])
    inner = {"full": [], "empty": []}
    for row in r.classes.itertuples():
        m = r.labels == row.label
        d = np.hypot(yy - row.y, xx - row.x)
        centre = m & (d < 0.4 * row.radius)
        if centre.sum() < 5:
            continue
        inner[row.encapsulation].append(r.image[centre].mean() - bg)
        # the darkest pixels of a particle lie on its membrane, near the outline
        dark = m & (r.image < np.percentile(r.image[m], 5))
        assert np.median(d[dark]) > 0.6 * row.radius
    assert len(inner["full"]) >= 3 and len(inner["empty"]) >= 3
    assert np.mean(inner["full"]) < np.mean(inner["empty"]) - 0.05
    assert abs(np.mean(inner["empty"])) < 0.06


def test_class_weights_and_multilamellar_rings():
    r = simulate_liposome_image(shape=(256, 256), n_particles=10, seed=1, class_weights={"lamellarity": {"multilamellar": 1}, "encapsulation": {"empty": 1}})
    assert set(r.classes.lamellarity) == {"multilamellar"} and set(r.classes.encapsulation) == {"empty"}
    assert (r.classes.n_rings >= 2).all()
    u = simulate_liposome_image(shape=(256, 256), n_particles=10, seed=1, class_weights={"lamellarity": {"unilamellar": 1}})
    assert (u.classes.n_rings == 1).all()
    with pytest.raises(InputError):
        simulate_liposome_image(class_weights={"lamellarity": {"bilamellar": 1}})


def test_uncertain_lamellarity_includes_overlaps():
    r = simulate_liposome_image(shape=(384, 384), n_particles=30, seed=2, class_weights={"lamellarity": {"unilamellar": 1, "uncertain": 1}})
    unc = r.classes[r.classes.lamellarity == "uncertain"]
    assert len(unc) >= 3
    # some uncertain particles overlap another one (their disc reaches into a neighbour)
    overlaps = 0
    for row in unc.itertuples():
        others = r.classes[r.classes.label != row.label]
        overlaps += bool((np.hypot(others.y - row.y, others.x - row.x) < 0.95 * (others.radius + row.radius)).any())
    assert overlaps >= 1


def test_deterministic_and_seed_dependent():
    a = simulate_liposome_image(shape=(128, 128), n_particles=5, seed=1)
    b = simulate_liposome_image(shape=(128, 128), n_particles=5, seed=1)
    c = simulate_liposome_image(shape=(128, 128), n_particles=5, seed=2)
    assert np.array_equal(a.image, b.image) and a.classes.equals(b.classes)
    assert not np.array_equal(a.image, c.image)
