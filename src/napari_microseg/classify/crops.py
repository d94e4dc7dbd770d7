"""One crop per labelled object, in the three input modes of [T].

Modes
-----
``"margin"`` (default)
    the object's bounding box grown by ``margin`` pixels (50 in the study) on every side:
    the particle with its surroundings.
``"tight"``
    the bounding box only.
``"masked"``
    the tight crop multiplied by the object's mask (pixels of other objects and of the
    background are 0): the mode that scored best in the study.

Every crop is made square (side = the longer side, centred on the box) so resizing
keeps the particle's aspect ratio, padded where it leaves the image (reflection of the
image for ``margin`` / ``tight``; zeros for ``masked``), then resized to ``size``
(28 x 28 by default; 32 x 32 for LipNet-6) with linear interpolation and
anti-aliasing. For ``masked`` the mask is resized with nearest-neighbour interpolation
and applied after resizing, so the outside is exactly 0.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import InputError

__all__ = ["CROP_MODES", "LIPOSOME_CLASSES", "object_boxes", "object_crops"]

CROP_MODES = ("margin", "tight", "masked")
#: class names of the two [T] problems, in the order used for class indices
LIPOSOME_CLASSES = {
    "lamellarity": ("unilamellar", "multilamellar", "uncertain"),
    "encapsulation": ("full", "empty", "uncertain"),
}


def object_boxes(labels: np.ndarray) -> dict[int, tuple[int, int, int, int]]:
    """Bounding boxes ``{label: (y0, x0, y1, x1)}`` (end exclusive) of every label > 0."""
    from scipy import ndimage as ndi

    labels = np.asarray(labels)
    out = {}
    for i, sl in enumerate(ndi.find_objects(labels.astype(np.int64, copy=False)), 1):
        if sl is not None:
            out[i] = (sl[0].start, sl[1].start, sl[0].stop, sl[1].stop)
    return out


def _square_window(box, margin: int) -> tuple[int, int, int, int]:
    y0, x0, y1, x1 = box
    y0, x0, y1, x1 = y0 - margin, x0 - margin, y1 + margin, x1 + margin
    side = max(y1 - y0, x1 - x0)
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    sy0 = int(np.floor(cy - side / 2))
    sx0 = int(np.floor(cx - side / 2))
    return sy0, sx0, sy0 + side, sx0 + side


def _cut(array: np.ndarray, window, mode: str, cval=0) -> np.ndarray:
    """Cut ``window`` (may leave the array) with padding."""
    y0, x0, y1, x1 = window
    ny, nx = array.shape
    pad = (max(0, -y0), max(0, y1 - ny)), (max(0, -x0), max(0, x1 - nx))
    sub = array[max(0, y0):min(ny, y1), max(0, x0):min(nx, x1)]
    if any(p for pair in pad for p in pair):
        if mode == "reflect" and min(sub.shape) > 1:
            # np.pad reflect needs pad < size; repeat if needed
            while any(p for pair in pad for p in pair):
                step = tuple((min(a, sub.shape[i] - 1), min(b, sub.shape[i] - 1)) for i, (a, b) in enumerate(pad))
                sub = np.pad(sub, step, mode="reflect")
                pad = tuple((a - s[0], b - s[1]) for (a, b), s in zip(pad, step))
        else:
            sub = np.pad(sub, pad, mode="constant", constant_values=cval)
    return sub


def object_crops(image: np.ndarray, labels: np.ndarray, mode: str = "margin", size: Sequence[int] = (28, 28),
                 margin: int = 50, normalization: dict | str | None = None,
                 label_ids: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Crops of every object of a label image.

    Parameters
    ----------
    image : (Y, X) grey image, any real dtype.
    labels : (Y, X) integer labels, 0 = background; same shape as ``image``.
    mode : ``"margin"``, ``"tight"`` or ``"masked"`` (see module docstring).
    size : (rows, columns) of the output crops in pixels.
    margin : pixels added around the bounding box in ``"margin"`` mode.
    normalization : normalisation of the whole image before cropping (a spec for
        :func:`napari_microseg.training.normalize.normalize`; None: percentile 1 / 99.8).
    label_ids : only these labels (default: all labels present, ascending).

    Returns
    -------
    crops : (N, rows, columns) float32.
    ids : (N,) int64 label of each crop.
    """
    from skimage.transform import resize

    from ..training.normalize import normalize

    image = np.asarray(image)
    labels = np.asarray(labels)
    if image.ndim != 2:
        raise InputError(f"expected a 2-D image, got shape {image.shape}")
    if labels.shape != image.shape:
        raise InputError(f"labels shape {labels.shape} differs from image shape {image.shape}")
    if mode not in CROP_MODES:
        raise InputError(f"crop mode must be one of {', '.join(CROP_MODES)}; got {mode!r}")
    if not np.issubdtype(labels.dtype, np.integer):
        if np.any(labels != np.round(labels)):
            raise InputError("labels must be integers")
        labels = labels.astype(np.int64)
    size = (int(size[0]), int(size[1]))
    boxes = object_boxes(labels)
    ids = list(boxes) if label_ids is None else [int(k) for k in label_ids]
    missing = [k for k in ids if k not in boxes]
    if missing:
        raise InputError(f"labels not present in the label image: {missing[:5]}")
    norm = normalize(image, normalization).astype(np.float32)
    out = np.zeros((len(ids), *size), np.float32)
    for n, k in enumerate(ids):
        window = _square_window(boxes[k], int(margin) if mode == "margin" else 0)
        if mode == "masked":
            crop = _cut(norm, window, "constant")
            m = _cut(labels, window, "constant") == k
            crop = resize(crop * m, size, order=1, anti_aliasing=True, preserve_range=True)
            m_small = resize(m.astype(np.float32), size, order=0, anti_aliasing=False, preserve_range=True) > 0.5
            crop = crop * m_small
        else:
            crop = _cut(norm, window, "reflect")
            crop = resize(crop, size, order=1, anti_aliasing=True, preserve_range=True)
        out[n] = crop
    return out, np.asarray(ids, np.int64)
