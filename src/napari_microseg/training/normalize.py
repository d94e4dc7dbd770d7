"""Intensity normalisation that is stored with a model and reapplied at inference.

A *normalisation spec* is a JSON-able dict with a ``kind`` and its parameters:

- ``{"kind": "percentile", "p_low": 1.0, "p_high": 99.8}`` (default for microscopy):
  per image, map the ``p_low`` / ``p_high`` percentiles to 0 / 1 (values above 5 are cut
  at 5: :data:`PERCENTILE_CLIP`).
- ``{"kind": "minmax"}``: per image, map min / max to 0 / 1.
- ``{"kind": "fixed", "offset": 8800.0, "scale": 1000.0}``: ``(x - offset) / scale``, the
  same for every image (raw ADC for CCD frames: train and predict on one scale).
- ``{"kind": "pedestal", "scale": 1000.0}``: ``(x - median(x)) / scale``: subtract the
  frame's own pedestal (its median, robust to the signal) and keep the raw ADC scale,
  so CCD frames from cameras with different pedestals (8800 ADC in [C]'s simulation,
  ~3600 ADC for the ESIS frames) share one intensity scale without a per-image stretch.
  With ``"estimator": "mode"`` the pedestal is the peak of the pixel histogram
  (:func:`pedestal_mode`) instead of the median: the median drifts into the
  signal when signals cover more than half the frame (the balanced training
  layout of [C]: 41 % background), the histogram peak stays on the pedestal.
  ``"level_taps": true`` asks inference to level the readout taps first.
- ``{"kind": "none"}``: cast to float32 only.

Mismatched intensity scales between training and use are the commonest silent
failure, so the spec goes into the model file and :func:`normalize` is applied
again by the inference code.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from ..errors import InputError

__all__ = ["DEFAULT_NORMALIZATION", "make_normalization_spec", "normalization_limits", "normalize", "pedestal_mode", "KINDS"]

KINDS = ("percentile", "minmax", "fixed", "pedestal", "none")

DEFAULT_NORMALIZATION: dict[str, Any] = {"kind": "percentile", "p_low": 1.0, "p_high": 99.8}

#: raw CCD frames in ADC ([C]): each frame's pedestal (its mode) subtracted, readout taps levelled,
#: divided by 200 ADC (the shipped ``ccd_classes``). Rescaling each frame to its own range instead
#: "made every pixel one class" (METHODS [C]).
CCD_NORMALIZATION: dict[str, Any] = {"kind": "pedestal", "scale": 200.0, "estimator": "mode", "level_taps": True}

_DEFAULTS = {
    "percentile": {"p_low": 1.0, "p_high": 99.8},
    "minmax": {},
    "fixed": {"offset": 0.0, "scale": 1.0},
    "pedestal": {"scale": 1.0},
    "none": {},
}


def make_normalization_spec(spec: dict[str, Any] | str | None = None, **params: Any) -> dict[str, Any]:
    """Return a complete, validated spec (kind + all parameters with defaults filled in).

    Parameters
    ----------
    spec : a spec dict, a kind name (``"percentile"``, ``"minmax"``, ``"fixed"``, ``"none"``),
        or None for the default (percentile 1 / 99.8).
    **params : parameters overriding those in ``spec`` (e.g. ``offset=8800, scale=1000``).

    Raises InputError for an unknown kind or a setting the kind does not take (percentile: p_low, p_high
    in percent; fixed: offset, scale; pedestal: scale, estimator, level_taps; minmax / none: none).
    """
    if spec is None:
        spec = dict(DEFAULT_NORMALIZATION)
    elif isinstance(spec, str):
        spec = {"kind": spec}
    else:
        spec = dict(spec)
    spec.update(params)
    kind = str(spec.get("kind", "percentile")).lower()
    if kind not in _DEFAULTS:
        raise InputError(f"unknown normalisation kind {kind!r}: use one of {', '.join(KINDS)}")
    # (an exported model states the package's cut of percentile values, clip_high: a statement, not a setting)
    known = {"kind", *_DEFAULTS[kind], *(("estimator", "level_taps") if kind == "pedestal" else ()),
             *(("clip_high",) if kind == "percentile" else ())}
    unknown = sorted(str(key) for key in spec if key not in known)
    if unknown:  # a misspelt key ("ofset") silently trained and saved the default in its place
        raise InputError(f"unknown {kind} normalisation setting(s) {', '.join(map(repr, unknown))}: "
                         f"{kind} takes {', '.join(sorted(known - {'kind', 'clip_high'})) or 'no settings'}")
    out: dict[str, Any] = {"kind": kind}
    for key, default in _DEFAULTS[kind].items():
        out[key] = float(spec.get(key, default))
    if kind == "pedestal":
        estimator = str(spec.get("estimator", "median"))
        if estimator not in ("median", "mode"):
            raise InputError(f"pedestal estimator must be 'median' or 'mode', got {estimator!r}")
        if estimator != "median":
            out["estimator"] = estimator
    if kind == "pedestal" and spec.get("level_taps"):
        out["level_taps"] = True  # inference: CCD readout taps brought to one pedestal first (segment_image)
    if kind == "percentile" and not (0.0 <= out["p_low"] < out["p_high"] <= 100.0):
        raise InputError(f"percentile normalisation needs 0 <= p_low < p_high <= 100, got {out['p_low']}, {out['p_high']}")
    if kind in ("fixed", "pedestal") and out["scale"] == 0:
        raise InputError(f"{kind} normalisation needs a non-zero scale")
    return out


#: percentile-normalised values are cut at this (x the p_low..p_high range above p_low): a lone hot pixel or
#: cosmic ray at 36 x the signal spread through the network's field of view into nucleus-sized false objects
#: (43 nuclei of a simulated frame became 45 / 48 with the shipped models); nuclei rarely pass 2, and
#: DSB2018's scores are the same with the cut
PERCENTILE_CLIP = 5.0


def clip_bright(normalised: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """``normalised`` (float, any shape) cut at :data:`PERCENTILE_CLIP` for percentile normalisation, in
    place; other kinds (CCD charge in ADC, fixed scales) keep their values, which mean something."""
    if spec.get("kind") == "percentile":
        np.minimum(normalised, PERCENTILE_CLIP, out=normalised)
    return normalised


def working_float(dtype: Any) -> type:
    """The float type values of ``dtype`` may need: float64 for float64 and 32/64-bit integers (float32
    holds 24 bits: an offset of 1e11 or 2**40 swallowed the signal before it was subtracted), float32
    otherwise (8/16-bit and float32 images, the common case, stay fast)."""
    dtype = np.dtype(dtype)
    wide = (dtype.kind == "f" and dtype.itemsize > 4) or (dtype.kind in "iu" and dtype.itemsize >= 4)
    return np.float64 if wide else np.float32


#: the smallest signal (normalised unit) float32 keeps whole: below it values fall among float32's subnormal
#: numbers and to 0 (a float64 image of values around 1e-44 segmented to 0 objects without a word)
FLOAT32_SMALLEST_SIGNAL = 1e-30


def float32_holds(offset: float, scale: float) -> bool:
    """Whether float32 keeps values around ``offset`` to a thousandth of ``scale`` (their normalised
    unit): then wide images are normalised in float32 as ever, giving the same labels as their 16-bit
    twins; only a large offset (1e11 over a signal of 1e3), or a signal below
    :data:`FLOAT32_SMALLEST_SIGNAL`, needs float64."""
    return abs(float(offset)) * 2.0 ** -23 * 1000 <= float(scale) and float(scale) >= FLOAT32_SMALLEST_SIGNAL


def normalise_values(values: Any, offset: float, scale: float) -> np.ndarray:
    """``(values - offset) / scale`` as float32, computed in float64 only where float32 would lose the
    signal (:func:`float32_holds`)."""
    x = np.asarray(values)
    dtype = np.float32 if float32_holds(offset, scale) else working_float(x.dtype)
    x = x.astype(dtype, copy=False)
    return ((x - offset) / scale).astype(np.float32, copy=False)


def normalize(image: np.ndarray, spec: dict[str, Any] | str | None = None, eps: float = 1e-6) -> np.ndarray:
    """Normalise an image according to ``spec``; return float32 of the same shape.

    Parameters
    ----------
    image : array of any real dtype; ``(Y, X)`` or ``(C, Y, X)`` (per-image statistics
        are taken over the whole array).
    spec : normalisation spec (see module docstring).
    eps : guard against division by zero for flat images (a flat image maps to 0): the scale is at
        least ``eps * 1e6`` rounding steps of the image's values (1 step: machine epsilon x the values).

    Raises
    ------
    InputError
        If the image holds NaN or infinite values.
    """
    spec = make_normalization_spec(spec)
    x = np.asarray(image)
    if x.dtype.kind not in "biuf":  # complex (its imaginary part would be dropped), text, objects
        raise InputError(f"image dtype {x.dtype} is not a real-valued image")
    if x.dtype == bool:
        x = x.astype(np.float32)
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise InputError("image contains NaN or infinite values")
    if x.dtype.kind == "f" and x.dtype.itemsize > 4 and x.size and float(np.abs(x).max()) > float(np.finfo(np.float32).max):
        raise InputError(f"the image holds values up to {float(np.abs(x).max()):.3g}, beyond what the network's float32 "
                         "arithmetic holds (3.4e38): scale it down (e.g. divide by its maximum) first")
    if spec["kind"] == "none":
        x = x.astype(np.float32, copy=False)
        return x.copy() if x is image else x
    offset, scale = normalization_limits(x, spec, eps=eps)
    return clip_bright(normalise_values(x, offset, scale), spec)


def pedestal_mode(image: np.ndarray, max_bins: int = 20_000) -> float:
    """Pedestal of a CCD frame as the peak of its pixel histogram (same unit as ``image``, ADC).

    The read noise sd is estimated from differences of horizontal neighbours
    (1.4826 x MAD / sqrt 2, blind to flat signals such as glowing bands); the
    histogram uses bins of half that width, and the pedestal is the median of
    the pixels within 2 noise sd of the fullest bin. Right as long as the
    background is the largest population of one level, whatever fraction of
    the frame the signals cover.

    Parameters
    ----------
    image : (Y, X) frame (or a strided sample of it).
    max_bins : cap on the number of histogram bins (wider bins beyond it).
    """
    x = np.asarray(image, dtype=np.float32)
    flat = x.ravel()
    if x.ndim >= 2 and x.shape[-1] > 1:
        diffs = np.diff(x, axis=-1).ravel()
        noise = 1.4826 * float(np.median(np.abs(diffs - np.median(diffs)))) / np.sqrt(2.0)
    else:
        noise = 0.0
    lo, hi = (float(v) for v in np.percentile(flat, [0.5, 99.5]))
    if not hi > lo:
        return float(np.median(flat))
    width = max(noise / 2.0, (hi - lo) / max_bins)
    counts, edges = np.histogram(flat, bins=max(1, int(np.ceil((hi - lo) / width))), range=(lo, hi))
    peak = 0.5 * (edges[np.argmax(counts)] + edges[np.argmax(counts) + 1])
    near = flat[np.abs(flat - peak) <= 2.0 * max(noise, width)]
    return float(np.median(near)) if near.size else float(peak)


def normalization_limits(image: np.ndarray, spec: dict[str, Any] | str | None = None, eps: float = 1e-6) -> tuple[float, float]:
    """``(offset, scale)`` such that the normalised image is ``(image - offset) / scale``.

    Per-image statistics (percentile, min-max, pedestal median) are taken from ``image``,
    which may be the whole frame or a strided sample of it (tiled inference computes them
    once per frame and applies them to every tile, so tiles never disagree).
    """
    spec = make_normalization_spec(spec)
    kind = spec["kind"]
    if kind == "none":
        return 0.0, 1.0
    if kind == "fixed":
        return spec["offset"], spec["scale"]
    raw = np.asarray(image)
    x = raw.astype(np.float32, copy=False)  # as ever: wide images too, unless float32 loses their signal (below)
    if kind == "pedestal":
        level = pedestal_mode(x) if spec.get("estimator") == "mode" else float(np.median(x))
        return level, spec["scale"]

    def limits(values: np.ndarray) -> tuple[float, float]:
        if kind == "minmax":
            return float(values.min()), float(values.max())
        return tuple(float(v) for v in np.percentile(values, [spec["p_low"], spec["p_high"]]))  # percentile

    lo, hi = limits(x)
    if working_float(raw.dtype) is np.float64 and not float32_holds(lo, hi - lo):
        x = raw.astype(np.float64, copy=False)  # a large offset over a small signal: float64 keeps it
        lo, hi = limits(x)
    if kind == "percentile" and hi <= lo and x.size:
        # both percentiles on one value (a background of exact zeros over 99.8 % of the frame, a few nuclei
        # above it): the brightest value is the top; the floor below scaled a stray count of 1 as bright as
        # the nuclei (36 objects for 3). A frame saturated but for a few darker pixels: the darkest the bottom
        top, bottom = float(np.nanmax(x)), float(np.nanmin(x))
        if top > hi:
            hi = top
        elif bottom < lo:
            lo = bottom
    # a flat image maps to 0. The floor is the rounding step of the values (a fixed 1e-6 flattened images in
    # small units, e.g. 1e-9: nuclei lost without a word); ``eps`` is that step in units of machine epsilon
    step = float(np.finfo(x.dtype).eps) * max(abs(lo), abs(hi))
    return lo, max(hi - lo, eps * 1e6 * step, float(np.finfo(x.dtype).tiny))


#: normalisations that keep the intensity scale (so a rescaled image reaches the network rescaled)
SCALE_KEEPING = ("fixed", "pedestal", "none")


def _bright_levels(normalized: np.ndarray) -> tuple[float, float]:
    """(maximum, 99.9th percentile) of a normalised image's finite values."""
    values = np.asarray(normalized, np.float32).ravel()
    values = values[np.isfinite(values)]
    if not values.size:
        return 0.0, 0.0
    return float(values.max()), float(np.percentile(values, 99.9))


