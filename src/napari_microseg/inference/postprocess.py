"""From network probabilities to labels.

* ``binary``: foreground probability > threshold (0.5) -> fill holes ->
  connected components (as in [N]: a clump of touching nuclei is one object).
* ``three_class`` (background / interior / boundary): seeded watershed. Seeds
  are connected components of ``P(interior) > seed_threshold`` (optionally
  eroded); the flooding surface is ``-P(interior)`` and the mask is the
  foreground including the boundary class, ``1 - P(background) > threshold``.
  Touching nuclei separated by a predicted boundary become separate labels;
  foreground components without a seed are kept as one object each.
* ``multiclass``: argmax over classes -> semantic class map (uint8).

Then size filters (``min_size`` / ``max_size`` in pixels), optional removal of
objects touching the image border, and sequential relabelling. Label images
are uint16 when the labels fit, else uint32.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

#: default channel order of a three_class network output
THREE_CLASS_ORDER = ("background", "interior", "boundary")


def label_dtype(max_label: int) -> np.dtype:
    """uint16 when ``max_label`` fits (<= 65535), else uint32."""
    return np.dtype(np.uint16) if max_label <= np.iinfo(np.uint16).max else np.dtype(np.uint32)


_BAND = 1024  # rows per band in band-wise passes over huge label images


def label_areas(labels: np.ndarray) -> np.ndarray:
    """Pixel count of every label value 0..max (band-wise bincount: no full-size int64 copy)."""
    n = int(labels.max()) if labels.size else 0
    areas = np.zeros(n + 1, np.int64)
    for y0 in range(0, labels.shape[0], _BAND):
        areas += np.bincount(labels[y0:y0 + _BAND].ravel(), minlength=n + 1)
    return areas


def _apply_lut(labels: np.ndarray, lut: np.ndarray, dtype: np.dtype) -> np.ndarray:
    out = np.empty(labels.shape, dtype=dtype)
    for y0 in range(0, labels.shape[0], _BAND):
        out[y0:y0 + _BAND] = lut[labels[y0:y0 + _BAND]]
    return out


def _relabel(labels: np.ndarray, areas: np.ndarray | None = None, drop: np.ndarray | None = None) -> np.ndarray:
    """Sequential relabelling 1..N (dropping ``drop`` ids), cast to uint16/uint32."""
    if areas is None:
        areas = label_areas(labels)
    keep = areas > 0
    keep[0] = False
    if drop is not None:
        keep &= ~drop
    n = int(keep.sum())
    lut = np.zeros(len(areas), dtype=np.uint32)
    lut[keep] = np.arange(1, n + 1, dtype=np.uint32)
    return _apply_lut(labels, lut, label_dtype(n))


def fill_mask_holes(mask: np.ndarray) -> np.ndarray:
    """Fill holes in a boolean mask: background regions (4-connected) that do not touch the border.

    Same result as ``scipy.ndimage.binary_fill_holes`` with its default
    structure, ~5x faster on large images (one labelling pass instead of
    iterated dilation).
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.size == 0:
        return mask.copy()
    bg, n = ndi.label(~mask)
    if n == 0:
        return mask.copy()
    hole = np.ones(n + 1, dtype=bool)
    hole[0] = False
    hole[np.concatenate([bg[0], bg[-1], bg[:, 0], bg[:, -1]])] = False
    return mask | hole[bg]


def fill_label_holes(labels: np.ndarray) -> np.ndarray:
    """Fill holes inside each labelled object (in place on a copy); background stays 0 elsewhere."""
    labels = labels.copy()
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        crop = labels[sl]
        obj = crop == i
        filled = ndi.binary_fill_holes(obj)
        crop[filled & (crop == 0)] = i
    return labels


def filter_labels(
    labels: np.ndarray,
    min_size: int = 0,
    max_size: int | None = None,
    remove_border: bool = False,
) -> np.ndarray:
    """Remove objects smaller than ``min_size`` or larger than ``max_size`` pixels,
    and (if ``remove_border``) objects touching the image edge; relabel 1..N.

    Parameters
    ----------
    labels : int array (Y, X)
    min_size, max_size : object area limits in pixels (inclusive); None = no limit.
    remove_border : drop objects with any pixel on the outermost row/column.

    Returns
    -------
    labels : uint16/uint32 (Y, X), sequential.
    """
    labels = np.asarray(labels)
    if labels.size == 0 or labels.max() == 0:
        return np.zeros(labels.shape, dtype=np.uint16)
    areas = label_areas(labels)
    drop = np.zeros(areas.shape, dtype=bool)
    if min_size:
        drop |= areas < int(min_size)
    if max_size is not None:
        drop |= areas > int(max_size)
    if remove_border:
        edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
        drop[np.unique(edge)] = True
    drop[0] = False
    return _relabel(labels, areas, drop)


def binary_to_labels(
    foreground: np.ndarray,
    threshold: float = 0.5,
    min_size: int = 8,
    max_size: int | None = None,
    fill_holes: bool = True,
    remove_border: bool = False,
) -> np.ndarray:
    """Connected components of ``foreground > threshold`` (8-connectivity).

    Parameters
    ----------
    foreground : float array (Y, X), foreground probability in [0, 1]
        (or a boolean mask).
    threshold : probability cut; default 0.5 as in [N].
    min_size, max_size : object area limits in pixels; default min 8 px drops
        specks (METHODS [N] counts specks as cells; set 0 for that behaviour).
    fill_holes : fill holes in the foreground mask before labelling.
    remove_border : drop objects touching the image border.

    Returns
    -------
    labels : uint16 or uint32 (Y, X).
    """
    mask = foreground > threshold if foreground.dtype != bool else foreground
    if fill_holes:
        mask = fill_mask_holes(mask)
    labels, _ = ndi.label(mask, structure=np.ones((3, 3), bool))
    return filter_labels(labels, min_size, max_size, remove_border)


