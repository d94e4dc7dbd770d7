"""SVM baseline on hand-made object features ([T]).

Features of one object (from its crop and mask, both ``(H, W)``; intensities as in the
crop, e.g. after the image normalisation of :func:`~napari_microseg.classify.crops.object_crops`):

- ``area`` (pixels of the mask, in crop pixels) and ``circularity`` = 4 pi area / perimeter^2;
- scale-normalised central moments of the mask ``eta20, eta02, eta30, eta03``
  (``mu_pq / area^(1 + (p + q) / 2)``; raw ``mu_pq`` grow with size and would swamp the SVM);
- a 32-bin histogram of the intensities inside the mask (fractions; range = the crop's
  min..max, so the histogram is contrast-independent);
- a radial profile: mean intensity in ``n_rings`` (16) rings from the centroid to the
  farthest mask pixel (distance normalised to 0..1);
- an edge-density profile: mean Sobel gradient magnitude in the same rings.

The classifier is ``StandardScaler`` + ``sklearn.svm.SVC`` (RBF kernel, one-vs-one,
``class_weight="balanced"`` = weights inversely proportional to class frequency).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import InputError

__all__ = ["object_features", "features_from_crops", "features_from_labels", "train_svm_baseline", "FEATURE_NAMES"]

N_BINS = 32
N_RINGS = 16


def feature_names(n_bins: int = N_BINS, n_rings: int = N_RINGS) -> list[str]:
    return (["area", "circularity", "eta20", "eta02", "eta30", "eta03"] + [f"hist_{i}" for i in range(n_bins)]
            + [f"radial_{i}" for i in range(n_rings)] + [f"edge_{i}" for i in range(n_rings)])


FEATURE_NAMES = feature_names()


def object_features(crop: np.ndarray, mask: np.ndarray, n_bins: int = N_BINS, n_rings: int = N_RINGS) -> np.ndarray:
    """Feature vector (float64, ``6 + n_bins + 2 n_rings`` values) of one object; see module docstring."""
    from skimage.filters import sobel
    from skimage.measure import perimeter

    crop = np.asarray(crop, float)
    mask = np.asarray(mask, bool)
    if crop.shape != mask.shape or crop.ndim != 2:
        raise InputError(f"crop {crop.shape} and mask {mask.shape} must be the same 2-D shape")
    area = float(mask.sum())
    out = np.zeros(6 + n_bins + 2 * n_rings)
    if area == 0:
        return out
    per = float(perimeter(mask))
    circ = 4 * np.pi * area / per**2 if per > 0 else 1.0
    yy, xx = np.nonzero(mask)
    cy, cx = yy.mean(), xx.mean()
    dy, dx = yy - cy, xx - cx

    def eta(p, q):
        return float((dx**p * dy**q).sum() / area ** (1 + (p + q) / 2))

    lo, hi = float(crop.min()), float(crop.max())
    hist = np.histogram(crop[mask], bins=n_bins, range=(lo, hi if hi > lo else lo + 1))[0] / area
    gy, gx = np.indices(mask.shape)
    r = np.hypot(gy - cy, gx - cx)
    rmax = float(r[mask].max()) or 1.0
    ring = np.minimum((r / rmax * n_rings).astype(int), n_rings - 1)
    inside = r <= rmax
    edges = sobel(crop)
    radial = np.zeros(n_rings)
    edge = np.zeros(n_rings)
    for k in range(n_rings):
        sel = inside & (ring == k)
        if sel.any():
            radial[k] = crop[sel].mean()
            edge[k] = edges[sel].mean()
    out[:6] = [area, circ, eta(2, 0), eta(0, 2), eta(3, 0), eta(0, 3)]
    out[6:6 + n_bins] = hist
    out[6 + n_bins:6 + n_bins + n_rings] = radial
    out[6 + n_bins + n_rings:] = edge
    return out


def features_from_crops(crops: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
    """Features of many crops ``(N, H, W)``; without masks, the non-zero pixels (masked crops) are the object."""
    crops = np.asarray(crops)
    if crops.ndim == 4:
        crops = crops[:, 0]
    if masks is None:
        masks = crops != 0
    return np.stack([object_features(c, m) for c, m in zip(crops, masks)]) if len(crops) else np.zeros((0, len(FEATURE_NAMES)))


def features_from_labels(image: np.ndarray, labels: np.ndarray, size: Sequence[int] = (64, 64), margin: int = 0,
                         normalization=None) -> tuple[np.ndarray, np.ndarray]:
    """Features of every object of a label image (tight crops at ``size``); returns ``(features, label_ids)``."""
    from .crops import object_crops

    crops, ids = object_crops(image, labels, mode="masked", size=size, margin=margin, normalization=normalization)
    return features_from_crops(crops), ids


def train_svm_baseline(features: np.ndarray, y: np.ndarray, C: float = 10.0, gamma: str | float = "scale", seed: int = 0):
    """Fit ``StandardScaler`` + ``SVC(rbf, one-vs-one, class_weight='balanced')``; returns the sklearn pipeline."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    features = np.asarray(features, float)
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        raise InputError("the SVM needs at least two classes in the training data")
    clf = make_pipeline(StandardScaler(), SVC(C=C, gamma=gamma, kernel="rbf", decision_function_shape="ovo",
                                              class_weight="balanced", random_state=seed))
    return clf.fit(features, y)
