"""Classification data: whole-image crops ([R]), simulated sets, class balancing, folds.

A :class:`ClassificationData` holds network-ready samples:

- ``x`` float32, ``(N, 1, H, W)`` for image / object crops or ``(N, views, points)``
  for profiles, already normalised;
- ``y`` int64 ``(N,)`` class index into ``class_names`` (binary [R]: 0 = good, 1 = bad);
- optional ``groups`` (samples that must stay in one fold, e.g. copies of one sample
  at different PMT gains) and ``subclass`` (artefact type, for per-subclass accuracy).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..errors import InputError

__all__ = [
    "ClassificationData",
    "RESPONSE_CLASS_NAMES",
    "DEFAULT_CROP_SIZE",
    "integration_box",
    "crop_around",
    "response_crops",
    "normalize_crops",
    "simulated_response_data",
    "simulated_liposome_data",
    "simulated_profile_data",
    "oversample_indices",
    "undersample_majority",
    "epoch_indices",
    "class_weights_from_labels",
    "fold_indices",
    "as_classification_data",
]

#: class names of the binary [R] classifier; index 1 ("bad") is the positive class
RESPONSE_CLASS_NAMES = ["good", "bad"]
#: crop size of the [R] classifier (rows, columns)
DEFAULT_CROP_SIZE = (39, 42)


@dataclass
class ClassificationData:
    """Network-ready classification samples (see module docstring)."""

    x: np.ndarray
    y: np.ndarray
    class_names: list
    groups: np.ndarray | None = None
    subclass: np.ndarray | None = None
    description: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.x = np.ascontiguousarray(self.x, dtype=np.float32)
        self.y = np.asarray(self.y, dtype=np.int64)
        if len(self.x) != len(self.y):
            raise InputError(f"{len(self.x)} samples but {len(self.y)} labels")
        if self.groups is not None:
            self.groups = np.asarray(self.groups)
        if self.subclass is not None:
            self.subclass = np.asarray(self.subclass).astype(str)
        if not np.all(np.isfinite(self.x)):
            raise InputError("classification samples contain NaN or infinite values")
        if len(self.y) and (self.y.min() < 0 or self.y.max() >= len(self.class_names)):
            raise InputError(f"labels must lie in 0..{len(self.class_names) - 1} ({len(self.class_names)} class names)")

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx) -> "ClassificationData":
        idx = np.asarray(idx)
        return ClassificationData(
            self.x[idx], self.y[idx], list(self.class_names),
            None if self.groups is None else self.groups[idx],
            None if self.subclass is None else self.subclass[idx],
            f"{self.description} [subset of {len(idx)}]", dict(self.meta))

    def counts(self) -> np.ndarray:
        return np.bincount(self.y, minlength=len(self.class_names))


def as_classification_data(data: Any, class_names: Sequence[str] | None = None) -> ClassificationData | None:
    """Accept a :class:`ClassificationData`, an ``(x, y)`` pair or a dict with ``x``/``y``."""
    if data is None or isinstance(data, ClassificationData):
        return data
    if isinstance(data, dict):
        x, y = data["x"], data["y"]
        class_names = data.get("class_names", class_names)
        groups, sub = data.get("groups"), data.get("subclass")
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        (x, y), groups, sub = data, None, None
    else:
        raise InputError("classification data must be a ClassificationData, an (x, y) pair or a dict with x and y")
    y = np.asarray(y)
    if class_names is None:
        class_names = [f"class {i}" for i in range(int(y.max()) + 1 if len(y) else 2)]
    return ClassificationData(np.asarray(x), y, list(class_names), groups, sub)


# ---------------------------------------------------------------------------- [R] crops


def integration_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box ``(y0, x0, y1, x1)`` (end exclusive) of a boolean integration-area mask."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        raise InputError("integration mask is empty")
    rows = np.flatnonzero(mask.any(1))
    cols = np.flatnonzero(mask.any(0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def crop_around(image: np.ndarray, box: Sequence[float], size: Sequence[int] = DEFAULT_CROP_SIZE) -> np.ndarray:
    """Cut a ``size`` window out of a 2-D image around ``box = (y0, x0, y1, x1)``.

    A box of exactly ``size`` is cut as it is; otherwise the window is centred on the
    box centre. The window is shifted to stay inside the image; an image smaller than
    ``size`` is padded by edge replication. A box reaching outside the image is refused
    (:class:`InputError`).

    Returns
    -------
    (size[0], size[1]) array of the image's dtype.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise InputError(f"expected a 2-D image, got shape {image.shape}")
    h, w = int(size[0]), int(size[1])
    y0, x0, y1, x1 = (float(v) for v in box)
    if y1 <= y0 or x1 <= x0:
        raise InputError(f"empty crop box {tuple(box)} (need y0 < y1 and x0 < x1)")
    if round(y1 - y0) == h and round(x1 - x0) == w:
        cy0, cx0 = int(round(y0)), int(round(x0))
    else:
        cy0 = int(round((y0 + y1) / 2 - h / 2))
        cx0 = int(round((x0 + x1) / 2 - w / 2))
    ny, nx = image.shape
    if y0 < 0 or x0 < 0 or y1 > ny or x1 > nx:
        raise InputError(f"crop box (y0 x0 y1 x1) {' '.join(f'{v:g}' for v in (y0, x0, y1, x1))} does not lie inside "
                         f"the image of {ny} x {nx} px")
    if ny < h or nx < w:
        image = np.pad(image, ((0, max(0, h - ny)), (0, max(0, w - nx))), mode="edge")
        ny, nx = image.shape
    cy0 = int(np.clip(cy0, 0, ny - h))
    cx0 = int(np.clip(cx0, 0, nx - w))
    return image[cy0:cy0 + h, cx0:cx0 + w]


