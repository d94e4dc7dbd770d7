"""Object-size rescaling: run a network on nuclei of the size it was trained on, whatever the magnification.

A nuclei network learns the nucleus sizes of its training images. On an image
taken at twice the magnification it splits nuclei; at half, it merges and
misses them (the shipped nuclei model on the DSB2018 test split zoomed x2 /
x0.5: AP@0.5 0.63 / 0.67 instead of 0.83). Like cellpose's ``diameter``, the
user can give the nucleus diameter of the image (pixels), or have it
estimated; each tile is then resized so its nuclei have a size the network
knows, predicted, and its probabilities resized back to the tile, so labels,
tables and memory stay those of the original image.

A nucleus "diameter" here is always its width: twice its largest inscribed
radius (:func:`foreground_diameter`), which for a round nucleus is its usual
diameter and which touching nuclei do not inflate. A model file states the
widths it knows in ``config["object_size"]`` (the trainer records them)::

    {"diameter": 16.5,        # median over the training images of their typical width, px
     "range": [10.5, 41.5]}   # widths segmented without rescaling (10th-90th percentile), px

An image whose nuclei lie inside ``range`` is left as it is; otherwise it is
resized so they come inside it, the farther outside the closer to
``diameter`` (:func:`factor_for_diameter`; the factor changes smoothly with
the diameter). Memory stays bounded by the tile: the tiles read
from the image are ``tile / factor`` px (at most the image's size), so at
x0.1 the default 512 px network tile reads up to 5120 x 5120 px of the image per tile.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..errors import InputError

#: rescaling factors are kept within these bounds (x0.1 .. x4)
MIN_FACTOR, MAX_FACTOR = 0.1, 4.0
#: no nucleus is wider than this (px): a larger --diameter is a typo (1e300 printed a 300-digit width)
MAX_DIAMETER_PX = 1e6
#: the diameter is estimated on a central crop of at most this many pixels per side
ESTIMATE_CROP = 768
#: at most this many segmentation passes to estimate a diameter
ESTIMATE_PASSES = 3

#: frames of a stack tried in turn (spread over it, the first first) until one shows nuclei to estimate from
ESTIMATE_FRAMES = 5

#: a first estimate from this multiple of the trained widths' bottom to this share of their top is taken as
#: it is (the network sees such nuclei whole, and nothing is resized either way); others are measured again,
#: resized to the typical width
WELL_INSIDE = (1.3, 0.6)


def object_size_spec(loaded: Any) -> dict | None:
    """The model's ``config["object_size"]`` as ``{"diameter": float, "range": (lo, hi)}`` (px), or None."""
    spec = (getattr(loaded, "config", None) or {}).get("object_size")
    if not spec:
        return None
    try:
        diameter = float(spec["diameter"])
        lo, hi = (float(v) for v in spec.get("range", (diameter, diameter)))
    except (KeyError, TypeError, ValueError):
        raise InputError(f"the model file's object size {spec!r} is not {{'diameter': px, 'range': [lo, hi]}}") from None
    if not (np.isfinite(diameter) and diameter > 0 and 0 < lo <= diameter <= hi):
        raise InputError(f"the model file's object size {spec} is inconsistent (need 0 < range[0] <= diameter <= range[1])")
    return {"diameter": diameter, "range": (lo, hi)}


def factor_for_diameter(diameter: float, spec: dict) -> float:
    """Resize factor that brings nuclei of ``diameter`` px into the widths the model knows.

    1.0 inside the model's range ``[lo, hi]``. Above it, nuclei are brought to
    ``max(spec["diameter"], hi**2 / diameter)`` px, below it to
    ``min(spec["diameter"], lo**2 / diameter)``: the diameter mirrored into the
    range about its nearest end (in log scale), so the factor is continuous at
    the ends, and nuclei far outside land at the model's typical width. Kept
    within x0.1 .. x4. A NaN diameter (nothing found) gives 1.0.
    """
    if not np.isfinite(diameter) or diameter <= 0:
        return 1.0
    lo, hi = spec["range"]
    if lo <= diameter <= hi:
        return 1.0
    target = max(spec["diameter"], hi * hi / diameter) if diameter > hi else min(spec["diameter"], lo * lo / diameter)
    return float(np.clip(target / diameter, MIN_FACTOR, MAX_FACTOR))


