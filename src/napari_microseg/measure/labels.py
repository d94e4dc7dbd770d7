"""Label-image helpers shared by measurement, post-processing and tracking."""

from __future__ import annotations

import numpy as np


def sparse_limit(labels: np.ndarray) -> int:
    """Largest label id that per-id lookup tables (bincount, LUTs) may be sized by: a few
    times the pixel count, so a table never outgrows the image by much."""
    return 4 * int(labels.size) + 65_536


def compact_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Renumber a label image with huge, sparse ids (e.g. 3,000,000,000) to 1..N.

    Returns ``(compact, ids)``: ``ids[k]`` is the original id of compact label ``k``
    (``ids[0] == 0``). When the ids are already small enough for per-id tables
    (:func:`sparse_limit`), returns ``(labels, None)`` without copying.
    """
    labels = np.asarray(labels)
    if labels.size == 0 or int(labels.max()) <= sparse_limit(labels):
        return labels, None
    ids, inverse = np.unique(labels, return_inverse=True)
    if ids[0] != 0:
        ids = np.concatenate([[0], ids])
        inverse = inverse + 1
    dtype = np.uint32 if len(ids) < 2**32 else np.uint64
    return inverse.reshape(labels.shape).astype(dtype), ids
