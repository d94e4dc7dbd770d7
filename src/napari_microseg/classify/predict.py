"""Apply a classifier model file: whole images ([R]), objects ([T]), profiles ([P]).

The crop and normalisation settings stored in the model file are reapplied here, so
inputs are prepared exactly as in training.
"""

from __future__ import annotations

import os
from typing import Any, Generator, Sequence

import numpy as np
import pandas as pd

from ..errors import InputError
from ..progress import Progress

__all__ = ["load_classifier", "predict_proba", "classify_images", "classify_objects", "classify_profiles",
           "population_summary"]


def load_classifier(model: Any, device: str = "cpu"):
    """Return a :class:`~napari_microseg.io.models.LoadedModel` for a path or a LoadedModel.

    Raises InputError when the file is not a classifier (no ``task`` in its config).
    """
    from ..io.models import LoadedModel, load_model
    from . import _register_architectures

    _register_architectures()
    if isinstance(model, LoadedModel):
        lm = model
    elif isinstance(model, (str, os.PathLike)):
        lm = load_model(model, device=device)
    else:
        raise InputError("model must be a model file path or a LoadedModel")
    if lm.config.get("task") not in ("images", "objects", "profiles"):
        raise InputError(f"{lm.path or 'model'} is not a classifier model (it has no classification task)")
    return lm


