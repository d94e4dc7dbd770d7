"""Segmentation losses that honour an ignore mask.

All losses take ``logits (B, K, H, W)`` (raw network output) and ``target (B, H, W)``
int64 class indices, with ``-1`` marking ignored pixels, and return a scalar that is
the mean over annotated pixels only. Ignored pixels get exactly zero gradient.
``K == 1`` means binary (sigmoid; target 0/1), ``K >= 2`` means softmax over K classes.

Names accepted by :func:`make_loss`:

- ``"bce"``: binary cross-entropy (for K >= 2: cross-entropy).
- ``"ce"``: cross-entropy (for K == 1: binary cross-entropy).
- ``"weighted_ce"``: cross-entropy with class weights (given, or from class frequencies
  with :func:`class_weights_from_frequencies`); for K == 1 a positive-class weight.
- ``"dice"``: soft Dice loss (1 - mean Dice over foreground classes).
- ``"bce_dice"`` / ``"ce_dice"``: (binary) cross-entropy + soft Dice.
- ``"focal"``: focal loss (Lin et al. 2017), ``gamma`` (default 2) and, for binary,
  ``alpha`` (default 0.5, as in METHODS [N]).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "LOSSES",
    "make_loss",
    "class_weights_from_frequencies",
    "bce_loss",
    "ce_loss",
    "dice_loss",
    "focal_loss",
]

IGNORE = -1


def _valid(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    valid = target >= 0
    return valid, torch.where(valid, target, torch.zeros_like(target))


def _masked_mean(per_pixel: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    w = valid.to(per_pixel.dtype)
    n = w.sum()
    return (per_pixel * w).sum() / n.clamp_min(1.0)


def bce_loss(logits: torch.Tensor, target: torch.Tensor, pos_weight: float | None = None) -> torch.Tensor:
    """Binary cross-entropy on ``logits (B, 1, H, W)``; ``pos_weight`` weights foreground."""
    valid, t = _valid(target)
    pw = None if pos_weight is None else torch.as_tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    per = F.binary_cross_entropy_with_logits(logits[:, 0], t.to(logits.dtype), reduction="none", pos_weight=pw)
    return _masked_mean(per, valid)


def ce_loss(logits: torch.Tensor, target: torch.Tensor, class_weights: Sequence[float] | torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy (softmax) for ``K >= 2``; with ``class_weights`` a weighted mean."""
    if logits.shape[1] == 1:
        pw = None
        if class_weights is not None:
            cw = [float(v) for v in class_weights]
            pw = cw[1] / max(cw[0], 1e-12)
        return bce_loss(logits, target, pos_weight=pw)
    w = None
    if class_weights is not None:
        w = torch.as_tensor(class_weights, dtype=logits.dtype, device=logits.device)
    valid, _ = _valid(target)
    if not valid.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target, weight=w, ignore_index=IGNORE, reduction="mean")


