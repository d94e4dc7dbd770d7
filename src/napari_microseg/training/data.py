"""Training data: labelled image pairs, targets per output mode, patch sampling, splits.

Targets are small signed-integer arrays of shape ``(Y, X)`` (``int8``; ``int16`` above
128 classes: 1 byte a pixel, where ``int64`` took 8 and dominated training's memory) holding
class indices, with ``IGNORE = -1`` for pixels that must not contribute to the loss (not
annotated, or padding added to images smaller than the patch). Batches handed to the network
(:meth:`PatchSampler.sample`, :func:`tile_for_validation`) are ``int64``, as torch's losses take.

Output modes and how targets are made from label images:

- ``"binary"``: 1 for label > 0, 0 for background.
- ``"three_class"``: 0 background, 1 interior, 2 boundary, from *instance* labels; the
  boundary is the inner border of each instance (``skimage.segmentation.find_boundaries``,
  ``mode="inner"``), which separates touching nuclei.
- ``"multiclass"``: the label value is the class index (0 .. n_classes - 1).

Partial annotation: pixels whose label equals ``ignore_value`` (default -1) are ignored.
With ``unlabelled_is_ignored=True`` (sparse painting) label 0 means "not annotated"
(ignored) and ``background_value`` marks painted background (class 0).
"""

from __future__ import annotations

import glob
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..defaults import MAX_CLASS_VALUES
from ..errors import InputError, MicrosegWarning
from ..io.images import frame_name
from .normalize import make_normalization_spec, normalize

__all__ = [
    "IGNORE",
    "OUTPUT_MODES",
    "LabelledImage",
    "TrainingData",
    "make_target",
    "prepare_training_data",
    "find_image_label_pairs",
    "load_training_pairs",
    "split_train_val",
    "PatchSampler",
    "tile_for_validation",
]

IGNORE = -1
OUTPUT_MODES = ("binary", "three_class", "multiclass")


@dataclass
class LabelledImage:
    """One normalised image with its target.

    Attributes
    ----------
    image : float32 ``(C, Y, X)``, already normalised.
    target : int8 (int16 above 128 classes) ``(Y, X)`` class indices, ``IGNORE`` (-1) where not annotated.
    name : where it came from (file name, ``frame 3``, ...).
    sequence : for a frame of a time-lapse (a stack), which one (frames of one sequence are
        kept in time order); None for an image of its own.
    group : for a tile cut from a field, the tiles of that field it overlaps (one key for all of
        them, e.g. the last column of tiles moved back to fit the field and the column before it):
        the split keeps a group on one side; None for an image that overlaps no other.
    """

    image: np.ndarray
    target: np.ndarray
    name: str = ""
    sequence: Any = None
    group: Any = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.target.shape)  # type: ignore[return-value]

    @property
    def n_annotated(self) -> int:
        return int(np.count_nonzero(self.target != IGNORE))


@dataclass
class TrainingData:
    """A list of :class:`LabelledImage` plus how the targets were made."""

    items: list[LabelledImage]
    output_mode: str = "binary"
    n_classes: int = 2
    normalization: dict = field(default_factory=lambda: make_normalization_spec(None))
    description: str = ""

    def __len__(self) -> int:
        return len(self.items)

    def class_frequencies(self) -> np.ndarray:
        """Fraction of annotated pixels per class, shape ``(n_classes,)``."""
        counts = np.zeros(self.n_classes, dtype=np.float64)
        for it in self.items:
            t = it.target[it.target != IGNORE]
            counts += np.bincount(t.ravel(), minlength=self.n_classes)[: self.n_classes]
        total = counts.sum()
        return counts / total if total > 0 else counts

    @property
    def in_channels(self) -> int:
        return int(self.items[0].image.shape[0]) if self.items else 1


def _check_background_above_classes(labels: Sequence[Any], background_value: int, ignore_value: int | None) -> None:
    """Sparse class maps (0 = not annotated) give class k with the value k and background with
    ``background_value``: that value must lie above every class painted, or a class would be trained as
    background (the Training dock's background id 1 took class 1 for it, and shifted nothing else)."""
    painted: set[int] = set()
    for lab in labels:
        if lab is not None and np.size(lab):
            painted.update(int(v) for v in np.unique(np.asarray(lab)))
    classes = sorted(v for v in painted if v > 0 and v not in (background_value, ignore_value))
    if classes and background_value < classes[-1]:
        shown = ", ".join(map(str, classes[:8])) + (" ..." if len(classes) > 8 else "")
        raise InputError(
            f"sparse class labels: the background id ({background_value}) lies below classes painted ({shown}; 0 = "
            f"not annotated): class {background_value} would be trained as background and, if background was painted "
            f"with another id, that id as a class. Paint background with an id above every class (e.g. "
            f"{classes[-1] + 1}) and set the background id to it")


