"""Simulated TEM images of liposomes with one label and two class attributes per particle ([T]).

Each particle is a distorted circle (outline ``R (1 + sum_k c_k cos(k theta +
phi_k))``, k = 2..4). Membranes are dark rings (a lipid bilayer scatters more
than vitreous ice): unilamellar = one ring, multilamellar = 2-4 concentric rings
spaced 3-7 px. Encapsulation: "full" particles have a darker (denser) interior,
"empty" ones an interior at the background level. Uncertain cases are what made
annotators hesitate: for lamellarity, a particle overlapping another one or with
only a partial inner arc; for encapsulation, a half-filled, patchy interior.
Ice contamination is drawn as dark, irregular, unlabelled blobs. The background
is fractal Perlin noise plus Gaussian noise, then the image is blurred slightly.

Intensities: float32, background about 0.6, membranes down to about 0.2.
Labels: uint16, one label per particle (the region inside the outer membrane
including it); where particles overlap the later one wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from ..errors import InputError
from ._common import check_range, check_shape_2d, fractal_perlin, jsonable, make_rng

LAMELLARITY = ("unilamellar", "multilamellar", "uncertain")
ENCAPSULATION = ("full", "empty", "uncertain")
#: default class probabilities: more even than the study's (87/12/0.6 % and 97/0.65/2 %)
#: so that every class appears in a handful of images; pass ``class_weights`` to change.
DEFAULT_CLASS_WEIGHTS = {
    "lamellarity": {"unilamellar": 0.6, "multilamellar": 0.3, "uncertain": 0.1},
    "encapsulation": {"full": 0.6, "empty": 0.3, "uncertain": 0.1},
}
#: the class frequencies reported in the study
STUDY_CLASS_WEIGHTS = {
    "lamellarity": {"unilamellar": 0.873, "multilamellar": 0.121, "uncertain": 0.006},
    "encapsulation": {"full": 0.973, "empty": 0.0065, "uncertain": 0.0205},
}


@dataclass
class LiposomeImage:
    """A simulated TEM liposome image.

    Attributes
    ----------
    image : (Y, X) float32 grey values in about [0, 1].
    labels : (Y, X) uint16, one label per particle (0 = background and ice).
    classes : DataFrame with columns ``label, lamellarity, encapsulation, y, x,
        radius, n_rings`` (one row per particle present in ``labels``).
    ice : (Y, X) bool mask of the ice blobs.
    params : every parameter used (JSON-serialisable).
    """

    image: np.ndarray
    labels: np.ndarray
    classes: pd.DataFrame
    ice: np.ndarray
    params: dict = field(default_factory=dict)


def _normalise_weights(weights: dict, names) -> np.ndarray:
    w = np.array([float(weights.get(n, 0.0)) for n in names])
    if (w < 0).any() or w.sum() <= 0:
        raise InputError(f"class weights must be >= 0 and not all 0: {weights}")
    unknown = set(weights) - set(names)
    if unknown:
        raise InputError(f"unknown classes {sorted(unknown)}; expected {list(names)}")
    return w / w.sum()


def _outline(theta, harm):
    r = np.ones_like(theta)
    for k, a, p in harm:
        r = r + a * np.cos(k * theta + p)
    return r


def simulate_liposome_image(
    shape: tuple[int, int] = (512, 512),
    n_particles: int = 30,
    class_weights: dict | None = None,
    seed: int | None = 0,
    radius_range: tuple[float, float] = (12.0, 45.0),
    membrane_width: float = 1.6,
    membrane_contrast: float = 0.35,
    full_contrast: tuple[float, float] = (0.12, 0.25),
    n_ice: int | None = None,
    background_cell: float = 64.0,
    background_contrast: float = 0.06,
    noise_sd: float = 0.05,
    blur_sigma: float = 0.8,
    distortion: float = 0.08,
) -> LiposomeImage:
    """Simulate one TEM image of liposomes.

    Parameters
    ----------
    shape : (Y, X) image size in pixels.
    n_particles : number of particles to place (fewer if the field is crowded).
    class_weights : ``{"lamellarity": {...}, "encapsulation": {...}}`` class
        probabilities (missing classes get 0); ``None`` uses
        :data:`DEFAULT_CLASS_WEIGHTS`. :data:`STUDY_CLASS_WEIGHTS` holds the study's.
    seed : seed for ``np.random.default_rng``.
    radius_range : outer radius range in pixels.
    membrane_width : Gaussian half-width of a membrane ring (px).
    membrane_contrast : darkening at a membrane centre.
    full_contrast : darkening range of a full interior.
    n_ice : number of ice blobs; ``None`` draws 0-6.
    background_cell : Perlin feature size (px) of the background.
    background_contrast : amplitude of the Perlin background.
    noise_sd : Gaussian pixel noise sd.
    blur_sigma : final blur (px).
    distortion : amplitude of the outline harmonics (relative radius).

    Returns
    -------
    LiposomeImage
    """
    ny, nx = check_shape_2d(shape, minimum=32)
    r_lo, r_hi = check_range(radius_range, "radius_range", low=4.0)
    if int(n_particles) < 0:
        raise InputError(f"n_particles must be >= 0, got {n_particles}")
    if n_ice is not None and int(n_ice) < 0:
        raise InputError(f"n_ice must be >= 0, got {n_ice}")
    weights = class_weights or DEFAULT_CLASS_WEIGHTS
    w_lam = _normalise_weights(weights.get("lamellarity", DEFAULT_CLASS_WEIGHTS["lamellarity"]), LAMELLARITY)
    w_enc = _normalise_weights(weights.get("encapsulation", DEFAULT_CLASS_WEIGHTS["encapsulation"]), ENCAPSULATION)
    params = jsonable({k: v for k, v in locals().items() if k not in ("ny", "nx", "r_lo", "r_hi", "weights", "w_lam", "w_enc")})
    params["class_weights"] = jsonable({"lamellarity": dict(zip(LAMELLARITY, w_lam)), "encapsulation": dict(zip(ENCAPSULATION, w_enc))})
    rng = make_rng(seed)

    background = 0.6 + background_contrast * fractal_perlin((ny, nx), background_cell, rng, octaves=4)
    darkening = np.zeros((ny, nx), np.float32)
    labels = np.zeros((ny, nx), np.uint16)
    yy, xx = np.mgrid[:ny, :nx]

    placed: list[tuple[float, float, float, float]] = []  # centre y, x, radius, reach of the drawn mask (px)
    rows = []
    for i in range(int(n_particles)):
        lam = LAMELLARITY[int(rng.choice(3, p=w_lam))]
        enc = ENCAPSULATION[int(rng.choice(3, p=w_enc))]
        R = rng.uniform(r_lo, r_hi)
        if lam == "multilamellar":
            R = max(R, r_lo + 8)
        R = min(R, 0.45 * min(ny, nx))
        overlap_wanted = lam == "uncertain" and placed and rng.random() < 0.6
        harm = np.stack([[2, 3, 4], rng.uniform(0, distortion, 3) / np.array([1, 1.5, 2]), rng.uniform(0, 2 * np.pi, 3)], 1)
        # the drawn mask reaches (R + membrane) x the outline's largest stretch: particles placed apart keep that apart
        reach = (R + membrane_width) * (1.0 + float(harm[:, 1].sum()))
        ok = False
        for _attempt in range(40):
            if overlap_wanted:
                oy, ox, oR, _ = placed[int(rng.integers(len(placed)))]
                ang = rng.uniform(0, 2 * np.pi)
                d = rng.uniform(0.5, 0.9) * (oR + R)
                cy, cx = oy + d * np.sin(ang), ox + d * np.cos(ang)
            else:
                cy, cx = rng.uniform(R, ny - R), rng.uniform(R, nx - R)
            if not (R * 0.5 <= cy <= ny - R * 0.5 and R * 0.5 <= cx <= nx - R * 0.5):
                continue
            if overlap_wanted or all(np.hypot(cy - py, cx - px) > max((pR + R) * 1.05, p_reach + reach)
                                     for py, px, pR, p_reach in placed):
                ok = True
                break
        if not ok:
            continue
        box = int(np.ceil(max(R * (1 + distortion * 2) + 6, reach + 2)))
        y0, y1 = max(int(cy) - box, 0), min(int(cy) + box + 1, ny)
        x0, x1 = max(int(cx) - box, 0), min(int(cx) + box + 1, nx)
        dy, dx = yy[y0:y1, x0:x1] - cy, xx[y0:y1, x0:x1] - cx
        theta = np.arctan2(dy, dx)
        rho = np.hypot(dy, dx) / _outline(theta, harm)  # distance in undistorted units
        dark = np.zeros(rho.shape, np.float32)
        n_rings = 1
        if lam == "multilamellar":
            n_rings = int(rng.integers(2, 5))
        ring_radii = [R]
        for _ in range(n_rings - 1):
            ring_radii.append(ring_radii[-1] - rng.uniform(3.0, 7.0))
        ring_radii = [r for r in ring_radii if r > 3]
        n_rings = len(ring_radii)
        for k, rr in enumerate(ring_radii):
            ring = membrane_contrast * rng.uniform(0.8, 1.2) * np.exp(-0.5 * ((rho - rr) / membrane_width) ** 2)
            dark = np.maximum(dark, ring.astype(np.float32))
        if lam == "uncertain" and not overlap_wanted:
            # a partial inner arc: is it a second membrane or not?
            arc_r = R - rng.uniform(3, 6)
            start = rng.uniform(-np.pi, np.pi)
            span = rng.uniform(0.5, 1.5)
            in_arc = np.mod(theta - start, 2 * np.pi) < span
            dark = np.maximum(dark, (0.7 * membrane_contrast * np.exp(-0.5 * ((rho - arc_r) / membrane_width) ** 2) * in_arc).astype(np.float32))
        inner = rho < ring_radii[-1]
        if enc == "full":
            fill = rng.uniform(*full_contrast) * np.ones(rho.shape)
        elif enc == "empty":
            fill = rng.uniform(-0.03, 0.02) * np.ones(rho.shape)
        else:  # uncertain: patchy, half-filled
            patch = ndi.gaussian_filter(rng.standard_normal(rho.shape), R / 4)
            patch = (patch - patch.mean()) / (patch.std() + 1e-9)
            fill = rng.uniform(*full_contrast) * 0.5 * np.clip(0.5 + 0.6 * patch, 0, 1)
        dark = np.maximum(dark, (fill * inner).astype(np.float32))
        mask = rho <= R + membrane_width
        label = len(rows) + 1
        region = darkening[y0:y1, x0:x1]
        region[mask] = dark[mask]  # later particles are drawn on top
        labels[y0:y1, x0:x1][mask] = label
        placed.append((cy, cx, R, reach))
        rows.append((label, lam, enc, cy, cx, R, n_rings))

    # ice blobs: dark irregular, unlabelled
    n_ice_drawn = int(rng.integers(0, 7)) if n_ice is None else int(n_ice)
    ice = np.zeros((ny, nx), bool)
    ice_dark = np.zeros((ny, nx), np.float32)
    for _ in range(n_ice_drawn):
        r = rng.uniform(4, 18)
        cy, cx = rng.uniform(0, ny), rng.uniform(0, nx)
        half = int(np.ceil(4 * r)) + 2
        y0, y1 = max(int(cy) - half, 0), min(int(cy) + half + 1, ny)
        x0, x1 = max(int(cx) - half, 0), min(int(cx) + half + 1, nx)
        by, bx = yy[y0:y1, x0:x1], xx[y0:y1, x0:x1]
        blob = np.zeros(by.shape)
        for _k in range(int(rng.integers(2, 6))):
            oy, ox = rng.normal(0, r * 0.6, 2)
            blob = np.maximum(blob, np.exp(-0.5 * ((by - cy - oy) ** 2 + (bx - cx - ox) ** 2) / (r * rng.uniform(0.4, 1.0)) ** 2))
        free = labels[y0:y1, x0:x1] == 0
        ice[y0:y1, x0:x1] |= (blob > 0.5) & free
        ice_dark[y0:y1, x0:x1] = np.maximum(ice_dark[y0:y1, x0:x1], (rng.uniform(0.3, 0.5) * np.clip((blob - 0.3) / 0.4, 0, 1)).astype(np.float32))

    image = background - darkening - ice_dark * (labels == 0)
    image = ndi.gaussian_filter(image, blur_sigma) if blur_sigma > 0 else image
    image = image + rng.normal(0, noise_sd, image.shape)
    # keep only rows whose label survived (a later particle may cover one fully)
    present = set(np.unique(labels).tolist()) - {0}
    classes = pd.DataFrame(rows, columns=["label", "lamellarity", "encapsulation", "y", "x", "radius", "n_rings"])
    classes = classes[classes["label"].isin(present)].reset_index(drop=True)
    params["n_ice_drawn"] = n_ice_drawn
    params["n_placed"] = int(len(classes))  # of n_particles asked: a crowded field places fewer (they may not overlap)
    return LiposomeImage(image.astype(np.float32), labels, classes, ice, params)
