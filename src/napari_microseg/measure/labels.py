"""Label-image helpers shared by measurement, post-processing and tracking."""

from __future__ import annotations

from typing import Any

import numpy as np


def label_dtype(max_id: int) -> np.dtype:
    """The smallest unsigned dtype for label ids up to ``max_id``: uint16, or uint32 above 65535
    (TIFF readers and napari take both; uint16 halves the file and the layer)."""
    return np.dtype(np.uint16 if int(max_id) <= np.iinfo(np.uint16).max else np.uint32)


def sparse_limit(labels: np.ndarray) -> int:
    """Largest label id that per-id lookup tables (bincount, LUTs) may be sized by: a few
    times the pixel count, so a table never outgrows the image by much."""
    return 4 * int(labels.size) + 65_536


def compact_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Renumber a label image with huge, sparse ids (e.g. 3,000,000,000) to 1..N.

    Returns ``(compact, ids)``: ``ids[k]`` is the original id of compact label ``k``
    (``ids[0] == 0``). When the ids are already small enough for per-id tables
    (:func:`sparse_limit`), returns ``(labels, None)`` without copying.
    """
    labels = np.asarray(labels)
    if labels.size == 0 or int(labels.max()) <= sparse_limit(labels):
        return labels, None
    ids, inverse = np.unique(labels, return_inverse=True)
    if ids[0] != 0:
        ids = np.concatenate([[0], ids])
        inverse = inverse + 1
    dtype = np.uint32 if len(ids) < 2**32 else np.uint64
    return inverse.reshape(labels.shape).astype(dtype), ids


def _two_valued_with_zero(values: np.ndarray) -> bool:
    """True when ``values`` hold 0 and at most one other value, one that masks use (bool, 0/1, 0/255,
    0/65535; see :func:`_mask_value`): a mask.
    Frame by frame, so a long stack needs no sorted copy of itself (``np.unique``)."""
    check = MaskCheck()
    for frame in values.reshape((-1,) + values.shape[-2:]) if values.ndim >= 2 else values[None]:
        if not check.add(frame):
            break
    return check.is_mask


def _mask_value(value: Any, dtype: Any) -> bool:
    """Whether ``value`` is what masks mark objects with: True, 1, 255, 65535 or the dtype's largest."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b" or value in (1, 255, 65535):
        return True
    return dtype.kind in "iu" and value == np.iinfo(dtype).max


class MaskCheck:
    """Tells a mask (0 and one other value that masks use: bool, 0/1, 0/255, 0/65535) from labels, one
    (Y, X) frame at a time, so a stack on disk is never held whole: ``add`` each frame (False
    once it is known not to be a mask), then read ``is_mask``."""

    def __init__(self) -> None:
        self.other: Any = None
        self.dtype: Any = None
        self.has_zero = False
        self.failed = False
        self.pieces = 0  # most connected pieces of the non-zero value in a frame (values masks do not use)

    def add(self, frame: Any) -> bool:
        """Take one frame; False as soon as the values seen are not a mask's."""
        if self.failed:
            return False
        frame = np.asarray(frame)
        lo, hi = frame.min(), frame.max()
        if not lo >= 0:  # negative (or NaN): not a mask
            self.failed = True
        elif hi != 0:
            if self.other is None:
                self.other, self.dtype = hi, frame.dtype
            if hi != self.other or (lo != 0 and lo != hi) or (lo == 0 and np.any((frame != 0) & (frame != hi))):
                self.failed = True  # a second non-zero value
            elif not _mask_value(hi, frame.dtype) and self.pieces < 2:
                from scipy import ndimage as ndi

                self.pieces = max(self.pieces, int(ndi.label(frame != 0, structure=np.ones((3, 3), bool))[1]))
        self.has_zero = self.has_zero or lo == 0
        return not self.failed

    @property
    def is_mask(self) -> bool:
        """0 and one other value: a mask, unless that value is none masks use (1, 255, ...) and it marks
        one connected piece in every frame: then it is labels of one object (a nucleus labelled 5)."""
        if not self.has_zero or self.failed:
            return False
        return self.other is None or _mask_value(self.other, self.dtype) or self.pieces > 1


