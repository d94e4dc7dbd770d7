"""Per-object measurement tables (``objects.csv``) from label images.

Columns start ``t, label, y, x, area`` (DESIGN contract); then intensity and
shape measurements. Coordinates and lengths are in pixels, ``area`` in pixels,
``orientation`` in radians (scikit-image convention), intensities in the units
of the image given.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import InputError
from ..io.atomic import atomic_path

#: leading columns of objects.csv, in order
OBJECT_COLUMNS = ["t", "label", "y", "x", "area"]
#: shape columns measured for every object
SHAPE_COLUMNS = ["bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1", "eccentricity", "major_axis_length",
                 "minor_axis_length", "orientation", "solidity", "perimeter", "equivalent_diameter"]
#: intensity columns measured when an intensity image is given
INTENSITY_COLUMNS = ["mean_intensity", "max_intensity", "min_intensity"]

_PROPS = ["label", "centroid", "area", "bbox", "eccentricity", "axis_major_length", "axis_minor_length",
          "orientation", "solidity", "perimeter", "equivalent_diameter_area"]
_RENAME = {
    "centroid-0": "y", "centroid-1": "x",
    "bbox-0": "bbox_y0", "bbox-1": "bbox_x0", "bbox-2": "bbox_y1", "bbox-3": "bbox_x1",
    "axis_major_length": "major_axis_length", "axis_minor_length": "minor_axis_length",
    "equivalent_diameter_area": "equivalent_diameter",
    "intensity_mean": "mean_intensity", "intensity_max": "max_intensity", "intensity_min": "min_intensity",
}


def empty_object_table(with_intensity: bool = True) -> pd.DataFrame:
    """An objects table with all columns and no rows."""
    cols = OBJECT_COLUMNS + (INTENSITY_COLUMNS if with_intensity else []) + SHAPE_COLUMNS
    return pd.DataFrame({c: pd.Series(dtype="int64" if c in ("t", "label") else "float64") for c in cols})


def frame_object_table(labels: np.ndarray, intensity: np.ndarray | None = None, t: int = 0) -> pd.DataFrame:
    """Measure the objects of one 2D label image.

    Parameters
    ----------
    labels : int array (Y, X), 0 = background.
    intensity : array (Y, X), optional; adds mean/max/min intensity.
    t : frame index written in column ``t``.

    Returns
    -------
    DataFrame, one row per label, columns ``t, label, y, x, area, [mean_intensity,
    max_intensity, min_intensity,] bbox_y0 ... equivalent_diameter``.
    """
    from skimage.measure import regionprops_table

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise InputError(f"labels must be 2D (Y,X) per frame, got shape {labels.shape}")
    if intensity is not None:
        intensity = np.asarray(intensity)
        if intensity.shape != labels.shape:
            raise InputError(f"image shape {intensity.shape} does not match labels shape {labels.shape}")
    if not labels.any():
        return empty_object_table(intensity is not None)
    props = list(_PROPS)
    if intensity is not None:
        props += ["intensity_mean", "intensity_max", "intensity_min"]
    table = regionprops_table(labels.astype(np.int32 if labels.max() < 2**31 else np.int64, copy=False),
                              intensity_image=intensity, properties=props)
    df = pd.DataFrame(table).rename(columns=_RENAME)
    df.insert(0, "t", int(t))
    order = OBJECT_COLUMNS + (INTENSITY_COLUMNS if intensity is not None else []) + SHAPE_COLUMNS
    df = df[order]
    df["label"] = df["label"].astype("int64")
    df["area"] = df["area"].astype("int64")
    return df


def object_table(labels: Any, intensity: Any = None, t_offset: int = 0) -> pd.DataFrame:
    """Measure objects in a 2D (Y,X) label image or a (T,Y,X) stack.

    Frames are loaded one at a time (zarr/dask stacks are fine). ``t`` is 0 for
    2D input, the frame index (+ ``t_offset``) for stacks.
    """
    shape = tuple(labels.shape)
    if len(shape) == 2:
        return frame_object_table(np.asarray(labels), None if intensity is None else np.asarray(intensity), t_offset)
    if len(shape) != 3:
        raise InputError(f"labels must be (Y,X) or (T,Y,X), got shape {shape}")
    if intensity is not None and tuple(intensity.shape) != shape:
        raise InputError(f"image shape {tuple(intensity.shape)} does not match labels shape {shape}")
    frames = [
        frame_object_table(np.asarray(labels[t]), None if intensity is None else np.asarray(intensity[t]), t + t_offset)
        for t in range(shape[0])
    ]
    frames = [f for f in frames if len(f)] or [empty_object_table(intensity is not None)]
    return pd.concat(frames, ignore_index=True)


def check_overwrite(paths: Sequence[str | os.PathLike], overwrite: bool) -> None:
    """Raise :class:`InputError` if any path exists and ``overwrite`` is False."""
    if overwrite:
        return
    existing = [str(p) for p in paths if os.path.exists(p)]
    if existing:
        raise InputError(f"output exists: {existing[0]} (use --overwrite to replace it)")


def write_table_csv(df: pd.DataFrame, path: str | os.PathLike, overwrite: bool = True, float_format: str = "%.6g") -> str:
    """Write a table as UTF-8 CSV atomically (temp file + rename); returns the path."""
    check_overwrite([path], overwrite)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, encoding="utf-8", float_format=float_format)
    return str(path)


def write_objects_csv(df: pd.DataFrame, path: str | os.PathLike, overwrite: bool = True) -> str:
    """Write ``objects.csv`` atomically; columns reordered to start ``t,label,y,x,area``."""
    missing = [c for c in OBJECT_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"objects table lacks columns {missing}")
    df = df[OBJECT_COLUMNS + [c for c in df.columns if c not in OBJECT_COLUMNS]]
    return write_table_csv(df, path, overwrite)