def normalize_crops(crops: np.ndarray, normalization: dict | str | None = "minmax") -> np.ndarray:
    """Normalise each crop on its own (float32, same shape).

    ``"minmax"`` (the [R] default) maps each crop's min / max to 0 / 1 (a flat crop maps
    to 0); ``{"kind": "fixed", "offset": 0, "scale": 65535}`` keeps the 16-bit scale;
    any spec of :func:`napari_microseg.training.normalize.normalize` is accepted.
    """
    from ..training.normalize import make_normalization_spec, normalize

    spec = make_normalization_spec(normalization)
    crops = np.asarray(crops)
    out = np.empty(crops.shape, np.float32)
    for i in range(len(crops)):
        out[i] = normalize(crops[i], spec)
    return out


def response_crops(images: Sequence[np.ndarray], boxes: Sequence[Sequence[float]] | None = None,
                   masks: Sequence[np.ndarray] | None = None, crop_size: Sequence[int] = DEFAULT_CROP_SIZE,
                   normalization: dict | str | None = "minmax", names: Sequence[str] | None = None) -> np.ndarray:
    """Network input for [R]: one normalised crop per image around its integration area.

    Parameters
    ----------
    images : 2-D arrays (uint16 response images, any size >= nothing; smaller ones are padded).
    boxes : per image ``(y0, x0, y1, x1)`` of the integration area / crop (one box may be
        given for all images as a single 4-sequence).
    masks : per image boolean integration-area mask (used where ``boxes`` is None).
    crop_size : (rows, columns) of the crop (39 x 42).
    normalization : see :func:`normalize_crops`.
    names : per image, how messages name it (default ``image <i>``).

    Returns
    -------
    (N, 1, rows, columns) float32.

    Without boxes and masks every image must already have ``crop_size``.
    """
    images = list(images)
    if not images:
        raise InputError("no images to classify")
    if boxes is not None and len(boxes) == 4 and np.ndim(boxes[0]) == 0:
        boxes = [boxes] * len(images)
    crops = []
    for i, img in enumerate(images):
        img = np.asarray(img)
        if img.ndim != 2:
            raise InputError(f"image {i}: expected a 2-D image, got shape {img.shape}")
        if boxes is not None:
            box = boxes[i]
        elif masks is not None:
            box = integration_box(masks[i])
        elif img.shape == tuple(int(s) for s in crop_size):
            box = (0, 0, img.shape[0], img.shape[1])
        else:
            which = f"{names[i]}" if names is not None else f"image {i}"
            raise InputError(f"{which} is {img.shape[0]}x{img.shape[1]} px, not the model's {crop_size[0]}x{crop_size[1]} crop: "
                             "say where the response column lies: a box y0 x0 y1 x1 (--box on the command line, the "
                             "'box' field in napari) or an integration/ mask folder beside images/")
        crops.append(crop_around(img, box, crop_size))
    return normalize_crops(np.stack(crops), normalization)[:, None]


