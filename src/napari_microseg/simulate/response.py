"""Simulated 16-bit response images of a column bed, good and bad ([R]).

Recipe (METHODS [R]); each image = background x edges (x above-bed factor)
+ signal + optional artefact, then a stripes filter, clipped to 0..65535:

* Background: i.i.d. Laplace noise, mean ``mu_b ~ U(background_range)``; its
  final standard deviation (after the stripes filter) is drawn uniformly
  between the fitted lines ``min_sd(mu_b) = 0.05111242 mu_b - 19.3702`` and
  ``max_sd(mu_b) = 0.09838717 mu_b - 37.1186`` (floored at 0.5 ADC); the
  Laplace scale before the filter is ``beta = sigma / sqrt(2) / g`` where ``g``
  is the noise gain of the stripes kernel, so the drawn sd is what one measures.
* Column edges: two inverted Gaussians along x centred on the column edges
  (``column_width`` apart), stretched along y, multiplied into the background.
  The dip depth ("peak difference", ADC) of the right edge is drawn between
  ``0.05811427 mu_b - 22.6217`` and ``0.23687124 mu_b - 88.7148``; the left edge
  is shallower (x U(0.5, 0.9)) and wider (right sd U(1, 1.8) px, left U(1.5, 3) px;
  chosen by eye, METHODS gives none).
* Top of bed: quadratic through three points (left edge, middle, right edge);
  the middle is lower (larger row index) than at least one edge. The region
  above the bed is multiplied by a brightness ratio drawn between
  ``-6.2274e-05 mu_b + 1.018655`` and ``1.0611e-04 mu_b + 0.963024``.
* Signal: per column inside the bed, a sum of three Moyal profiles
  ``L(y) = A exp(-0.5 ((y - mu)/W + exp(-(y - mu)/W)))`` with W in [1.5, 5],
  [5, 9], [9, 14] and A ~ U(0, 1); each ``mu`` is placed below the bed border so
  that the profile equals 0.05 of its peak at the border. Faded across the column
  by a normal PDF (centre = column centre + N(0, 2) px, sd U(7, 20) px,
  normalised to 1 at its centre), relative noise N(0, 0.1 value), scaled to a
  peak in ``[0, 65535 - 1.5 mu_b]``, clipped at 65535.
* Stripes: a 3x1 Gaussian kernel along x with sigma_x = 20 (almost a 3-px box),
  applied last to the whole image.
* Integration area: the bed curve shifted 5 px down, vertical sides at the
  column edges, and a flat bottom chosen so the area is exactly
  ``column_width x 30`` pixels (the remainder of the division is spread as a
  one-pixel step over the leftmost columns).
* Artefacts lie inside the integration area: spike, fiber, column-bound line,
  dark spot (depth 0.8, only on signal images, never below the image minimum),
  stop (high-affinity-only signal with peak in [2 mu_b, 65535] + a bright
  plateau above the bed), saturated (signal peak in [65536, 3 x 65536] -- measured
  inside the integration area, so that the quantified pixels saturate -- clipped).

The artefact mask marks pixels where the artefact's own noise-free component is
at least 10 % of its peak (dark spot: where the multiplicative dip removes >= 10 %
of the depth; saturated: pixels at 65535; stop: pixels of the integration area
and the plateau where the stop signal is >= 10 % of its peak).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import brentq

from ..errors import InputError
from ..progress import Progress
from ._common import check_shape_2d, jsonable, make_rng, sample_seed

KINDS = ("good_signal", "good_empty", "spike", "fiber", "line", "dark_spot", "stop", "saturated")
GOOD_KINDS = ("good_signal", "good_empty")
BAD_KINDS = ("spike", "fiber", "line", "dark_spot", "stop", "saturated")

# limits fitted on real backgrounds: y = a * mean + b
PEAK_DIFF_MIN = (0.05811427, -22.6217)
PEAK_DIFF_MAX = (0.23687124, -88.7148)
NOISE_SD_MIN = (0.05111242, -19.3702)
NOISE_SD_MAX = (0.09838717, -37.1186)
RATIO_MIN = (-6.2274e-05, 1.018655)
RATIO_MAX = (1.0611e-04, 0.963024)
MOYAL_WIDTHS = ((1.5, 5.0), (5.0, 9.0), (9.0, 14.0))
INTEGRATION_HEIGHT = 30
INTEGRATION_OFFSET = 5
#: rows a drawn bed row keeps free beside the integration area: its edges' spread (up to 6 px) and the
#: middle's dip (up to 4 px), rounded up
BED_ROOM = 12


def fitted_limits(mean: float) -> dict[str, tuple[float, float]]:
    """The (low, high) limits of noise sd, edge peak difference and brightness ratio for a background mean (ADC)."""

    def line(p):
        return p[0] * mean + p[1]

    out = {}
    for name, lo, hi in (("noise_sd", NOISE_SD_MIN, NOISE_SD_MAX), ("peak_diff", PEAK_DIFF_MIN, PEAK_DIFF_MAX), ("brightness_ratio", RATIO_MIN, RATIO_MAX)):
        a, b = line(lo), line(hi)
        out[name] = (min(a, b), max(a, b))
    return out


@dataclass
class ResponseImage:
    """A simulated response image.

    Attributes
    ----------
    image : (Y, X) uint16.
    integration_mask : (Y, X) bool, the integration area (``column_width x 30`` pixels).
    artefact_mask : (Y, X) bool, pixels of the artefact (empty for good images).
    label : "good" or "bad".
    subclass : one of :data:`KINDS`.
    params : every parameter drawn or used (JSON-serialisable), including
        ``background_mean``, ``noise_sd``, ``peak_diff``, ``column_x0``, ``bed``
        (3 points), ``crop_box`` (y0, x0, y1, x1) of the 39x42 classifier crop.
    """

    image: np.ndarray
    integration_mask: np.ndarray
    artefact_mask: np.ndarray
    label: str
    subclass: str
    params: dict = field(default_factory=dict)


def _moyal(z: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * (z + np.exp(-np.clip(z, -30, None))))


# z0 < 0 with moyal(z0) = 0.05 * moyal(0): the bed border sits at z0
_Z_BORDER = brentq(lambda z: _moyal(np.array(z)) - 0.05 * _moyal(np.array(0.0)), -10.0, 0.0)


def _stripes_kernel(sigma_x: float = 20.0, size: int = 3) -> np.ndarray:
    k = np.arange(size) - (size - 1) / 2
    w = np.exp(-(k**2) / (2 * sigma_x**2))
    return w / w.sum()


def _gauss2d(yy, xx, cy, cx, sy, sx, angle):
    c, s = np.cos(angle), np.sin(angle)
    dy, dx = yy - cy, xx - cx
    u = dx * c + dy * s
    v = -dx * s + dy * c
    return np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))


def _bezier(points: np.ndarray, n: int = 200) -> np.ndarray:
    from math import comb

    t = np.linspace(0, 1, n)[:, None]
    d = len(points) - 1
    return sum(comb(d, k) * t**k * (1 - t) ** (d - k) * points[k] for k in range(d + 1))


#: share of a column-bound line's points that must lie inside the integration area (the
#: line's ends reach up to 3 px past the column's sides, which the area does not)
LINE_INSIDE_FRACTION = 0.8


def _column_line(rng: np.random.Generator, top: np.ndarray, bottom: np.ndarray, x0: int, column_width: int) -> tuple[np.ndarray, str]:
    """A column-bound line ([R]) as (N, 2) points (y, x) in px: two joined straight segments at most
    45 degrees apart, or a quadratic, across the column (from up to 3 px left of ``x0`` to up to 3 px
    right of its last column), at a height drawn between the integration area's ``top`` and ``bottom``."""
    cy = rng.uniform(top.min() + 2, bottom.max() - 2)
    xa, xb = x0 - rng.uniform(0, 3), x0 + column_width - 1 + rng.uniform(0, 3)
    if rng.random() < 0.5:  # two joined straight segments, <= 45 deg apart
        xm = rng.uniform(xa + 5, xb - 5)
        a1 = rng.uniform(-np.pi / 8, np.pi / 8)
        a2 = a1 + rng.uniform(-np.pi / 4, np.pi / 4)
        t1 = np.linspace(0, 1, 100)[:, None]
        p0 = np.array([cy, xm]) - (xm - xa) * np.array([np.tan(a1), 1.0])
        pm = np.array([cy, xm])
        p1 = pm + (xb - xm) * np.array([np.tan(a2), 1.0])
        return np.concatenate([p0 + t1 * (pm - p0), pm + t1 * (p1 - pm)]), "segments"
    xs_c = np.linspace(xa, xb, 200)  # quadratic across the column
    curv = rng.uniform(-0.03, 0.03)
    return np.stack([cy + curv * (xs_c - (xa + xb) / 2) ** 2 + rng.uniform(-0.2, 0.2) * (xs_c - xa), xs_c], axis=1), "quadratic"


