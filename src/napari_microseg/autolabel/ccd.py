"""Class maps of CCD frames by thresholds and shape rules ([C]).

Classes (uint8): 0 background, 1 glowing, 2 hot pixel, 3 cluster (the order of
:mod:`napari_microseg.simulate.ccd`).

Steps of :func:`autolabel_ccd`:

1. **Taps.** Multi-amplifier frames are read out by several taps, each with
   its own pedestal (the ESIS frames in ``shared/data/ccd_fe55``: 2x2 taps, split
   at row 520 and column 1076, pedestals differing by ~300 ADC). With
   ``taps="auto"`` the frame is split at its middle row / column when the medians
   on either side differ by more than ``tap_sigma`` x noise; ``taps=(r, c)`` forces
   an r x c grid; ``(1, 1)`` treats the frame as one tap. All statistics below are
   per tap.
2. **Pedestal and noise** by robust statistics: pedestal = median of the tap;
   column baseline = median of each column; noise = 1.4826 x MAD of the pixels
   minus their column baseline (clusters and hot pixels barely move a median).
3. **Glowing columns**: columns whose baseline exceeds the pedestal by more than
   ``glow_sigma`` x noise (or ``glow_adc`` if given). Runs of at least
   ``glow_min_width`` such columns are glowing (class 1); a single raised column
   is a hot column (class 2: a 1-px-wide straight line, [C] shape rule), and so are two
   side by side raised by ``hot_pixel_adc`` or more (hot lines that happen to touch). A raised
   column must be raised along at least ``glow_min_coverage`` of its length
   (pixels above half the threshold); columns raised only because a partial hot
   line covers most of them get the pedestal as baseline instead.
4. **Signals**: residual = image - column baseline. Seed pixels exceed
   ``seed_sigma`` x noise; they grow (hysteresis) into 8-connected neighbours
   above ``grow_sigma`` x noise.
5. **Hot pixels / lines** ([C] shape rule "hot pixels are straight lines"):
   1-px-wide horizontal or vertical runs of at least ``hot_min_length`` pixels
   (thin: no detected pixel on both sides along most of the run), plus isolated
   components of at most ``hot_max_pixels`` pixels whose every pixel exceeds
   ``hot_pixel_adc`` above the baseline (a single very bright pixel; charge
   clusters spread over several pixels by diffusion).
6. **Clusters** (class 3): the remaining components with at least
   ``cluster_min_size`` pixels. Components larger than ``cluster_max_size`` px
   (muon / electron tracks) stay class 3 when ``tracks_as_clusters`` (the
   simulator's convention) and become background otherwise.

``exclude_columns`` (indices) are left out of every statistic and set to class
0; use it for prescan / overscan columns whose statistics differ from the
active area. In the ESIS frames only the first column of each tap differs
(+17 ADC, ~4 noise sd, below the default glow threshold), so nothing needs
excluding there.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from ..errors import InputError, MicrosegWarning
from ..simulate.ccd import CLASS_NAMES  # one list of the CCD class names


class TapWarning(MicrosegWarning):
    """A pedestal step between columns away from the middle (a crop of a multi-tap frame): not split there."""


MAD_TO_SD = 1.4826


@dataclass
class CCDBaseline:
    """Robust per-tap statistics of a CCD frame.

    Attributes
    ----------
    baseline : (Y, X) float32 column baseline (median of each column within its tap), ADC.
    pedestal : (Y, X) float32 tap pedestal (median of the tap), ADC.
    noise : (Y, X) float32 read-noise sd of the tap (1.4826 x MAD of image - baseline), ADC.
    tap_rows, tap_cols : split positions (row / column indices where a new tap starts).
    taps : list of dicts, one per tap: ``rows, cols, pedestal, noise``.
    """

    baseline: np.ndarray
    pedestal: np.ndarray
    noise: np.ndarray
    tap_rows: list
    tap_cols: list
    taps: list = field(default_factory=list)


@dataclass
class CCDLabels:
    """Result of :func:`autolabel_ccd_details`: the class map plus what was used to make it."""

    classes: np.ndarray
    baseline: CCDBaseline
    glow_columns: np.ndarray
    params: dict = field(default_factory=dict)

    @property
    def class_fractions(self) -> np.ndarray:
        return class_fractions(self.classes)


def class_fractions(classes: np.ndarray) -> np.ndarray:
    """Fraction of pixels in each of the four classes (length-4 float array)."""
    c = np.asarray(classes)
    return np.bincount(c.ravel(), minlength=4)[:4] / max(c.size, 1)


def _check_image(image) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 2:
        raise InputError(f"expected a 2-D CCD frame, got shape {img.shape}")
    if img.dtype.kind not in "uif":
        raise InputError(f"unsupported CCD image dtype {img.dtype}")
    img = img.astype(np.float32)
    if not np.all(np.isfinite(img)):
        raise InputError("CCD frame holds NaN or infinite values (masked, saturated or missing pixels?): replace "
                         "them with a finite value, e.g. the pedestal, first")
    if img.shape[0] < 4 or img.shape[1] < 4:
        raise InputError(f"CCD frame too small: {img.shape}")
    return img


def robust_noise(values: np.ndarray) -> float:
    """Gaussian sd of ``values`` from their median absolute deviation (x 1.4826). Values in whole
    steps (integer ADC, or their halves after a median) with a MAD of a few steps: the MAD of the steps
    spread evenly over their width, as a digitised Gaussian's continuous deviations would be; the plain
    MAD moves in whole steps there and is 0 where most pixels share one value (read noise under 0.7 ADC),
    which made every pixel 1 ADC above the pedestal a signal."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return 0.0
    med = np.median(v)
    deviation = np.abs(v - med)
    mad = float(np.median(deviation))
    step = _quantum(v)
    if step is None or mad > 8 * step:
        return MAD_TO_SD * mad
    return MAD_TO_SD * _spread_median(v, med, step, mad)