def simulated_response_data(n: int, seed: int = 0, crop_size: Sequence[int] = DEFAULT_CROP_SIZE,
                            normalization: dict | str | None = "minmax", progress: bool = False, **sim_kwargs):
    """A balanced simulated [R] set: crops, labels (0 good / 1 bad), subclasses, groups.

    Parameters
    ----------
    n : number of images (balanced 50/50, bad types equal; see ``build_balanced_set``).
    seed : base seed (image ``i`` uses ``SeedSequence([seed, i])``).
    crop_size, normalization : see :func:`response_crops`.
    progress : if True return a generator of :class:`~napari_microseg.progress.Progress`
        that returns the data.
    **sim_kwargs : passed to ``simulate_response_image`` (shape, column_width, ...).

    Returns
    -------
    ClassificationData; ``groups`` = image index (every simulated image is its own sample).
    """
    from ..progress import Progress
    from ..simulate.response import iter_balanced_set
    from ..training.normalize import make_normalization_spec

    def gen():
        images, boxes, labels, subs = [], [], [], []
        for i, r in enumerate(iter_balanced_set(int(n), seed, **sim_kwargs), 1):
            images.append(r.image)
            boxes.append(r.params["crop_box"])
            labels.append(int(r.label == "bad"))
            subs.append(r.subclass)
            yield Progress(i, int(n), f"simulating {r.subclass}")
        x = response_crops(images, boxes, crop_size=crop_size, normalization=normalization)
        return ClassificationData(x, np.array(labels), list(RESPONSE_CLASS_NAMES), np.arange(len(labels)),
                                  np.array(subs), f"{n} simulated response images (seed {seed})",
                                  {"simulated": True, "seed": seed, "n": int(n), "normalization": make_normalization_spec(normalization),
                                   "simulation": simulation_record("response", seed, sim_kwargs),
                                   "crop": {"kind": "integration", "size": [int(crop_size[0]), int(crop_size[1])]}})

    g = gen()
    return g if progress else _drain(g)


def simulation_record(domain: str, seed: int, settings: dict) -> dict:
    """What a model trained on simulated data records of them (``training.simulation`` in its file): the
    simulator (``domain``, as ``microseg simulate <domain>``), the seed and the settings given (the others
    are the simulator's defaults), so that a test set simulated alike (the same samples) can be told."""
    def plain(value: Any) -> Any:
        return value.item() if isinstance(value, np.generic) else list(value) if isinstance(value, tuple) else value

    return {"domain": domain, "seed": int(seed), "settings": {k: plain(v) for k, v in settings.items()}}


#: the simulator behind each classification task's simulated training data
SIMULATED_DOMAIN = {"images": "response", "objects": "liposomes", "profiles": "nanoparticles"}

#: ``microseg simulate`` options (params.json "cli") named otherwise in the classification data's record
_SIMULATE_CLI_NAMES = {"views": "n_views", "view_angle": "view_angle_deg", "points": "data_points",
                       "view_angle_jitter": "view_angle_jitter_deg", "particles": "n_particles"}
#: ``microseg simulate`` options that do not change the samples (or that the seed check covers)
_NOT_SAMPLE_SETTINGS = ("command", "domain", "out", "seed", "n", "overwrite", "renders")