def parse_diameter(value: Any) -> float | str | None:
    """A ``diameter`` argument as None (as trained), ``"auto"`` or a positive float (px); a clear message otherwise.

    Accepts None, "", "none", 0 (as trained), "auto", or a number / numeric string.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "none", "0"):
            return None
        if text == "auto":
            return "auto"
        try:
            value = float(text)
        except ValueError:
            raise InputError(f"diameter must be a number of pixels, 'auto' or 'none', got {value!r}") from None
    if isinstance(value, bool):
        raise InputError(f"diameter must be a number of pixels, 'auto' or 'none', got {value!r}")
    value = float(value)
    if value == 0:
        return None
    if not np.isfinite(value) or value < 0 or value > MAX_DIAMETER_PX:
        raise InputError(f"diameter must be a positive number of pixels (at most {MAX_DIAMETER_PX:g}), got {value:g}")
    return value


def central_crop(image: Any, size: int = ESTIMATE_CROP, frame: int = 0) -> Any:
    """The central ``size`` x ``size`` window of a (Y, X) array-like, or of frame ``frame`` of a (T, Y, X) one.

    The whole frame when smaller. One index, so zarr / dask read only the window.
    """
    h, w = image.shape[-2:]
    y0, x0 = max(0, (h - size) // 2), max(0, (w - size) // 2)
    window = (slice(y0, y0 + size), slice(x0, x0 + size))
    return image[(int(frame),) + window] if len(image.shape) == 3 else image[window]


def rescaled_predict_fn(fn: Callable[[np.ndarray], np.ndarray], factor: float) -> Callable[[np.ndarray], np.ndarray]:
    """Wrap a ``(B,1,H,W) -> (B,K,H,W)`` predictor so it sees each tile resized by ``factor``.

    The tile is resized bilinearly to ``round(H * factor) x round(W * factor)``
    (antialiased when shrinking), predicted, and the probabilities resized back
    to ``H x W`` (antialiased when the tile was enlarged). ``factor == 1``
    returns ``fn`` unchanged.
    """
    if factor == 1.0:
        return fn
    import torch
    import torch.nn.functional as F

    def resize(x: "torch.Tensor", size: tuple[int, int], shrink: bool) -> "torch.Tensor":
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)

    def scaled(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        h, w = x.shape[-2:]
        size = (max(8, int(round(h * factor))), max(8, int(round(w * factor))))
        out = np.asarray(fn(resize(x, size, factor < 1).numpy()), dtype=np.float32)
        back = resize(torch.from_numpy(np.ascontiguousarray(out)), (h, w), factor > 1)
        return back.numpy()

    return scaled


def native_tile(tile: int, factor: float, max_side: int | None = None) -> int:
    """Tile size on the original image (px) whose resized copy is about ``tile`` px: a multiple of 16, at least 16.

    With ``max_side`` (the image's longer side, px) it is at most that rounded up
    to 16, so a small image is not padded up to a huge tile.
    """
    side = max(16, int(round(tile / factor / 16.0)) * 16)
    return side if max_side is None else min(side, int(np.ceil(max_side / 16.0)) * 16)


def native_overlap(overlap: float, factor: float) -> float:
    """Tile overlap on the original image: a fraction (< 1) is kept, pixels (>= 1) are divided by ``factor``."""
    return overlap if overlap < 1 else max(1, int(round(overlap / factor)))


def foreground_diameter(foreground: np.ndarray, min_area: int = 4) -> float:
    """Typical nucleus diameter (px) from a (Y, X) foreground mask, whatever its instance split.

    For each connected foreground component, twice its largest inscribed radius
    (maximum of the Euclidean distance transform, + 0.5 px) measures the widest
    nucleus in it, so touching nuclei and nuclei that a network cuts into
    pieces by false boundaries are measured whole. The median is weighted by
    component area, so specks of noise do not pull it down. Components under
    ``min_area`` px and those touching the border are left out (unless nothing
    else remains). NaN for an empty mask.
    """
    from scipy import ndimage as ndi

    mask = np.asarray(foreground, dtype=bool)
    comps, n = ndi.label(mask)
    if n == 0:
        return float("nan")
    dist = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    index = np.arange(1, n + 1)
    # each component's largest distance (ndi.maximum sorted every pixel: 0.6 s a 1024^2 frame, 30x this)
    largest = np.zeros(n + 1, dist.dtype)
    np.maximum.at(largest, comps.ravel(), dist.ravel())
    radius = largest[1:]
    area = np.bincount(comps.ravel(), minlength=n + 1)[1:]
    keep = area >= min_area
    edge = np.unique(np.concatenate([comps[0], comps[-1], comps[:, 0], comps[:, -1]]))
    inner = keep & ~np.isin(index, edge)
    if inner.any():
        keep = inner
    if not keep.any():
        return float("nan")
    radius, area = np.asarray(radius)[keep], np.asarray(area)[keep]
    order = np.argsort(radius)
    cumulative = np.cumsum(area[order])
    median_radius = radius[order][np.searchsorted(cumulative, cumulative[-1] / 2.0)]
    return float(2.0 * median_radius + 0.5)


def training_object_size(targets: Any) -> dict | None:
    """``config["object_size"]`` for a model trained on these targets, or None when they hold no objects.

    ``targets`` are (Y, X) training targets (class indices; > 0 is an object,
    < 0 ignored). Per image the typical diameter is :func:`foreground_diameter`
    of its objects; the model's ``diameter`` is the median over the images
    and its ``range`` their 10th to 90th percentile, px.
    """
    return object_size_of([foreground_diameter(np.asarray(target) > 0) for target in targets])


def object_size_of(diameters: Any) -> dict | None:
    """:func:`training_object_size` from each training image's :func:`foreground_diameter` (px; NaN for
    an image without objects): None when none has objects."""
    per_image = [float(d) for d in diameters if np.isfinite(d)]
    if not per_image:
        return None
    values = np.asarray(per_image)
    lo, mid, hi = (round(float(v), 1) for v in np.percentile(values, [10, 50, 90]))
    return {"diameter": mid, "range": [lo, hi], "measured_on": f"{len(values)} training image(s)"}