def _spikes_along(curve: np.ndarray, yy, xx, rng, peak: float, weights: np.ndarray | None = None, spacing: float = 1.5) -> np.ndarray:
    """Sum of small Gaussian spikes placed along a poly-line (rows y, x), spacing ~px."""
    out = np.zeros(yy.shape, float)
    seg = np.hypot(*np.diff(curve, axis=0).T)
    cum = np.concatenate([[0], np.cumsum(seg)])
    length = cum[-1]
    n = max(int(length / spacing), 2)
    pos = np.sort(rng.uniform(0, length, n))
    for p in pos:
        i = min(np.searchsorted(cum, p), len(curve) - 1)
        cy, cx = curve[i]
        w = 1.0 if weights is None else weights[i]
        s = rng.uniform(0.6, 1.3)
        out += w * rng.uniform(0.4, 1.0) * _gauss2d(yy, xx, cy, cx, s, s, 0.0)
    m = out.max()
    return out / m * peak if m > 0 else out


def simulate_response_image(
    kind: str = "good_signal",
    shape: tuple[int, int] = (96, 64),
    column_width: int = 29,
    seed: int | None = 0,
    background_range: tuple[float, float] = (400.0, 1200.0),
    bed_row: float | None = None,
    signal_peak: float | None = None,
    stripes_sigma_x: float = 20.0,
    dark_spot_depth: float = 0.8,
    fiber_scale: str | None = None,
) -> ResponseImage:
    """Simulate one 16-bit response image of the given kind.

    Parameters
    ----------
    kind : one of "good_signal", "good_empty", "spike", "fiber", "line",
        "dark_spot", "stop", "saturated".
    shape : (Y, X) image size in pixels (10 um per pixel). Must leave room for
        the column plus margins and the integration area below the bed.
    column_width : column width in pixels (29: CD type "200", 31: "1000").
    seed : seed for ``np.random.default_rng``.
    background_range : range of the background mean mu_b (ADC).
    bed_row : mean row of the bed top; ``None`` draws it around 0.3 x Y.
    signal_peak : fix the signal peak (ADC) of signal images; ``None`` draws it
        (good: U(0, 65535 - 1.5 mu_b); saturated: U(65536, 3 x 65536)).
    stripes_sigma_x : sigma of the 3x1 stripes kernel along x.
    dark_spot_depth : depth k of the multiplicative dark spots.
    fiber_scale : "low", "medium" or "high" intensity of fibers; ``None`` draws one.

    Returns
    -------
    ResponseImage
    """
    if kind not in KINDS:
        raise InputError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    ny, nx = check_shape_2d(shape)
    column_width = int(column_width)
    if column_width < 5 or column_width + 8 > nx:
        raise InputError(f"column_width {column_width} does not fit an image {nx} px wide (needs width + 8)")
    if nx < 42:
        raise InputError(f"image width {nx} px is below the classifier's 39 x 42 px crop (needs >= 42)")
    if fiber_scale is not None and fiber_scale not in ("low", "medium", "high"):
        raise InputError(f"fiber_scale must be 'low', 'medium', 'high' or None, got {fiber_scale!r}")
    if ny < INTEGRATION_HEIGHT + INTEGRATION_OFFSET + 20:
        raise InputError(f"image height {ny} too small for the integration area (needs >= {INTEGRATION_HEIGHT + INTEGRATION_OFFSET + 20})")
    params = jsonable({k: v for k, v in locals().items() if k not in ("ny", "nx")})
    rng = make_rng(seed)
    yy, xx = np.mgrid[:ny, :nx].astype(float)

    # --- background -----------------------------------------------------------
    mu_b = float(rng.uniform(*background_range))
    lim = fitted_limits(mu_b)
    noise_sd = max(float(rng.uniform(*lim["noise_sd"])), 0.5)
    kernel = _stripes_kernel(stripes_sigma_x)
    noise_gain = float(np.sqrt((kernel**2).sum()))
    beta = noise_sd / np.sqrt(2) / noise_gain
    background = mu_b + rng.laplace(0.0, beta, (ny, nx))

    # --- column and edges --------------------------------------------------------
    x0 = int(rng.integers(4, nx - column_width - 3))  # first column inside the bed
    x_left, x_right = x0 - 0.5, x0 + column_width - 0.5  # edge positions (pixel borders)
    peak_diff = float(rng.uniform(*(max(v, 0.0) for v in lim["peak_diff"])))
    right_depth = peak_diff
    left_depth = peak_diff * rng.uniform(0.5, 0.9)
    right_sd, left_sd = rng.uniform(1.0, 1.8), rng.uniform(1.5, 3.0)
    stretch = np.exp(-0.5 * ((yy - ny / 2) / (3.0 * ny)) ** 2)  # stretched along y (nearly flat)
    # calibrate so that the dip depth measured on the final (pixelated, stripe-filtered)
    # noise-free profile equals the drawn peak difference
    x1d = np.arange(nx, dtype=float)
    right_unit = np.exp(-0.5 * ((x1d - x_right) / right_sd) ** 2)
    left_unit = np.exp(-0.5 * ((x1d - x_left) / left_sd) ** 2)
    measured = ndi.correlate1d(right_unit, kernel, mode="reflect").max()
    dips = (left_depth * left_unit + right_depth * right_unit)[None, :] / measured * stretch
    edges = 1.0 - dips / mu_b

    # --- bed top (quadratic through 3 points) -----------------------------------
    if bed_row is None:  # at most as low as leaves the integration area room below it (images under ~72 px)
        bed_row = min(rng.uniform(0.25, 0.35) * ny, ny - (INTEGRATION_HEIGHT + INTEGRATION_OFFSET + BED_ROOM))
    y_l, y_r = bed_row + np.clip(rng.normal(0, 1.5, 2), -6.0, 6.0)
    y_m = min(y_l, y_r) + rng.uniform(0.5, 4.0)  # the middle is lower than at least one edge
    xs3 = np.array([x_left, (x_left + x_right) / 2, x_right])
    coef = np.polyfit(xs3, [y_l, y_m, y_r], 2)
    bed = np.polyval(coef, np.arange(nx))  # bed top row per column
    above = yy < bed[None, :]
    ratio = float(rng.uniform(*lim["brightness_ratio"]))
    bed_factor = np.where(above, ratio, 1.0)
    in_column = (xx >= x0) & (xx < x0 + column_width)
    in_bed = in_column & ~above

    # --- integration area -------------------------------------------------------
    top = np.ceil(bed[x0 : x0 + column_width] + INTEGRATION_OFFSET).astype(int)
    total = column_width * INTEGRATION_HEIGHT + top.sum()
    base, extra = divmod(total, column_width)
    bottom = np.full(column_width, base)
    bottom[:extra] += 1
    if bottom.max() > ny or top.min() < 0:
        raise InputError("the integration area does not fit the image; use a taller shape")
    integration = np.zeros((ny, nx), bool)
    for i, (t0, b0) in enumerate(zip(top, bottom)):
        integration[t0:b0, x0 + i] = True

    # --- signal ---------------------------------------------------------------
    centre_x = (x0 + x0 + column_width - 1) / 2

    def moyal_signal(widths=MOYAL_WIDTHS, weights=None):
        prof = np.zeros((ny, nx))
        for k, (w_lo, w_hi) in enumerate(widths):
            W = rng.uniform(w_lo, w_hi)
            A = rng.uniform(0, 1) if weights is None else weights[k]
            mu = bed[None, :] - _Z_BORDER * W  # so that L(bed) = 0.05 of its peak
            prof += A * _moyal((yy - mu) / W)
        fade_c = centre_x + rng.normal(0, 2.0)
        fade_sd = rng.uniform(7, 20)
        fade = np.exp(-0.5 * ((xx - fade_c) / fade_sd) ** 2)
        sig = prof * fade * in_bed
        sig = sig + rng.normal(0, 1, sig.shape) * 0.1 * sig
        sig = np.clip(sig, 0, None)
        m = sig.max()
        return sig / m if m > 0 else sig

    draws = {"background_mean": mu_b, "noise_sd": noise_sd, "laplace_beta": beta, "peak_diff": peak_diff, "left_depth": left_depth, "edge_sd": [left_sd, right_sd], "column_x0": x0, "bed": [[float(x), float(y)] for x, y in zip(xs3, (y_l, y_m, y_r))], "brightness_ratio": ratio}
    signal = np.zeros((ny, nx))
    artefact = np.zeros((ny, nx))
    artefact_mask = np.zeros((ny, nx), bool)
    has_signal = kind in ("good_signal", "dark_spot", "saturated") or (kind in ("spike", "fiber", "line") and rng.random() < 0.5)
    max_good = 65535 - 1.5 * mu_b
    draws["signal_peak"] = 0.0  # the peak actually used (0: no signal)
    if has_signal:
        if kind == "saturated":
            peak = float(rng.uniform(65536, 3 * 65536)) if signal_peak is None else float(signal_peak)
        else:
            peak = float(rng.uniform(0.0, 1.0) * max_good) if signal_peak is None else float(signal_peak)  # [R]: [0, max]
            if kind == "dark_spot":
                peak = max(peak, 0.2 * max_good)  # a dark spot needs signal to be seen
        signal = moyal_signal()
        if kind == "saturated":
            # the peak is taken inside the integration area, so the saturation spoils the quantification
            # (measured as the stripes filter will see it)
            seen = ndi.correlate1d(signal, _stripes_kernel(stripes_sigma_x), axis=1, mode="reflect")
            signal = signal / max(float(seen[integration].max()), 1e-9)
        signal = signal * peak
        draws["signal_peak"] = peak
    ref = max(float(signal.max()), 20 * noise_sd, 2000.0)
    iy, ix = np.nonzero(integration)

    def random_point_in_area():
        k = int(rng.integers(len(iy)))
        return iy[k] + rng.uniform(-0.5, 0.5), ix[k] + rng.uniform(-0.5, 0.5)

    if kind == "spike":
        n = int(rng.integers(1, 4))
        for _ in range(n):
            cy, cx = random_point_in_area()
            comp = _gauss2d(yy, xx, cy, cx, rng.uniform(0.6, 4.0), rng.uniform(0.6, 2.5), rng.uniform(0, np.pi))
            peak_s = rng.uniform(0.3, 2.0) * ref
            artefact += peak_s * comp
            artefact_mask |= comp >= 0.1
        artefact = np.clip(artefact + rng.normal(0, 1, artefact.shape) * 0.1 * artefact, 0, None)
        draws["n_spikes"] = n
    elif kind == "fiber":
        scale = fiber_scale or str(rng.choice(["low", "medium", "high"]))
        lo, hi = {"low": (0.1, 0.3), "medium": (0.3, 0.8), "high": (0.8, 2.0)}[scale]
        for _attempt in range(50):
            ends = np.array([random_point_in_area() for _ in range(2)]) + rng.normal(0, 8, (2, 2))
            ctrl = np.array([random_point_in_area() for _ in range(3)]) + rng.normal(0, 4, (3, 2))
            curve = _bezier(np.array([ends[0], ctrl[0], ctrl[1], ctrl[2], ends[1]]))
            ci = np.round(curve).astype(int)
            ok = (ci[:, 0] >= 0) & (ci[:, 0] < ny) & (ci[:, 1] >= 0) & (ci[:, 1] < nx)
            inside = np.zeros(len(curve), bool)
            inside[ok] = integration[ci[ok, 0], ci[ok, 1]]
            seg = np.hypot(*np.diff(curve, axis=0).T)
            if (seg * inside[1:]).sum() >= 10:
                break
        comp = _spikes_along(curve, yy, xx, rng, 1.0, spacing=0.6)
        artefact = rng.uniform(lo, hi) * ref * comp
        artefact_mask = comp >= 0.1
        draws["fiber_scale"] = scale
    elif kind == "line":
        for _attempt in range(50):  # artefacts lie inside the integration area ([R]): redraw a line that leaves it
            curve, shape = _column_line(rng, top, bottom, x0, column_width)
            ci = np.round(curve).astype(int)
            ok = (ci[:, 0] >= 0) & (ci[:, 0] < ny) & (ci[:, 1] >= 0) & (ci[:, 1] < nx)
            inside = np.zeros(len(curve), bool)
            inside[ok] = integration[ci[ok, 0], ci[ok, 1]]
            if inside.mean() >= LINE_INSIDE_FRACTION:
                break
        draws["line_shape"] = shape
        draws["line_inside_fraction"] = float(inside.mean())
        xa, xb = float(curve[:, 1].min()), float(curve[:, 1].max())
        bump_c, bump_sd = rng.uniform(xa, xb), rng.uniform(5, 15)
        weights = 0.3 + 0.7 * np.exp(-0.5 * ((curve[:, 1] - bump_c) / bump_sd) ** 2)
        comp = _spikes_along(curve, yy, xx, rng, 1.0, weights=weights, spacing=1.0)
        artefact = rng.uniform(0.3, 1.5) * ref * comp
        artefact_mask = comp >= 0.1
    elif kind == "stop":
        peak = float(rng.uniform(2 * mu_b, 65535)) if signal_peak is None else float(signal_peak)
        sig = moyal_signal(widths=(MOYAL_WIDTHS[0],), weights=[1.0])  # high affinity only
        # bright plateau above the bed inside the column
        plateau_top = bed - rng.uniform(5, 15)
        plateau = (in_column & (yy >= plateau_top[None, :]) & above).astype(float) * rng.uniform(0.2, 0.6)
        plateau = ndi.gaussian_filter(plateau, 1.0)
        artefact = (sig + plateau) * peak
        artefact_mask = (artefact >= 0.1 * peak) & (integration | above)
        draws["stop_peak"] = draws["signal_peak"] = peak  # a stop holds a (high-affinity) signal too
    # dark spots: multiplicative, on signal images only
    combined = background * edges * bed_factor + signal + artefact
    if kind == "dark_spot":
        floor = float(combined.min())
        dip = np.zeros((ny, nx))
        n = int(rng.integers(1, 3))
        for _ in range(n):
            cy, cx = random_point_in_area()
            s = rng.uniform(1.5, 4.0)
            dip = np.maximum(dip, _gauss2d(yy, xx, cy, cx, s, s * rng.uniform(0.7, 1.4), rng.uniform(0, np.pi)))
        combined = np.maximum(combined * (1 - dark_spot_depth * dip), floor)
        artefact_mask = (dip >= 0.1) & integration
        draws["n_dark_spots"] = n
        draws["min_before_dark_spot"] = floor
    # stripes: 3x1 Gaussian along x, applied last; then the 16-bit range clips
    # (saturation is a detector limit, so it acts after the stripes)
    image = ndi.correlate1d(combined, kernel, axis=1, mode="reflect")
    image = np.clip(np.rint(image), 0, 65535).astype(np.uint16)
    if kind == "saturated":
        artefact_mask = image == 65535
    artefact_mask &= ~np.zeros_like(artefact_mask) if kind == "stop" else integration
    if kind in GOOD_KINDS:
        artefact_mask[:] = False
    # crop box of the classifier (39 x 42) centred on the integration area
    cy = (top.min() + bottom.max()) / 2
    cx = x0 + column_width / 2
    cy0 = int(np.clip(round(cy - 39 / 2), 0, max(ny - 39, 0)))
    cx0 = int(np.clip(round(cx - 42 / 2), 0, max(nx - 42, 0)))
    draws["crop_box"] = [cy0, cx0, cy0 + 39, cx0 + 42]
    draws["has_signal"] = bool(has_signal)
    params.update(jsonable(draws))
    label = "good" if kind in GOOD_KINDS else "bad"
    return ResponseImage(image, integration, artefact_mask, label, kind, params)


