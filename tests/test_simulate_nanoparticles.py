"""Property tests of the STEM nanoparticle profile simulator ([P])."""

import numpy as np
import pytest

from napari_microseg.errors import InputError
from napari_microseg.simulate.nanoparticles import (
    make_particle,
    polygon_area,
    project,
    render_particle,
    rotate,
    simulate_profiles,
)


def _net_area(polys):
    return polygon_area(polys[0]) - sum(polygon_area(p) for p in polys[1:])


@pytest.mark.parametrize("task", ["hole", "chirality"])
def test_profile_integral_equals_polygon_area(task):
    # default 32 samples: a Riemann sum, within 1 % on average (a few % for the roughest particle)
    ps = simulate_profiles(40, task=task, noiseless=True, seed=1, offset_sd=0.0)
    dx = np.diff(ps.positions[0])[0]
    err = np.array([prof[0].sum() * dx / _net_area(polys) - 1 for prof, polys in zip(ps.profiles, ps.polygons)])
    assert abs(err.mean()) < 0.01 and np.abs(err).max() < 0.03
    # finer sampling: every particle within 1 %
    ps = simulate_profiles(40, task=task, noiseless=True, seed=1, offset_sd=0.0, data_points=256)
    dx = np.diff(ps.positions[0])[0]
    for prof, polys in zip(ps.profiles, ps.polygons):
        assert abs(prof[0].sum() * dx / _net_area(polys) - 1) < 0.01


def test_hole_conserves_mass():
    for seed in range(30):
        solid = make_particle(np.random.default_rng(seed), "solid")
        holed = make_particle(np.random.default_rng(seed), "hole")
        assert len(holed) == 2 and polygon_area(holed[1]) > 0.01
        assert abs(_net_area(holed) / _net_area(solid) - 1) < 0.01
        x = np.linspace(-2.5, 2.5, 400)
        assert abs(project(holed, x).sum() / project(solid, x).sum() - 1) < 0.01


def test_mirror_across_the_ray_gives_the_same_profile():
    x = np.linspace(-1.5, 1.5, 32)
    for seed in range(10):
        polys = make_particle(np.random.default_rng(seed), "clockwise")
        mirrored = [p * np.array([1.0, -1.0]) for p in polys]  # rays run along y
        assert np.allclose(project(polys, x), project(mirrored, x))
        # but a second view at 90 degrees tells the mirror images apart
        a = project([rotate(p, -np.pi / 2) for p in polys], x)
        b = project([rotate(p, -np.pi / 2) for p in mirrored], x)
        assert not np.allclose(a, b, atol=1e-3)


def test_spiral_is_a_void_inside_the_particle():
    rng = np.random.default_rng(0)
    polys = make_particle(rng, "anticlockwise", offset_sd=0.0)
    img = render_particle(polys, size=128)
    solid = render_particle(polys[:1], size=128)
    lost = solid.sum() - img.sum()
    assert lost > 0 and np.isclose(lost / solid.sum(), polygon_area(polys[1]) / polygon_area(polys[0]), rtol=0.2)


def test_noisy_profiles_joint_min_max_and_balance():
    ps = simulate_profiles(20, task="chirality", n_views=2, seed=3)
    assert ps.profiles.shape == (20, 2, 32) and ps.profiles.dtype == np.float32
    for p in ps.profiles:
        assert np.isclose(p.min(), 0) and np.isclose(p.max(), 1)
    assert list(ps.labels[:4]) == [0, 1, 0, 1] and ps.class_names == ("clockwise", "anticlockwise")
    noiseless = simulate_profiles(20, task="chirality", n_views=2, seed=3, noiseless=True)
    assert noiseless.profiles.max() > 1.0  # raw thickness, not normalised


def test_deterministic_and_seed_dependent():
    a = simulate_profiles(10, seed=1)
    b = simulate_profiles(10, seed=1)
    c = simulate_profiles(10, seed=2)
    assert np.array_equal(a.profiles, b.profiles) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.profiles, c.profiles)


def test_progress_generator_and_bad_input():
    from napari_microseg.progress import run_with_text_progress
    import io

    ps = run_with_text_progress(simulate_profiles(250, seed=0, progress=True), stream=io.StringIO())
    assert ps.profiles.shape[0] == 250
    with pytest.raises(InputError):
        simulate_profiles(5, task="size")
    with pytest.raises(InputError):
        simulate_profiles(5, n_views=0)