def _probs_onehot(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    valid, t = _valid(target)
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits)  # (B,1,H,W): foreground only
        onehot = t.unsqueeze(1).to(p.dtype)
    else:
        p = torch.softmax(logits, dim=1)[:, 1:]  # foreground classes only
        onehot = F.one_hot(t, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].to(p.dtype)
    return p, onehot, valid


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice loss: 1 - mean over foreground classes of the batch-wide soft Dice."""
    p, onehot, valid = _probs_onehot(logits, target)
    v = valid.unsqueeze(1).to(p.dtype)
    p, onehot = p * v, onehot * v
    dims = (0, 2, 3)
    inter = (p * onehot).sum(dims)
    denom = p.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + smooth) / (denom + smooth)
    return 1.0 - dice.mean()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float | None = 0.5,
               class_weights: Sequence[float] | None = None) -> torch.Tensor:
    """Focal loss. Binary: ``-alpha_t (1 - p_t)^gamma log p_t`` with ``alpha`` on foreground
    and ``1 - alpha`` on background. Multi-class: ``-(1 - p_t)^gamma log p_t``, optionally
    weighted per class."""
    valid, t = _valid(target)
    if logits.shape[1] == 1:
        z = logits[:, 0]
        tf = t.to(z.dtype)
        logp = F.logsigmoid(z)
        log1mp = F.logsigmoid(-z)
        logpt = tf * logp + (1 - tf) * log1mp
        pt = logpt.exp()
        per = -((1 - pt) ** gamma) * logpt
        if alpha is not None:
            per = per * (alpha * tf + (1 - alpha) * (1 - tf))
    else:
        logp = F.log_softmax(logits, dim=1)
        logpt = logp.gather(1, t.unsqueeze(1)).squeeze(1)
        pt = logpt.exp()
        per = -((1 - pt) ** gamma) * logpt
        if class_weights is not None:
            w = torch.as_tensor(class_weights, dtype=logits.dtype, device=logits.device)
            per = per * w[t]
    return _masked_mean(per, valid)


def class_weights_from_frequencies(frequencies: Sequence[float], max_weight: float = 50.0, power: float = 1.0) -> list[float]:
    """Inverse-frequency class weights, normalised so the annotated pixels' mean weight is 1.

    ``w_c = (1 / f_c) ** power`` (``power`` 1: inverse frequency; 0.5: its square root,
    which trades less precision of rare classes for their recall), clipped to at most ``max_weight`` times the smallest weight, then
    scaled so that ``sum_c f_c w_c = 1`` (the loss keeps the scale of the unweighted one).
    Classes absent from the data get the largest weight. Rarest classes are weighted most
    (as in METHODS [C]).

    Parameters
    ----------
    frequencies : fraction of annotated pixels per class, shape ``(K,)``.
    max_weight : cap on the ratio of largest to smallest weight.
    power : exponent applied to the inverse frequencies (> 0).
    """
    if power <= 0:
        raise ValueError(f"power must be > 0, got {power}")
    f = np.asarray(frequencies, dtype=np.float64)
    present = f > 0
    if not present.any():
        return [1.0] * len(f)
    w = np.zeros_like(f)
    w[present] = (1.0 / f[present]) ** power
    w[~present] = w[present].max()
    w = np.minimum(w, w[present].min() * max_weight)
    w = w / np.sum(f * w) if np.sum(f * w) > 0 else w
    return [float(v) for v in w]


LOSSES = ("bce", "ce", "weighted_ce", "dice", "bce_dice", "ce_dice", "focal")


def make_loss(name: str, class_weights: Sequence[float] | None = None, gamma: float = 2.0,
              alpha: float | None = 0.5, dice_weight: float = 1.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Return ``loss(logits, target) -> scalar`` for a loss name (see module docstring).

    Parameters
    ----------
    name : one of ``LOSSES``.
    class_weights : per-class weights (used by ``weighted_ce`` and multi-class ``focal``).
    gamma, alpha : focal-loss parameters.
    dice_weight : weight of the Dice term in ``bce_dice`` / ``ce_dice``.
    """
    name = name.lower()
    if name in ("bce", "ce"):
        return lambda lo, t: ce_loss(lo, t)
    if name == "weighted_ce":
        if class_weights is None:
            raise ValueError("weighted_ce needs class_weights (the trainer computes them from class frequencies)")
        cw = list(class_weights)
        return lambda lo, t: ce_loss(lo, t, cw)
    if name == "dice":
        return dice_loss
    if name in ("bce_dice", "ce_dice"):
        cw = None if class_weights is None else list(class_weights)
        return lambda lo, t: ce_loss(lo, t, cw) + dice_weight * dice_loss(lo, t)
    if name == "focal":
        cw = None if class_weights is None else list(class_weights)
        return lambda lo, t: focal_loss(lo, t, gamma=gamma, alpha=alpha, class_weights=cw)
    raise ValueError(f"unknown loss {name!r}: use one of {', '.join(LOSSES)}")


