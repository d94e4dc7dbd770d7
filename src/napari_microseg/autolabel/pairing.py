"""Training pairs from a nuclear stain and a target channel of the same field ([N]).

[N] labelled phase-contrast tiles with masks made from the fluorescence image
of the same field and time, cropped into 512x512 tiles at identical positions.
:func:`make_training_pairs` does the same: auto-label the stain
(:func:`~napari_microseg.autolabel.fluorescence.autolabel_fluorescence`), check
the registration of stain and target by phase correlation
(:func:`check_registration`), optionally shift the labels onto the target, and
cut both into tiles at identical positions.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ..errors import InputError
from .fluorescence import autolabel_fluorescence


class RegistrationWarning(UserWarning):
    """Stain and target channel appear shifted against each other."""


@dataclass
class TilePairs:
    """Tiles cut at identical positions from a target image and its labels.

    Attributes
    ----------
    targets : list of (h, w) target tiles (dtype of the target image).
    labels : list of (h, w) uint16/uint32 label tiles (relabelled 1..n per tile); int32 where the
        labels hold negative "not annotated" pixels, which are kept.
    positions : (N, 2) int array of the tiles' top-left (y, x) in the full image.
    tile_shape : (h, w) tile size actually used (the requested size clipped to the image).
    shift : (dy, dx) stain-to-target shift in px estimated by phase correlation (None if not checked).
    shift_applied : True if the labels were shifted by ``shift``.
    full_labels : (Y, X) labels of the whole field (after any shift).
    params : settings used.
    """

    targets: list
    labels: list
    positions: np.ndarray
    tile_shape: tuple
    shift: tuple | None = None
    shift_applied: bool = False
    full_labels: np.ndarray | None = None
    params: dict = field(default_factory=dict)


def tile_positions(shape: tuple[int, int], tile: int | tuple[int, int] = 512, overlap: bool = True) -> tuple[np.ndarray, tuple[int, int]]:
    """Top-left corners of tiles covering a (Y, X) field.

    The tile size is clipped to the image size. With ``overlap`` the last row /
    column of tiles is moved inwards so that it ends at the border (the whole
    field is covered, tiles are all full size); without it, only whole tiles that
    fit are used (the remainder at the right / bottom is left out).

    Returns
    -------
    positions : (N, 2) int array of (y, x), row-major order.
    tile_shape : (h, w) actual tile size.
    """
    ny, nx = (int(v) for v in shape)
    th, tw = (int(tile), int(tile)) if np.isscalar(tile) else (int(tile[0]), int(tile[1]))
    if th < 1 or tw < 1:
        raise InputError(f"tile size must be >= 1, got {tile}")
    th, tw = min(th, ny), min(tw, nx)

    def starts(n: int, t: int) -> list[int]:
        s = list(range(0, n - t + 1, t))
        if overlap and s[-1] + t < n:
            s.append(n - t)
        return s

    ys, xs = starts(ny, th), starts(nx, tw)
    pos = np.array([(y, x) for y in ys for x in xs], int).reshape(-1, 2)
    return pos, (th, tw)


def _edges(img: np.ndarray) -> np.ndarray:
    f = img.astype(np.float32)
    f = (f - f.mean()) / (f.std() + 1e-12)
    f = ndi.gaussian_filter(f, 1.0)
    return np.hypot(ndi.sobel(f, 0), ndi.sobel(f, 1))


def check_finite(image: np.ndarray, name: str) -> None:
    """Raise :class:`InputError` naming ``name`` (as the caller knows the image: "--target t.tif", "the target
    'DAPI'") when a float ``image`` (any shape) holds NaN or infinite values; integer images pass unread."""
    image = np.asarray(image)
    if image.dtype.kind in "fc" and not np.isfinite(image).all():
        raise InputError(f"{name} holds NaN or infinite values (masked or missing pixels?): replace them "
                         "(e.g. by the image's median) to register it")


def constant_frames(image: np.ndarray) -> list[int]:
    """The indices of the frames of a (Y, X) image or (T, Y, X) stack in which every pixel is the same
    (a blank channel); [0] for a constant 2-D image, [] when none is."""
    frames = image[None] if image.ndim == 2 else image
    return [i for i, frame in enumerate(frames) if frame.size and frame.min() == frame.max()]


def check_registration(stain: np.ndarray, target: np.ndarray, upsample_factor: int = 1, use_edges: bool = True,
                       max_pixels: int = 2048 * 2048) -> tuple[tuple[float, float], float]:
    """Estimate the shift that moves the stain onto the target by phase correlation.

    ``skimage.registration.phase_cross_correlation`` is run on gradient
    magnitudes (``use_edges``), because a fluorescence stain and a phase / bright-field
    image of the same nuclei share edges more than intensities.

    Returns
    -------
    shift : (dy, dx) in px; ``scipy.ndimage.shift(stain, shift)`` aligns the stain to the target.
    error : the normalised RMS error reported by scikit-image (0 = perfect match, 1 = none); (0, 0) and 1
        when either image is constant (nothing to register).

    Raises
    ------
    InputError
        If the images differ in shape, or either holds NaN or infinite values.
    """
    from skimage.registration import phase_cross_correlation

    a, b = np.asarray(stain), np.asarray(target)
    if a.shape != b.shape:
        raise InputError(f"stain {a.shape} and target {b.shape} differ in shape")
    for name, image in (("the stain", a), ("the target", b)):  # (scikit-image's message gave advice for its own keywords)
        check_finite(image, name)
    if a.size == 0 or a.min() == a.max() or b.min() == b.max():  # a blank channel: no shift can be measured
        return (0.0, 0.0), 1.0
    if a.size > max_pixels:  # central crop keeps it fast on huge fields
        side = int(np.sqrt(max_pixels))
        cy, cx = a.shape[0] // 2, a.shape[1] // 2
        sl = (slice(max(cy - side // 2, 0), cy + side // 2), slice(max(cx - side // 2, 0), cx + side // 2))
        a, b = a[sl], b[sl]
    if use_edges:
        a, b = _edges(a), _edges(b)
    shift, error, _ = phase_cross_correlation(b, a, upsample_factor=upsample_factor, normalization=None)
    return (float(shift[0]), float(shift[1])), float(error)


def shift_labels(labels: np.ndarray, shift: tuple[float, float], fill: int = -1) -> np.ndarray:
    """Shift a label image by (dy, dx) px (rounded; nearest neighbour). The strip that enters at the border,
    which the stain never saw, is ``fill``: -1, not annotated (0 called the target's nuclei there background,
    994 px of 5 nuclei on the ISL pair); an unsigned image becomes a signed one to hold it."""
    labels = np.asarray(labels)
    dy, dx = (int(round(v)) for v in shift)
    if fill < 0:  # (a bool mask took -1 as True: a strip of "nucleus")
        labels = _signed(labels)
    return ndi.shift(labels, (dy, dx), order=0, mode="constant", cval=fill)


def _signed(labels: np.ndarray) -> np.ndarray:
    """``labels`` in a signed integer type that holds -1 (not annotated) and all its ids; as it is if signed."""
    if labels.dtype.kind not in "ub":
        return labels
    return labels.astype(np.int64 if labels.dtype.itemsize >= 4 else np.int32)


def make_training_pairs(
    stain: np.ndarray,
    target: np.ndarray,
    tile: int | tuple[int, int] = 512,
    labels: np.ndarray | None = None,
    check_shift: bool = True,
    correct_shift: bool = False,
    max_shift_px: float = 5.0,
    overlap: bool = True,
    autolabel_kwargs: dict | None = None,
) -> TilePairs:
    """Cut (target tile, label tile) pairs at identical positions from one field.

    Parameters
    ----------
    stain : (Y, X) nuclear-stain image (fluorescence, any numeric dtype).
    target : (Y, X) image the network should learn from (phase contrast, bright field), same shape.
    tile : tile size in px (int or (h, w)), default 512 ([N]); clipped to the image size.
    labels : (Y, X) labels of the stain if already made; None: auto-label with
        ``autolabel_kwargs`` (defaults of :func:`autolabel_fluorescence`).
    check_shift : estimate the stain-to-target shift by phase correlation.
    correct_shift : shift the labels by the estimated shift (rounded to whole pixels).
    max_shift_px : a shift longer than this triggers a :class:`RegistrationWarning` (default 5 px:
        across modalities the estimate scatters by ~3 px, measured on the ISL phase/DAPI field).
    overlap : see :func:`tile_positions`.

    Returns
    -------
    TilePairs
    """
    stain = np.asarray(stain)
    target = np.asarray(target)
    if stain.ndim != 2 or target.ndim != 2:
        raise InputError(f"stain and target must be 2-D, got {stain.shape} and {target.shape}")
    if stain.shape != target.shape:
        raise InputError(f"stain {stain.shape} and target {target.shape} must have the same shape (same field)")
    if labels is None:
        labels = autolabel_fluorescence(stain, **(autolabel_kwargs or {}))
    labels = np.asarray(labels)
    if labels.shape != stain.shape:
        raise InputError(f"labels {labels.shape} and stain {stain.shape} differ in shape")
    shift = None
    applied = False
    if check_shift:
        shift, _err = check_registration(stain, target)
        length = float(np.hypot(*shift))
        if length > max_shift_px:
            action = "shifting the labels onto the target" if correct_shift else "labels NOT corrected (use --correct-shift)"
            warnings.warn(f"stain and target appear shifted by (dy, dx) = ({shift[0]:.1f}, {shift[1]:.1f}) px; {action}",
                          RegistrationWarning, stacklevel=2)
            if correct_shift:
                labels = shift_labels(labels, shift)
                applied = True
    from skimage.segmentation import relabel_sequential

    positions, (th, tw) = tile_positions(stain.shape, tile, overlap)
    targets, tiles = [], []
    for y, x in positions:
        targets.append(target[y : y + th, x : x + tw].copy())
        piece = labels[y : y + th, x : x + tw]
        ignored = piece < 0  # "not annotated" (e.g. nuclei above the max diameter): kept as they are
        lab, _, _ = relabel_sequential(np.where(ignored, 0, piece))
        lab = lab.astype(labels.dtype if labels.dtype.kind == "u" else np.uint32)
        if ignored.any():
            lab = lab.astype(np.int32)
            lab[ignored] = piece[ignored]
        tiles.append(lab)
    return TilePairs(targets, tiles, positions, (th, tw), shift, applied, labels,
                     {"tile": [th, tw], "overlap": overlap, "check_shift": check_shift, "correct_shift": correct_shift,
                      "max_shift_px": max_shift_px, "autolabel": autolabel_kwargs or {}})


def align_labels_iter(stain: np.ndarray, target: np.ndarray, labels: np.ndarray, correct_shift: bool = True,
                      max_shift_px: float = 5.0):
    """Put a stain's labels onto a target channel of the same field, frame by frame ([N] pairing).

    Each frame's stain-to-target shift is estimated by :func:`check_registration`; a shift longer
    than ``max_shift_px`` is applied to that frame's labels when ``correct_shift`` is true (shorter
    ones are within the scatter of the estimate across modalities and left alone, as in
    :func:`make_training_pairs`).

    Parameters
    ----------
    stain, target : (Y, X) images or (T, Y, X) stacks of the same shape (any numeric dtype).
    labels : labels of ``stain``, same shape.

    Yields
    ------
    :class:`~napari_microseg.progress.Progress`, one per frame.

    Returns
    -------
    (labels on the target, same shape and dtype; a list with one dict per frame: ``t``, ``dy``,
    ``dx`` (px), ``length`` (px), ``corrected`` (bool)).
    """
    from ..progress import Progress

    stain, target, labels = np.asarray(stain), np.asarray(target), np.asarray(labels)
    if stain.ndim not in (2, 3):
        raise InputError(f"the stain must be a (Y, X) image or a (T, Y, X) stack, got shape {stain.shape}")
    if not stain.shape == target.shape == labels.shape:
        raise InputError(f"stain {stain.shape}, target {target.shape} and labels {labels.shape} must have the same "
                         "shape (the same field)")
    if not (np.isfinite(max_shift_px) and max_shift_px >= 0):
        raise InputError(f"the largest shift left alone must be >= 0 px, got {max_shift_px}")
    stack = stain.ndim == 3
    frames = range(stain.shape[0]) if stack else [None]
    aligned = np.empty_like(labels)
    shifts = []
    for i, t in enumerate(frames):
        pick = (t,) if stack else ()
        (dy, dx), _error = check_registration(stain[pick], target[pick])
        length = float(np.hypot(dy, dx))
        corrected = bool(correct_shift and length > max_shift_px)
        if corrected:  # the strip entering at the border is -1 (not annotated)
            aligned = _signed(aligned)
        aligned[pick] = shift_labels(labels[pick], (dy, dx)) if corrected else labels[pick]
        shifts.append({"t": 0 if t is None else int(t), "dy": dy, "dx": dx, "length": length, "corrected": corrected})
        yield Progress(i + 1, len(frames), f"registered frame {i + 1}/{len(frames)}: shift {length:.1f} px")
    return aligned, shifts