def predict_proba(model: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class probabilities ``(N, n_classes)`` float64 for network-ready samples ``x`` (float32).

    A binary (one-logit) model returns ``[1 - p, p]`` with ``p`` the probability of class 1.
    """
    import torch

    lm = load_classifier(model)
    net = lm.model
    net.eval()
    x = np.ascontiguousarray(x, np.float32)
    out = []
    with torch.no_grad():
        for i in range(0, len(x), int(batch_size)):
            logits = net(torch.from_numpy(x[i:i + batch_size]).to(lm.device)).float().cpu()
            if logits.shape[1] == 1:
                p = torch.sigmoid(logits[:, 0]).double().numpy()
                out.append(np.stack([1 - p, p], 1))
            else:
                out.append(torch.softmax(logits, 1).double().numpy())
    n_classes = len(lm.class_names) or 2
    probabilities = np.concatenate(out) if out else np.zeros((0, n_classes))
    if not np.isfinite(probabilities).all():  # NaN would read as "good" / the first class, with no doubt shown
        bad = int((~np.isfinite(probabilities).all(axis=1)).sum())
        raise InputError(f"the model gives no finite probabilities for {bad} of {len(probabilities)} sample(s) "
                         "(NaN): it is broken (training diverged?) or the inputs hold NaN; retrain it with a lower "
                         "learning rate")
    return probabilities


def _check_task(lm, task: str) -> None:
    if lm.config.get("task") != task:
        raise InputError(f"this model classifies {lm.config.get('task')}, not {task}")


USE_MODES = ("flag", "discard")


def resolve_threshold(model: Any, threshold: float | str | None) -> float:
    """The decision threshold on ``probability_bad`` of a good/bad classifier.

    Parameters
    ----------
    model : model file path or LoadedModel of an ``images`` classifier, or its config dict.
    threshold : a probability in [0, 1]; ``"flag"`` (at most 5 % of bad images passed as good)
        or ``"discard"`` (at most 5 % of good images thrown away), as chosen on the
        validation images when the model was trained; None: the model's default (0.5).
    """
    if isinstance(model, dict):  # a model config: no weights needed (the widget's buttons)
        config = model
    else:
        config = load_classifier(model).config
    if threshold is None:
        return float(config.get("threshold", 0.5))
    if isinstance(threshold, str):
        if threshold not in USE_MODES:
            raise InputError(f"threshold must be a probability, 'flag' or 'discard', got {threshold!r}")
        stored = config.get("use_thresholds") or {}
        if threshold not in stored:
            raise InputError(f"this model has no '{threshold}' threshold (it was trained without validation images "
                             "or before they were stored); give a number")
        return float(stored[threshold])
    value = float(threshold)
    if not 0.0 <= value <= 1.0:
        raise InputError(f"threshold must be a probability between 0 and 1, got {value}")
    return value


def dim_for_16_bit_scale(config: dict, images: Sequence[np.ndarray]) -> list[int]:
    """Indices of ``images`` whose values all lie within 0-255 when the model keeps the 16-bit scale (a
    ``fixed`` normalisation dividing by more than 255, ``classify train images --keep-16bit``): 8-bit images
    look almost black to it, and their verdicts are a black image's. [] for other models."""
    norm = (config or {}).get("normalization") or {}
    if not (isinstance(norm, dict) and norm.get("kind") == "fixed" and float(norm.get("scale", 1)) > 255):
        return []
    return [i for i, img in enumerate(images) if np.size(img) and float(np.max(img)) <= 255]


def classify_images(model: Any, images: Sequence[np.ndarray], boxes: Sequence | None = None,
                    masks: Sequence[np.ndarray] | None = None, threshold: float | str | None = None,
                    names: Sequence[str] | None = None, batch_size: int = 256) -> pd.DataFrame:
    """Classify whole response images good / bad ([R]).

    Parameters
    ----------
    model : model file path or LoadedModel of an ``images`` classifier.
    images : 2-D arrays (uint16 or any real dtype).
    boxes : integration area per image ``(y0, x0, y1, x1)`` (or one box for all); the crop
        of the model's size is centred on it (cut as is when it has the crop's size).
    masks : boolean integration-area masks (used when ``boxes`` is None).
    threshold : decision threshold on ``probability_bad``, or ``"flag"`` / ``"discard"``
        (see :func:`resolve_threshold`); default: the model's, 0.5.
    names : file names to put in a ``file`` column.

    Returns
    -------
    DataFrame with columns ``index, [file,] probability_bad, verdict ("good"/"bad"), threshold``.
    """
    from .data import response_crops

    lm = load_classifier(model)
    _check_task(lm, "images")
    crop = lm.config.get("crop") or {}
    size = crop.get("size") or lm.config.get("patch_size") or [39, 42]
    for what, given in (("masks", masks), ("names", names)):  # (an IndexError / a pandas error before)
        if given is not None and len(given) != len(images):
            raise InputError(f"{len(given)} {what} for {len(images)} images: give one per image")
    if boxes is not None and np.ndim(boxes) != 1 and len(boxes) != len(images):  # (4 for 3 images passed)
        raise InputError(f"{len(boxes)} boxes for {len(images)} images: give one (y0, x0, y1, x1) per image, or one "
                         "for all")
    x = response_crops(images, boxes, masks, crop_size=size, normalization=lm.config.get("normalization") or "minmax",
                       names=names)
    prob = predict_proba(lm, x, batch_size)
    thr = resolve_threshold(lm, threshold)
    pos = lm.class_names[1] if len(lm.class_names) == 2 else "bad"
    neg = lm.class_names[0] if len(lm.class_names) == 2 else "good"
    df = pd.DataFrame({"index": np.arange(len(prob))})
    if names is not None:
        df["file"] = [str(n) for n in names]
    df["probability_bad"] = prob[:, 1]
    df["verdict"] = np.where(prob[:, 1] >= thr, pos, neg)
    df["threshold"] = thr
    return df


def classify_stack_objects_iter(model: Any, image: np.ndarray, labels: np.ndarray, batch_size: int = 256,
                                note: str = "") -> Generator[Progress, None, pd.DataFrame]:
    """:func:`classify_objects` of a (T, Y, X) stack frame by frame: one :class:`Progress` per frame (objects
    counted per frame: ids repeat from frame to frame; ``note`` is added to each message), so that Stop acts
    between frames; returns the table of all frames (rows ``t``)."""
    lm = load_classifier(model)
    n_frames, tables, counted = len(image), [], 0
    for i in range(n_frames):
        counted += int(np.count_nonzero(np.unique(labels[i])))
        yield Progress(i, n_frames, f"classifying frame {i + 1}/{n_frames}: {counted} objects so far{note}")
        try:
            tables.append(classify_objects(lm, np.asarray(image[i]), labels[i], t=i, batch_size=batch_size))
        except InputError as err:  # which frame (a NaN pixel in frame 7 of 20 was said without it)
            raise InputError(f"frame {i}: {err}") from None
    found = [table for table in tables if len(table)]  # frames without objects add no rows (nor object dtypes)
    return pd.concat(found, ignore_index=True) if found else tables[0] if tables else _objects_table([], lm.class_names)


def classify_objects(model: Any, image: np.ndarray, labels: np.ndarray, t: int | None = None,
                     batch_size: int = 256) -> pd.DataFrame:
    """Classify every labelled object of an image ([T]).

    Parameters
    ----------
    model : model file path or LoadedModel of an ``objects`` classifier.
    image : (Y, X) grey image, or (T, Y, X) with ``labels`` of the same shape.
    labels : integer labels, 0 = background.
    t : frame index written to the ``t`` column for a 2-D image (default 0).

    Returns
    -------
    DataFrame (``objects.csv`` layout): ``t, label, y, x, area, class, probability`` and one
    ``prob_<class>`` column per class. ``y, x`` is the centroid in pixels.
    """
    from scipy import ndimage as ndi

    from .crops import object_crops

    lm = load_classifier(model)
    _check_task(lm, "objects")
    image = np.asarray(image)
    labels = np.asarray(labels)
    if image.shape != labels.shape:
        raise InputError(f"labels shape {labels.shape} differs from image shape {image.shape}")
    if image.ndim == 3:
        from ..progress import drain

        return drain(classify_stack_objects_iter(lm, image, labels, batch_size=batch_size))
    from ..measure.labels import compact_labels

    labels, original_ids = compact_labels(labels)  # huge sparse ids (3e9) would size per-id tables
    crop = lm.config.get("crop") or {}
    crops, ids = object_crops(image, labels, mode=crop.get("mode", "masked"), size=crop.get("size") or lm.config.get("patch_size") or (28, 28),
                              margin=int(crop.get("margin", 50)), normalization=lm.config.get("normalization"))
    names = lm.class_names
    cols = ["t", "label", "y", "x", "area", "class", "probability"] + [f"prob_{n}" for n in names]
    if len(ids) == 0:
        return _objects_table([], names)
    prob = predict_proba(lm, crops[:, None], batch_size)
    lab = labels.astype(np.int64, copy=False)
    centroids = np.array(ndi.center_of_mass(np.ones_like(lab), lab, ids)).reshape(-1, 2)
    area = ndi.sum_labels(np.ones_like(lab), lab, ids)
    k = prob.argmax(1)
    named = ids if original_ids is None else original_ids[np.asarray(ids, np.int64)]  # the ids as given
    df = pd.DataFrame({"t": 0 if t is None else int(t), "label": named, "y": centroids[:, 0], "x": centroids[:, 1],
                       "area": np.asarray(area, np.int64), "class": [names[i] for i in k], "probability": prob.max(1)})
    for c, n in enumerate(names):
        df[f"prob_{n}"] = prob[:, c]
    return df[cols]


def _objects_table(rows: list, class_names: list[str]) -> pd.DataFrame:
    """An objects.csv table with its columns typed (an empty one too: numbers stay numbers)."""
    dtypes = {"t": "int64", "label": "int64", "y": "float64", "x": "float64", "area": "int64", "class": "object",
              "probability": "float64", **{f"prob_{n}": "float64" for n in class_names}}
    return pd.DataFrame(rows, columns=list(dtypes)).astype(dtypes)


def classify_profiles(model: Any, profiles: np.ndarray, batch_size: int = 1024) -> pd.DataFrame:
    """Classify particles from their thickness profiles ([P]).

    Parameters
    ----------
    model : model file path or LoadedModel of a ``profiles`` classifier.
    profiles : (N, views, points) or (N, points) for one view; float. Each particle's views are
        min-max normalised together to [0, 1] here, as the training profiles were ([P]; the
        simulator writes them so): a particle's class never depends on the other particles given
        with it (it did, when one profile outside [0, 1] switched the normalisation on for all).

    Returns
    -------
    DataFrame with columns ``index, class, probability`` and ``prob_<class>`` per class.
    See :func:`population_summary` for the population percentages.
    """
    lm = load_classifier(model)
    _check_task(lm, "profiles")
    x = np.asarray(profiles)
    if x.dtype.kind not in "biuf":  # complex profiles would lose their imaginary part
        raise InputError(f"profiles of dtype {x.dtype} are not real-valued")
    x = x.astype(np.float32)
    if x.ndim == 2:
        x = x[:, None]
    if x.ndim != 3:
        raise InputError(f"profiles must be (N, views, points) or (N, points), got shape {x.shape}")
    want = lm.config.get("input_shape")
    if want and list(x.shape[1:]) != list(want):
        raise InputError(f"the model expects profiles of shape (N, {want[0]}, {want[1]}) (views, points), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InputError("profiles contain NaN or infinite values")
    if x.size:  # per particle, all its views together ([P])
        lo = x.min(axis=(1, 2), keepdims=True)
        hi = x.max(axis=(1, 2), keepdims=True)
        x = np.where(hi > lo, (x - lo) / np.where(hi > lo, hi - lo, 1), 0).astype(np.float32)
    prob = predict_proba(lm, x, batch_size)
    names = lm.class_names
    k = prob.argmax(1)
    df = pd.DataFrame({"index": np.arange(len(x)), "class": [names[i] for i in k], "probability": prob.max(1)})
    for c, n in enumerate(names):
        df[f"prob_{n}"] = prob[:, c]
    return df


def population_summary(table: pd.DataFrame, class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Population percentages: ``class, count, percent, mean_probability`` (one row per class)."""
    names = list(class_names) if class_names is not None else sorted(table["class"].unique())
    n = len(table)
    rows = []
    for name in names:
        sel = table["class"] == name
        rows.append({"class": name, "count": int(sel.sum()), "percent": 100.0 * sel.sum() / n if n else float("nan"),
                     "mean_probability": float(table.loc[sel, "probability"].mean()) if sel.any() else float("nan")})
    return pd.DataFrame(rows)
