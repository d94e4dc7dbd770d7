"""Tune a three-class model's watershed settings on annotated images, and store them in the model file.

The network's probabilities are computed once per image; then every
combination of ``threshold`` (foreground), ``seed_threshold`` (core) and
``distance_sigma`` (smoothing of the core's distance transform, pixels) and
``min_mean_interior`` (objects the network is unsure of are dropped) is
scored by pooled IoU-matched AP = TP / (TP + FP + FN) at IoU 0.5, and the best
one is returned. :func:`store_postprocess` writes it into the model file's
config under ``"postprocess"``, where :func:`~napari_microseg.inference.segment.segment_image`
picks it up (explicit arguments still win). Tune on images the test figures
do not use.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError
from ..progress import Progress

#: default search grid (values tried for each setting)
DEFAULT_GRID: dict[str, tuple] = {
    "threshold": (0.4, 0.5, 0.6),
    "seed_threshold": (0.5, 0.6, 0.7, 0.8),
    "distance_sigma": (1.0, 1.5),
    "min_mean_interior": (0.0, 0.4),
}


@dataclass
class TuneResult:
    """Best settings and the score of every combination tried.

    Attributes
    ----------
    best : dict of the winning settings (keys of the grid).
    best_ap : pooled AP@0.5 of ``best``.
    table : one row per combination: the settings, tp, fp, fn, ap.
    """

    best: dict
    best_ap: float
    table: pd.DataFrame


def tune_postprocess(model: Any, images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                     grid: dict[str, Sequence] | Sequence[dict[str, Sequence]] | None = None, iou: float = 0.5,
                     ) -> Generator[Progress, None, TuneResult]:
    """Grid-search the three_class watershed settings of ``model``; generator yielding progress.

    Parameters
    ----------
    model : LoadedModel or model path, output mode ``three_class``.
    images : 2D (Y, X) images, any real dtype.
    labels : matching (Y, X) instance label images (0 = background).
    grid : setting -> values to try; default :data:`DEFAULT_GRID`. Other watershed settings
        (``segment.THREE_CLASS_OPTIONS``, e.g. ``seed_dynamics``) and ``threshold`` may be added;
        others (``min_size`` ...) are refused: a model cannot store them.
        A list of such dicts tries the union of their combinations (e.g. one grid
        per ``seed_method``, whose ``seed_dynamics`` have different units).
    iou : IoU threshold of a match.

    Returns
    -------
    TuneResult
    """
    from ..evaluation.metrics import compute_overlaps, match_instances
    from .postprocess import THREE_CLASS_ORDER, three_class_to_labels
    from .segment import _resolve_loaded, segment

    if len(images) != len(labels) or not images:
        raise InputError(f"need matching, non-empty lists of images and labels (got {len(images)} and {len(labels)})")
    loaded = _resolve_loaded(model, "auto")
    if loaded.output_mode != "three_class":
        raise InputError(f"only three_class models have watershed settings to tune (this one is {loaded.output_mode})")
    names = list(getattr(loaded, "class_names", None) or THREE_CLASS_ORDER)
    order = tuple(names) if set(THREE_CLASS_ORDER) <= set(names) else THREE_CLASS_ORDER
    grids = [dict(g) for g in ([DEFAULT_GRID] if grid is None else [grid] if isinstance(grid, dict) else grid)]
    _check_storable({key for g in grids for key in g})
    combos = [dict(zip(g, values)) for g in grids for values in itertools.product(*g.values())]
    if not combos:
        raise InputError("the tuning grid is empty")
    total = len(images) + len(combos)
    probabilities = []
    for i, (image, gt) in enumerate(zip(images, labels)):
        if np.shape(image) != np.shape(gt) or np.ndim(image) != 2:
            raise InputError(f"image {i}: image {np.shape(image)} and labels {np.shape(gt)} must be the same 2D shape")
        res = segment(loaded, image, measure=False, keep_probabilities=True)
        probabilities.append(np.asarray(res.probabilities, dtype=np.float32))
        yield Progress(i + 1, total, f"predicted image {i + 1}/{len(images)}")
    rows = []
    for j, combo in enumerate(combos):
        tp = fp = fn = 0
        for probs, gt in zip(probabilities, labels):
            pred = three_class_to_labels(probs, class_order=order, **combo)
            overlaps = compute_overlaps(np.asarray(gt), pred)
            matched = len(match_instances(overlaps, iou)[0])
            tp += matched
            fp += overlaps.n_pred - matched
            fn += overlaps.n_gt - matched
        ap = tp / (tp + fp + fn) if tp + fp + fn else 1.0
        rows.append({**combo, "tp": tp, "fp": fp, "fn": fn, "ap": ap})
        yield Progress(len(images) + j + 1, total, f"setting {j + 1}/{len(combos)}: AP {ap:.3f}")
    table = pd.DataFrame(rows)
    best_index = int(table["ap"].idxmax())
    best = {k: (v.item() if hasattr(v, "item") else v) for k, v in combos[best_index].items()}
    return TuneResult(best=best, best_ap=float(table.loc[best_index, "ap"]), table=table)


def _check_storable(keys: set) -> None:
    """InputError for settings a model's ``postprocess`` cannot hold: the watershed's
    (``segment.THREE_CLASS_OPTIONS``) and ``threshold`` only. A tuned ``min_size`` stored there made every
    later ``segment`` with the model fail ("unknown post-processing option(s) min_size"); sizes, holes and
    border objects are run settings (``segment --min-size`` ...)."""
    from .segment import THREE_CLASS_OPTIONS

    other = sorted(str(key) for key in keys - THREE_CLASS_OPTIONS - {"threshold", "tuned_on", "tuned_ap@0.50"})
    if other:
        raise InputError(f"{', '.join(other)}: not a watershed setting a model stores (those are threshold, "
                         f"{', '.join(sorted(THREE_CLASS_OPTIONS))}); sizes, holes and border objects are set per "
                         "run (segment --min-size, --max-size ...)")


def store_postprocess(model_path: str | os.PathLike, settings: dict) -> Path:
    """Write ``settings`` into the model file's ``config["postprocess"]`` (atomic replace).

    Parameters
    ----------
    model_path : a model file written by :func:`napari_microseg.io.models.save_model`.
    settings : watershed settings, e.g. ``TuneResult.best``.
    """
    from ..io.models import update_model_config

    _check_storable(set(settings))
    clean = {k: (v.item() if hasattr(v, "item") else v) for k, v in settings.items()}
    return update_model_config(model_path, postprocess=clean)