def input_range(images: Iterable[np.ndarray]) -> dict:
    """Bright-signal levels of normalised training images, to recognise a differently scaled input later.

    The brightest signal above the pedestal or offset shrinks with the intensity scale (~40x when
    16-bit ADC frames are rescaled to 8 bits), while the read noise or the pedestal differ
    legitimately between instruments. Returns ``{"low", "median", "high"}`` in normalised units:
    the 5th percentile and the median of the per-image maxima (an input whose maximum is far
    below "low" was rescaled down: a few bright pixels cannot hide that), and the 95th
    percentile of the per-image 99.9th percentiles (an input whose 99.9th percentile is far above
    "high" was scaled up: robust to a few saturated or cosmic-ray pixels). ``{}`` for no images.
    """
    levels = [_bright_levels(image) for image in images if np.size(image)]
    if not levels:
        return {}
    maxima, upper = np.array(levels).T
    return {"low": float(np.percentile(maxima, 5)), "median": float(np.median(maxima)),
            "high": float(np.percentile(upper, 95))}


#: a pedestal-normalised (CCD) model sees no charge above this many times its training images' bright level
#: (``input_range["high"]``) nor below :data:`DARK_CLIP`: a saturated pixel (65535 ADC, 310 units against
#: training's 22) made the model call 30 glowing and 21 cluster pixels around it, up to 40 px away
BRIGHT_CLIP_FACTOR = 1.5
#: the lowest normalised value a pedestal-normalised model sees (1000 ADC below the pedestal at scale 200; the
#: read noise reaches about -2): a FITS BLANK or cold column at 0 ADC (-44) painted glow along its column
DARK_CLIP = -5.0


