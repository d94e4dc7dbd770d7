"""Object counts per frame (``counts.csv``: ``t,count`` plus per-class columns).

Two counts from [N]:

* :func:`count_objects`: number of labels (connected components) per frame;
  a clump of touching nuclei counts once, a speck counts as a cell unless the
  segmentation's size filter removed it.
* :func:`count_by_area`: foreground area / mean nucleus area, which counts a
  clump by its size. The mean nucleus area is taken from the objects
  themselves (default: median area of all objects in the run, robust to
  clumps) or given by the user.
"""

from __future__ import annotations

import re

from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import InputError


def _frames(labels: Any):
    """``(t, frame)`` of a (Y, X) or (T, Y, X) label image (numpy, dask, zarr, or nested lists), each frame
    checked to hold integers >= 0 (a probability map's background was counted as objects; -1, "not
    annotated", failed deep in numpy)."""
    from ..evaluation.metrics import check_label_image

    if not hasattr(labels, "shape"):
        labels = np.asarray(labels)
    shape = tuple(labels.shape)
    if len(shape) == 2:
        yield 0, check_label_image(np.asarray(labels), "the")
    elif len(shape) == 3:
        for t in range(shape[0]):
            yield t, check_label_image(np.asarray(labels[t]), f"frame {t}'s")
    else:
        raise InputError(f"labels must be (Y,X) or (T,Y,X), got shape {shape}")


def count_objects(labels: Any) -> pd.DataFrame:
    """Objects per frame: DataFrame ``t, count`` (``count`` = number of distinct non-zero labels)."""
    rows = []
    for t, frame in _frames(labels):
        ids = np.unique(frame)
        rows.append((t, int((ids > 0).sum())))
    return pd.DataFrame(rows, columns=["t", "count"])


def column_name(name: object) -> str:
    """A class name as part of a CSV column name: spaces and punctuation become ``_``
    (``"hot pixel"`` -> ``"hot_pixel"``), so spreadsheet and pandas users need no quoting."""
    return re.sub(r"\W+", "_", str(name).strip()).strip("_") or "class"


def class_index(class_names: Sequence[str], name: str) -> int | None:
    """Index of the class called ``name`` in ``class_names``, or None. Names are compared as
    :func:`column_name` makes them, ignoring case: spaces and punctuation equal underscores
    (``"hot pixel"`` matches ``"hot_pixel"`` and ``"Hot Pixel"``, not ``"hotpixel"``), so a model
    trained on a folder whose names were written as column names still has its classes."""
    wanted = column_name(name).lower()
    for i, candidate in enumerate(class_names):
        if column_name(candidate).lower() == wanted:
            return i
    return None


def counts_from_objects(objects: pd.DataFrame, n_frames: int, class_column: str | None = None,
                        class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Counts per frame from an objects table (rows per object with a ``t`` column).

    Frames with no objects get 0. With ``class_column`` (e.g. ``"class"``), one
    extra column ``count_<name>`` per class is added (``class_names[i]`` names
    class value ``i``; otherwise the value itself is used; see :func:`column_name`).
    """
    t = objects["t"].to_numpy(dtype=np.int64) if len(objects) else np.zeros(0, np.int64)
    if t.size and (t.min() < 0 or t.max() >= n_frames):  # its objects would go uncounted without a word
        raise InputError(f"the objects table holds frames {int(t.min())}..{int(t.max())}, beyond the {n_frames} "
                         f"frame(s) (0..{n_frames - 1}) asked for")
    df = pd.DataFrame({"t": np.arange(n_frames, dtype=np.int64),
                       "count": np.bincount(t, minlength=n_frames)[:n_frames]})
    if class_column and class_column in objects.columns:
        values = sorted(objects[class_column].dropna().unique().tolist())
        if class_names is not None:
            values = sorted(set(values) | set(range(1, len(class_names))))
        for v in values:
            name = class_names[int(v)] if class_names is not None and 0 <= int(v) < len(class_names) else v
            sel = objects[class_column] == v
            df[f"count_{column_name(name)}"] = np.bincount(t[sel.to_numpy()], minlength=n_frames)[:n_frames]
    return df


def counts_with_area(objects: pd.DataFrame, frames: Sequence[int]) -> pd.DataFrame:
    """``counts.csv`` of instance labels: ``t, count, foreground_area, count_by_area`` per frame.

    ``objects`` has one row per object with ``t`` and ``area`` (px); ``frames`` lists the frame
    indices to report (frames without objects get 0). ``count_by_area`` is the [N] alternative
    count: foreground area / the median object area of all ``objects``.
    """
    frames = [int(t) for t in frames]
    by_frame = objects.groupby("t")["area"] if len(objects) else None
    count = by_frame.size() if by_frame is not None else pd.Series(dtype=np.int64)
    area = by_frame.sum() if by_frame is not None else pd.Series(dtype=np.int64)
    typical = float(objects["area"].median()) if len(objects) else float("nan")
    df = pd.DataFrame({"t": np.asarray(frames, np.int64),
                       "count": [int(count.get(t, 0)) for t in frames],
                       "foreground_area": [int(area.get(t, 0)) for t in frames]})
    df["count_by_area"] = df["foreground_area"] / typical if np.isfinite(typical) and typical > 0 else 0.0
    return df


def mean_object_area(labels: Any, statistic: str = "median") -> float:
    """Typical object area in pixels over all frames (``median`` default, or ``mean``); nan if no objects."""
    from .labels import compact_labels

    if statistic not in ("median", "mean"):
        raise InputError(f"statistic must be 'median' or 'mean', got {statistic!r}")
    areas = []
    for _, frame in _frames(labels):
        compact, _ = compact_labels(np.asarray(frame))  # ids up to 2**40 would size the bincount
        a = np.bincount(compact.ravel().astype(np.int64, copy=False))[1:]
        areas.append(a[a > 0])
    areas = np.concatenate(areas) if areas else np.zeros(0)
    if areas.size == 0:
        return float("nan")
    return float(np.median(areas) if statistic == "median" else np.mean(areas))


def count_by_area(labels: Any, mean_area: float | None = None, statistic: str = "median") -> pd.DataFrame:
    """The [N] alternative count: foreground area / mean nucleus area, per frame.

    Parameters
    ----------
    labels : int array (Y, X) or (T, Y, X); foreground = label > 0.
    mean_area : typical single-nucleus area in pixels; when None it is
        estimated from all objects of ``labels`` with ``statistic``.

    Returns
    -------
    DataFrame ``t, foreground_area, count_by_area`` (float count).
    """
    if mean_area is None:
        mean_area = mean_object_area(labels, statistic)
    rows = []
    for t, frame in _frames(labels):
        fg = int(np.count_nonzero(frame))
        est = fg / mean_area if mean_area and np.isfinite(mean_area) and mean_area > 0 else 0.0
        rows.append((t, fg, float(est)))
    return pd.DataFrame(rows, columns=["t", "foreground_area", "count_by_area"])


def class_fractions(class_map: Any, class_names: Sequence[str]) -> pd.DataFrame:
    """Per-frame fraction of pixels in each class of a semantic map: ``t, fraction_<name>...``."""
    rows = []
    for t, frame in _frames(class_map):
        hist = np.bincount(frame.ravel().astype(np.int64, copy=False), minlength=len(class_names))
        rows.append([t] + (hist[: len(class_names)] / max(frame.size, 1)).tolist())
    return pd.DataFrame(rows, columns=["t"] + [f"fraction_{column_name(n)}" for n in class_names])