def make_target(
    labels: np.ndarray,
    output_mode: str = "binary",
    n_classes: int | None = None,
    ignore_value: int | None = IGNORE,
    unlabelled_is_ignored: bool = False,
    background_value: int | None = None,
    ignore_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Turn a label image into a training target.

    Parameters
    ----------
    labels : integer ``(Y, X)`` label image (instance labels for binary / three_class,
        class indices for multiclass).
    output_mode : ``"binary"``, ``"three_class"`` or ``"multiclass"``.
    n_classes : number of classes for multiclass (values >= n_classes raise InputError).
    ignore_value : label value meaning "not annotated" (default -1; None: no such value).
    unlabelled_is_ignored : sparse painting: 0 means not annotated.
    background_value : with ``unlabelled_is_ignored``, the label value of painted background.
    ignore_mask : optional boolean ``(Y, X)``; True pixels are ignored.

    Returns
    -------
    int64 ``(Y, X)`` target with ``IGNORE`` (-1) at ignored pixels (as torch's losses take it;
    :func:`prepare_training_data` keeps it as :func:`target_dtype`).
    """
    from skimage.segmentation import find_boundaries

    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise InputError(f"labels must be 2-D (Y, X), got shape {lab.shape}")
    if lab.dtype.kind == "f":
        if not np.all(np.isfinite(lab)):
            raise InputError("labels contain NaN or infinite values")
        if not np.array_equal(lab, np.round(lab)):
            raise InputError(f"labels hold non-integer values (e.g. {lab[lab != np.round(lab)].flat[0]:g}): they must be "
                             "whole numbers (object ids or class indices), not probabilities or an image")
        lab = lab.astype(np.int64)
    elif lab.dtype.kind == "b":
        lab = lab.astype(np.int64)
    lab = lab.astype(np.int64, copy=True)
    ignored = np.zeros(lab.shape, dtype=bool)
    if ignore_value is not None:
        ignored |= lab == ignore_value
    if unlabelled_is_ignored:
        ignored |= lab == 0
        if background_value is not None:
            lab[lab == background_value] = 0
    elif background_value is not None:
        lab[lab == background_value] = 0
    if ignore_mask is not None:
        m = np.asarray(ignore_mask, dtype=bool)
        if m.shape != lab.shape:
            raise InputError(f"ignore mask shape {m.shape} does not match labels {lab.shape}")
        ignored |= m
    lab[ignored] = 0
    if lab.min(initial=0) < 0:  # -8 ... -2 trained as background without a word (val Dice 0)
        raise InputError(f"labels hold negative values (e.g. {int(lab[lab < 0].flat[0])}) other than "
                         f"'not annotated' ({ignore_value}): object ids and classes are whole numbers >= 0")
    if output_mode == "binary":
        target = (lab > 0).astype(np.int64)
    elif output_mode == "three_class":
        target = (lab > 0).astype(np.int64)
        boundary = find_boundaries(lab, connectivity=1, mode="inner") & (lab > 0)
        target[boundary] = 2
    elif output_mode == "multiclass":
        if n_classes is None or n_classes < 2:
            raise InputError("output mode 'multiclass' needs n_classes >= 2")
        if lab.max(initial=0) >= n_classes:
            raise InputError(f"labels hold class {int(lab.max())} but n_classes is {n_classes}")
        target = lab
    else:
        raise InputError(f"unknown output mode {output_mode!r}: use {', '.join(OUTPUT_MODES)}")
    target[ignored] = IGNORE
    return target


def target_dtype(n_classes: int) -> np.dtype:
    """The smallest signed integer type holding class indices ``0 .. n_classes - 1`` and ``IGNORE`` (-1)."""
    for dtype in (np.int8, np.int16, np.int32):
        if n_classes - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def _as_list(images: Any, labels: Any) -> tuple[list[np.ndarray], list[np.ndarray | None], list[int | None]]:
    """Accept a 2-D array, a (T, Y, X) stack, or lists of 2-D arrays, (C, Y, X) images and (T, Y, X)
    stacks; return one (image, labels) pair per frame (frames without annotation have labels None)
    and, per frame, the index of the stack it is a frame of (None for an image of its own)."""
    whole_stack = False
    if isinstance(images, np.ndarray) or hasattr(images, "__array__") and not isinstance(images, (list, tuple)):
        images = np.asarray(images)
        if images.ndim == 2:
            images = [images]
        elif images.ndim == 3 and images.shape[-1] in (3, 4) and np.ndim(labels) == 2 \
                and tuple(np.shape(labels)) == tuple(images.shape[:2]):  # (it said "96 images but 1 label images")
            raise InputError(f"images of shape {images.shape} look like RGB(A) (Y, X, C) over labels of shape "
                             f"{tuple(np.shape(labels))}: give one grey image (a channel, or the channels' mean)")
        elif images.ndim == 3:
            images = list(images)
            whole_stack = True
        else:
            raise InputError(f"images must be (Y, X) or (T, Y, X), got shape {images.shape}")
    if isinstance(labels, np.ndarray) or hasattr(labels, "__array__") and not isinstance(labels, (list, tuple)):
        labels = np.asarray(labels)
        if labels.ndim == 2:
            labels = [labels]
        elif labels.ndim == 3:
            labels = list(labels)
        else:
            raise InputError(f"labels must be (Y, X) or (T, Y, X), got shape {labels.shape}")
    images = [np.asarray(im) for im in images]
    labels = [None if lb is None else np.asarray(lb) for lb in labels]
    if len(images) != len(labels):
        raise InputError(f"{len(images)} images but {len(labels)} label images")
    # a list item whose image and labels are both (T, Y, X) of one shape is a stack: one pair per frame
    # (a (C, Y, X) multi-channel image has 2-D labels, so the two cannot be confused)
    frames_i: list[np.ndarray] = []
    frames_l: list[np.ndarray | None] = []
    in_stack: list[int | None] = []
    for k, (im, lb) in enumerate(zip(images, labels)):
        if lb is not None and im.ndim == 3 and lb.ndim == 3 and im.shape == lb.shape:
            frames_i.extend(im)
            frames_l.extend(lb)
            in_stack.extend([k] * len(im))
        else:
            frames_i.append(im)
            frames_l.append(lb)
            in_stack.append(0 if whole_stack else None)
    return frames_i, frames_l, in_stack


def _tap_levelled(frame: np.ndarray, name: str, off_centre_steps: list[str]) -> np.ndarray:
    """``level_taps(frame)`` (a CCD frame's readout taps brought to one pedestal, ADC), its warnings of a
    pedestal step away from the middle column collected in ``off_centre_steps`` (the frame's ``name``) for
    one summary; other warnings pass on."""
    import warnings

    from ..autolabel.ccd import TapWarning, level_taps

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        levelled = level_taps(frame)
    for warning in caught:
        if issubclass(warning.category, TapWarning):
            off_centre_steps.append(name)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return levelled


def prepare_training_data(
    images: Any,
    labels: Any,
    output_mode: str = "binary",
    n_classes: int | None = None,
    normalization: dict | str | None = None,
    ignore_value: int | None = IGNORE,
    unlabelled_is_ignored: bool = False,
    background_value: int | None = None,
    ignore_masks: Sequence[np.ndarray | None] | None = None,
    frames: Sequence[int] | None = None,
    names: Sequence[str] | None = None,
    description: str = "",
    sequences: Sequence[Any] | None = None,
    groups: Sequence[Any] | None = None,
) -> TrainingData:
    """Normalise images and make targets; return a :class:`TrainingData`.

    Parameters
    ----------
    images : a 2-D array, a ``(T, Y, X)`` stack, or a list of 2-D arrays and ``(T, Y, X)`` stacks
        (a stack in a list is split into its frames when its labels are a stack of the same shape).
        ``(C, Y, X)`` multi-channel images are passed as a list of 3-D arrays with 2-D labels.
    labels : matching label arrays (same forms). In a stack, frames whose labels are all
        0 / ``ignore_value`` count as not annotated and are skipped (or give ``frames``); a
        separate image labelled all 0 is an empty field and is used.
    output_mode, n_classes, ignore_value, unlabelled_is_ignored, background_value :
        see :func:`make_target`. For binary and three_class, ``n_classes`` is set to 2 / 3.
    normalization : normalisation spec (default: percentile 1 / 99.8 per image).
    ignore_masks : optional boolean masks per image (True = ignore).
    frames : indices of annotated images to use (default: all with any annotation).
    names : names per image (default ``image <i>``).
    sequences : per image, the time-lapse it is a frame of (None: an image of its own), for
        frames already split from their stacks (:func:`load_training_pairs`); by default the
        stacks among ``images``. Validation then takes whole blocks of frames
        (:func:`split_train_val`), and all-zero frames of a sequence count as not annotated.
    groups : per image, the key of the tiles of one field it overlaps (None: it overlaps no other
        image); the split puts no validation tile over a training tile (:func:`split_train_val`).

    Raises
    ------
    InputError
        On shape mismatch, wrong dimensionality, NaN, or when no pixel is annotated.
    """
    imgs, labs, in_stack = _as_list(images, labels)
    if sequences is not None:
        in_stack = list(sequences)
    for what, per_image in (("names", names), ("ignore masks", ignore_masks), ("sequences", sequences),
                            ("groups", groups)):
        if per_image is not None and len(per_image) != len(imgs):
            raise InputError(f"{len(per_image)} {what} for {len(imgs)} images (frames of stacks count one each)")
    spec = make_normalization_spec(normalization)
    if output_mode == "binary":
        n_classes = 2
    elif output_mode == "three_class":
        n_classes = 3
    elif output_mode == "multiclass":
        if unlabelled_is_ignored and background_value is not None:
            _check_background_above_classes(labs, background_value, ignore_value)
        if n_classes is None:
            not_classes = [v for v in (ignore_value, background_value) if v is not None]  # (e.g. 255: ignored)

            def largest_class(lb: np.ndarray) -> int:
                values = np.unique(lb)
                values = values[~np.isin(values, not_classes)]
                return int(values.max()) if values.size else 0

            top = max((largest_class(lb) for lb in labs if lb is not None and lb.size), default=1)
            if top + 1 > MAX_CLASS_VALUES:  # without a number of classes: max label + 1 outputs
                raise InputError(f"the labels hold values up to {top}: 'multiclass' makes one class per value "
                                 f"({top + 1} classes). They look like instance labels (one id per object): train "
                                 "'three_class' (or 'binary') on them; to really train that many classes, give "
                                 "the number of classes (--n-classes)")
            n_classes = max(2, top + 1)
    else:
        raise InputError(f"unknown output mode {output_mode!r}: use {', '.join(OUTPUT_MODES)}")
    chosen = range(len(imgs)) if frames is None else list(frames)
    items: list[LabelledImage] = []
    off_centre_steps: list[str] = []  # frames whose pedestal steps away from the middle column (_tap_levelled)
    for i in chosen:
        if i < 0 or i >= len(imgs):
            raise InputError(f"frame {i} out of range (0..{len(imgs) - 1})")
        im, lb = imgs[i], labs[i]
        if lb is None:
            continue
        if im.ndim == 2:
            im = im[None]
        if im.ndim != 3:
            raise InputError(f"image {i} must be 2-D (Y, X) or (C, Y, X), got shape {im.shape}")
        if lb.shape != im.shape[1:]:
            raise InputError(f"image {i} has shape {im.shape[1:]} but its labels have shape {lb.shape}")
        mask = None if ignore_masks is None else ignore_masks[i]
        target = make_target(lb, output_mode, n_classes, ignore_value, unlabelled_is_ignored, background_value,
                             mask).astype(target_dtype(n_classes))  # kept in 1 byte a pixel, not int64's 8
        if frames is None and not np.any(target != IGNORE):
            continue
        if frames is None and in_stack[i] is not None and not unlabelled_is_ignored and not np.any(lb != 0) and ignore_masks is None:
            # an all-zero frame of a stack counts as "not annotated"; an all-zero image of its own is an
            # empty field, a negative example that teaches the network what is not an object
            continue
        if isinstance(spec, dict) and spec.get("level_taps") and im.shape[0] == 1:
            # as segmentation reads a CCD frame (inference.segment.TapLevelledFrames): readout taps brought to
            # one pedestal first, so the network learns on the frames it will be given
            im = _tap_levelled(np.asarray(im[0], dtype=np.float32), names[i] if names is not None else f"image {i}",
                               off_centre_steps)[None]
        norm = normalize(im, spec)
        name = names[i] if names is not None else f"image {i}"
        items.append(LabelledImage(norm.astype(np.float32, copy=False), target, name, in_stack[i],
                                   None if groups is None else groups[i]))
    if off_centre_steps:  # said once for the data set (one warning per frame, each pointing to a command
        import warnings  # train does not have, was printed for the simulator's own frames)

        from ..errors import MicrosegWarning

        warnings.warn(MicrosegWarning(
            f"{len(off_centre_steps)} training frame(s) have a pedestal step away from the middle column (first: "
            f"{off_centre_steps[0]}): taken for glow, not levelled as a readout tap (a glowing band reaching the "
            "frame's edge, as in simulated frames); a crop of a multi-tap frame must be cut at its tap boundary "
            "before training"), stacklevel=2)
    if not items:
        raise InputError("no annotated pixels: paint or load labels for at least one image")
    if all(not np.any(labs[i]) for i in chosen if labs[i] is not None) and background_value is None:
        raise InputError("the labels hold no objects (every pixel is 0, background): nothing to learn; "
                         "paint or load labels with objects")
    if background_value is not None and not any(np.any(it.target > 0) for it in items):
        raise InputError(f"the painted labels hold background only (label {background_value} is background): "
                         "paint objects with other label ids, or choose another background id")
    if (unlabelled_is_ignored or ignore_value == 0) and background_value is None and output_mode != "multiclass" \
            and not any(np.any(it.target == 0) for it in items):
        # 0 not annotated and no background painted: every annotated pixel is an object (val_dice 1.000)
        raise InputError("no background is annotated: with 0 meaning 'not annotated', paint background with its own "
                         "id and give it (--background-value / the dock's background id), or train on dense labels")
    chans = {it.image.shape[0] for it in items}
    if len(chans) > 1:
        raise InputError(f"images have different channel counts: {sorted(chans)}")
    if not description:
        description = f"{len(items)} labelled image(s), {sum(it.n_annotated for it in items)} annotated pixels"
    return TrainingData(items, output_mode, int(n_classes), spec, description)


# ---------------------------------------------------------------- files
_LABEL_SUFFIX = re.compile(r"([_\-.](labels?|masks?|seg|gt|annotations?))$", re.IGNORECASE)
_IMAGE_EXT = (".tif", ".tiff", ".ome.tif", ".ome.tiff", ".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz",
              ".fits.fz", ".fz", ".npy", ".png", ".jpg", ".jpeg", ".bmp", ".zarr", ".ome.zarr")


def object_ids_note(labels: np.ndarray) -> str | None:
    """For multiclass training: a note when the labels look like object ids (six or more values, each one
    connected region in each frame) rather than class indices (a few values, many regions each), which
    training refuses only above MAX_CLASS_VALUES values; None otherwise. The Training dock and
    ``microseg train`` show it."""
    from skimage.measure import label as connected_regions

    frames = labels[None] if labels.ndim == 2 else labels
    n_values = n_regions = 0
    for frame in frames:
        classes = np.where(frame > 0, frame, 0)  # negative: not annotated
        values = np.unique(classes[classes > 0])
        n_values += len(values)
        n_regions += int(connected_regions(classes, background=0, connectivity=2).max()) if len(values) else 0
    if len(np.unique(labels[labels > 0])) < 6 or n_regions != n_values:
        return None
    return (f"each of the {n_values} label values is one object: these look like object ids, not classes (for "
            "nuclei choose the output three_class or binary)")


#: folder names that hold label images (DSB2018's labels/, masks/, ground truth)
LABEL_FOLDERS = {"labels", "label", "masks", "mask", "gt", "annotations", "ground_truth", "classes"}


def named_as_labels(path: str | os.PathLike) -> bool:
    """True when a file's name or folder says it holds labels: ``*_labels.tif``, ``*_mask.png``,
    ``*_seg.tif``, ``*_gt.tif`` ... (as :func:`find_image_label_pairs` matches them) or a folder
    called ``labels``, ``masks``, ``gt`` ..."""
    p = Path(str(path).rstrip("/"))
    return bool(_LABEL_SUFFIX.search(_without_extension(p))) or p.parent.name.lower() in LABEL_FOLDERS


def _without_extension(path: Path) -> str:
    name = path.name
    for ext in sorted(_IMAGE_EXT, key=len, reverse=True):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def _stem(path: Path) -> str:
    return _LABEL_SUFFIX.sub("", _without_extension(path))


def _expand(spec: str | os.PathLike, what: str = "image") -> list[Path]:
    """Files of a file, folder or glob ``spec``; ``what`` names them in the error when there are none."""
    def readable(q: Path) -> bool:  # a file, or a Zarr store (a folder)
        return q.is_file() or (q.is_dir() and q.name.lower().endswith(".zarr"))

    p = Path(spec)
    if p.is_dir() and not p.name.lower().endswith(".zarr"):
        return sorted(q for q in p.iterdir() if readable(q) and q.name.lower().endswith(_IMAGE_EXT) and not q.name.startswith("."))
    if readable(p):
        return [p]
    hits = sorted(Path(h) for h in glob.glob(str(spec)))
    hits = [h for h in hits if readable(h)]
    if not hits:
        raise InputError(f"no {what} files found at {spec}")
    return hits


def find_image_label_pairs(images: str | os.PathLike, labels: str | os.PathLike, warn: bool = True) -> list[tuple[Path, Path]]:
    """Match image files to label files by name.

    Parameters
    ----------
    images : a file, a folder, or a glob pattern.
    labels : a file or a folder. Names match when equal after dropping the extension and a
        trailing ``_label(s)`` / ``_mask(s)`` / ``_seg`` / ``_gt``.

    Images without a label file are left out, with a warning on stderr naming them (unless not ``warn``).

    Raises
    ------
    InputError
        If nothing matches, or an image matches two label files (``a.tif`` and ``a_mask.tif``).
    """
    img_files = _expand(images)
    lab_files = _expand(labels, "label")
    if len(img_files) == 1 and len(lab_files) == 1 and img_files[0].resolve() != lab_files[0].resolve():
        return [(img_files[0], lab_files[0])]
    by_stem: dict[str, list[Path]] = {}
    for q in lab_files:
        by_stem.setdefault(_stem(q), []).append(q)
    real = {p: p.resolve() for p in (*img_files, *lab_files)}  # one folder may be given as both
    label_set = {real[q] for q in lab_files}

    def labels_of_another(p: Path) -> bool:  # "a_mask.tif" in a folder given as both
        return real[p] in label_set and _stem(p) != _without_extension(p)

    pairs: list[tuple[Path, Path]] = []
    used_as_labels: dict[Path, str] = {}  # label file -> the image it labels
    for p in img_files:
        if labels_of_another(p) or real[p] in used_as_labels:
            continue  # the labels of another image ("a_mask.tif", or "a.png" used beside "a.tif")
        found = [q for q in by_stem.get(_stem(p), []) if real[q] != real[p]]  # not its own labels
        if len(found) > 1:
            raise InputError(f"image {p.name} matches {len(found)} label files ({', '.join(q.name for q in found)}): "
                             "keep one labels file per image")
        if found:
            other = used_as_labels.get(real[found[0]])
            if other is not None:
                raise InputError(f"images {other} and {p.name} both match the label file {found[0].name}: keep one "
                                 "image per labels file")
            pairs.append((p, found[0]))
            used_as_labels[real[found[0]]] = p.name
    paired = {real[p] for p, _ in pairs}
    unmatched = [p.name for p in img_files if real[p] not in paired and real[p] not in used_as_labels
                 and not labels_of_another(p)]
    if pairs and unmatched and warn:
        import sys

        shown = ", ".join(unmatched[:5]) + (" ..." if len(unmatched) > 5 else "")
        print(f"warning: {len(unmatched)} of {len(img_files)} images have no labels file and are left out: {shown}",
              file=sys.stderr)
    if not pairs:
        same = {p.resolve() for p in img_files} & {q.resolve() for q in lab_files}
        if same:
            raise InputError(f"the images and the labels are the same {len(same)} file(s): give the label files "
                             "separately (a folder of labels named as the images, e.g. autolabel's tiles/labels)")
        raise InputError(f"no label file matches any image by name ({len(img_files)} images, {len(lab_files)} label files)")
    return pairs


def _read(path: Path, hdu: int | None = None) -> np.ndarray:
    """Pixels of an image file; ``hdu``: the FITS HDU to read (other formats ignore it)."""
    return _read_with_axes(path, hdu)[0]


def _read_with_axes(path: Path, hdu: int | None = None) -> tuple[np.ndarray, str]:
    """Pixels of an image file and its axes as the file names them (e.g. ``"ZYX"`` for an ImageJ
    Z stack; ``""`` when it names none)."""
    if path.suffix.lower() == ".npy":
        return np.load(path), ""
    from ..io.images import read_image

    image = read_image(path, hdu=hdu, channel_option="")  # (no --channel here: a file stating channels is said)
    return np.asarray(image.data), str(image.metadata.get("axes", "") or "").upper()




#: a (C, Y, X) training image with one 2-D labels image has at most this many channels; more is a
#: time-lapse (or Z stack) labelled in one frame only
MAX_INPUT_CHANNELS = 8


def load_training_pairs(
    images: str | os.PathLike, labels: str | os.PathLike, max_images: int | None = None, hdu: int | None = None
) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Read matched image / label files; return ``(images, labels, names)`` lists.

    ``hdu``: the HDU to read of FITS files, images and labels alike (e.g. one amplifier of a
    multi-extension CCD file); default: the first HDU with image data.

    A ``(T, Y, X)`` file is split into frames named ``<file>[t]``; frames whose labels are
    all 0 are not annotated and left out. RGB(A) images ``(Y, X, 3|4)`` are converted to
    grey (mean over colour). ``(C, Y, X)`` images with 2-D labels are multi-channel images.
    """
    out_i, out_l, names = [], [], []
    for ip, lp in find_image_label_pairs(images, labels)[: max_images or None]:
        (im, axes), lb = _read_with_axes(ip, hdu), _read(lp, hdu)
        if im.ndim == 3 and im.shape[-1] in (3, 4) and lb.ndim == 2 and im.shape[:2] == lb.shape:
            im = im[..., :3].mean(axis=-1)
        elif im.ndim == 4 and im.shape[-1] in (3, 4) and lb.ndim == 3 and im.shape[:3] == lb.shape:
            im = im[..., :3].mean(axis=-1)  # an RGB time-lapse, as segment and the docks take it
        for what, path, arr in (("image", ip, im), ("labels", lp, lb)):
            if arr.ndim not in (2, 3):
                raise InputError(f"{what} {path}: expected (Y, X) or (T, Y, X), got shape {arr.shape}")
        if im.dtype.kind == "f" and not np.isfinite(im).all():
            raise InputError(f"image {ip} contains NaN or infinite values (masked or missing pixels?): replace "
                             "them, or leave the file out")
        if lb.dtype.kind == "f" and not np.isfinite(lb).all():
            raise InputError(f"labels {lp} contain NaN or infinite values: labels are whole numbers (object ids or "
                             "class indices)")
        if lb.dtype.kind == "f" and lb.size and np.abs(lb).max() >= 2.0**63:  # would wrap to negative as int64
            raise InputError(f"labels {lp} hold values up to {np.abs(lb).max():g}, beyond the 64-bit integer "
                             "range of label ids")
        if im.size and im.min() == im.max():
            import sys

            print(f"warning: image {ip.name} is constant (every pixel {im.flat[0]}): it teaches the network nothing "
                  "but background", file=sys.stderr)
        elif im.ndim == 3 and lb.ndim == 3 and im.shape == lb.shape:
            constant = [t for t in range(im.shape[0]) if lb[t].any() and im[t].min() == im[t].max()]
            if constant:  # a blank frame among painted ones: only its frames are trained on
                import sys

                print(f"warning: image {ip.name}: painted frame(s) {', '.join(map(str, constant[:5]))}"
                      f"{' ...' if len(constant) > 5 else ''} constant (e.g. every pixel {im[constant[0]].flat[0]}): "
                      "they teach the network nothing but background", file=sys.stderr)
        mismatch = f"image {ip} has shape {im.shape} but its labels {lp} have shape {lb.shape}"
        if im.ndim == 3 and lb.ndim == 3:
            if im.shape != lb.shape:
                raise InputError(mismatch)
            for t in range(im.shape[0]):
                if lb[t].any():  # an all-zero frame of a stack counts as "not annotated"
                    out_i.append(im[t]), out_l.append(lb[t]), names.append(frame_name(ip.name, t))
            continue
        if im.shape[-2:] != lb.shape[-2:] or lb.ndim != 2:
            raise InputError(mismatch)
        if im.ndim == 3:  # (C, Y, X) with one labels image: a multi-channel image, or a stack labelled once?
            if len(axes) == 3 and axes[0] in "ZT":
                kind = {"Z": "a Z stack", "T": "a time-lapse"}[axes[0]]
                raise InputError(f"image {ip.name} is {kind} of {im.shape[0]} planes (axes {axes}) but its labels "
                                 f"{lp.name} are one plane {lb.shape}: give labels for every plane (a (N, Y, X) "
                                 "labels file), or one plane of the image")
            if im.shape[0] > MAX_INPUT_CHANNELS:
                raise InputError(f"image {ip.name} is a stack of {im.shape[0]} frames {im.shape} but its labels "
                                 f"{lp.name} are one frame {lb.shape}: give labels for every frame (a (T, Y, X) "
                                 f"labels file), or one frame of the image")
            import sys

            print(f"note: image {ip.name} {im.shape} with one labels image {lb.shape} is read as {im.shape[0]} "
                  "channels of one image (the model will expect that many channels); if its first axis is time, "
                  "give labels for every frame", file=sys.stderr)
        out_i.append(im), out_l.append(lb), names.append(ip.name)
    return out_i, out_l, names


# ---------------------------------------------------------------- split
def split_train_val(
    data: TrainingData, val_fraction: float = 0.2, seed: int = 0, min_val_size: int = 32
) -> tuple[TrainingData, TrainingData | None]:
    """Split into training and validation data.

    With two or more images the split is by image (at least one image each side). Frames of a
    time-lapse (``LabelledImage.sequence``) are held out as a block, the last ``val_fraction`` of
    each sequence, so validation frames are not the near-copies next to training frames that a
    random choice would give; images of their own are then chosen at random.
    Tiles of one field that overlap (``LabelledImage.group``) go to one side together, so no
    validation pixel is trained on: the random choice takes whole groups, and a group a time-lapse's
    held-out frames cut through is held out whole (said in a warning).
    With one image a strip of ``val_fraction`` of the longer axis is held out, so no validation
    pixel is seen in training: at the image's end when that strip holds a fair share of the
    annotations, else where it holds about ``val_fraction`` of them (sparse painting), with the
    training parts on both sides. ``val_fraction=0`` returns ``(data, None)``.
    """
    if not 0 <= val_fraction < 1:  # (a negative share was taken for none)
        raise InputError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    if val_fraction == 0:
        return data, None
    if not 0 < val_fraction < 1:
        raise InputError(f"val_fraction must be in [0, 1), got {val_fraction}")

    def like(items: list[LabelledImage]) -> TrainingData:
        return TrainingData(items, data.output_mode, data.n_classes, data.normalization, data.description)

    if len(data.items) >= 2:
        val_idx = _validation_frames(data.items, val_fraction, seed)
        if not val_idx:  # images of their own (or one-frame sequences): a random choice of images, taking
            # overlapping tiles of a field together (each other image is a unit of its own: as drawn before groups)
            units = _split_units(data.items)
            if len(units) < 2:  # every tile overlaps another (one small field): by tile, said below
                units = [[i] for i in range(len(data.items))]
            rng = np.random.default_rng(seed)
            order = rng.permutation(len(units))
            wanted = max(1, int(round(val_fraction * len(data.items))))
            val_idx = set()
            for unit in order[: len(units) - 1]:  # (one unit at least is left to training)
                if len(val_idx) >= wanted:
                    break
                if len(val_idx) + len(units[unit]) <= wanted:  # a group that would pass the share asked: the next
                    val_idx.update(units[unit])
            if not val_idx:  # every group is larger than the share asked: the smallest one drawn
                val_idx.update(min((units[unit] for unit in order), key=len))
        val_idx = _keep_groups_together(data.items, val_idx)
        train = [it for i, it in enumerate(data.items) if i not in val_idx]
        val = [it for i, it in enumerate(data.items) if i in val_idx]
        share = len(val) / len(data.items)
        if share > 1.5 * val_fraction and len(val) > 1:  # e.g. 5 stacks of 2 painted frames: one each, half of all
            why = ("tiles of a field that overlap are held out together; give validation images"
                   if any(it.group is not None for it in val) else
                   "each time-lapse gives at least its last painted frame; paint more frames, join the stacks, or "
                   "give validation images")
            warnings.warn(MicrosegWarning(
                f"validation holds out {len(val)} of {len(data.items)} images ({share:.0%}, the share asked is "
                f"{val_fraction:.0%}): {why}"), stacklevel=2)
        if any((it.target > 0).any() for it in train) and not any((it.target > 0).any() for it in val):
            warnings.warn(MicrosegWarning(
                f"the validation image(s) ({', '.join(it.name for it in val[:3])}{' ...' if len(val) > 3 else ''}) "
                "hold no object: the validation Dice says nothing and the best epoch is chosen on background alone; "
                "give validation images with objects, or set the validation share to 0"), stacklevel=2)
        return like(train), like(val)
    it = data.items[0]
    h, w = it.shape
    axis = 1 if w >= h else 0
    size = (w, h)[axis == 0]
    n_val = max(min_val_size, int(round(val_fraction * size)))
    if size - n_val < min_val_size:
        raise InputError(f"image too small ({h}x{w}) to hold out a validation strip; set the validation share to 0 (the Training dock's 'validation share', or --val-fraction 0) or give validation images")
    start = _validation_strip_start(it.target, axis, n_val, val_fraction)
    if start is None:
        raise InputError("the annotations are too few or too concentrated to hold out a validation strip; "
                         "annotate more, set the validation share to 0 (the Training dock's 'validation share', or --val-fraction 0), or give validation images")

    def cut(lo: int, hi: int) -> tuple:
        return (slice(None), slice(lo, hi)) if axis == 1 else (slice(lo, hi), slice(None))

    train_items = []
    for lo, hi, part in ((0, start, "before"), (start + n_val, size, "after")):
        sl = cut(lo, hi)
        if hi - lo > 0 and (it.target[sl] >= 0).any():
            train_items.append(LabelledImage(it.image[(slice(None),) + sl], it.target[sl], f"{it.name} (train part {part} the strip)"))
    sl_val = cut(start, start + n_val)
    val_item = LabelledImage(it.image[(slice(None),) + sl_val], it.target[sl_val], it.name + " (validation strip)")
    if (it.target > 0).any() and not (val_item.target > 0).any():  # one object, or all of them in one place
        warnings.warn(MicrosegWarning(
            f"{it.name}: its validation strip holds no object (its objects lie together): the validation Dice says "
            "nothing and the best epoch is chosen on background alone; give validation images, annotate objects "
            "across the image, or set the validation share to 0"), stacklevel=2)
    return like(train_items), like([val_item])


def _split_units(items: list[LabelledImage]) -> list[list[int]]:
    """Indices of ``items`` in the units a split keeps on one side: each group of overlapping tiles
    (``LabelledImage.group``), and each other item alone; in the order of their first items."""
    units: list[list[int]] = []
    of_group: dict[Any, list[int]] = {}
    for i, it in enumerate(items):
        if it.group is None:
            units.append([i])
        elif it.group in of_group:
            of_group[it.group].append(i)
        else:
            of_group[it.group] = [i]
            units.append(of_group[it.group])
    return units


def _keep_groups_together(items: list[LabelledImage], val_idx: set[int]) -> set[int]:
    """``val_idx`` with no group of overlapping tiles on both sides: a group it cuts through is held out
    whole (or, when that would leave nothing to train on, trained on whole), said in a warning; a group
    that is every item is left cut, with a warning that validation overlaps training."""
    cut = [unit for unit in _split_units(items) if 0 < len(val_idx.intersection(unit)) < len(unit)]
    if not cut:
        return val_idx
    members = {i for unit in cut for i in unit}
    grown, shrunk = val_idx | members, val_idx - members
    if len(grown) < len(items):
        warnings.warn(MicrosegWarning(
            f"{len(grown) - len(val_idx)} training tile(s) overlap validation tiles of the same field (the last row "
            "or column of tiles is moved back to fit it): held out for validation too, so that no validation "
            f"pixel is trained on ({len(grown)} of {len(items)} images held out)"), stacklevel=3)
        return grown
    if shrunk:
        warnings.warn(MicrosegWarning(
            f"{len(val_idx) - len(shrunk)} validation tile(s) overlap training tiles of the same field (the last "
            "row or column of tiles is moved back to fit it): trained on instead, so that no validation pixel is "
            f"trained on ({len(shrunk)} of {len(items)} images held out)"), stacklevel=3)
        return shrunk
    warnings.warn(MicrosegWarning(
        "the tiles all overlap one another (one small field): validation tiles overlap training tiles, so "
        "validation will look better than the model is; give validation images or a larger field"), stacklevel=3)
    return val_idx


def _validation_frames(items: list[LabelledImage], val_fraction: float, seed: int) -> set[int]:
    """Indices held out for validation when some items are frames of sequences: the last
    ``val_fraction`` (at least one) of each sequence of two or more frames, and that fraction of
    the other items at random; empty when no sequence has two frames."""
    by_sequence: dict[Any, list[int]] = {}
    for i, it in enumerate(items):
        if it.sequence is not None:
            by_sequence.setdefault(it.sequence, []).append(i)
    chosen: set[int] = set()
    for frames in by_sequence.values():
        if len(frames) >= 2:
            n = min(len(frames) - 1, max(1, int(round(val_fraction * len(frames)))))
            chosen.update(frames[-n:])
    if not chosen:
        return chosen
    singles = [i for i, it in enumerate(items) if it.sequence is None]
    n_single = int(round(val_fraction * len(singles)))
    if n_single:
        chosen.update(np.random.default_rng(seed).choice(singles, n_single, replace=False).tolist())
    return chosen


def _validation_strip_start(target: np.ndarray, axis: int, n_val: int, val_fraction: float) -> int | None:
    """Start of a strip of ``n_val`` rows/columns holding about ``val_fraction`` of the annotated pixels.

    The end of the image is preferred when it qualifies (dense annotation: the plain end strip);
    with sparse painting the strip moves to where the annotations are, leaving annotated pixels on the
    training side too. None when no position leaves annotations on both sides.
    """
    target = np.asarray(target)
    annotated = (target >= 0).sum(axis=1 - axis).astype(np.int64)  # per column (axis 1) or row (axis 0)
    total = int(annotated.sum())
    size = annotated.size
    if total == 0:
        return None
    window = np.convolve(annotated, np.ones(n_val, np.int64), mode="valid")  # annotated pixels per strip start
    share = window / total
    valid = (window > 0) & (window < total)
    if not valid.any():
        return None
    # and objects on both sides where the image has them: dense labels count background as annotated, so an
    # end strip of background alone qualified (validation Dice 0 every epoch, the best epoch chosen on it)
    objects = (target > 0).sum(axis=1 - axis).astype(np.int64)
    in_strip = np.convolve(objects, np.ones(n_val, np.int64), mode="valid")
    both = valid & (in_strip > 0) & (in_strip < int(objects.sum()))
    if both.any():
        valid = both
    end = size - n_val
    if valid[end] and share[end] >= 0.5 * val_fraction:
        return end
    candidates = np.flatnonzero(valid)
    return int(candidates[np.argmin(np.abs(share[candidates] - val_fraction))])


# ---------------------------------------------------------------- patches
def _pad_to(image: np.ndarray, target: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Reflect-pad an image (C, Y, X) and IGNORE-pad its target up to at least ``size``."""
    h, w = target.shape
    ph, pw = max(0, size[0] - h), max(0, size[1] - w)
    if not (ph or pw):
        return image, target
    pad = ((0, ph), (0, pw))
    mode = "reflect" if h > 1 and w > 1 else "edge"
    image = np.pad(image, ((0, 0),) + pad, mode=mode)
    target = np.pad(target, pad, mode="constant", constant_values=IGNORE)
    return image, target


IMAGE_SAMPLING = ("pixels", "objects", "mixed")


def count_objects(target: np.ndarray) -> int:
    """Number of connected components (8-connected) of class 1 in a target ``(Y, X)``."""
    from skimage.measure import label

    return int(label(target == 1, connectivity=2).max())


class PatchSampler:
    """Random square patches from a :class:`TrainingData`, favouring foreground.

    Parameters
    ----------
    data : training data.
    patch_size : patch side in pixels (int) or ``(h, w)``.
    foreground_bias : probability that a patch is centred on a random foreground
        (class > 0) pixel; otherwise its position is uniform.
    seed : seed of the default random generator.
    image_sampling : how often each image gives a patch: ``"pixels"`` in proportion to
        its annotated pixel count (every annotated pixel equally likely); ``"objects"``
        in proportion to the objects it holds (connected components of class 1, the
        interior for three_class targets, which the boundary class separates), so that
        a small image crowded with tiny nuclei is sampled as often per object as a large
        image with big ones; ``"mixed"`` half of each (the mean of the two image
        probabilities).

    Images smaller than the patch are reflect-padded; the padding is IGNORE in the target.
    """

    def __init__(self, data: TrainingData, patch_size: int | tuple[int, int] = 256, foreground_bias: float = 0.7, seed: int = 0,
                 image_sampling: str = "pixels"):
        if image_sampling not in IMAGE_SAMPLING:
            raise InputError(f"image_sampling must be one of {', '.join(IMAGE_SAMPLING)}, not {image_sampling!r}")
        self.patch = (patch_size, patch_size) if np.isscalar(patch_size) else tuple(int(v) for v in patch_size)
        self.foreground_bias = float(foreground_bias)
        self.rng = np.random.default_rng(seed)
        self.images: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []
        self.fg_coords: list[np.ndarray] = []
        pixel_weights, object_weights = [], []
        for it in data.items:
            im, tg = _pad_to(it.image, it.target, self.patch)
            self.images.append(np.ascontiguousarray(im, dtype=np.float32))
            self.targets.append(np.ascontiguousarray(tg))  # (its small type: copied into int64 batches)
            fg = np.argwhere(tg > 0)
            if len(fg) > 20000:  # keep memory small; a subsample is as good for centring
                fg = fg[np.random.default_rng(len(fg)).choice(len(fg), 20000, replace=False)]
            self.fg_coords.append(fg.astype(np.int32))
            pixel_weights.append(max(1, it.n_annotated))
            if image_sampling != "pixels":
                object_weights.append(max(1, count_objects(it.target)))
        by_pixels = np.asarray(pixel_weights, dtype=np.float64) / sum(pixel_weights)
        if image_sampling == "pixels":
            self.image_p = by_pixels
        else:
            by_objects = np.asarray(object_weights, dtype=np.float64) / sum(object_weights)
            self.image_p = by_objects if image_sampling == "objects" else 0.5 * (by_pixels + by_objects)
        self.in_channels = self.images[0].shape[0]

    def sample(self, batch_size: int, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(images float32 (B, C, h, w), targets int64 (B, h, w))``."""
        rng = rng or self.rng
        ph, pw = self.patch
        xb = np.empty((batch_size, self.in_channels, ph, pw), dtype=np.float32)
        yb = np.empty((batch_size, ph, pw), dtype=np.int64)
        for b in range(batch_size):
            k = int(rng.choice(len(self.images), p=self.image_p))
            im, tg, fg = self.images[k], self.targets[k], self.fg_coords[k]
            h, w = tg.shape
            if len(fg) and rng.random() < self.foreground_bias:
                cy, cx = fg[rng.integers(len(fg))]
                y0 = int(np.clip(cy - ph // 2 + rng.integers(-ph // 4, ph // 4 + 1), 0, h - ph))
                x0 = int(np.clip(cx - pw // 2 + rng.integers(-pw // 4, pw // 4 + 1), 0, w - pw))
            else:
                y0 = int(rng.integers(0, h - ph + 1))
                x0 = int(rng.integers(0, w - pw + 1))
            xb[b] = im[:, y0 : y0 + ph, x0 : x0 + pw]
            yb[b] = tg[y0 : y0 + ph, x0 : x0 + pw]
        return xb, yb


def tile_for_validation(
    data: TrainingData, patch_size: int | tuple[int, int] = 256, max_tiles: int = 64, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Cut validation images into non-overlapping tiles (a fixed, repeatable set).

    Returns ``(images float32 (N, C, h, w), targets int64 (N, h, w))``; tiles without any
    annotated pixel are dropped and at most ``max_tiles`` are kept (seeded choice).
    """
    ph, pw = (patch_size, patch_size) if np.isscalar(patch_size) else tuple(int(v) for v in patch_size)
    xs, ys = [], []
    for it in data.items:
        im, tg = _pad_to(it.image, it.target, (ph, pw))
        h, w = tg.shape
        # pad up to whole tiles (ignored)
        H, W = -(-h // ph) * ph, -(-w // pw) * pw
        if (H, W) != (h, w):
            im = np.pad(im, ((0, 0), (0, H - h), (0, W - w)), mode="reflect" if min(h, w) > max(H - h, W - w) else "edge")
            tg = np.pad(tg, ((0, H - h), (0, W - w)), constant_values=IGNORE)
        for y0 in range(0, H, ph):
            for x0 in range(0, W, pw):
                t = tg[y0 : y0 + ph, x0 : x0 + pw]
                if np.any(t != IGNORE):
                    xs.append(im[:, y0 : y0 + ph, x0 : x0 + pw])
                    ys.append(t)
    if not xs:
        raise InputError("validation data hold no annotated pixels")
    if len(xs) > max_tiles:
        keep = np.sort(np.random.default_rng(seed).choice(len(xs), max_tiles, replace=False))
        xs, ys = [xs[i] for i in keep], [ys[i] for i in keep]
    return np.stack(xs).astype(np.float32), np.stack(ys).astype(np.int64)