def input_limits(config: dict) -> tuple[float, float] | None:
    """(low, high) normalised values a pedestal-normalised model is given at most (see
    :data:`BRIGHT_CLIP_FACTOR`, :data:`DARK_CLIP`); None for other models, and those without ``input_range``."""
    spec = make_normalization_spec(config.get("normalization") or config.get("normalisation"))
    high = float((config.get("input_range") or {}).get("high") or 0.0)
    if spec["kind"] != "pedestal" or high <= 0:
        return None
    return DARK_CLIP, BRIGHT_CLIP_FACTOR * high


#: how many times dimmer or brighter than its training images an image may be before a model warns;
#: a class (CCD) model's classes are levels of charge, so a frame 2.5 x dimmer already loses them
#: (a frame in electrons at gain 3 lost three quarters of its hot pixels with no word at 5 x)
SCALE_FACTOR = {"multiclass": 2.5}
DEFAULT_SCALE_FACTOR = 5.0


def scale_mismatch(image: np.ndarray, config: dict, factor: float | None = None) -> str | None:
    """A one-line warning when an image, normalised as the model normalises, is more than ``factor``
    times dimmer (its maximum) or brighter (its 99.9th percentile) than the training images
    (:func:`input_range`); None when it fits, when it holds NaN (reported by segmentation), when
    the model's normalisation adapts to each image (percentile, min-max) or it recorded no range.
    ``factor`` None: :data:`SCALE_FACTOR` for the model's output mode, else :data:`DEFAULT_SCALE_FACTOR`.
    """
    if factor is None:
        factor = SCALE_FACTOR.get(str(config.get("output_mode")), DEFAULT_SCALE_FACTOR)
    spec = make_normalization_spec(config.get("normalization"))
    known = config.get("input_range") or {}
    if spec["kind"] not in SCALE_KEEPING or not known or known.get("low", 0) <= 0:
        return None
    try:
        maximum, upper = _bright_levels(normalize(image, spec))
    except InputError:  # NaN and the like: segmentation itself reports them, naming the file
        return None
    if maximum < known["low"] / factor:
        return (f"its brightest pixel after the model's normalisation ({maximum:.3g}) is far below the training "
                f"images' ({known['low']:.3g} and more): is it on the intensity scale the model was trained on "
                "(e.g. raw ADC, not rescaled to 8 bits)? Results may be empty or wrong")
    if upper > known["high"] * factor:
        return (f"its bright signal after the model's normalisation (99.9th percentile {upper:.3g}) is far above the "
                f"training images' (up to {known['high']:.3g}): is it on the intensity scale the model was trained on "
                "(e.g. not multiplied by a gain, summed or in other units)? Results may be wrong")
    return None