def normalized_interior_distance(target: torch.Tensor) -> torch.Tensor:
    """Distance-head target from three-class targets ``(B, H, W)`` (0 bg, 1 interior, 2 boundary, -1 ignored).

    Each interior region's Euclidean distance to the nearest non-interior pixel,
    divided by that region's maximum: 1 at a nucleus centre, falling to 0 at
    its boundary ring and outside; touching nuclei are separated by their
    boundary pixels, so the map has a saddle of 0 between them. Scale-free
    (small and large nuclei both peak at 1). Returns float32 ``(B, H, W)`` on
    the target's device.
    """
    from scipy import ndimage as ndi

    t = target.detach().cpu().numpy()
    out = np.zeros(t.shape, np.float32)
    for i in range(t.shape[0]):
        interior = t[i] == 1
        if not interior.any():
            continue
        dist = ndi.distance_transform_edt(interior).astype(np.float32)
        regions, n = ndi.label(interior)
        peak = np.asarray(ndi.maximum(dist, regions, np.arange(1, n + 1)), np.float32)
        scale = np.concatenate([[1.0], np.maximum(peak, 1.0)]).astype(np.float32)
        out[i] = dist / scale[regions]
    return torch.from_numpy(out).to(target.device)


def touching_boundary_mask(target: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Pixels of three-class targets ``(B, H, W)`` that lie between two touching nuclei.

    Each nucleus's interior (class 1) is a connected region of its own, cut off
    from its neighbours' by their boundary rings (class 2). A boundary or interior
    pixel is *touching* when interiors of two different nuclei lie within
    ``radius`` px of it (a (2r+1) x (2r+1) window): the thin seam that splits
    touching nuclei, where one wrong pixel merges two objects. Ignored pixels
    (-1, partial annotation) join the regions they touch, so a stripe of them
    never splits one nucleus into two. Returns bool ``(B, H, W)`` on the
    target's device.
    """
    from scipy import ndimage as ndi

    t = target.detach().cpu().numpy()
    out = np.zeros(t.shape, bool)
    size = 2 * int(radius) + 1
    for i in range(t.shape[0]):
        regions, n = ndi.label((t[i] == 1) | (t[i] < 0))
        regions[t[i] != 1] = 0
        if n < 2:
            continue
        highest = ndi.maximum_filter(regions, size=size)
        lowest = ndi.minimum_filter(np.where(regions > 0, regions, n + 1), size=size)
        out[i] = (lowest <= n) & (highest != lowest) & ((t[i] == 1) | (t[i] == 2))
    return torch.from_numpy(out).to(target.device)


def with_touching_weight(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], n_classes: int = 3,
                         weight: float = 5.0, distance_weight: float | None = None
                         ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``loss_fn`` plus extra weight on the seams between touching nuclei (U-Net-style border weights).

    Adds ``weight`` x the (unweighted) cross-entropy of the
    :func:`touching_boundary_mask` pixels, summed and divided by the number of
    annotated pixels; with a distance head (``distance_weight`` given) also
    ``weight`` x ``distance_weight`` x their squared distance error, likewise.
    In the plain cross-entropy and distance terms a seam pixel then counts
    ``1 + weight`` times; the Dice term of ``ce_dice`` and class weights are left
    as they are. ``logits (B, K, H, W)`` with the class channels first (then the
    distance channel); ``target (B, H, W)``, -1 ignored. Computed in float32.
    """

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        base = loss_fn(logits, target)
        seam = touching_boundary_mask(target)
        if not bool(seam.any()):
            return base
        valid, safe = _valid(target)
        seam_w = seam.to(torch.float32)
        class_logits = logits[:, :n_classes].float()
        extra = (F.cross_entropy(class_logits, safe, reduction="none") * seam_w).sum()
        if distance_weight is not None:
            dist = normalized_interior_distance(target)
            extra = extra + distance_weight * (((torch.sigmoid(logits[:, n_classes].float()) - dist) ** 2) * seam_w).sum()
        return base + weight * extra / valid.sum().clamp_min(1).to(torch.float32)

    return loss


def with_distance_head(class_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                       n_classes: int = 3, weight: float = 1.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Loss for a network whose last channel regresses :func:`normalized_interior_distance`.

    ``logits (B, n_classes + 1, H, W)``: ``class_loss`` on the first ``n_classes``
    channels, plus ``weight`` x mean squared error between ``sigmoid`` of the last
    channel and the distance target, over annotated pixels.
    """

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target >= 0
        dist = normalized_interior_distance(target)
        per = (torch.sigmoid(logits[:, n_classes]) - dist) ** 2
        return class_loss(logits[:, :n_classes], target) + weight * _masked_mean(per, valid)

    return loss
