"""napari writer hooks: Image -> TIFF, Labels -> TIFF, Tracks -> CSV (tracks.csv contract)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import InputError
from .io.images import calibration_from_layer, write_tiff
from .io.tables import TRACKS_COLUMNS, tracks_table_from_layer, write_csv


def _with_suffix(path: str, suffixes: tuple[str, ...], default: str) -> Path:
    p = Path(path)
    return p if p.name.lower().endswith(suffixes) else p.with_name(p.name + default)


def write_image_tiff(path: str, data: Any, meta: dict) -> list[str]:
    """Write an Image layer to TIFF (dtype kept; its scale in um / min kept as OME calibration)."""
    target = _with_suffix(path, (".tif", ".tiff"), ".tif")
    data = np.asarray(data)
    scale = meta.get("scale") or ()
    # an RGB(A) layer has one scale entry fewer than its data's axes: no calibration for its colour axis
    calibration = calibration_from_layer(scale, meta.get("units")) if len(scale) == data.ndim else None
    write_tiff(target, data, overwrite=True, calibration=calibration)
    return [str(target)]


def write_labels_tiff(path: str, data: Any, meta: dict) -> list[str]:
    """Write a Labels layer to TIFF as uint16 (uint32 when ids exceed 65535); ids that neither holds
    (negative, or above 2**32 - 1) are refused rather than wrapped into other ids."""
    arr = np.asarray(data)
    low, high = int(arr.min(initial=0)), int(arr.max(initial=0))
    if low < 0 or high > np.iinfo(np.uint32).max:
        raise InputError(f"labels hold ids from {low} to {high}: a labels TIFF holds 0 .. {np.iinfo(np.uint32).max}; "
                         "relabel the layer first (e.g. skimage.segmentation.relabel_sequential)")
    from .measure.labels import label_dtype

    dtype = label_dtype(high)
    target = _with_suffix(path, (".tif", ".tiff"), ".tif")
    # the layer's physical scale (um, min) goes with it, as the reader set it from the movie
    write_tiff(target, arr.astype(dtype), overwrite=True, calibration=calibration_from_layer(meta.get("scale"), meta.get("units")))
    return [str(target)]


def write_tracks_csv(path: str, data: Any, meta: dict) -> list[str]:
    """Write a Tracks layer to ``tracks.csv`` (columns: see ``TRACKS_COLUMNS``)."""
    features = meta.get("features")
    if features is not None and not isinstance(features, pd.DataFrame):
        features = pd.DataFrame(features)
    table = tracks_table_from_layer(np.asarray(data), meta.get("graph") or {}, features)
    target = _with_suffix(path, (".csv",), ".csv")
    write_csv(target, table, leading=TRACKS_COLUMNS)
    return [str(target)]