def colour_labels_as_ids(labels: np.ndarray, name: str, classes: bool = False) -> np.ndarray:
    """A label image saved in colour, ``(Y, X, 3|4)`` or ``(T, Y, X, 3|4)`` (or with one channel last,
    ``(Y, X, 1)``), as one id per pixel ``(Y, X)`` / ``(T, Y, X)``; anything else is returned unchanged.

    Grey saved as RGB (the colours equal; alpha ignored) keeps its values. Labels coloured per object
    (black background) get one id per 8-connected piece of a colour (a palette repeats its colours: two
    objects of one colour apart are two objects; touching, they are one); a notice on stderr says so. ``classes``: a class map, whose values mean something, is refused in
    colours (InputError naming ``name``). Without this an RGB mask was read as a stack of one-row frames."""
    import sys

    from ..errors import InputError
    from ..io.images import is_rgb

    arr = np.asarray(labels)
    if arr.ndim in (3, 4) and arr.shape[-1] == 1 and min(arr.shape[-3:-1]) > 4:
        return arr[..., 0]
    if not is_rgb(arr):
        return arr
    colours = arr[..., :3]
    if np.array_equal(colours[..., 0], colours[..., 1]) and np.array_equal(colours[..., 0], colours[..., 2]):
        return colours[..., 0]
    if classes:
        raise InputError(f"{name}: a class map in colour (its colour channels differ, shape {arr.shape}): "
                         "save it as one channel of class numbers")
    flat = np.ascontiguousarray(colours).reshape(-1, 3)
    palette, ids = np.unique(flat, axis=0, return_inverse=True)
    black = np.flatnonzero((palette == 0).all(axis=1))
    ids = ids.reshape(colours.shape[:-1]).astype(np.int64)
    if black.size:  # the background keeps 0; the colours after black move down one
        ids = np.where(ids == black[0], 0, ids + (ids < black[0]))
    else:
        ids += 1
    # a palette repeats (napari's after ~49 colours): separate pieces of one colour are separate objects
    from skimage.measure import label as connected

    frames = ids[None] if ids.ndim == 2 else ids
    pieces = np.stack([connected(frame, background=0, connectivity=2) for frame in frames])
    pieces = pieces[0] if ids.ndim == 2 else pieces
    print(f"{name}: labels in colour (shape {arr.shape}): {len(palette) - black.size} colours, read as one object "
          "per connected piece of a colour", file=sys.stderr)
    return pieces


def masks_to_labels(masks: np.ndarray) -> tuple[np.ndarray, bool]:
    """A two-valued image (a mask: bool, 0/1, 0/255, 0/65535) as labels of its 8-connected objects.

    ``masks`` is ``(Y, X)`` or a ``(T, Y, X)`` stack (objects are found frame by frame).
    Returns ``(labels, converted)``: uint32 labels and True for a mask; the array
    unchanged and False when it holds more than two values (it is labels already) or
    none of them is 0 (no background: not a mask).
    """
    masks = np.asarray(masks)
    if masks.size == 0 or not _two_valued_with_zero(masks):
        return masks, False  # labels already, or no 0 background (e.g. a float image): the caller's checks decide
    frames = masks[None] if masks.ndim == 2 else masks
    labels = np.stack([mask_frame_labels(frame) for frame in frames])
    return (labels[0] if masks.ndim == 2 else labels), True


def mask_frame_labels(mask: np.ndarray) -> np.ndarray:
    """The 8-connected objects of one (Y, X) mask frame (non-zero pixels) as uint32 labels."""
    from scipy import ndimage as ndi

    return ndi.label(np.asarray(mask) != 0, structure=np.ones((3, 3), bool))[0].astype(np.uint32)


def scattered_ids(frame: np.ndarray) -> tuple[int, int] | None:
    """``(ids, regions)`` when a (Y, X) "labels" frame looks like an intensity image, else None: in labels each
    id is one object (one connected region of several px), while each grey level of an image is scattered over
    the frame in specks (3x more regions than ids, or regions of under 4 px on average). Regions are
    8-connected, as the package labels objects (a thin diagonal line is one object). Frames of under 50 ids
    are never taken for images."""
    from skimage.measure import label as connected

    frame = np.asarray(frame)
    ids = np.unique(frame)
    n_ids = int(np.count_nonzero(ids > 0))
    if n_ids < 50:
        return None
    regions = int(connected(frame, background=0, connectivity=2).max())
    return (n_ids, regions) if regions > 3 * n_ids or regions > frame.size / 4 else None
