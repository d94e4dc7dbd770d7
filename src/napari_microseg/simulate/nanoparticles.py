"""Simulated STEM thickness profiles of 2D nanoparticle slices: holes and chirality ([P]).

Geometry (units: particle radii, the detector spans [-1.5, 1.5]):

* Particle: polygon with ``angle_count`` (90) corners at regular angles; mean
  radius ~ N(1.0, 0.1), each corner radius ~ N(mean, 0.05), centre offset ~
  N(0, 0.3) per axis.
* Hole: a smaller polygon (radius ~ N(0.1, 0.01), centre uniform within 0.4 of
  the particle centre, the same *relative* roughness, i.e. corner sd =
  0.05 x r / R -- METHODS says "same roughness"; an absolute 0.05 on a 0.1
  radius would shred the hole). The outer corner radii grow by
  ``dR = sqrt(r^2 + R^2) - R`` so the total mass (area) is conserved in expectation.
* Spiral (chirality): a spiral polygon inside the particle, inner edge
  ``r = s theta``, outer edge ``r = min((t + s) theta, s theta + t_max)``,
  s ~ N(0.04, 0.008), t ~ N(0.01, 0.002), t_max ~ N(0.1, 0.02), drawn until the
  outer edge reaches max radius ~ N(0.5, 0.05), centre within 0.1 of the particle
  centre. "clockwise" turns clockwise going outward (x right, y up);
  "anticlockwise" is its mirror image. Like the hole, the spiral is a void:
  all polygons of a particle combine by the even-odd rule.

Projection: rays run along +y; the detector line is sampled at ``data_points``
positions on [-1.5, 1.5] (centre jittered by N(0, 0.05)); each ray is
intersected with every polygon edge, the crossings are sorted and the thickness
is the sum of alternate gaps (even-odd rule). A view at angle a rotates the
particle by -a before projecting.

Noise, in order: add background 20.0, Gaussian blur sd 0.5 samples, each value
~ N(t, 0.001 t), min-max normalise all views of a particle together to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ..errors import InputError
from ..progress import Progress
from ._common import jsonable, make_rng
from ..defaults import PROFILE_TASKS

TASKS = PROFILE_TASKS  # (defined in ..defaults, which the Classification dock reads without the simulators)


@dataclass
class ProfileSet:
    """Simulated thickness profiles.

    Attributes
    ----------
    profiles : (n, views, points) float32; noisy profiles are in [0, 1], noiseless
        ones are raw thickness (particle-radius units).
    labels : (n,) int64 class index into ``class_names``.
    class_names : names of the classes ("solid"/"hole" or "clockwise"/"anticlockwise").
    polygons : per particle, a list of (k, 2) float arrays (x, y) of its polygons
        (outer first), unrotated, for display with :func:`render_particle`.
    positions : (n, points) float, detector sample positions of each particle.
    params : every parameter used (JSON-serialisable).
    """

    profiles: np.ndarray
    labels: np.ndarray
    class_names: tuple
    polygons: list = field(default_factory=list)
    positions: np.ndarray | None = None
    params: dict = field(default_factory=dict)


def regular_polygon(radii: np.ndarray, centre=(0.0, 0.0)) -> np.ndarray:
    """Polygon (k, 2) of (x, y) with corner ``i`` at angle 2 pi i / k and radius ``radii[i]``."""
    k = len(radii)
    ang = 2 * np.pi * np.arange(k) / k
    return np.stack([centre[0] + radii * np.cos(ang), centre[1] + radii * np.sin(ang)], axis=1)


def polygon_area(poly: np.ndarray) -> float:
    """Unsigned shoelace area of a (k, 2) polygon."""
    x, y = poly[:, 0], poly[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def rotate(poly: np.ndarray, angle: float) -> np.ndarray:
    """Rotate (x, y) points by ``angle`` radians anticlockwise about the origin."""
    c, s = np.cos(angle), np.sin(angle)
    return poly @ np.array([[c, s], [-s, c]])


def project(polygons: list[np.ndarray], positions: np.ndarray) -> np.ndarray:
    """Thickness along rays parallel to y at x = ``positions`` (even-odd rule over all edges).

    Parameters
    ----------
    polygons : list of (k, 2) (x, y) polygons (closed implicitly).
    positions : (S,) ray x positions.

    Returns
    -------
    (S,) float64 thickness.
    """
    p0 = np.concatenate(polygons)
    p1 = np.concatenate([np.roll(p, -1, axis=0) for p in polygons])
    x0, y0, x1, y1 = p0[:, 0], p0[:, 1], p1[:, 0], p1[:, 1]
    s = np.asarray(positions, float)[:, None]
    # half-open rule so a ray through a vertex counts it once
    crosses = ((x0 <= s) & (s < x1)) | ((x1 <= s) & (s < x0))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (s - x0) / (x1 - x0)
    ys = np.where(crosses, y0 + t * (y1 - y0), np.nan)
    ys = np.sort(ys, axis=1)  # NaN last
    n = ys.shape[1] - (ys.shape[1] % 2)
    gaps = ys[:, 1:n:2] - ys[:, 0:n:2]
    return np.nansum(gaps, axis=1)


def _rough_polygon(rng, angle_count, mean_radius, sd, centre) -> np.ndarray:
    radii = np.clip(rng.normal(mean_radius, sd, angle_count), 0.05 * mean_radius, None)
    return regular_polygon(radii, centre)


def spiral_polygon(rng, centre, clockwise: bool, s_mean=0.04, s_sd=0.008, t_mean=0.01, t_sd=0.002, tmax_mean=0.1, tmax_sd=0.02, rmax_mean=0.5, rmax_sd=0.05, step=0.05) -> np.ndarray:
    """A spiral band polygon (k, 2) (see module docstring); turns clockwise outward if ``clockwise``."""
    s = max(rng.normal(s_mean, s_sd), 0.01)
    t = max(rng.normal(t_mean, t_sd), 0.002)
    t_max = max(rng.normal(tmax_mean, tmax_sd), 0.02)
    r_max = max(rng.normal(rmax_mean, rmax_sd), 0.1)
    theta = np.arange(step, 200.0, step)
    outer = np.minimum((t + s) * theta, s * theta + t_max)
    keep = outer <= r_max
    theta, outer = theta[keep], outer[keep]
    inner = s * theta
    sign = -1.0 if clockwise else 1.0  # clockwise: angle decreases outward (y up)
    ang = sign * theta
    out_pts = np.stack([outer * np.cos(ang), outer * np.sin(ang)], 1)
    in_pts = np.stack([inner * np.cos(ang), inner * np.sin(ang)], 1)[::-1]
    return np.concatenate([out_pts, in_pts]) + np.asarray(centre)


def make_particle(rng, kind: str, angle_count: int = 90, radius_mean=1.0, radius_sd=0.1, corner_sd=0.05, offset_sd=0.3, hole_radius=0.1, hole_radius_sd=0.01, hole_centre_max=0.4, spiral_centre_max=0.1) -> list[np.ndarray]:
    """Polygons of one particle: ``kind`` in "solid", "hole", "clockwise", "anticlockwise"."""
    R = max(rng.normal(radius_mean, radius_sd), 0.2)
    centre = rng.normal(0, offset_sd, 2) if offset_sd > 0 else np.zeros(2)
    corner = rng.normal(0, corner_sd, angle_count)
    if kind == "hole":
        r = max(rng.normal(hole_radius, hole_radius_sd), 0.01)
        dR = np.sqrt(r * r + R * R) - R
        outer = regular_polygon(np.clip(R + dR + corner, 0.05, None), centre)
        # the hole lies inside the particle: its centre at most so far out that hole and outline (each with
        # its corner roughness, 3 sd) do not meet (large holes broke through the edge: 1.5 % at radius 0.49)
        room = max(R + dR - r - 3 * corner_sd * (1 + r / R), 0.0)
        a, d = rng.uniform(0, 2 * np.pi), min(hole_centre_max, room) * np.sqrt(rng.uniform())
        hc = centre + d * np.array([np.cos(a), np.sin(a)])
        hole = _rough_polygon(rng, angle_count, r, corner_sd * r / R, hc)
        return [outer, hole]
    outer = regular_polygon(np.clip(R + corner, 0.05, None), centre)
    if kind in ("clockwise", "anticlockwise"):
        a, d = rng.uniform(0, 2 * np.pi), spiral_centre_max * np.sqrt(rng.uniform())
        sc = centre + d * np.array([np.cos(a), np.sin(a)])
        spiral = spiral_polygon(rng, (0.0, 0.0), clockwise=True)
        spiral = spiral * rng.uniform(0.95, 1.05)
        spiral = rotate(spiral, rng.uniform(0, 2 * np.pi))
        if kind == "anticlockwise":  # mirror image
            spiral = spiral * np.array([-1.0, 1.0])
        return [outer, spiral + sc]
    if kind != "solid":
        raise InputError(f"unknown particle kind {kind!r}")
    return [outer]


def add_noise(profiles: np.ndarray, rng, background: float = 20.0, blur_sd: float = 0.5, relative_sd: float = 0.001) -> np.ndarray:
    """Noise pipeline of [P] on (views, points) thickness: background, blur, N(t, rel*t), joint min-max to [0, 1]."""
    t = profiles + background
    if blur_sd > 0:
        t = ndi.gaussian_filter1d(t, blur_sd, axis=-1, mode="nearest")
    t = rng.normal(t, relative_sd * np.abs(t))
    lo, hi = t.min(), t.max()
    return (t - lo) / (hi - lo) if hi > lo else np.zeros_like(t)


def simulate_profiles(
    n: int = 1000,
    task: str = "hole",
    n_views: int = 1,
    view_angle_deg: float = 90.0,
    seed: int | None = 0,
    noiseless: bool = False,
    data_points: int = 32,
    extent: float = 1.5,
    centre_jitter: float = 0.05,
    view_angle_jitter_deg: float = 0.0,
    angle_count: int = 90,
    radius_mean: float = 1.0,
    radius_sd: float = 0.1,
    corner_sd: float = 0.05,
    offset_sd: float = 0.3,
    hole_radius: float = 0.1,
    hole_radius_sd: float = 0.01,
    background: float = 20.0,
    blur_sd: float = 0.5,
    relative_noise: float = 0.001,
    random_orientation: bool = True,
    progress: bool = False,
):
    """Simulate ``n`` particles and their 1D thickness profiles (balanced classes).

    Parameters
    ----------
    n : number of particles; classes alternate (0, 1, 0, 1, ...) so any even
        prefix is balanced.
    task : "hole" (solid vs hole) or "chirality" (clockwise vs anticlockwise spiral).
    n_views : number of views per particle (1 = single, 2 = stereo, ...).
    view_angle_deg : angle between consecutive views (degrees).
    seed : seed for ``np.random.default_rng``.
    noiseless : if True return raw thickness (no background, blur, noise or normalisation).
    data_points : samples per profile.
    extent : detector half-length (samples span [-extent, extent]).
    centre_jitter : sd of the detector centre jitter (per particle).
    view_angle_jitter_deg : sd of a random jitter added to each view's angle.
    angle_count, radius_mean, radius_sd, corner_sd, offset_sd : particle shape (see module docstring).
    hole_radius, hole_radius_sd : hole size.
    background, blur_sd, relative_noise : noise pipeline.
    random_orientation : rotate each particle by a uniform random angle first
        (otherwise the first view always sees the particle in its drawn orientation).
    progress : if True return a generator yielding :class:`Progress` and returning the ProfileSet.

    Returns
    -------
    ProfileSet
    """
    if task not in TASKS:
        raise InputError(f"task must be one of {sorted(TASKS)}; got {task!r}")
    if int(n) < 0 or int(n_views) < 1 or int(data_points) < 2:
        raise InputError("need n >= 0, n_views >= 1, data_points >= 2")
    for name, value in (("view_angle_deg", view_angle_deg), ("view_angle_jitter_deg", view_angle_jitter_deg),
                        ("centre_jitter", centre_jitter), ("offset_sd", offset_sd), ("hole_radius", hole_radius),
                        ("hole_radius_sd", hole_radius_sd)):
        if not np.isfinite(float(value)):
            raise InputError(f"{name} must be a finite number, got {value}")
    if min(view_angle_jitter_deg, centre_jitter, offset_sd, hole_radius_sd) < 0:
        raise InputError("jitters, offset_sd and hole_radius_sd must be >= 0")
    if not 0 < hole_radius < 0.5 * radius_mean:
        raise InputError(f"hole_radius must lie between 0 and half the mean particle radius ({0.5 * radius_mean:g}), "
                         f"got {hole_radius}")
    params = jsonable({k: v for k, v in locals().items() if k not in ("progress", "name", "value")})  # the arguments
    params["class_names"] = list(TASKS[task])

    def gen():
        rng = make_rng(seed)
        names = TASKS[task]
        kinds = names if task == "chirality" else ("solid", "hole")
        base = np.linspace(-extent, extent, int(data_points))
        profiles = np.zeros((int(n), int(n_views), int(data_points)), np.float32)
        labels = np.zeros(int(n), np.int64)
        positions = np.zeros((int(n), int(data_points)))
        polygons = []
        for i in range(int(n)):
            label = i % 2
            polys = make_particle(rng, kinds[label], angle_count, radius_mean, radius_sd, corner_sd, offset_sd, hole_radius, hole_radius_sd)
            if random_orientation:
                rot = rng.uniform(0, 2 * np.pi)
                polys = [rotate(p, rot) for p in polys]
            pos = base + (rng.normal(0, centre_jitter) if centre_jitter > 0 else 0.0)
            views = np.zeros((int(n_views), int(data_points)))
            for v in range(int(n_views)):
                ang = np.deg2rad(v * view_angle_deg + (rng.normal(0, view_angle_jitter_deg) if view_angle_jitter_deg > 0 else 0.0))
                views[v] = project([rotate(p, -ang) for p in polys], pos)
            if not noiseless:
                views = add_noise(views, rng, background, blur_sd, relative_noise)
            profiles[i] = views
            labels[i] = label
            positions[i] = pos
            polygons.append(polys)
            if (i + 1) % 100 == 0 or i + 1 == int(n):
                yield Progress(i + 1, int(n), task)
        return ProfileSet(profiles, labels, tuple(names), polygons, positions, params)

    g = gen()
    if progress:
        return g
    try:
        while True:
            next(g)
    except StopIteration as stop:
        return stop.value


def render_particle(polygons: list[np.ndarray], size: int = 128, extent: float | None = 1.5) -> np.ndarray:
    """Rasterise a particle's polygons (even-odd rule) to a (size, size) float32 mask; y up = row 0 at the top.

    The image spans [-extent, extent] in x (columns) and y (rows, flipped so
    +y points up on screen); ``extent`` None: 1.5, widened to the particle when it reaches
    further (about a third of the simulated particles did, and were cut at the edge).
    """
    from skimage.draw import polygon as draw_polygon

    if extent is None:
        reach = max((float(np.abs(poly).max()) for poly in polygons if len(poly)), default=0.0)
        extent = max(1.5, 1.05 * reach)
    out = np.zeros((size, size), bool)
    scale = (size - 1) / (2 * extent)
    for poly in polygons:
        cols = (poly[:, 0] + extent) * scale
        rows = (extent - poly[:, 1]) * scale
        rr, cc = draw_polygon(rows, cols, shape=(size, size))
        m = np.zeros((size, size), bool)
        m[rr, cc] = True
        out ^= m
    return out.astype(np.float32)
