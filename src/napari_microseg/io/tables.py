"""CSV tables (comma-separated, one header row, UTF-8), written atomically.

Contracts (DESIGN.md): ``tracks.csv`` starts with
``track_id,t,y,x,parent_track_id,root_track_id,generation,label``;
``counts.csv`` starts with ``t,count``; ``objects.csv`` with ``t,label,y,x,area``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from .atomic import atomic_path

TRACKS_COLUMNS = ["track_id", "t", "y", "x", "parent_track_id", "root_track_id", "generation", "label"]


def read_csv_table(path: str | os.PathLike, **kwargs) -> pd.DataFrame:
    """``pd.read_csv(path, **kwargs)`` of a table a user gives; an empty, binary or malformed file is an
    :class:`InputError` naming it (pandas raised EmptyDataError, UnicodeDecodeError or ParserError)."""
    try:
        return pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path} is empty: no table to read") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise InputError(f"{path} is not a readable comma-separated table ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''})") from None


def write_csv(path: str | os.PathLike, table: pd.DataFrame, overwrite: bool = True, leading: list[str] | None = None) -> Path:
    """Write ``table`` to ``path`` as UTF-8 CSV atomically.

    ``leading`` columns (those present) are moved to the front in that order.
    With ``overwrite=False`` an existing file raises InputError.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise InputError(f"{target}: exists already (choose another name or allow overwriting)")
    if leading:
        first = [c for c in leading if c in table.columns]
        table = table[first + [c for c in table.columns if c not in first]]
    with atomic_path(target, suffix=".csv") as tmp:
        table.to_csv(tmp, index=False, encoding="utf-8", lineterminator="\n")
    return target


#: column names of tracks.csv that are coordinates or lineage, never measurements
TRACK_COORDINATE_NAMES = ("track_id", "t", "z", "y", "x", "parent_track_id", "root_track_id", "generation")


def tracks_table_from_layer(data: np.ndarray, graph: dict | None = None, features: pd.DataFrame | None = None) -> pd.DataFrame:
    """Build a ``tracks.csv`` table from napari Tracks layer data.

    Parameters
    ----------
    data : (N, 4) array of ``track_id, t, y, x`` (or (N, 5) ``track_id, t, z, y, x``).
    graph : ``{child_track_id: [parent_track_id, ...]}`` for divisions (first parent used).
    features : optional per-row table (same N rows); a ``label`` column is used when present,
        other columns are appended as measurements.

    Returns
    -------
    DataFrame with columns ``track_id,t,[z,]y,x,parent_track_id,root_track_id,generation,label, ...``;
    ``parent_track_id`` is 0 for roots, ``root_track_id`` the first ancestor, ``generation`` 0 for roots.
    """
    arr = np.asarray(data, dtype=float)
    if arr.ndim != 2 or arr.shape[1] not in (4, 5):
        raise InputError(f"tracks data must be (N, 4) or (N, 5), got shape {arr.shape}")
    spatial = ["z", "y", "x"] if arr.shape[1] == 5 else ["y", "x"]
    fractional = ~np.isfinite(arr[:, :2]) | (arr[:, :2] != np.round(arr[:, :2]))
    if fractional.any():  # cut to whole numbers, they would join other frames and tracks
        row, col = np.argwhere(fractional)[0]
        raise InputError(f"tracks data: {['track_id', 't'][col]} must be whole numbers (frame indices, track ids); "
                         f"row {row} holds {arr[row, col]:g}")
    table = pd.DataFrame(arr, columns=["track_id", "t", *spatial])
    table["track_id"] = table["track_id"].astype(np.int64)
    table["t"] = table["t"].astype(np.int64)
    parent_of = {int(child): int(np.atleast_1d(parents)[0]) for child, parents in (graph or {}).items() if len(np.atleast_1d(parents))}
    lowest = min([1, *table["track_id"].tolist(), *parent_of.values(), *parent_of.keys()])
    if lowest < 1 and min(parent_of.values(), default=1) < 1:  # parent_track_id 0 means "a root": a track 0's daughters
        import warnings

        from ..errors import MicrosegWarning

        shift = 1 - lowest
        warnings.warn(MicrosegWarning(f"track ids from {lowest} written from 1 (each + {shift}): in tracks.csv a "
                                      "parent_track_id of 0 means 'no parent'"), stacklevel=2)
        table["track_id"] += shift
        parent_of = {child + shift: parent + shift for child, parent in parent_of.items()}

    def root_and_generation(track_id: int) -> tuple[int, int]:
        gen, node, seen = 0, track_id, set()
        while node in parent_of and node not in seen:
            seen.add(node)
            node = parent_of[node]
            gen += 1
        return node, gen

    ids = table["track_id"].to_numpy()
    info = {int(i): root_and_generation(int(i)) for i in np.unique(ids)}
    table["parent_track_id"] = [parent_of.get(int(i), 0) for i in ids]
    table["root_track_id"] = [info[int(i)][0] for i in ids]
    table["generation"] = [info[int(i)][1] for i in ids]
    if features is not None and len(features) == len(table):
        feats = features.reset_index(drop=True)
        table["label"] = feats["label"].to_numpy() if "label" in feats else table["track_id"]
        for col in feats.columns:
            # a measurement named as a coordinate (a 2-D layer's "z" feature made the table 3-D) keeps its own name
            name = f"{col}_feature" if col in TRACK_COORDINATE_NAMES and col not in table.columns else col
            if name not in table.columns:
                table[name] = feats[col].to_numpy()
    else:
        table["label"] = table["track_id"]
    first = ["track_id", "t", *spatial, "parent_track_id", "root_track_id", "generation", "label"]
    return table[first + [c for c in table.columns if c not in first]].sort_values(["track_id", "t"], kind="stable").reset_index(drop=True)


def model_sidecar(model_path: str | os.PathLike, name: str) -> Path:
    """A file written beside a model and named after it: ``nuclei.pt`` + ``history.csv`` ->
    ``nuclei.history.csv`` (two models trained into one folder keep their own files)."""
    model_path = Path(model_path)
    return model_path.with_name(f"{model_path.stem}.{name}")


#: columns of ``<model>.history.csv`` of a segmentation training (``microseg train``, the Training widget)
TRAIN_HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_dice", "lr", "seconds"]


def write_history_csv(path: str | os.PathLike, history: list[dict], columns: list[str]) -> Path:
    """Write a per-epoch training history (one row per epoch, ``columns`` in order) as CSV, atomically."""
    import csv
    import io

    from .atomic import atomic_write_text

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in history:
        writer.writerow(["" if row.get(c) is None else (f"{row[c]:.6g}" if isinstance(row[c], float) else row[c])
                         for c in columns])
    return atomic_write_text(path, buf.getvalue())
