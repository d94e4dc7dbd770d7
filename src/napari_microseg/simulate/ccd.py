"""Simulated CCD frames for the dark-matter search ([C]), with exact per-pixel classes.

A frame is the sum of independent, noise-free components plus read noise:

``image = pedestal + glow + hot + clusters (+ muons + electrons) + N(0, noise_sd)``

Classes (uint8): 0 background, 1 glowing, 2 hot pixel, 3 cluster. They are
exact by construction: each class is a threshold on its own noise-free
component image, and where components overlap the precedence is
**cluster > hot > glow > background** (a charge cluster on a hot line is a
cluster pixel; a hot line crossing the glowing band is hot). Muon and electron
tracks are ionisation signals and are labelled as class 3 (cluster) too.

Cluster model (the study drew measured clusters; we model them): point charges
whose energy comes from an Fe-55-like spectrum -- a 5.9 keV K-alpha line
(sd ``fe55_sd_kev``), a 6.49 keV K-beta line (12 %), and a low-energy continuum
(``continuum_fraction``, exponential, mean ``continuum_mean_kev``); the charge
is ``E / 3.65 eV`` electrons, converted to ADC with ``gain`` (ADC per
electron), and spread by Gaussian diffusion whose sigma grows with the
interaction depth z (fraction of the thickness, drawn exponentially since
X-rays are absorbed near the surface): ``sigma = sigma_min + (sigma_max -
sigma_min) * sqrt(z)``. The charge is integrated exactly over each pixel (erf).
A pixel belongs to a cluster when the noise-free cluster charge in it is at
least ``cluster_threshold`` ADC (default: twice the read-noise sd).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.special import erf

from ..errors import InputError
from ..io.atomic import atomic_path
from ..progress import Progress, drain
from ._common import check_range, check_shape_2d, jsonable, make_rng

#: the CCD pixel classes, by class id (as the shipped ``ccd_classes`` model names them)
CLASS_NAMES = ("background", "glowing", "hot pixel", "cluster")
#: pixel pitch of the simulated CCD (um) and charge a minimum-ionising muon leaves per um of silicon
#: (electrons): 300 ADC per pixel before (a quarter of this) left tracks in pieces under the labelling
#: threshold, which the model then counted as clusters
PIXEL_UM = 15.0
MIP_ELECTRONS_PER_UM = 80.0
BALANCED_FRACTIONS = (0.41, 0.25, 0.21, 0.13)
EV_PER_ELECTRON = 3.65


@dataclass
class CCDFrame:
    """A simulated CCD frame.

    Attributes
    ----------
    image : (Y, X) float32, ADC (pedestal + signals + Gaussian read noise).
    classes : (Y, X) uint8, 0 background, 1 glowing, 2 hot pixel, 3 cluster (exact).
    components : dict name -> (Y, X) float32 noise-free component images in ADC
        ("glow", "hot", "clusters", "tracks").
    clusters : (N, 5) float array, one row per point charge: y, x (px; pixel k centred at k, the frame
        spans -0.5 .. n - 0.5), energy_keV, sigma_px, total_adc (the whole charge drawn; a charge near the
        frame's edge has part of it off the frame: :func:`charge_on_frame` gives what lies on it).
    params : every parameter used (JSON-serialisable).
    """

    image: np.ndarray
    classes: np.ndarray
    components: dict = field(default_factory=dict)
    clusters: np.ndarray = field(default_factory=lambda: np.zeros((0, 5)))
    params: dict = field(default_factory=dict)

    @property
    def class_fractions(self) -> np.ndarray:
        """Fraction of pixels in each of the four classes."""
        return np.bincount(self.classes.ravel(), minlength=4)[:4] / self.classes.size


def fe55_energies(n: int, rng: np.random.Generator, fe55_sd_kev: float = 0.12, continuum_fraction: float = 0.3, continuum_mean_kev: float = 1.5) -> np.ndarray:
    """Draw ``n`` deposited energies (keV): Fe-55 K-alpha 5.9 / K-beta 6.49 lines plus an exponential low-energy continuum."""
    kind = rng.random(n)
    e = np.where(rng.random(n) < 0.12, 6.49, 5.895) + rng.normal(0, fe55_sd_kev, n)
    cont = rng.exponential(continuum_mean_kev, n) + 0.2
    e = np.where(kind < continuum_fraction, np.minimum(cont, 6.0), e)
    return np.clip(e, 0.1, None)


def _add_gaussian_charge(target: np.ndarray, y: float, x: float, sigma: float, total: float) -> None:
    """Add ``total`` ADC spread by a 2D Gaussian (sigma px) centred at (``y``, ``x``) px, integrated exactly
    over pixels; pixel k is centred at k (it spans k - 0.5 .. k + 0.5), as the package measures centroids
    (regionprops), so the clusters table's positions are where the charge lies (they were 0.5 px off)."""
    ny, nx = target.shape
    r = int(np.ceil(4 * sigma)) + 1
    iy, ix = int(np.floor(y + 0.5)), int(np.floor(x + 0.5))
    y0, y1 = max(iy - r, 0), min(iy + r + 1, ny)
    x0, x1 = max(ix - r, 0), min(ix + r + 1, nx)
    if y0 >= y1 or x0 >= x1:
        return
    s = sigma * np.sqrt(2)
    ey = erf((np.arange(y0, y1 + 1) - 0.5 - y) / s)
    ex = erf((np.arange(x0, x1 + 1) - 0.5 - x) / s)
    py = np.diff(ey) / 2
    px = np.diff(ex) / 2
    target[y0:y1, x0:x1] += total * np.outer(py, px)


def charge_on_frame(shape: tuple[int, int], clusters: np.ndarray) -> np.ndarray:
    """The charge (ADC) each point charge of ``clusters`` (:attr:`CCDFrame.clusters`, (N, 5): y, x,
    energy_keV, sigma_px, total_adc) deposited on a frame of ``shape`` (Y, X) px, as
    :func:`_add_gaussian_charge` adds it: its total times the share of its Gaussian over the pixels of its
    window (4 sigma + 1 px around it) inside the frame. Below the total for a charge near the frame's
    edge (what a measurement of the frame can find); shape (N,), float64."""
    rows = np.asarray(clusters, np.float64).reshape(-1, 5)
    y, x, sigma, total = rows[:, 0], rows[:, 1], rows[:, 3], rows[:, 4]
    r = np.ceil(4 * sigma).astype(np.int64) + 1
    s = sigma * np.sqrt(2)
    share = np.ones(len(rows))
    for centre, n in ((y, shape[0]), (x, shape[1])):
        i = np.floor(centre + 0.5).astype(np.int64)
        lo, hi = np.maximum(i - r, 0), np.minimum(i + r + 1, n)  # the window's pixels on the frame
        share *= np.where(lo < hi, (erf((hi - 0.5 - centre) / s) - erf((lo - 0.5 - centre) / s)) / 2, 0.0)
    return total * share


#: padded window elements (charges x window pixels) of one pass of :func:`_add_gaussian_charges`
_CHARGES_PASS_ELEMENTS = 1 << 18


def _add_in_order(flat_target: np.ndarray, index: np.ndarray, values: np.ndarray, stamp: np.ndarray) -> None:
    """``flat_target[index[k]] += values[k]`` for k = 0, 1, ... in that order, each addition rounded to
    the target's dtype as a slice ``+=`` rounds it (``np.add.at`` does the same, ~1.7x slower with a float32
    target and float64 values): in rounds, each adding every pixel's first value left (no pixel twice in a
    round). ``stamp``: int32 scratch as large as the target, any content."""
    while len(index):
        order = np.arange(len(index), dtype=np.int32)
        stamp[index] = np.iinfo(np.int32).max
        np.minimum.at(stamp, index, order)
        first = stamp[index] == order  # the first value left of its pixel
        flat_target[index[first]] += values[first]
        if first.all():
            return
        index, values = index[~first], values[~first]


def _add_gaussian_charges(target: np.ndarray, ys, xs, sigmas, totals) -> None:
    """:func:`_add_gaussian_charge` for many charges at once, bit for bit: the same per-pixel weights
    (``total * (py * px)`` from the same erf differences) added to the float32 ``target`` in the charges'
    order, each addition done in float64 and rounded to float32 as the slice ``+=`` does
    (:func:`_add_in_order`: overlapping charges sum in the same order). ``target`` must be C-contiguous."""
    ys, xs, sigmas, totals = (np.asarray(v, np.float64).ravel() for v in (ys, xs, sigmas, totals))
    if not len(ys):
        return
    if not target.flags.c_contiguous:  # (not met here: the component images are fresh arrays)
        for y, x, s, t in zip(ys, xs, sigmas, totals):
            _add_gaussian_charge(target, y, x, s, t)
        return
    ny, nx = target.shape
    flat_target = target.reshape(-1)
    stamp = np.empty(flat_target.size, np.int32)  # (only the pages of the pixels charged are touched)
    radius = np.ceil(4 * sigmas).astype(np.int64) + 1
    width = 2 * int(radius.max()) + 1
    step = max(1, _CHARGES_PASS_ELEMENTS // (width * width))
    for i in range(0, len(ys), step):
        y, x, sig, tot, r = ys[i : i + step], xs[i : i + step], sigmas[i : i + step], totals[i : i + step], radius[i : i + step]
        big = int(r.max())
        d = np.arange(-big, big + 1)  # pixel offsets from the centre pixel
        edges = np.arange(-big, big + 2)  # their lower edges, and the last one's upper edge
        iy, ix = np.floor(y + 0.5).astype(np.int64), np.floor(x + 0.5).astype(np.int64)
        s = (sig * np.sqrt(2))[:, None]
        py = np.diff(erf(((iy[:, None] + edges) - 0.5 - y[:, None]) / s), axis=1) / 2
        px = np.diff(erf(((ix[:, None] + edges) - 0.5 - x[:, None]) / s), axis=1) / 2
        rows, cols = iy[:, None] + d, ix[:, None] + d
        near = np.abs(d)[None, :] <= r[:, None]  # each charge's own window, 2 r + 1 px wide
        inside = (near & (rows >= 0) & (rows < ny))[:, :, None] & (near & (cols >= 0) & (cols < nx))[:, None, :]
        weights = tot[:, None, None] * (py[:, :, None] * px[:, None, :])
        _add_in_order(flat_target, (rows[:, :, None] * nx + cols[:, None, :])[inside], weights[inside], stamp)


def _add_segment(target: np.ndarray, p0, p1, adc_per_px: float, sigma: float, rng) -> None:
    """Deposit charge along a straight segment (steps of 0.5 px), each step diffused."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    length = float(np.hypot(*(p1 - p0)))
    steps = max(int(length / 0.5), 1)
    for k in range(steps + 1):
        y, x = p0 + (p1 - p0) * k / steps
        _add_gaussian_charge(target, y, x, sigma, adc_per_px * 0.5 * rng.gamma(4.0, 0.25))


def simulate_ccd_frame_iter(
    shape: tuple[int, int] = (256, 256),
    seed: int | None = 0,
    pedestal: float = 8800.0,
    noise_sd: float = 60.0,
    glow_probability: float = 0.6,
    glow_level: tuple[float, float] = (1400.0, 1500.0),
    glow_width: tuple[int, int] = (3, 24),
    hot_level: float = 2200.0,
    n_hot: int | None = None,
    hot_length: tuple[int, int] = (1, 256),
    n_clusters: int | None = None,
    balanced: bool = False,
    muons: bool = False,
    electrons: bool = False,
    gain: float = 1.0,
    sigma_range: tuple[float, float] = (0.2, 0.8),
    absorption_depth: float = 0.3,
    fe55_sd_kev: float = 0.12,
    continuum_fraction: float = 0.3,
    continuum_mean_kev: float = 1.5,
    cluster_threshold: float | None = None,
    n_muons: int | None = None,
    n_electrons: int | None = None,
    target_fractions: tuple[float, float, float, float] = BALANCED_FRACTIONS,
) -> Generator[Progress, None, CCDFrame]:
    """Simulate one CCD tile in ADC with exact per-pixel class labels.

    :func:`simulate_ccd_frame` returns the frame; this generator form yields
    :class:`~napari_microseg.progress.Progress` (``done`` of 100) while a balanced layout is built (after
    each pass of clusters, every 1000 hot lines), so a worker can stop partway through a large frame, and
    returns the same frame.

    Parameters
    ----------
    shape : (Y, X) tile size in pixels (the study: 256x256).
    seed : seed for ``np.random.default_rng``.
    pedestal : pedestal level (ADC).
    noise_sd : Gaussian read-noise sd (ADC).
    glow_probability : probability that the tile has a glowing band.
    glow_level : (min, max) ADC of the glow above the pedestal; one level per tile.
    glow_width : (min, max) width in columns of the glowing band; it starts at a
        uniformly random column (never always column 0).
    hot_level : ADC of hot pixels/lines above the pedestal.
    n_hot : number of hot lines (1-px wide, vertical or horizontal, length
        drawn from ``hot_length``, length 1 = single hot pixel); ``None`` draws 0-6.
    n_clusters : number of point-charge clusters; ``None`` draws 5-40.
    balanced : build a layout with class fractions near ``target_fractions``
        (41/25/21/13 % bg/glow/hot/cluster by default): clusters and hot lines
        are added until their fractions are reached (``n_hot``/``n_clusters``
        are then ignored) and the glowing band is widened until its visible
        fraction is reached. The band is still present in a share
        ``glow_probability`` of the tiles only, as in the study (a band in
        every tile would teach that one is always there): a tile without one
        holds the glow's share as background (66 %), and over a data set glow
        covers ``glow_probability`` x 25 % (15 % at 0.6). The band is not
        widened further to make up for that: it would cover more of its tiles
        than the background does, and the pedestal (the histogram's peak)
        would be read on the band.
    muons : add straight muon tracks (class 3): a minimum-ionising particle leaves
        ~80 e-/um (:data:`MIP_ELECTRONS_PER_UM`), at least ``gain`` x 80 x 15 = 1200 ADC per
        pixel of track on 15 um pixels (:data:`PIXEL_UM`): long unbroken lines.
    electrons : add worm-like electron tracks (class 3): random walks with
        curvature, 10-40 steps, ~``gain`` x 1000 ADC per pixel.
    gain : ADC per electron (charge = energy / 3.65 eV).
    sigma_range : diffusion sigma (px) at the surface and at full depth.
    absorption_depth : mean interaction depth as a fraction of the thickness
        (exponential); sigma = min + (max - min) * sqrt(depth).
    fe55_sd_kev, continuum_fraction, continuum_mean_kev : energy spectrum, see module docstring.
    cluster_threshold : ADC of noise-free cluster charge from which a pixel is class 3;
        default ``2 * noise_sd`` (120 ADC): a pixel with less charge than twice the
        read noise cannot be told from noise, and labelling it "cluster" (the
        earlier 30 ADC) capped every model's cluster F1 near 0.5.
    n_muons, n_electrons : number of tracks when enabled (``None``: 1-2 muons, 1-4 electrons).
    target_fractions : class fractions aimed at when ``balanced``.

    Returns
    -------
    CCDFrame (the generator's return value)
    """
    ny, nx = check_shape_2d(shape, minimum=4)
    g_lo, g_hi = check_range(glow_level, "glow_level")
    w_lo, w_hi = (int(v) for v in check_range(glow_width, "glow_width", low=1))
    h_lo, h_hi = (int(v) for v in check_range(hot_length, "hot_length", low=1))
    s_lo, s_hi = check_range(sigma_range, "sigma_range", low=0.05)
    if noise_sd < 0:
        raise InputError(f"noise_sd must be >= 0, got {noise_sd}")
    if not 0 <= glow_probability <= 1:
        raise InputError(f"glow_probability must be in [0, 1], got {glow_probability}")
    if not (np.isfinite(gain) and gain > 0):
        raise InputError(f"gain must be > 0 (ADC per electron), got {gain}")
    fractions = np.asarray(target_fractions, float)
    if fractions.shape != (4,) or (fractions < 0).any() or not np.isclose(fractions.sum(), 1.0, atol=0.01):
        raise InputError(f"target_fractions must be 4 shares >= 0 that add up to 1, got {tuple(target_fractions)}")
    if cluster_threshold is None:
        cluster_threshold = max(2.0 * float(noise_sd), 1.0)
    params = jsonable({k: v for k, v in locals().items() if k not in ("ny", "nx", "g_lo", "g_hi", "w_lo", "w_hi", "h_lo", "h_hi", "s_lo", "s_hi")})
    rng = make_rng(seed)

    glow = np.zeros((ny, nx), np.float32)
    hot = np.zeros((ny, nx), np.float32)
    clusters = np.zeros((ny, nx), np.float32)
    tracks = np.zeros((ny, nx), np.float32)
    cluster_rows: list[np.ndarray] = []  # (k, 5) blocks: y, x, energy_keV, sigma_px, total_adc
    n_drawn = 0  # rows in cluster_rows

    def add_clusters(k: int) -> Generator[None, None, None]:
        """Draw ``k`` point charges and add them, yielding after each pass of 16384 (all drawn first:
        the random stream is the same however they are added)."""
        nonlocal n_drawn
        energies = fe55_energies(k, rng, fe55_sd_kev, continuum_fraction, continuum_mean_kev)
        depth = np.clip(rng.exponential(absorption_depth, k), 0, 1)
        sig = s_lo + (s_hi - s_lo) * np.sqrt(depth)
        # anywhere on the frame: pixel k spans k - 0.5 .. k + 0.5 (:func:`_add_gaussian_charge`), the frame
        # -0.5 .. n - 0.5 (drawn over 0 .. n, no charge was centred in the first row's and column's outer
        # halves, and some past the last row and column, half on the frame)
        ys = rng.uniform(-0.5, ny - 0.5, k)
        xs = rng.uniform(-0.5, nx - 0.5, k)
        totals = energies * 1000.0 / EV_PER_ELECTRON * gain
        for i in range(0, k, 16384):
            part = slice(i, i + 16384)
            _add_gaussian_charges(clusters, ys[part], xs[part], sig[part], totals[part])
            yield
        cluster_rows.append(np.column_stack([ys, xs, energies, sig, totals]))
        n_drawn += k

    def add_hot_lines(k: int, free: np.ndarray | None = None) -> int:
        """Add ``k`` hot lines; with ``free`` (a mask), return by how much they changed the count of
        hot pixels in it (each line's own pixels counted: not the whole frame per line)."""
        change = 0
        for _ in range(k):
            vertical = rng.random() < 0.5
            full = ny if vertical else nx
            length = int(rng.integers(min(h_lo, full), min(h_hi, full) + 1))
            start = int(rng.integers(0, full - length + 1))
            other = int(rng.integers(0, nx if vertical else ny))
            line = (slice(start, start + length), other) if vertical else (other, slice(start, start + length))
            if free is not None:
                change -= int(np.count_nonzero((hot[line] > 0) & free[line]))
            hot[line] = hot_level
            if free is not None:
                change += int(np.count_nonzero((hot[line] > 0) & free[line]))
        return change

    if muons:
        for _ in range(int(rng.integers(1, 3)) if n_muons is None else int(n_muons)):
            ang = rng.uniform(0, np.pi)
            cy, cx = rng.uniform(0, ny), rng.uniform(0, nx)
            half = max(ny, nx)
            p0 = (cy - half * np.sin(ang), cx - half * np.cos(ang))
            p1 = (cy + half * np.sin(ang), cx + half * np.cos(ang))
            _add_segment(tracks, p0, p1, MIP_ELECTRONS_PER_UM * PIXEL_UM * gain, rng.uniform(0.4, 0.8), rng)
    if electrons:
        for _ in range(int(rng.integers(1, 5)) if n_electrons is None else int(n_electrons)):
            pos = np.array([rng.uniform(0, ny), rng.uniform(0, nx)])
            heading = rng.uniform(0, 2 * np.pi)
            turn = rng.normal(0, 0.15)
            for _step in range(int(rng.integers(10, 41))):
                heading += turn + rng.normal(0, 0.35)
                new = pos + 1.5 * np.array([np.sin(heading), np.cos(heading)])
                _add_segment(tracks, pos, new, 1000.0 * gain, rng.uniform(0.5, 0.9), rng)
                pos = new

    def class_map(glow_arr):
        cls = np.zeros((ny, nx), np.uint8)
        cls[glow_arr > 0] = 1
        cls[hot > 0] = 2
        cls[(clusters + tracks) >= cluster_threshold] = 3
        return cls

    if balanced:
        n_pix = ny * nx
        f_bg, f_glow, f_hot, f_cl = (float(v) for v in target_fractions)
        # clusters first (highest precedence), in batches until the fraction is met
        need_cl = f_cl * n_pix
        batch = max(4, int(need_cl / 40))
        for _ in range(200):
            have = np.count_nonzero((clusters + tracks) >= cluster_threshold)
            if have >= need_cl:
                break
            if n_drawn:  # adapt the batch to the pixels per cluster seen so far
                per_cluster = max(have / n_drawn, 1.0)
                batch = max(2, int(0.7 * (need_cl - have) / per_cluster))
            for _ in add_clusters(batch):
                yield Progress(min(int(70 * have / max(need_cl, 1)), 69), 100, f"clusters: {n_drawn} drawn")
        cl_mask = (clusters + tracks) >= cluster_threshold
        free = ~cl_mask
        # a running count of the hot pixels outside clusters (recounting the frame for every line made a
        # 2048 x 2048 frame take 20 s)
        have_hot = int(np.count_nonzero((hot > 0) & free))
        need_hot = f_hot * n_pix
        for lines in range(10 * (ny + nx)):
            if have_hot >= need_hot:
                break
            have_hot += add_hot_lines(1, free)
            if lines % 1000 == 999:
                yield Progress(70 + min(int(25 * have_hot / max(need_hot, 1)), 24), 100, f"hot lines: {lines + 1}")
        glow_info = None
        if glow_probability >= 1 or (glow_probability > 0 and rng.random() < glow_probability):
            free_per_col = ((hot == 0) & ~cl_mask).sum(0)
            need = f_glow * n_pix
            c0 = int(rng.integers(0, nx))
            c1 = c0
            got = 0
            while (got < need or c1 == c0) and (c1 - c0) < nx:
                # grow to the right, then to the left once the edge is hit
                if c1 < nx:
                    got += free_per_col[c1]
                    c1 += 1
                else:
                    c0 -= 1
                    got += free_per_col[c0]
            level = rng.uniform(g_lo, g_hi)
            glow[:, c0:c1] = level
            glow_info = (c0, c1 - c0, level)
    else:
        if rng.random() < glow_probability:
            width = int(rng.integers(w_lo, w_hi + 1))
            width = min(width, nx)
            c0 = int(rng.integers(0, nx - width + 1))
            level = rng.uniform(g_lo, g_hi)
            glow[:, c0 : c0 + width] = level
            glow_info = (c0, width, level)
        else:
            glow_info = None
        add_hot_lines(int(rng.integers(0, 7)) if n_hot is None else int(n_hot))
        drain(add_clusters(int(rng.integers(5, 41)) if n_clusters is None else int(n_clusters)))

    classes = class_map(glow)
    image = pedestal + glow + hot + clusters + tracks
    image = image + rng.normal(0, noise_sd, (ny, nx))
    params["glow_band"] = None if glow_info is None else {"column": glow_info[0], "width": glow_info[1], "level": glow_info[2]}
    params["n_clusters_drawn"] = n_drawn
    params["class_names"] = list(CLASS_NAMES)
    params = jsonable(params)
    return CCDFrame(
        image=image.astype(np.float32),
        classes=classes,
        components={"glow": glow, "hot": hot, "clusters": clusters, "tracks": tracks},
        clusters=np.concatenate(cluster_rows, axis=0) if cluster_rows else np.zeros((0, 5)),
        params=params,
    )


def simulate_ccd_frame(*args, **kwargs) -> CCDFrame:
    return drain(simulate_ccd_frame_iter(*args, **kwargs))


# the same documentation and signature as the generator form (not its name: pickling finds functions by name)
functools.update_wrapper(simulate_ccd_frame, simulate_ccd_frame_iter, assigned=("__doc__",))
simulate_ccd_frame.__signature__ = inspect.signature(simulate_ccd_frame_iter).replace(return_annotation="CCDFrame")


#: hot lines / pixels of the sensor made by :func:`simulate_ccd_sensor` when none is asked for
SENSOR_HOT_LINES = 4


def simulate_ccd_sensor(shape: tuple[int, int] = (256, 256), seed: int | None = 0, n_hot: int = SENSOR_HOT_LINES,
                        glow_probability: float = 0.6, **kwargs) -> CCDFrame:
    """The defects of one simulated CCD, shared by all its exposures (:func:`simulate_ccd_exposure`):
    ``n_hot`` hot lines or pixels and, with probability ``glow_probability``, a glowing band; no charge,
    no read noise, no pedestal. ``kwargs`` go to :func:`simulate_ccd_frame` (``hot_level``,
    ``hot_length``, ``glow_level``, ``glow_width``)."""
    return simulate_ccd_frame(shape=shape, seed=seed, n_hot=n_hot, glow_probability=glow_probability, n_clusters=0,
                              noise_sd=0.0, pedestal=0.0, **kwargs)


def simulate_ccd_exposure(sensor: CCDFrame, seed: int | None = 0, **kwargs) -> CCDFrame:
    """One exposure of the simulated ``sensor`` (:func:`simulate_ccd_sensor`): point charges (and tracks),
    pedestal and read noise drawn with ``seed`` by :func:`simulate_ccd_frame` (``kwargs``: ``n_clusters``,
    ``muons``, ``noise_sd``, ``pedestal``, ...), the sensor's hot pixels and glowing band added in the same
    places as in every other exposure. Classes as :func:`simulate_ccd_frame` gives them (cluster before hot
    pixel before glowing). Exposures of one sensor are what the repeat rule needs
    (:func:`napari_microseg.inference.postprocess.ccd_persistence_rule`)."""
    if kwargs.get("balanced"):
        raise InputError("a balanced layout and exposures of one sensor do not go together: a balanced layout adds "
                         "hot lines frame by frame, the sensor's defects are the same in every exposure")
    for key in ("n_hot", "glow_probability", "shape", "hot_level", "hot_length", "glow_level", "glow_width"):
        if key in kwargs:
            raise InputError(f"{key} is the sensor's (simulate_ccd_sensor), not the exposure's")
    frame = simulate_ccd_frame(shape=sensor.image.shape, seed=seed, n_hot=0, glow_probability=0.0, **kwargs)
    hot, glow = sensor.components["hot"], sensor.components["glow"]
    classes = frame.classes.copy()
    free = classes != 3
    classes[free & (glow > 0)] = 1
    classes[free & (hot > 0)] = 2
    params = dict(frame.params, glow_band=sensor.params.get("glow_band"), sensor=sensor.params)
    return CCDFrame(image=(frame.image + glow + hot).astype(np.float32), classes=classes,
                    components=dict(frame.components, hot=hot, glow=glow), clusters=frame.clusters, params=params)


def write_ccd_fits(path, frame: CCDFrame, classes_path=None, overwrite: bool = False) -> Path:
    """Write ``frame.image`` to a FITS file atomically (float32 ADC, header with the simulation parameters).

    Parameters
    ----------
    path : target ``.fits`` / ``.fit`` path.
    frame : the simulated frame.
    classes_path : optional second FITS path for the uint8 class map.
    overwrite : if False (default) and a target exists, raise :class:`InputError`.

    Header keys: BUNIT='ADU', PEDESTAL, NOISE, SEED, GAIN, ADUPERE, GLOWPROB, GLOWCOL,
    GLOWWID, GLOWLVL, HOTLVL, NCLUST, BALANCED, CLASSES, plus SIMULAT and ORIGIN.
    ``GAIN`` is electrons per ADU, as FITS readers (ccdproc, astropy) take it: ``1 / gain``;
    ``ADUPERE`` is the simulation's ``gain`` itself (ADU per electron).
    """
    from astropy.io import fits

    path = Path(path)
    for target in (path, classes_path):
        if target is not None and Path(target).exists() and not overwrite:
            raise InputError(f"{target} exists; refusing to overwrite (pass overwrite=True)")
    p = frame.params
    header = fits.Header()
    header["BUNIT"] = ("ADU", "pixel values in ADC units")
    header["ORIGIN"] = ("napari-microseg", "simulated frame")
    header["SIMULAT"] = (True, "simulated by napari_microseg.simulate.ccd")
    header["PEDESTAL"] = (float(p.get("pedestal", 0)), "[ADU] pedestal level")
    header["NOISE"] = (float(p.get("noise_sd", 0)), "[ADU] Gaussian read-noise sd")
    seed = p.get("seed")
    header["SEED"] = (int(seed) if isinstance(seed, int) else -1, "random seed (-1: none or a Generator)")
    # GAIN in its usual FITS sense, electrons per ADU (ccdproc multiplies by it to get electrons); the
    # simulation's gain (ADU per electron) under a key of its own
    adu_per_electron = float(p.get("gain", 1.0))
    header["GAIN"] = (1.0 / adu_per_electron, "[e-/ADU] electrons per ADU (1 / ADUPERE)")
    header["ADUPERE"] = (adu_per_electron, "[ADU/e-] simulated conversion gain")
    # an exposure of one sensor: the sensor's (the exposure itself draws none)
    glow_probability = (p.get("sensor") or p).get("glow_probability", 0)
    header["GLOWPROB"] = (float(glow_probability), "probability of a glowing band")
    band = p.get("glow_band")
    header["GLOWCOL"] = (-1 if not band else int(band["column"]), "1st glow column, 0-based; -1 none")
    header["GLOWWID"] = (0 if not band else int(band["width"]), "glowing band width [px]")
    header["GLOWLVL"] = (0.0 if not band else float(band["level"]), "[ADU] glow above pedestal")
    header["HOTLVL"] = (float(p.get("hot_level", 0)), "[ADU] hot pixel level above pedestal")
    header["NCLUST"] = (int(p.get("n_clusters_drawn", 0)), "number of point-charge clusters")
    header["BALANCED"] = (bool(p.get("balanced", False)), "balanced class layout")
    header["CLASSES"] = ("0 bg,1 glow,2 hot,3 cluster", "class indices of the label map")
    with atomic_path(path) as tmp:
        fits.PrimaryHDU(data=frame.image.astype(np.float32), header=header).writeto(tmp, overwrite=True)
    if classes_path is not None:
        with atomic_path(classes_path) as tmp:
            fits.PrimaryHDU(data=frame.classes.astype(np.uint8), header=header).writeto(tmp, overwrite=True)
    return path
