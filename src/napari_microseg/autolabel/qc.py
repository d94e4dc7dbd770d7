"""Data-set quality control for auto-labelled tiles ([N]).

[N]: "drop the 25 % of tiles with fewest nucleus pixels and any tile with more
than 50 % foreground (almost always segmented noise)".

Rules, applied in this order (a tile gets the first reason that applies):

1. ``too_much_foreground``: foreground fraction > ``max_foreground_fraction``;
2. ``empty`` (only with ``drop_empty``): no foreground pixel at all;
3. ``lowest_foreground``: among the tiles that survive rule 1, the
   ``drop_lowest_fraction`` share with the fewest foreground pixels. The number
   dropped is ``floor(drop_lowest_fraction * n)`` (so fewer than 4 tiles lose
   none to this rule at 25 %). Ties at the cut are broken by tile index (stable
   sort: earlier tiles are dropped first), so exactly that number is dropped.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import InputError

QC_COLUMNS = ["tile", "foreground_pixels", "foreground_fraction", "n_objects", "kept", "reason"]


def tile_statistics(label_tiles: Sequence[np.ndarray]) -> pd.DataFrame:
    """Per-tile foreground pixels, foreground fraction and object count.

    Parameters
    ----------
    label_tiles : sequence of (Y, X) label arrays (instance labels or binary masks; > 0 is foreground)
        or one (N, Y, X) array.

    Returns
    -------
    DataFrame with columns ``tile, foreground_pixels, foreground_fraction, n_objects``.
    """
    rows = []
    for i, lab in enumerate(label_tiles):
        lab = np.asarray(lab)
        if lab.ndim != 2:
            raise InputError(f"tile {i}: expected a 2-D label tile, got shape {lab.shape}")
        fg = int(np.count_nonzero(lab > 0))  # negative: "not annotated", not foreground
        if lab.dtype == bool or (lab.size and lab.max() <= 1):
            from scipy import ndimage as ndi

            n_obj = int(ndi.label(lab > 0)[1])
        else:
            ids = np.unique(lab)
            n_obj = int(np.count_nonzero(ids > 0))
        rows.append({"tile": i, "foreground_pixels": fg, "foreground_fraction": fg / lab.size if lab.size else 0.0, "n_objects": n_obj})
    return pd.DataFrame(rows, columns=["tile", "foreground_pixels", "foreground_fraction", "n_objects"])


def qc_filter(
    label_tiles: Sequence[np.ndarray],
    drop_lowest_fraction: float = 0.25,
    max_foreground_fraction: float = 0.5,
    drop_empty: bool = False,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Decide which auto-labelled tiles to keep for training ([N] QC filter).

    Parameters
    ----------
    label_tiles : sequence of (Y, X) label tiles, or an (N, Y, X) array.
    drop_lowest_fraction : share of tiles (of those not already dropped for too much
        foreground) with the fewest foreground pixels that is dropped ([N]: 0.25).
    max_foreground_fraction : tiles with a larger foreground fraction are dropped ([N]: 0.5).
    drop_empty : also drop every tile without any foreground, beyond the lowest share. Off by default,
        as in [N]: empty tiles are background examples, and the lowest share takes them first anyway.

    Returns
    -------
    kept : 1-D int array of kept tile indices (ascending).
    table : DataFrame, one row per tile: ``tile, foreground_pixels,
        foreground_fraction, n_objects, kept, reason`` (reason is "" for kept tiles,
        else ``too_much_foreground``, ``empty`` or ``lowest_foreground``).
    """
    if not 0 <= drop_lowest_fraction < 1:
        raise InputError(f"drop_lowest_fraction must be in [0, 1), got {drop_lowest_fraction}")
    if not 0 < max_foreground_fraction <= 1:
        raise InputError(f"max_foreground_fraction must be in (0, 1], got {max_foreground_fraction}")
    table = tile_statistics(label_tiles)
    n = len(table)
    reason = np.array([""] * n, dtype=object)
    if n == 0:
        table["kept"] = pd.Series(dtype=bool)
        table["reason"] = pd.Series(dtype=object)
        return np.zeros(0, int), table
    frac = table["foreground_fraction"].to_numpy()
    reason[frac > max_foreground_fraction] = "too_much_foreground"
    if drop_empty:
        reason[(table["foreground_pixels"].to_numpy() == 0) & (reason == "")] = "empty"
    candidates = np.flatnonzero(frac <= max_foreground_fraction)
    n_drop = int(np.floor(drop_lowest_fraction * len(candidates) + 1e-9))
    if n_drop:
        order = candidates[np.argsort(table["foreground_pixels"].to_numpy()[candidates], kind="stable")]
        for i in order[:n_drop]:
            if reason[i] == "":
                reason[i] = "lowest_foreground"
    table["kept"] = reason == ""
    table["reason"] = reason
    return np.flatnonzero(table["kept"].to_numpy()), table