def three_class_to_labels(
    probabilities: np.ndarray,
    threshold: float = 0.5,
    seed_threshold: float = 0.5,
    seed_erosion: int = 1,
    min_seed_size: int = 4,
    min_size: int = 8,
    max_size: int | None = None,
    fill_holes: bool = True,
    remove_border: bool = False,
    class_order: tuple[str, str, str] = THREE_CLASS_ORDER,
) -> np.ndarray:
    """Instance labels from background / interior / boundary probabilities by seeded watershed.

    Parameters
    ----------
    probabilities : float array (3, Y, X), channels in ``class_order``.
    threshold : foreground is ``1 - P(background) > threshold`` (interior + boundary).
    seed_threshold : seeds are ``P(interior) > seed_threshold``.
    seed_erosion : erode the seed mask by this many pixels (cross element) so
        seeds of touching nuclei joined by a thin interior bridge separate; 0 = off.
    min_seed_size : seeds smaller than this (pixels) are ignored.
    min_size, max_size, fill_holes, remove_border : as in :func:`binary_to_labels`.

    Returns
    -------
    labels : uint16 or uint32 (Y, X).
    """
    from skimage.segmentation import watershed

    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 3 or probabilities.shape[0] != 3:
        raise ValueError(f"three_class probabilities must be (3, Y, X), got {probabilities.shape}")
    ib = class_order.index("background")
    ii = class_order.index("interior")
    p_bg = probabilities[ib].astype(np.float32, copy=False)
    p_in = probabilities[ii].astype(np.float32, copy=False)
    mask = (1.0 - p_bg) > threshold
    if fill_holes:
        mask = fill_mask_holes(mask)
    seeds_mask = (p_in > seed_threshold) & mask
    if seed_erosion > 0:
        seeds_mask = ndi.binary_erosion(seeds_mask, iterations=int(seed_erosion))
    seeds, n_seeds = ndi.label(seeds_mask)
    if n_seeds and min_seed_size > 1:
        seeds = filter_labels(seeds, min_size=min_seed_size).astype(np.int32)
        n_seeds = int(seeds.max())
    labels = watershed(-p_in, markers=seeds, mask=mask) if n_seeds else np.zeros(mask.shape, np.int32)
    # foreground components that received no seed: keep each as one object
    orphans = mask & (labels == 0)
    if orphans.any():
        extra, n_extra = ndi.label(orphans, structure=np.ones((3, 3), bool))
        labels = np.where(orphans, extra + labels.max(), labels)
    # holes were filled in the mask before flooding, so objects have none left
    return filter_labels(labels, min_size, max_size, remove_border)


def multiclass_to_classes(probabilities: np.ndarray) -> np.ndarray:
    """Semantic class map: argmax over channels of ``(K, Y, X)`` probabilities -> uint8 (Y, X)."""
    probabilities = np.asarray(probabilities)
    return np.argmax(probabilities, axis=0).astype(np.uint8 if probabilities.shape[0] <= 255 else np.uint16)


def class_map_to_instances(class_map: np.ndarray, min_size: int = 1, background: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Connected components (8-connected) of each non-background class.

    Returns
    -------
    labels : uint16/uint32 (Y, X), one id per component over all classes.
    classes : int array, ``classes[i - 1]`` = class of label ``i``.
    """
    labels = np.zeros(class_map.shape, dtype=np.int64)
    classes: list[int] = []
    for c in np.unique(class_map):
        if c == background:
            continue
        comp, n = ndi.label(class_map == c, structure=np.ones((3, 3), bool))
        if n == 0:
            continue
        labels = np.where(comp > 0, comp + len(classes), labels)
        classes.extend([int(c)] * n)
    classes_arr = np.asarray(classes, dtype=np.int64)
    if min_size > 1 and len(classes_arr):
        areas = np.bincount(labels.ravel(), minlength=len(classes_arr) + 1)[1:]
        keep = areas >= min_size
        lut = np.zeros(len(classes_arr) + 1, dtype=np.int64)
        lut[1:][keep] = np.arange(1, keep.sum() + 1)
        labels = lut[labels]
        classes_arr = classes_arr[keep]
    return labels.astype(label_dtype(len(classes_arr))), classes_arr


def probabilities_to_labels(
    probabilities: np.ndarray,
    output_mode: str = "binary",
    threshold: float = 0.5,
    min_size: int = 8,
    max_size: int | None = None,
    fill_holes: bool = True,
    remove_border: bool = False,
    **kwargs,
) -> np.ndarray:
    """Dispatch on ``output_mode`` for one frame of probabilities ``(K, Y, X)``.

    ``binary``: K = 1 (sigmoid foreground) or K = 2 (softmax, channel 1 is
    foreground) -> instance labels. ``three_class``: K = 3 -> instance labels by
    watershed (extra keyword arguments go to :func:`three_class_to_labels`).
    ``multiclass``: -> semantic class map uint8 (size filters do not apply).
    """
    probabilities = np.asarray(probabilities)
    if output_mode == "binary":
        fg = probabilities[0] if probabilities.shape[0] == 1 else probabilities[1]
        return binary_to_labels(fg, threshold, min_size, max_size, fill_holes, remove_border)
    if output_mode == "three_class":
        return three_class_to_labels(probabilities, threshold, min_size=min_size, max_size=max_size,
                                     fill_holes=fill_holes, remove_border=remove_border, **kwargs)
    if output_mode == "multiclass":
        return multiclass_to_classes(probabilities)
    raise ValueError(f"unknown output_mode {output_mode!r}: use binary, three_class or multiclass")
