"""Find the tiles of a large class map that hold a class (e.g. hot pixels or clusters in a CCD frame)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def tiles_with_class(class_map: np.ndarray, class_id: int, tile: int = 256, min_pixels: int = 1) -> pd.DataFrame:
    """List the ``tile`` x ``tile`` tiles of a (Y, X) class map holding at least ``min_pixels`` of ``class_id``.

    Returns
    -------
    DataFrame with ``tile_row, tile_col, y0, x0, y1, x1, pixels, centre_y, centre_x``
    (pixel coordinates; ``y1``/``x1`` exclusive), sorted by ``pixels`` descending,
    so a viewer can jump to ``(centre_y, centre_x)``.
    """
    cm = np.asarray(class_map)
    if cm.ndim != 2:
        raise ValueError(f"class map must be 2-D (Y, X), got shape {cm.shape}")
    hit = cm == class_id
    rows = []
    for r, y0 in enumerate(range(0, cm.shape[0], tile)):
        for c, x0 in enumerate(range(0, cm.shape[1], tile)):
            y1, x1 = min(y0 + tile, cm.shape[0]), min(x0 + tile, cm.shape[1])
            n = int(hit[y0:y1, x0:x1].sum())
            if n >= min_pixels:
                rows.append((r, c, y0, x0, y1, x1, n, (y0 + y1) / 2, (x0 + x1) / 2))
    table = pd.DataFrame(rows, columns=["tile_row", "tile_col", "y0", "x0", "y1", "x1", "pixels", "centre_y", "centre_x"])
    return table.sort_values("pixels", ascending=False, kind="stable").reset_index(drop=True)