def _quantum(values: np.ndarray) -> float | None:
    """The grid step of ``values``: for whole numbers their common step when it lies within their spread
    (2 for a frame digitised in steps of 2 ADC, e.g. FITS BSCALE 2: spread over 1 ADC its noise read 17 %
    low), else 1; 0.5 for whole numbers of halves; else None."""
    sample = values[:: max(1, values.size // 200_000)]
    for step in (1.0, 0.5):
        if np.array_equal(sample / step, np.round(sample / step)) and np.array_equal(values / step, np.round(values / step)):
            if step == 1.0 and values.size > 1:
                offsets = (values - values.min()).astype(np.int64)
                common = int(np.gcd.reduce(offsets[offsets > 0])) if (offsets > 0).any() else 1
                # a digitisation step, not the gap between a few levels (a 0/255 image's 255: its noise
                # spread over 255 hid every nucleus): it lies within the values' own spread
                spread = float(np.median(np.abs(sample - np.median(sample))))
                return float(common) if 1 < common <= 2 * spread else 1.0
            return step
    return None


def _spread_median(values: np.ndarray, centre: float, step: float, mad: float) -> float:
    """The median of ``|values - centre|`` with each value spread evenly over ``[value - step/2, value + step/2]``
    (``values`` on a grid of ``step``; ``mad`` their plain median absolute deviation, which bounds it)."""
    near = values[np.abs(values - centre) <= mad + 2 * step]
    points, counts = np.unique(near, return_counts=True)
    lo_edge, hi_edge = points - step / 2, points + step / 2

    def share_within(r: float) -> float:
        overlap = np.clip(np.minimum(hi_edge, centre + r) - np.maximum(lo_edge, centre - r), 0, step) / step
        return float((counts * overlap).sum()) / values.size

    low, high = 0.0, mad + step
    for _ in range(40):  # bisection: share_within grows with r
        mid = (low + high) / 2
        low, high = (mid, high) if share_within(mid) < 0.5 else (low, mid)
    return (low + high) / 2


def _row_steps(img: np.ndarray, k: int, limit: float) -> list[int]:
    """Rows where the pixel level steps by more than ``limit`` (window medians of ``k`` rows)."""
    from numpy.lib.stride_tricks import sliding_window_view

    ny, nx = img.shape
    sub = img[:, :: max(1, nx // 1024)]
    # row profile of the pixels minus a per-column reference (median of the first rows):
    # glowing / hot columns cancel out
    row_med = np.median(sub - np.median(sub[: min(64, ny)], axis=0, keepdims=True), axis=1)
    win = np.median(sliding_window_view(row_med, k), axis=1)  # win[i] = median of rows i..i+k-1
    idx = np.arange(k, ny - k + 1)
    step = np.abs(win[idx] - win[idx - k])
    found: list[int] = []
    for j in np.argsort(step)[::-1][:16]:
        if step[j] <= limit:
            break
        pos = int(idx[j])
        # refine: the largest single-row jump near the window step
        lo_, hi_ = max(pos - k // 2, 1), min(pos + k // 2, ny - 1)
        pos = lo_ + int(np.argmax(np.abs(np.diff(row_med[lo_ - 1:hi_ + 1]))[: hi_ - lo_ + 1]))
        if all(abs(pos - r) >= 2 * k for r in found):
            found.append(pos)
    return found


def detect_taps(image: np.ndarray, tap_sigma: float = 10.0, middle_sigma: float = 3.0) -> tuple[list, list]:
    """Find tap boundaries (pedestal steps) of a CCD frame.

    Rows: any row where the median of the 32 rows after it differs from the median of
    the 32 rows before it by more than ``tap_sigma`` x noise (noise from neighbour
    differences, blind to the steps), or the middle row when the two halves and the 32 rows
    either side of it differ by more than ``middle_sigma`` x noise (in either column half).
    Columns: the middle column, if both the two halves and the 16 columns either side of the
    middle differ by more than ``tap_sigma`` x noise, or by more than ``middle_sigma`` x noise
    with each half flat (within each row band). Taps split a frame at its middle; steps within a
    tap stay under one noise sd, so a smaller step counts there (a 450 ADC step at 60 ADC noise
    was taken for glow). Returns ``(tap_rows, tap_cols)``: start indices of taps after the first.
    """
    img = np.asarray(image, np.float32)
    ny, nx = img.shape
    # noise from differences of horizontal neighbours: blind to pedestal steps between taps
    diffs = np.diff(img[:: max(1, ny // 512)], axis=1).ravel()
    noise = max(robust_noise(diffs) / np.sqrt(2), 1e-6)
    rows, cols = [], []
    mx = nx // 2
    k = 32
    limit = tap_sigma * noise
    middle_limit = min(middle_sigma, tap_sigma) * noise
    # rows: a pedestal step anywhere (glowing columns do not change row medians)
    if ny >= 2 * k + 2:
        # each column half separately: left and right taps step by different amounts
        halves = (slice(0, mx), slice(mx, nx)) if nx >= 64 else (slice(0, nx),)
        for xs in halves:
            for pos in _row_steps(img[:, xs], k, limit):
                if all(abs(pos - r) >= 2 * k for r in rows):
                    rows.append(pos)
        my = ny // 2
        if all(abs(my - r) >= k for r in rows) and any(
                _middle_step(img[:, xs].T, k, middle_limit, limit) for xs in halves):
            rows.append(my)
        rows = sorted(rows)
    # columns: split at the middle only (amplifiers at both ends of the serial register);
    # a glowing band would need to end exactly there to fake it
    kc = 16
    r_edges = [0, *rows, ny]
    for r0, r1 in zip(r_edges[:-1], r_edges[1:]):
        ys = slice(r0, r1)
        if nx < 2 * kc:
            break
        if _middle_step(img[ys], kc, middle_limit, limit):
            cols = [mx]
    if not cols and nx > 8 * kc:
        _warn_off_centre_column_step(img, r_edges, kc, limit)
    return rows, cols


def _middle_step(block: np.ndarray, k: int, limit: float, sure: float = np.inf) -> bool:
    """Whether the pixel level of ``block`` (Y, X) steps at its middle column by more than ``limit``:
    both its two halves' medians and those of the ``k`` columns either side of the middle differ by
    that much, and, for a step under ``sure``, 80 % of each half's column medians lie nearer its own
    level than the other half's (each tap is flat; a glowing band that ends at the middle but does
    not fill its half is no step). A step over ``sure`` counts whatever else the halves hold."""
    mx = block.shape[1] // 2
    left, right = np.median(block[:, :mx]), np.median(block[:, mx:])
    step = abs(np.median(block[:, mx - k:mx]) - np.median(block[:, mx:mx + k]))
    if not (abs(left - right) > limit and step > limit):
        return False
    if abs(left - right) > sure and step > sure:
        return True
    colmed = np.median(block[:: max(1, block.shape[0] // 512)], axis=0)
    nearer_left = np.abs(colmed - left) < np.abs(colmed - right)
    return bool(nearer_left[:mx].mean() >= 0.8 and (~nearer_left[mx:]).mean() >= 0.8)


def _warn_off_centre_column_step(img: np.ndarray, r_edges: list, kc: int, limit: float) -> None:
    """Warn (TapWarning) when a row band has a pedestal step at a column other than the middle: the
    medians of the ``kc`` columns either side differ by more than ``limit`` ADC, each side is at least
    4 ``kc`` columns wide, and 80 % of each side's column medians are nearer its own level than the other
    side's (a glowing band, a step up and down again, is not a step). Real frames' steps within a tap
    stay under one noise sd; tap steps are 10-120."""
    from numpy.lib.stride_tricks import sliding_window_view

    for r0, r1 in zip(r_edges[:-1], r_edges[1:]):
        colmed = np.median(img[r0:r1:max(1, (r1 - r0) // 512)], axis=0)
        window = np.median(sliding_window_view(colmed, kc), axis=1)  # window[i]: columns i .. i + kc - 1
        steps = np.abs(window[kc:] - window[:-kc])  # steps[i]: at column i + kc
        steps[: 3 * kc] = steps[len(steps) - 3 * kc:] = 0  # each side at least 4 kc columns
        at = int(np.argmax(steps)) + kc
        left, right = window[at - kc], window[at]
        nearer_left = np.abs(colmed - left) < np.abs(colmed - right)
        if steps[at - kc] > limit and nearer_left[:at].mean() >= 0.8 and (~nearer_left[at:]).mean() >= 0.8:
            warnings.warn(TapWarning(
                f"the pedestal steps by {steps[at - kc]:.0f} ADC near column {at} (rows {r0}-{r1 - 1}), not at the "
                f"middle column {img.shape[1] // 2}, the only place a column of taps is looked for: a glowing band "
                "reaching the frame's edge, or a crop of a multi-tap frame? If it is a tap boundary, crop the frame "
                "there ('autolabel ccd' also takes --taps RxC, an even grid of taps): the columns beyond it are "
                "taken for glow"), stacklevel=3)
            return


def _clipped_column_stats(block: np.ndarray, clip_sigma: float = 3.0, iterations: int = 3) -> tuple[np.ndarray, float]:
    """Per-column median and one read-noise sd of a block, iteratively ignoring pixels above ``clip_sigma`` sd.

    Only the upper side is clipped (signals are positive), so frames where a third of
    the pixels hold charge (the simulator's balanced layout) still give the right
    baseline and noise.
    """
    data = block.astype(np.float32)
    step = max(1, data.shape[0] // 512)  # at most ~512 rows per column are enough for a median
    data = data[::step]
    keep = np.ones(data.shape, bool)
    colmed = np.median(data, axis=0)
    # only the upper side is clipped, so a column's kept pixels are its lowest ones: with each column
    # sorted once, the median of the kept pixels is read at half their count (as np.nanmedian of the
    # clipped column gives, without its per-column loop)
    ordered = np.sort(data, axis=0)
    for _ in range(iterations):
        resid = data - colmed
        sd = robust_noise(resid[keep])
        keep = resid < clip_sigma * max(sd, 1e-6)
        n_kept = keep.sum(axis=0)
        colmed = np.where(n_kept > 0, _lowest_values_median(ordered, n_kept), colmed)
    sd = robust_noise((data - colmed)[keep])
    return colmed.astype(np.float32), float(sd)


def _lowest_values_median(ordered: np.ndarray, n_lowest: np.ndarray) -> np.ndarray:
    """Per column of ``ordered`` ((rows, columns), each column sorted ascending), the median of its
    ``n_lowest`` lowest values (the mean of the two middle ones for an even count); any value where
    ``n_lowest`` is 0."""
    n = np.maximum(n_lowest, 1)
    columns = np.arange(ordered.shape[1])
    return (ordered[(n - 1) // 2, columns] + ordered[n // 2, columns]) / np.float32(2)


def _lowest_level(column_medians: np.ndarray, tolerance: float) -> float:
    """Pedestal = median of the column medians near the low end (robust to glowing columns covering most of a tap)."""
    low = float(np.percentile(column_medians, 10))
    near = column_medians[column_medians <= low + max(tolerance, 1e-6)]
    return float(np.median(near)) if near.size else low


#: raised columns at most this many side by side whose level reaches a hot pixel's are hot lines, not glow
HOT_PAIR_WIDTH = 2

#: the smallest side (px) of a readout tap given as a grid (``--taps RxC``)
MIN_TAP_SIDE = 8

def estimate_baseline(image, taps: str | tuple[int, int] = "auto", exclude_columns: Sequence[int] | None = None,
                      tap_sigma: float = 10.0, clip_sigma: float = 3.0, glow_sigma: float = 10.0,
                      boundaries: tuple[Sequence[int], Sequence[int]] | None = None) -> CCDBaseline:
    """Per-tap pedestal, per-column baseline and read noise of a (Y, X) frame in ADC.

    Parameters
    ----------
    image : (Y, X) array in ADC.
    taps : ``"auto"`` (see :func:`detect_taps`), or ``(n_rows, n_cols)`` of an even grid of taps.
    exclude_columns : column indices left out of the statistics (prescan / overscan).
    tap_sigma : threshold for ``"auto"`` in noise sd.
    clip_sigma : pixels above the column median by more than this (noise sd) are
        ignored when re-estimating medians and noise (3 iterations).
    glow_sigma : the pedestal is the median of the column medians within
        ``glow_sigma / 2`` noise sd of their 10th percentile (glowing columns excluded).
    boundaries : ``(tap_rows, tap_cols)`` that :func:`detect_taps` found before (not looked for again;
        ``taps`` is then not read).
    """
    img = _check_image(image)
    ny, nx = img.shape
    if boundaries is not None:
        tap_rows, tap_cols = (sorted(int(v) for v in side) for side in boundaries)
    elif isinstance(taps, str):
        if taps != "auto":
            raise InputError(f"taps must be 'auto' or (rows, cols), got {taps!r}")
        tap_rows, tap_cols = detect_taps(img, tap_sigma)
    else:
        r, c = (int(v) for v in taps)
        if r < 1 or c < 1:
            raise InputError(f"taps must be >= 1 each, got {taps}")
        if ny // r < MIN_TAP_SIDE or nx // c < MIN_TAP_SIDE:  # a tap's statistics need rows and columns of pixels
            raise InputError(f"{r}x{c} taps on a {ny}x{nx} frame leave taps of {ny // r}x{nx // c} px: each needs at "
                             f"least {MIN_TAP_SIDE} px a side")
        tap_rows = [round(ny * k / r) for k in range(1, r)]
        tap_cols = [round(nx * k / c) for k in range(1, c)]
    use = np.ones(nx, bool)
    if exclude_columns is not None and len(exclude_columns):
        idx = np.asarray(list(exclude_columns), int)
        if idx.min() < -nx or idx.max() >= nx:
            raise InputError(f"exclude_columns out of range for width {nx}")
        use[idx] = False
        if not use.any():
            raise InputError(f"exclude_columns leave none of the {nx} columns to measure the background on")
    baseline = np.zeros_like(img)
    pedestal = np.zeros_like(img)
    noise = np.zeros_like(img)
    info = []
    r_edges = [0, *tap_rows, ny]
    c_edges = [0, *tap_cols, nx]
    for r0, r1 in zip(r_edges[:-1], r_edges[1:]):
        for c0, c1 in zip(c_edges[:-1], c_edges[1:]):
            block = img[r0:r1, c0:c1]
            cols_ok = use[c0:c1]
            colmed, sd = _clipped_column_stats(block, clip_sigma)
            if not cols_ok.any():
                ped = float(np.median(colmed))
            else:
                ped = _lowest_level(colmed[cols_ok], glow_sigma * sd / 2)
            colmed = np.where(cols_ok, colmed, ped)
            baseline[r0:r1, c0:c1] = colmed[None, :]
            pedestal[r0:r1, c0:c1] = ped
            noise[r0:r1, c0:c1] = sd
            info.append({"rows": [int(r0), int(r1)], "cols": [int(c0), int(c1)], "pedestal": ped, "noise": sd})
    return CCDBaseline(baseline, pedestal, noise, list(tap_rows), list(tap_cols), info)


def level_taps(image: np.ndarray, taps: str | tuple[int, int] = "auto", **baseline_kwargs) -> np.ndarray:
    """Bring every readout tap of a frame to one pedestal (ADC).

    Each tap's pedestal (:func:`estimate_baseline`) is subtracted and the
    median of the tap pedestals added back, so the frame keeps its ADC scale
    and a model normalised by the frame median (``pedestal`` normalisation)
    sees no steps between taps (a tap 300 ADC above the others would
    otherwise look like a glowing region).

    Parameters
    ----------
    image : (Y, X) frame in ADC.
    taps : as in :func:`estimate_baseline`.

    Returns
    -------
    (Y, X) float32 frame in ADC.
    """
    img = _check_image(image)
    base = estimate_baseline(img, taps=taps, **baseline_kwargs)
    common = float(np.median([t["pedestal"] for t in base.taps]))
    return (img - base.pedestal + common).astype(np.float32)


def _thin_runs(mask: np.ndarray, length: int, vertical: bool, thin_fraction: float = 0.7) -> np.ndarray:
    """Pixels of 1-px-wide straight runs of ``mask`` at least ``length`` long (vertical or horizontal)."""
    m = mask if vertical else mask.T
    run = ndi.binary_opening(m, structure=np.ones((length, 1), bool))
    # a run pixel is thin if neither left nor right neighbour is set
    left = np.zeros_like(m)
    left[:, 1:] = m[:, :-1]
    right = np.zeros_like(m)
    right[:, :-1] = m[:, 1:]
    thin = run & ~(left | right)
    out = np.zeros_like(m)
    lab, n = ndi.label(run, structure=np.array([[0, 1, 0], [0, 1, 0], [0, 1, 0]], bool))
    if n:
        size = np.bincount(lab.ravel(), minlength=n + 1)
        n_thin = np.bincount(lab.ravel(), weights=thin.ravel(), minlength=n + 1)
        ok = (n_thin >= thin_fraction * size) & (size >= length)
        ok[0] = False
        # run pixels stay hot where the signal across the line is at most 2 px wide (a noise
        # pixel beside the line); wider places are a cluster sitting on the line
        across = ndi.convolve1d(m.astype(np.uint8), np.ones(5, np.uint8), axis=1, mode="constant")
        out = ok[lab] & (across <= 2)
    return out if vertical else out.T


def autolabel_ccd_details(
    image_adc,
    pedestal: float | np.ndarray | None = None,
    noise: float | None = None,
    taps: str | tuple[int, int] = "auto",
    exclude_columns: Sequence[int] | None = None,
    glow_sigma: float = 10.0,
    glow_adc: float | None = None,
    glow_min_width: int = 2,
    glow_min_coverage: float = 0.9,
    seed_sigma: float = 5.0,
    grow_sigma: float = 2.5,
    hot_min_length: int = 4,
    hot_pixel_adc: float | None = 2000.0,
    hot_max_pixels: int = 2,
    cluster_min_size: int = 1,
    cluster_max_size: int = 200,
    tracks_as_clusters: bool = True,
) -> CCDLabels:
    """:func:`autolabel_ccd` returning a :class:`CCDLabels` (class map, baseline, glow columns, params)."""
    params = {k: (v if not isinstance(v, np.ndarray) else "array") for k, v in locals().items() if k != "image_adc"}
    if exclude_columns is not None:
        params["exclude_columns"] = [int(v) for v in exclude_columns]
    img = _check_image(image_adc)
    ny, nx = img.shape
    base = estimate_baseline(img, taps=taps, exclude_columns=exclude_columns, glow_sigma=glow_sigma)
    if pedestal is not None:
        ped = _pedestal_like(pedestal, img.shape)
        base.pedestal = np.array(ped, np.float32)
    if noise is not None:
        if noise <= 0:
            raise InputError(f"noise must be > 0, got {noise}")
        base.noise = np.full(img.shape, float(noise), np.float32)
    sd = np.maximum(base.noise, 1e-6)
    excluded = np.zeros(nx, bool)
    if exclude_columns is not None and len(exclude_columns):
        excluded[np.asarray(list(exclude_columns), int)] = True

    classes = np.zeros((ny, nx), np.uint8)
    # 3. glowing columns (per tap row band: a column may glow in one tap only)
    excess = base.baseline - base.pedestal
    limit = glow_adc if glow_adc is not None else glow_sigma * sd
    raised = excess > limit  # constant down each column within a tap
    raised[:, excluded] = False
    glow_mask = np.zeros_like(raised)
    hot_cols = np.zeros_like(raised)
    baseline = base.baseline.copy()
    r_edges = [0, *base.tap_rows, ny]
    for r0, r1 in zip(r_edges[:-1], r_edges[1:]):
        row = raised[r0].copy()
        if not row.any():
            continue
        # a glowing (or fully hot) column is raised along (nearly) its whole length; a column
        # raised only because a hot line covers most of it is not: its baseline is the pedestal
        above = (img[r0:r1] - base.pedestal[r0:r1]) > (limit[r0:r1] / 2 if np.ndim(limit) else limit / 2)
        coverage = above.mean(axis=0)
        partial = row & (coverage < glow_min_coverage)
        baseline[r0:r1, partial] = base.pedestal[r0:r1, partial]
        row &= ~partial
        lab, n = ndi.label(row)
        if n:
            widths = np.bincount(lab, minlength=n + 1)
            wide = widths >= glow_min_width
            if hot_pixel_adc is not None:  # hot columns side by side (2 px) at a hot pixel's level: two hot lines
                level = ndi.mean(excess[r0], lab, index=np.arange(n + 1))
                wide &= ~((widths <= HOT_PAIR_WIDTH) & (np.nan_to_num(level) >= hot_pixel_adc))
            wide[0] = False
            glow_mask[r0:r1] = wide[lab][None, :]
            hot_cols[r0:r1] = (row & ~wide[lab])[None, :]
    base.baseline = baseline
    glow_columns = np.flatnonzero(glow_mask.any(axis=0))
    classes[glow_mask] = 1

    # 4. signals above the column baseline (hysteresis)
    resid = img - base.baseline
    resid[:, excluded] = 0
    seeds = resid > seed_sigma * sd
    grow = resid > grow_sigma * sd
    lab, n = ndi.label(grow, structure=np.ones((3, 3), bool))
    if n:
        has_seed = np.zeros(n + 1, bool)
        has_seed[np.unique(lab[seeds])] = True
        has_seed[0] = False
        signal = has_seed[lab]
    else:
        signal = np.zeros_like(grow)

    # 5. hot pixels / lines
    hot = hot_cols.copy()
    if hot_min_length and hot_min_length > 1:
        hot |= _thin_runs(signal, int(hot_min_length), vertical=True)
        hot |= _thin_runs(signal, int(hot_min_length), vertical=False)
    rest = signal & ~hot
    lab, n = ndi.label(rest, structure=np.ones((3, 3), bool))
    if n:
        # what is left of a component after removing hot lines needs its own seed pixel
        seeded = np.zeros(n + 1, bool)
        seeded[np.unique(lab[seeds & rest])] = True
        seeded[0] = False
        rest &= seeded[lab]
        lab, n = ndi.label(rest, structure=np.ones((3, 3), bool))
    if n:
        sizes = np.bincount(lab.ravel(), minlength=n + 1)
        if hot_pixel_adc is not None:
            mins = ndi.minimum(resid, lab, np.arange(1, n + 1))
            bright = np.zeros(n + 1, bool)
            bright[1:] = (np.asarray(mins) >= hot_pixel_adc) & (sizes[1:] <= hot_max_pixels)
            hot |= bright[lab]
            rest &= ~bright[lab]
            sizes[bright] = 0
        keep = sizes >= cluster_min_size
        if not tracks_as_clusters:
            keep &= sizes <= cluster_max_size
        keep[0] = False
        cluster = keep[lab] & rest
    else:
        cluster = np.zeros_like(rest)
    classes[hot] = 2
    classes[cluster] = 3
    classes[:, excluded] = 0
    return CCDLabels(classes, base, glow_columns, params)


def _pedestal_like(pedestal, shape: tuple) -> np.ndarray:
    """A pedestal in ADC (a number, a row of columns, or a frame) broadcast to the frame's shape."""
    values = np.asarray(pedestal, np.float32)
    try:
        return np.broadcast_to(values, shape)
    except ValueError:
        raise InputError(f"pedestal of shape {values.shape} does not fit a frame of shape {shape}: give one "
                         "number, one value per column or a whole frame") from None


def autolabel_ccd(image_adc, pedestal: float | np.ndarray | None = None, noise: float | None = None, **kwargs) -> np.ndarray:
    """Per-pixel class map of a CCD frame by robust thresholds and shape rules ([C]).

    Parameters
    ----------
    image_adc : (Y, X) frame in ADC (any numeric dtype; raw, not rescaled).
    pedestal : pedestal in ADC (scalar or (Y, X)); None: median per tap. Used for glow detection.
    noise : read-noise sd in ADC; None: 1.4826 x MAD per tap.
    **kwargs : see :func:`autolabel_ccd_details` and the module docstring:
        ``taps="auto"``, ``exclude_columns=None``, ``glow_sigma=10``, ``glow_adc=None``,
        ``glow_min_width=2`` (columns), ``glow_min_coverage=0.9``, ``seed_sigma=5``, ``grow_sigma=2.5`` (noise sd),
        ``hot_min_length=4`` (px), ``hot_pixel_adc=2000`` (ADC above baseline; the
        simulator's hot level is 2200, an Fe-55 cluster holds <= ~1800 ADC in total at
        gain 1), ``hot_max_pixels=2``, ``cluster_min_size=1``, ``cluster_max_size=200`` (px),
        ``tracks_as_clusters=True``.

    Returns
    -------
    classes : (Y, X) uint8, 0 background, 1 glowing, 2 hot pixel, 3 cluster.
    """
    return autolabel_ccd_details(image_adc, pedestal=pedestal, noise=noise, **kwargs).classes


def object_label_offset(class_map: np.ndarray, cluster_class: int = 3, background: int = 0) -> int:
    """How many objects of other classes come before the first cluster in ``objects.csv``: the
    8-connected pieces of each class below ``cluster_class`` (background left out), the order in
    which :func:`~napari_microseg.inference.postprocess.class_map_to_instances` numbers them. Added
    to :func:`find_clusters`' numbering, a cluster's ``label`` in ``clusters.csv`` is its ``label``
    in ``objects.csv``."""
    cls = np.asarray(class_map)
    eight = np.ones((3, 3), bool)
    return int(sum(ndi.label(cls == c, structure=eight)[1] for c in np.unique(cls) if c != background and c < cluster_class))


def _local_baseline(window: np.ndarray, classes: np.ndarray, quiet: np.ndarray, fallback: float,
                    box: tuple[slice, slice], inside: np.ndarray, sided: np.ndarray | None = None) -> float | np.ndarray:
    """Baseline (ADC) under a cluster from the quiet pixels of the ``window`` around it: their median
    (``fallback`` when there are none); when they are of several classes (a glowing band's edge), per
    cluster pixel the median of the class of its nearest pixel of ``sided`` (default ``quiet``: the quiet
    pixels with those of the grown cluster, whose own class says which side of the band's edge each lies
    on; with the grown pixels left out, the nearest quiet pixel of a cluster 1-2 px from a band lay in the
    band, and the glow's level taken off background pixels gave charges of -6796 ADC). ``box`` locates the
    cluster's bounding box in the window and ``inside`` its pixels there; returns a scalar or one value per
    pixel."""
    present = np.unique(classes[quiet])
    sided = quiet if sided is None else sided
    sides = np.unique(classes[sided])
    if present.size == 0:
        return fallback
    if present.size == 1 and sides.size <= 1:
        return float(np.median(window[quiet]))
    overall = float(np.median(window[quiet]))
    level = np.full(int(max(present.max(), sides.max())) + 1, overall)  # a side with no quiet pixel left: all's
    for c in present:
        level[c] = np.median(window[quiet & (classes == c)])
    nearest = ndi.distance_transform_edt(~sided, return_distances=False, return_indices=True)
    nearest_class = classes[nearest[0], nearest[1]]
    return level[nearest_class[box][inside]]


#: px by which :func:`find_clusters` grows each cluster for its charge (1.5: the 8 neighbours; 1 adds no
#: diagonals and summed 92 % of a window's charge on real Fe-55 frames)
CHARGE_GROW_PX = 1.5


#: rows of the frame grown at a time by :func:`_expand_labels_by_strips` (plus a margin of the growth)
GROW_STRIP_ROWS = 256


def _expand_labels_by_strips(lab: np.ndarray, grow: float, strip_rows: int = GROW_STRIP_ROWS) -> np.ndarray:
    """``skimage.segmentation.expand_labels(lab, grow)`` computed strip by strip of ``strip_rows`` rows.

    Parameters
    ----------
    lab : (Y, X) integer labels (0: background).
    grow : distance in px by which each label grows into background.

    Returns
    -------
    (Y, X) grown labels, the same as ``expand_labels`` gives for the whole frame: a pixel takes
    the nearest label within ``grow`` px, which lies within ``ceil(grow)`` rows of it, so each
    strip is grown with that many rows of margin on both sides. On the whole frame the distance
    transform's float64 distances and int64 indices took ~24 bytes a pixel (4096 x 4096 with
    20,000 clusters: 320 -> 672 MiB peak); by strips they take that of one strip.
    """
    from skimage.segmentation import expand_labels

    margin = int(math.ceil(grow))
    ny = lab.shape[0]
    if ny <= strip_rows + 2 * margin:
        return expand_labels(lab, grow)
    grown = np.empty_like(lab)
    for top in range(0, ny, strip_rows):
        bottom = min(top + strip_rows, ny)
        lo, hi = max(top - margin, 0), min(bottom + margin, ny)
        grown[top:bottom] = expand_labels(lab[lo:hi], grow)[top - lo:bottom - lo]
    return grown


def find_clusters(class_map: np.ndarray, image: np.ndarray, pedestal: float | np.ndarray | None = None,
                  cluster_class: int = 3, max_size: int | None = None, connectivity: int = 2,
                  background_classes: Sequence[int] = (0, 1), ring: int = 3, first_label: int = 1,
                  tap_pedestal: float | np.ndarray | None = None, grow: float = CHARGE_GROW_PX,
                  exclude_columns: Sequence[int] | None = None) -> pd.DataFrame:
    """One row per connected cluster (class ``cluster_class``) of a class map.

    Parameters
    ----------
    class_map : (Y, X) class map (e.g. from :func:`autolabel_ccd`).
    image : (Y, X) frame in ADC.
    pedestal : scalar or (Y, X) baseline in ADC subtracted before summing the charge;
        None: each cluster's local baseline, the median of the ``background_classes``
        pixels (background, glow) within ``ring`` px of its bounding box (hot columns and
        other clusters left out), else of all background pixels of the frame. A cluster on
        the edge of a glowing band has both around it: each of its pixels then takes the
        median of the class of the quiet pixel nearest to it (the glow's level under the
        band, the background's beside it), not one level for all.
    max_size : clusters larger than this (px) are left out (None: keep all).
    connectivity : 1 (4-neighbours) or 2 (8-neighbours).
    background_classes : classes whose pixels give the local baseline (CCD: 0 background, 1 glowing).
    ring : px around each cluster's bounding box searched for baseline pixels.
    first_label : the first cluster's ``label`` (the others follow in scan order); with
        ``1 + object_label_offset(class_map)`` the labels are those of ``objects.csv``.
    tap_pedestal : (Y, X) pedestal of each pixel's readout tap in ADC (:func:`estimate_baseline`'s
        ``pedestal``), subtracted before the local baselines are taken (``pedestal`` None): a cluster
        across a tap boundary is then measured against each tap's own level, not one median of both.
    grow : px by which each cluster is grown (``skimage.segmentation.expand_labels``; each added
        pixel goes to its nearest cluster, none counted twice; only into ``background_classes``
        pixels) for its charge: a cluster's class pixels hold only its brighter part, the charge
        diffused into the pixels around it below the class threshold (on real Fe-55 frames the
        class pixels held ~70 % of a 7 x 7 window's sum; grown by 1.5 px, diagonals included,
        98-100 %). 0: the class pixels only. The grown pixels are left out of the baselines.
    exclude_columns : column indices that are no sensor pixels (prescan / overscan, as given to
        :func:`autolabel_ccd`): never grown into nor taken for a baseline (a prescan 300 ADC below the
        active area made a 900 ADC cluster beside it read -446); a cluster beside them is ``at_edge``.

    Returns
    -------
    DataFrame with columns ``label, y, x, size_px, charge_adc, peak_adc, charge_core_adc, at_edge``
    (y, x: charge-weighted centroid of the cluster's class pixels in px, where ``objects.csv`` gives
    the geometric one; size_px: its class pixels; charge_adc: sum of image - pedestal over the grown
    cluster (ADC); peak_adc: the largest pixel value above the pedestal; charge_core_adc: the sum over
    its class pixels only; at_edge: 1 where the grown cluster touches the frame's edge, its charge
    possibly cut off there, else 0).
    """
    cls = np.asarray(class_map)
    img = _check_image(image)
    if cls.shape != img.shape:
        raise InputError(f"class map {cls.shape} and image {img.shape} differ in shape")
    if connectivity not in (1, 2):
        raise InputError(f"connectivity must be 1 (4 neighbours) or 2 (8 neighbours), got {connectivity!r}")
    if not (isinstance(grow, (int, float)) and math.isfinite(grow) and 0 <= grow <= 100):
        raise InputError(f"grow must be a distance of 0 to 100 px, got {grow!r}")
    struct = ndi.generate_binary_structure(2, connectivity)
    lab, n = ndi.label(cls == cluster_class, structure=struct)
    cols = ["label", "y", "x", "size_px", "charge_adc", "peak_adc", "charge_core_adc", "at_edge"]
    if n == 0:
        return pd.DataFrame({c: pd.Series(dtype=float if c in ("y", "x", "charge_adc", "peak_adc", "charge_core_adc")
                                          else int) for c in cols})
    ped = None if pedestal is None else _pedestal_like(pedestal, img.shape)
    if ped is None and tap_pedestal is not None:  # levelled taps: one level on both sides of a boundary
        img = img - _pedestal_like(tap_pedestal, img.shape)
    quiet = np.isin(cls, list(background_classes))
    excluded = np.zeros(img.shape[1], bool)
    if exclude_columns is not None and len(exclude_columns):
        excluded[np.asarray(list(exclude_columns), int)] = True
        quiet = quiet & ~excluded[None, :]  # no sensor pixels: neither charge nor baseline
    sided = quiet  # the quiet pixels, grown ones included: which side of a band's edge a pixel lies on
    grown = lab
    if grow > 0:  # into quiet pixels only (a hot pixel beside a cluster is no part of its charge)
        grown = _expand_labels_by_strips(lab, grow)
        grown[(grown != lab) & ~quiet] = 0
        quiet = quiet & (grown == 0)  # the charge diffused around a cluster is no baseline
    frame_level = float(np.median(img[quiet])) if quiet.any() else float(np.median(img))
    ny, nx = img.shape
    rows = np.zeros((n, len(cols)))
    for i, sl in enumerate(ndi.find_objects(grown)):  # work on each grown cluster's bounding box only
        inside = grown[sl] == i + 1
        core = lab[sl][inside] == i + 1  # the class pixels among the grown cluster's
        if ped is not None:
            base = ped[sl][inside]
        else:
            near = (slice(max(sl[0].start - ring, 0), min(sl[0].stop + ring, ny)),
                    slice(max(sl[1].start - ring, 0), min(sl[1].stop + ring, nx)))
            base = _local_baseline(img[near], cls[near], quiet[near], frame_level,
                                   (slice(sl[0].start - near[0].start, sl[0].stop - near[0].start),
                                    slice(sl[1].start - near[1].start, sl[1].stop - near[1].start)), inside,
                                   sided[near])
        vals = img[sl].astype(np.float64)[inside] - base
        yy, xx = np.nonzero(inside)
        yy, xx, core_vals = yy[core], xx[core], vals[core]
        w = np.clip(core_vals, 0, None)
        if w.sum() > 0:
            cy, cx = (yy * w).sum() / w.sum(), (xx * w).sum() / w.sum()
        else:
            cy, cx = yy.mean(), xx.mean()
        at_edge = (sl[0].start == 0 or sl[1].start == 0 or sl[0].stop == ny or sl[1].stop == nx
                   or (sl[1].start > 0 and excluded[sl[1].start - 1])  # beside no-sensor columns: an edge too
                   or (sl[1].stop < nx and excluded[sl[1].stop]))
        rows[i] = (i + first_label, cy + sl[0].start, cx + sl[1].start, core.sum(), vals.sum(), core_vals.max(),
                   core_vals.sum(), at_edge)
    table = pd.DataFrame(rows, columns=cols)
    for column in ("label", "size_px", "at_edge"):
        table[column] = table[column].astype(int)
    if max_size is not None:
        table = table[table.size_px <= max_size].reset_index(drop=True)
    return table


def clusters_per_frame(class_map, image, class_names: Sequence[str], first_frame: int = 0) -> pd.DataFrame | None:
    """Charge clusters of a class map with a ``"cluster"`` class, frame by frame.

    Parameters
    ----------
    class_map : (Y, X) or (T, Y, X) class map (numpy, zarr or dask; read one frame at a time).
    image : the frame(s) in ADC, same shape as ``class_map``.
    class_names : the model's class names; the class called ``"cluster"`` is counted.
    first_frame : the ``t`` of the first frame (a single frame of a longer stack).

    Returns
    -------
    None when no class is called ``"cluster"``; else :func:`find_clusters`' table for each
    frame with ``t`` first: ``t, label, y, x, size_px, charge_adc, peak_adc, charge_core_adc,
    at_edge`` (px, ADC above each cluster's local baseline, charge_adc over the cluster grown by
    :data:`CHARGE_GROW_PX`, from the background and glowing pixels around it, with the
    frame's readout taps levelled first: :func:`estimate_baseline`).
    """
    from ..measure.counts import class_index

    names = list(class_names)
    cluster = class_index(names, "cluster")
    if cluster is None:
        return None
    if tuple(class_map.shape) != tuple(image.shape) or len(class_map.shape) not in (2, 3):
        raise InputError(f"class map {tuple(class_map.shape)} and image {tuple(image.shape)} must be the same (Y,X) or (T,Y,X) shape")
    stack = len(class_map.shape) == 3
    quiet = [i for i in (class_index(names, "background"), class_index(names, "glowing")) if i is not None] or [0]
    tables = []
    for t in range(class_map.shape[0] if stack else 1):
        frame_classes = np.asarray(class_map[t] if stack else class_map)
        frame = np.asarray(image[t] if stack else image, dtype=np.float32)
        taps = None  # each tap's pedestal where the frame has taps (a frame of one tap needs no levelling)
        if np.isfinite(frame).all() and min(frame.shape) >= 4:
            with warnings.catch_warnings():  # the taps' doubts were said when the frame was segmented
                warnings.simplefilter("ignore", TapWarning)
                rows, cols = detect_taps(frame)
            if rows or cols:
                taps = estimate_baseline(frame, boundaries=(rows, cols)).pedestal
        table = find_clusters(frame_classes, frame, cluster_class=cluster, background_classes=quiet,  # objects.csv's ids
                              first_label=1 + object_label_offset(frame_classes, cluster, class_index(names, "background") or 0),
                              tap_pedestal=taps)
        table.insert(0, "t", first_frame + t)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def class_agreement(true_classes: np.ndarray, predicted: np.ndarray, n_classes: int = 4) -> pd.DataFrame:
    """Per-class pixel precision, recall, F1 and IoU of a predicted class map against the truth.

    Returns a DataFrame with columns ``class, name, n_true, n_pred, precision, recall, f1, iou``.
    """
    t = np.asarray(true_classes).ravel().astype(np.int64)
    p = np.asarray(predicted).ravel().astype(np.int64)
    if t.shape != p.shape:
        raise InputError("class maps differ in shape")
    for name, values in (("true", t), ("predicted", p)):
        if values.size and (values.min() < 0 or values.max() >= n_classes):
            raise InputError(f"{name} class map holds values outside 0..{n_classes - 1} "
                             f"(from {values.min()} to {values.max()})")
    cm = np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    return class_scores(cm, CLASS_NAMES)


def class_scores(confusion: np.ndarray, class_names: Sequence[str] = ()) -> pd.DataFrame:
    """Per-class pixel scores from a confusion matrix (rows: true class, columns: predicted; pixel counts).

    Returns a DataFrame with columns ``class, name, n_true, n_pred, precision, recall, f1, iou``
    (a class absent from both maps scores 1; names default to the class index).
    """
    cm = np.asarray(confusion)
    n_classes = cm.shape[0]
    rows = []
    for k in range(n_classes):
        tp = cm[k, k]
        n_true, n_pred = cm[k].sum(), cm[:, k].sum()
        prec = tp / n_pred if n_pred else (1.0 if n_true == 0 else 0.0)
        rec = tp / n_true if n_true else (1.0 if n_pred == 0 else 0.0)
        f1 = 2 * tp / (n_true + n_pred) if (n_true + n_pred) else 1.0
        iou = tp / (n_true + n_pred - tp) if (n_true + n_pred - tp) else 1.0
        rows.append({"class": k, "name": class_names[k] if k < len(class_names) else str(k), "n_true": int(n_true),
                     "n_pred": int(n_pred), "precision": float(prec), "recall": float(rec), "f1": float(f1), "iou": float(iou)})
    return pd.DataFrame(rows)