def balanced_kind(index: int) -> str:
    """Kind of the ``index``-th image of a balanced set: even = good (alternating signal/empty), odd = bad types in turn."""
    if index % 2 == 0:
        return GOOD_KINDS[(index // 2) % len(GOOD_KINDS)]
    return BAD_KINDS[(index // 2) % len(BAD_KINDS)]


def iter_balanced_set(n: int, seed: int = 0, **kwargs) -> Iterator[ResponseImage]:
    """Yield the ``n`` images of :func:`build_balanced_set` one by one."""
    for i in range(int(n)):
        yield simulate_response_image(balanced_kind(i), seed=sample_seed(seed, i), **kwargs)


def build_balanced_set(n: int, seed: int = 0, progress: bool = False, **kwargs):
    """A balanced set of ``n`` response images: 50/50 good/bad, bad types equal.

    Image ``i`` has kind :func:`balanced_kind` (i) and seed
    :func:`~._common.sample_seed` (seed, i), so the set of ``n`` is a prefix of the set of
    ``2n`` (nested sets of growing size). Bad types are equal up to one image
    when ``n/2`` is not a multiple of 6. METHODS [R] names five bad types with "fiber/line" as one;
    here fibers and lines are two kinds (their shapes differ), so together they make 1/3 of the bad
    images, not 1/5 (each other type 1/6 of them, not 1/5).

    Parameters
    ----------
    n : number of images.
    seed : base seed.
    progress : if True return a generator yielding :class:`Progress` events and
        returning the list (for ``run_with_text_progress``); else return the list.
    **kwargs : passed to :func:`simulate_response_image` (shape, column_width, ...).
    """
    if int(n) < 0:
        raise InputError(f"n must be >= 0, got {n}")

    def gen():
        out = []
        for i, img in enumerate(iter_balanced_set(n, seed, **kwargs), 1):
            out.append(img)
            yield Progress(i, int(n), img.subclass)
        return out

    if progress:
        return gen()
    return list(iter_balanced_set(n, seed, **kwargs))


def crop_for_classifier(image: np.ndarray, crop_box) -> np.ndarray:
    """Cut the 39x42 classifier crop ``crop_box = (y0, x0, y1, x1)`` out of an image."""
    y0, x0, y1, x1 = (int(v) for v in crop_box)
    return image[y0:y1, x0:x1]