def _simulate_defaults(domain: str) -> dict:
    """The defaults of ``microseg simulate <domain>``'s options (the simulators' own defaults)."""
    import argparse

    from ..cli import simulate

    parser = argparse.ArgumentParser()
    simulate.register(parser.add_subparsers(dest="command"))
    try:
        return vars(parser.parse_args(["simulate", domain, "--out", "-"]))
    except SystemExit:  # a domain this version does not know
        return {}


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b) \
            and all(_same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return float(a) == float(b)
    return a == b


def training_samples_note(model_config: dict, folder: Any) -> str | None:
    """A warning when ``folder`` (a ``microseg simulate`` output, with its ``params.json``, or a folder in
    one such as its ``images/``) holds the samples the model was trained on (see :func:`same_samples_note`);
    ``None`` otherwise or without a params.json."""
    import json
    from pathlib import Path

    for where in (Path(folder), Path(folder).parent):
        try:
            params = json.loads((where / "params.json").read_text())
        except (OSError, ValueError, TypeError):
            continue
        return same_samples_note(model_config, params, where.name)
    return None


def same_samples_note(model_config: dict, params: Any, name: str) -> str | None:
    """A warning when the simulation ``params`` (a ``params.json``'s ``domain``, ``seed`` and ``cli``
    options; the Simulation dock's layers carry the same in their metadata) made the samples the model was
    trained on: the same simulator and seed, and every option that shapes the samples as the model's
    training data had it (its recorded settings, else the simulator's defaults; sample ``i`` of a seed is
    the same sample, whatever the count), so its scores would be training scores. ``None`` otherwise, or
    when either record is missing. ``name``: the data's, for the message."""
    training = (model_config or {}).get("training") or {}
    record = training.get("simulation")
    if record is None:  # models trained before the record: their description names the seed
        domain = SIMULATED_DOMAIN.get(str(model_config.get("task")))
        found = re.search(r"simulated .*\bseed (-?\d+)", str(training.get("data") or ""))
        if domain is None or found is None:
            return None
        record = {"domain": domain, "seed": int(found.group(1)), "settings": {}}
    if not isinstance(params, dict) or params.get("domain") != record["domain"] or params.get("seed") != record["seed"]:
        return None
    settings = record.get("settings") or {}
    defaults = _simulate_defaults(record["domain"])
    options = params.get("cli") if isinstance(params.get("cli"), dict) else {}
    kind = None
    for option, value in options.items():
        if option in _NOT_SAMPLE_SETTINGS:
            continue
        trained = settings.get(_SIMULATE_CLI_NAMES.get(option, option), defaults.get(option))
        if option == "kind" and trained is None and value is not None:
            kind = value  # one kind of the balanced set: its images where the set has that kind are the same
            continue
        if not _same_value(value, trained):
            return None  # simulated otherwise (another shape, class mix ...): other samples
    if kind is not None:
        return (f"{name} was simulated with seed {record['seed']}, as this model's training data, of kind {kind}: "
                "its images where the balanced training set has that kind are the model's own training images, "
                "so its scores are partly training scores; simulate a test set with another --seed")
    return (f"{name} was simulated with seed {record['seed']}, as this model's training data: it holds "
            "the very samples the model was trained on, so its scores are training scores, not a test; simulate "
            "a test set with another --seed")


def _drain(gen):
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        return stop.value


def simulated_liposome_data(n_images: int, task: str = "lamellarity", mode: str = "masked",
                            size: Sequence[int] = (28, 28), margin: int = 50, seed: int = 0,
                            normalization: dict | str | None = None, progress: bool = False, **sim_kwargs):
    """Object crops and classes from simulated TEM liposome images ([T]).

    Parameters
    ----------
    n_images : simulated images (each holds ``n_particles`` particles, default 30).
    task : ``"lamellarity"`` or ``"encapsulation"`` (the column of the simulator's table).
    mode, size, margin, normalization : see :func:`napari_microseg.classify.crops.object_crops`.
    seed : image ``i`` uses ``SeedSequence([seed, i])``.
    **sim_kwargs : passed to ``simulate_liposome_image``.

    Returns
    -------
    ClassificationData with ``x`` (N, 1, size) float32; ``groups`` = image index.
    Class names are those of the simulator in a fixed order (``LIPOSOME_CLASSES[task]``).
    """
    from ..progress import Progress
    from ..simulate._common import sample_seed
    from ..simulate.liposomes import simulate_liposome_image
    from ..training.normalize import make_normalization_spec
    from .crops import LIPOSOME_CLASSES, object_crops

    if task not in LIPOSOME_CLASSES:
        raise InputError(f"task must be one of {', '.join(LIPOSOME_CLASSES)}; got {task!r}")
    names = list(LIPOSOME_CLASSES[task])

    def gen():
        xs, ys, gs = [], [], []
        for i in range(int(n_images)):
            s = sample_seed(seed, i)
            r = simulate_liposome_image(seed=s, **sim_kwargs)
            crops, ids = object_crops(r.image, r.labels, mode=mode, size=size, margin=margin, normalization=normalization)
            table = r.classes.set_index("label")
            xs.append(crops)
            ys.extend(names.index(str(table.loc[int(k), task])) for k in ids)
            gs.extend([i] * len(ids))
            yield Progress(i + 1, int(n_images), f"image {i + 1}: {len(ids)} particles")
        x = np.concatenate(xs)[:, None] if xs else np.zeros((0, 1, *size), np.float32)
        return ClassificationData(x, np.array(ys, np.int64), names, np.array(gs), None,
                                  f"{len(ys)} particles from {n_images} simulated liposome images (seed {seed}, {task}, {mode})",
                                  {"simulated": True, "seed": seed, "task": task, "mode": mode,
                                   "normalization": make_normalization_spec(normalization),
                                   "simulation": simulation_record("liposomes", seed, sim_kwargs),
                                   "crop": {"kind": "object", "mode": mode, "margin": int(margin), "size": [int(size[0]), int(size[1])]}})

    g = gen()
    return g if progress else _drain(g)


#: how profile classifiers take their input ([P]): per particle, all views together, min-max to [0, 1]
#: (``minmax`` of one particle's (views, points) array; applied by :func:`~.predict.classify_profiles`)
PROFILE_NORMALIZATION = {"kind": "minmax"}


def one_view_chirality_note(task: str, n_views: int) -> str | None:
    """[P] The warning for a chirality classifier of one view (``classify train profiles --task chirality
    --views 1``, the dock's views 1): a single projection cannot tell chirality, so it trains to chance
    accuracy; None for any other task or number of views."""
    if str(task) == "chirality" and int(n_views) < 2:
        return ("chirality from one view: a single projection cannot tell a clockwise particle from an "
                "anticlockwise one (METHODS.md [P]), so expect an accuracy near chance")
    return None


def simulated_profile_data(n: int, task: str = "hole", n_views: int = 1, seed: int = 0, progress: bool = False,
                           **sim_kwargs):
    """Simulated thickness profiles ([P]) as classification data: ``x`` (n, views, points) float32.
    ``progress``: if True return a generator of :class:`~napari_microseg.progress.Progress` that
    returns the data."""
    from ..simulate.nanoparticles import simulate_profiles

    def gen():
        ps = yield from simulate_profiles(int(n), task=task, n_views=int(n_views), seed=seed, progress=True, **sim_kwargs)
        return ClassificationData(ps.profiles, ps.labels, list(ps.class_names), None, None,
                                  f"{n} simulated {task} particles, {n_views} view(s) (seed {seed})",
                                  {"simulated": True, "seed": seed, "task": task, "n_views": int(n_views),
                                   "simulation": simulation_record("nanoparticles", seed,
                                                                   {"task": task, "n_views": int(n_views), **sim_kwargs}),
                                   # each particle's views min-max normalised together ([P]), by the simulator
                                   "normalization": PROFILE_NORMALIZATION, "crop": {"kind": "profile", "views": int(n_views)}})

    g = gen()
    return g if progress else _drain(g)


# ---------------------------------------------------------------------------- imbalance


def oversample_indices(y: np.ndarray, rng: np.random.Generator | int | None = 0, target: int | None = None) -> np.ndarray:
    """Indices that repeat minority-class samples up to the majority count ([T]).

    Each class with fewer than ``target`` (default: the majority count) samples keeps
    all its samples, repeated whole as often as fits, plus a random draw without
    replacement for the remainder; classes at or above ``target`` are kept as they are.
    Classes with no sample stay empty. The result is shuffled.
    """
    rng = np.random.default_rng(rng)
    y = np.asarray(y)
    counts = np.bincount(y) if len(y) else np.zeros(0, int)
    target = int(counts.max()) if target is None and len(counts) else int(target or 0)
    out = []
    for c, n in enumerate(counts):
        idx = np.flatnonzero(y == c)
        if n == 0:
            continue
        if n >= target:
            out.append(idx)
            continue
        reps, rest = divmod(target, n)
        out.append(np.tile(idx, reps))
        if rest:
            out.append(rng.choice(idx, rest, replace=False))
    out = np.concatenate(out) if out else np.zeros(0, int)
    rng.shuffle(out)
    return out


def undersample_majority(y: np.ndarray, fraction: float = 0.2, rng: np.random.Generator | int | None = 0) -> np.ndarray:
    """Indices of all samples except a random ``fraction`` of the majority class (sorted)."""
    rng = np.random.default_rng(rng)
    y = np.asarray(y)
    if not len(y) or fraction <= 0:
        return np.arange(len(y))
    major = int(np.bincount(y).argmax())
    idx = np.flatnonzero(y == major)
    drop = rng.choice(idx, int(round(fraction * len(idx))), replace=False)
    keep = np.ones(len(y), bool)
    keep[drop] = False
    return np.flatnonzero(keep)


def epoch_indices(y: np.ndarray, rng: np.random.Generator, oversample: bool = False, undersample_fraction: float = 0.0) -> np.ndarray:
    """Training indices of one epoch: optional undersampling of the majority, then oversampling.

    With both on, ``undersample_fraction`` of the majority is dropped at random (new
    draw each epoch) and the other classes are oversampled to the reduced majority
    count, so every epoch is balanced but sees a different part of the majority.
    """
    y = np.asarray(y)
    idx = undersample_majority(y, undersample_fraction, rng) if undersample_fraction > 0 else np.arange(len(y))
    if oversample:
        idx = idx[oversample_indices(y[idx], rng)]
    else:
        idx = rng.permutation(idx)
    return idx


def class_weights_from_labels(y: np.ndarray, n_classes: int) -> list[float]:
    """Weights inversely proportional to class frequency, ``N / (n_classes * count)`` (sklearn 'balanced');
    a class without samples gets weight 0."""
    counts = np.bincount(np.asarray(y), minlength=int(n_classes)).astype(float)
    w = np.where(counts > 0, counts.sum() / (int(n_classes) * np.maximum(counts, 1)), 0.0)
    return [float(v) for v in w]


def fold_indices(y: np.ndarray, k: int = 5, groups: np.ndarray | None = None, stratified: bool = True,
                 seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train / test index pairs for k-fold cross-validation.

    ``groups`` given: all samples of a group (e.g. copies of one sample at different gains)
    land in one fold, with the classes spread over the folds as evenly as the groups allow
    (:class:`sklearn.model_selection.StratifiedGroupKFold`, shuffled with ``seed``; with
    ``stratified`` False, :class:`~sklearn.model_selection.GroupKFold`). Otherwise
    :class:`~sklearn.model_selection.StratifiedKFold` (shuffled with ``seed``) or plain
    shuffled ``KFold``. [T] used stratified folds: a class of 0.6 % of the samples must not
    be missing from a fold's test set.
    """
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    y = np.asarray(y)
    k = int(k)
    if k < 2 or k > len(y):
        raise InputError(f"k-fold needs 2 <= k <= number of samples ({len(y)}); got {k}")
    if groups is not None:
        groups = np.asarray(groups)
        if len(np.unique(groups)) < k:
            raise InputError(f"{len(np.unique(groups))} groups are too few for {k} folds")
        if stratified and np.bincount(np.unique(y, return_inverse=True)[1]).min() >= 2:
            splitter = StratifiedGroupKFold(k, shuffle=True, random_state=seed)
        else:  # a class of one sample cannot be spread: groups alone decide
            splitter = GroupKFold(k)
        return [(tr, te) for tr, te in splitter.split(np.zeros(len(y)), y, groups)]
    if stratified:
        splitter = StratifiedKFold(k, shuffle=True, random_state=seed)
        return [(tr, te) for tr, te in splitter.split(np.zeros(len(y)), y)]
    return [(tr, te) for tr, te in KFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)))]
