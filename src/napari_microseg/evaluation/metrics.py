"""Segmentation metrics: pixel, any-overlap object (METHODS [N]) and IoU-matched instance scores.

Conventions
-----------
* ``counts_to_scores(tp, fp, fn)``: precision = TP/(TP+FP), recall =
  TP/(TP+FN), Dice = F1 = 2TP/(2TP+FP+FN), IoU (Jaccard) = TP/(TP+FP+FN);
  a ratio with a zero denominator is 1.0 when nothing was expected and nothing
  predicted (all of TP, FP, FN zero), else 0.0.
* Any-overlap object scores ([N]): a predicted object is a true positive if it
  overlaps any labelled (ground-truth foreground) pixel; FP = predicted
  objects with no overlap; FN = labelled objects that no predicted object
  overlaps; TP = predicted objects - FP (the [N] "TP*"). No IoU threshold, no
  one-to-one matching: a predicted clump over three nuclei is one TP.
* Instance matching: one-to-one matching of ground-truth and predicted labels
  maximising the number of pairs with IoU >= threshold (Hungarian,
  ``scipy.optimize.linear_sum_assignment``, ties broken by total IoU). "AP"
  at a threshold is the Data Science Bowl 2018 score TP/(TP+FP+FN).
  Panoptic quality PQ = SQ * RQ with SQ = mean IoU of matched pairs and
  RQ = F1.
* Data-set scores pool the counts (sum TP, FP, FN over images) before taking
  ratios; per-image means are reported alongside where useful.
* How precise a data-set AP is: :func:`bootstrap_ap_interval` resamples the
  images (a percentile bootstrap of the pooled AP). Which images a test set
  holds moves its AP far more than the nuclei within them do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ..errors import InputError

#: IoU thresholds 0.50, 0.55, ..., 0.90
DEFAULT_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.901, 0.05), 2).tolist())


def _ratio(num: float, den: float, empty: float) -> float:
    return float(num) / float(den) if den > 0 else empty


def counts_to_scores(tp: int, fp: int, fn: int, tn: int | None = None) -> dict:
    """Precision, recall, F1 (= Dice), IoU (= Jaccard = "AP") and, with ``tn``, accuracy.

    Examples
    --------
    The [N] expert table: ``counts_to_scores(2062, 28, 2)`` gives precision
    0.987, recall 0.999, dice 0.993, iou 0.986.
    """
    empty = 1.0 if tp == 0 and fp == 0 and fn == 0 else 0.0
    out = {
        "tp": int(tp), "fp": int(fp), "fn": int(fn),
        "precision": _ratio(tp, tp + fp, empty),
        "recall": _ratio(tp, tp + fn, empty),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, empty),
        "iou": _ratio(tp, tp + fp + fn, empty),
    }
    out["dice"] = out["f1"]
    if tn is not None:
        out["tn"] = int(tn)
        out["accuracy"] = _ratio(tp + tn, tp + tn + fp + fn, 1.0)
    return out


def check_label_image(labels: np.ndarray, what: str) -> np.ndarray:
    """A label image as integers >= 0 (0 = background); a clear error for anything else."""
    labels = np.asarray(labels)
    if labels.size == 0:
        raise InputError(f"{what} label image is empty (shape {labels.shape})")
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise InputError(f"{what} label image holds non-integer or non-finite values")
        labels = labels.astype(np.int64)
    if labels.dtype.kind not in "uib":
        raise InputError(f"{what} is not a label image (dtype {labels.dtype})")
    if labels.dtype.kind == "i" and labels.min() < 0:
        raise InputError(f"{what} label image holds negative values (down to {labels.min()}): labels must be >= 0 "
                         "(0 background, positive object ids)")
    return labels


def _check_pair(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gt, pred = check_label_image(gt, "ground truth"), check_label_image(pred, "predicted")
    if gt.shape != pred.shape:
        raise InputError(f"ground truth shape {gt.shape} does not match prediction shape {pred.shape}")
    return gt, pred


def pixel_counts(gt: np.ndarray, pred: np.ndarray, left_out: np.ndarray | None = None) -> dict:
    """Foreground pixel TP/FP/FN/TN (foreground = non-zero) of two masks or label images; ``left_out``
    (bool, same shape): pixels not counted at all (the ground truth's "not annotated", set to 0 in both)."""
    gt, pred = _check_pair(gt, pred)
    g, p = gt != 0, pred != 0
    if left_out is not None:
        keep = ~np.asarray(left_out, bool)
        g, p = g & keep, p & keep
    tp = int(np.count_nonzero(g & p))
    fp = int(np.count_nonzero(p)) - tp
    fn = int(np.count_nonzero(g)) - tp
    tn = int(g.size if left_out is None else np.count_nonzero(keep)) - tp - fp - fn
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn}


def pixel_scores(gt: np.ndarray, pred: np.ndarray, left_out: np.ndarray | None = None) -> dict:
    """Pixel precision, recall, accuracy, Dice and IoU of the foreground (non-zero) masks (``left_out``:
    see :func:`pixel_counts`)."""
    c = pixel_counts(gt, pred, left_out)
    return counts_to_scores(c["tp"], c["fp"], c["fn"], c["tn"])


def _relabel_consecutive(labels: np.ndarray) -> tuple[np.ndarray, int]:
    ids, inv = np.unique(labels, return_inverse=True)
    inv = inv.reshape(labels.shape)
    if ids[0] != 0:
        return inv + 1, len(ids)
    return inv, len(ids) - 1


def overlap_object_counts(gt: np.ndarray, pred: np.ndarray) -> dict:
    """[N] any-overlap object counts: TP (= predicted - FP), FP, FN, and object totals.

    ``gt`` and ``pred`` are label images (0 = background), used as given: a
    binary mask is one object; label it first (``scipy.ndimage.label``) to
    count connected components.
    """
    gt, pred = _check_pair(gt, pred)
    g, n_gt = _relabel_consecutive(gt)
    p, n_pred = _relabel_consecutive(pred)
    both = (g > 0) & (p > 0)
    pred_hit = np.zeros(n_pred + 1, bool)
    pred_hit[np.unique(p[both])] = True
    gt_hit = np.zeros(n_gt + 1, bool)
    gt_hit[np.unique(g[both])] = True
    n_pred_hit = int(pred_hit[1:].sum())
    n_gt_hit = int(gt_hit[1:].sum())
    return {"tp": n_pred_hit, "fp": n_pred - n_pred_hit, "fn": n_gt - n_gt_hit,
            "n_gt": n_gt, "n_pred": n_pred, "gt_detected": n_gt_hit}


def overlap_object_scores(gt: np.ndarray, pred: np.ndarray) -> dict:
    """[N] any-overlap object precision, recall, Dice (F1) and IoU, from :func:`overlap_object_counts`."""
    c = overlap_object_counts(gt, pred)
    s = counts_to_scores(c["tp"], c["fp"], c["fn"])
    s.update(n_gt=c["n_gt"], n_pred=c["n_pred"], gt_detected=c["gt_detected"])
    return s


@dataclass
class Overlaps:
    """Sparse overlaps between ground-truth and predicted objects.

    ``gt_ids``/``pred_ids``: original label values of the objects (sorted);
    ``pairs_gt``/``pairs_pred``: indices into those for every overlapping pair,
    with ``iou`` of each pair.
    """

    gt_ids: np.ndarray
    pred_ids: np.ndarray
    pairs_gt: np.ndarray
    pairs_pred: np.ndarray
    iou: np.ndarray

    @property
    def n_gt(self) -> int:
        return len(self.gt_ids)

    @property
    def n_pred(self) -> int:
        return len(self.pred_ids)

    def dense(self) -> np.ndarray:
        """Dense IoU matrix (n_gt, n_pred); for small problems and tests."""
        m = np.zeros((self.n_gt, self.n_pred))
        m[self.pairs_gt, self.pairs_pred] = self.iou
        return m


def compute_overlaps(gt: np.ndarray, pred: np.ndarray) -> Overlaps:
    """IoU of every overlapping (ground-truth, predicted) object pair, computed sparsely."""
    gt, pred = _check_pair(gt, pred)
    gt_ids, g = np.unique(gt, return_inverse=True)
    pred_ids, p = np.unique(pred, return_inverse=True)
    g, p = g.ravel(), p.ravel()
    # index 0 means background only if label 0 is present
    g0 = 1 if gt_ids[0] == 0 else 0
    p0 = 1 if pred_ids[0] == 0 else 0
    gt_area = np.bincount(g, minlength=len(gt_ids))[g0:]
    pred_area = np.bincount(p, minlength=len(pred_ids))[p0:]
    gt_ids, pred_ids = gt_ids[g0:], pred_ids[p0:]
    sel = (g >= g0) & (p >= p0)
    gi, pi = g[sel] - g0, p[sel] - p0
    if gi.size:
        code = gi.astype(np.int64) * max(len(pred_ids), 1) + pi
        codes, inter = np.unique(code, return_counts=True)
        pairs_gt, pairs_pred = codes // max(len(pred_ids), 1), codes % max(len(pred_ids), 1)
        union = gt_area[pairs_gt] + pred_area[pairs_pred] - inter
        iou = inter / union
    else:
        pairs_gt = pairs_pred = np.zeros(0, np.int64)
        iou = np.zeros(0)
    return Overlaps(gt_ids, pred_ids, pairs_gt.astype(np.int64), pairs_pred.astype(np.int64), iou.astype(np.float64))


def match_instances(overlaps: Overlaps, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matching of objects with IoU >= ``threshold``.

    Maximises the number of matched pairs (Hungarian algorithm on the objects
    that have any candidate), ties broken by the larger total IoU. For
    thresholds above 0.5 every object has at most one candidate and the
    candidates are returned directly.

    Returns
    -------
    gt_index, pred_index, iou : arrays of the matched pairs (indices into
    ``overlaps.gt_ids`` / ``overlaps.pred_ids``).
    """
    keep = overlaps.iou >= threshold
    gi, pi, iou = overlaps.pairs_gt[keep], overlaps.pairs_pred[keep], overlaps.iou[keep]
    if gi.size == 0:
        return gi, pi, iou
    if len(np.unique(gi)) == gi.size and len(np.unique(pi)) == pi.size:
        return gi, pi, iou  # no conflicts (always so for threshold > 0.5)
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rows, ri = np.unique(gi, return_inverse=True)
    cols, ci = np.unique(pi, return_inverse=True)
    # the candidate pairs fall apart into independent groups (objects linked by candidates); each is matched
    # on its own: one dense matrix of all objects with a candidate took n x n memory (36 GiB for 70,000 nuclei
    # with one merge among them) and Hungarian time
    n_rows = len(rows)
    graph = coo_matrix((np.ones(ri.size), (ri, n_rows + ci)), shape=(n_rows + len(cols),) * 2)
    _, group = connected_components(graph, directed=False)
    pair_group = group[ri]
    order = np.argsort(pair_group, kind="stable")
    bounds = np.flatnonzero(np.diff(pair_group[order])) + 1
    out_g, out_p, out_iou = [], [], []
    for members in np.split(order, bounds):
        g_local, gr = np.unique(ri[members], return_inverse=True)
        p_local, pc = np.unique(ci[members], return_inverse=True)
        if members.size == 1:
            out_g.append(g_local), out_p.append(p_local), out_iou.append(iou[members])
            continue
        score = np.zeros((len(g_local), len(p_local)))
        # each valid pair is worth 1 plus a tie-break < 1 / (2 * max matches) in total
        score[gr, pc] = 1.0 + iou[members] / (2.0 * min(len(g_local), len(p_local)))
        r, c = linear_sum_assignment(score, maximize=True)
        ok = score[r, c] > 0
        r, c = r[ok], c[ok]
        m = np.zeros_like(score)
        m[gr, pc] = iou[members]
        out_g.append(g_local[r]), out_p.append(p_local[c]), out_iou.append(m[r, c])
    return rows[np.concatenate(out_g)], cols[np.concatenate(out_p)], np.concatenate(out_iou)


def instance_scores(gt: np.ndarray, pred: np.ndarray, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                    overlaps: Overlaps | None = None) -> pd.DataFrame:
    """IoU-matched instance scores at each threshold.

    Returns
    -------
    DataFrame, one row per threshold: ``threshold, tp, fp, fn, n_gt, n_pred,
    precision, recall, f1, ap, sq, pq, sum_iou`` (``ap`` = TP/(TP+FP+FN);
    ``sq`` = mean IoU of the matches; ``pq`` = sq * f1; ``sum_iou`` lets
    data-set scores be pooled).
    """
    thresholds = [float(thr) for thr in thresholds]
    if not thresholds or not all(0.0 < thr <= 1.0 for thr in thresholds):
        raise InputError(f"IoU thresholds must be a non-empty list of values in (0, 1], got {thresholds}")
    if overlaps is None:
        overlaps = compute_overlaps(gt, pred)
    rows = []
    for thr in thresholds:
        g, p, iou = match_instances(overlaps, thr)
        tp = len(g)
        s = counts_to_scores(tp, overlaps.n_pred - tp, overlaps.n_gt - tp)
        rows.append(_instance_row(thr, s, overlaps.n_gt, overlaps.n_pred, float(iou.sum())))
    return pd.DataFrame(rows)


def _instance_row(thr: float, s: dict, n_gt: int, n_pred: int, sum_iou: float) -> dict:
    tp = s["tp"]
    empty = s["tp"] == s["fp"] == s["fn"] == 0
    sq = sum_iou / tp if tp else (1.0 if empty else 0.0)
    return {"threshold": float(thr), "tp": tp, "fp": s["fp"], "fn": s["fn"], "n_gt": n_gt, "n_pred": n_pred,
            "precision": s["precision"], "recall": s["recall"], "f1": s["f1"], "ap": s["iou"],
            "sq": sq, "pq": sq * s["f1"], "sum_iou": sum_iou}


def pool_instance_scores(tables: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Data-set instance scores from per-image :func:`instance_scores` tables by pooled counts."""
    tables = list(tables)
    if not tables:
        raise InputError("no images to pool")
    allt = pd.concat(tables, ignore_index=True)
    rows = []
    for thr, grp in allt.groupby("threshold", sort=False):  # in the order given: PQ is the first one's, as per image
        tp, fp, fn = int(grp.tp.sum()), int(grp.fp.sum()), int(grp.fn.sum())
        s = counts_to_scores(tp, fp, fn)
        rows.append(_instance_row(thr, s, int(grp.n_gt.sum()), int(grp.n_pred.sum()), float(grp.sum_iou.sum())))
    return pd.DataFrame(rows)


#: resamples and confidence level of :func:`bootstrap_ap_interval`
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_LEVEL = 0.95


def counts_at_threshold(tables: Sequence[pd.DataFrame], threshold: float = 0.5) -> np.ndarray:
    """(n_images, 3) int array of TP, FP, FN at ``threshold`` from per-image :func:`instance_scores` tables."""
    counts = []
    for table in tables:
        row = table[np.isclose(table.threshold.to_numpy(float), threshold)]
        if row.empty:
            raise InputError(f"IoU threshold {threshold} is not among the scored thresholds")
        counts.append((int(row.tp.iloc[0]), int(row.fp.iloc[0]), int(row.fn.iloc[0])))
    return np.asarray(counts, dtype=np.int64).reshape(-1, 3)


def _resampled_aps(count_sets: Sequence[np.ndarray], n_resamples: int, level: float, seed: int,
                   groups: Sequence | None) -> np.ndarray | None:
    """AP of each of ``count_sets`` ((n, 3) TP/FP/FN per image, same images) over the same bootstrap
    draws: (len(count_sets), n_resamples); None with fewer than two images (or groups)."""
    if not 0 < level < 1:
        raise InputError(f"level must be in (0, 1), got {level}")
    if int(n_resamples) < 1:
        raise InputError(f"n_resamples must be >= 1, got {n_resamples}")
    sets = [np.asarray(c, dtype=np.int64).reshape(-1, 3) for c in count_sets]
    n = len(sets[0])
    if any(len(c) != n for c in sets):
        raise InputError("the score sets to compare hold different numbers of images")
    if groups is not None:
        if len(groups) != n:
            raise InputError(f"groups has {len(groups)} keys for {n} images")
        if n:  # one row of summed counts per group
            _, index = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
            sets = [np.stack([np.bincount(index, weights=c[:, k], minlength=index.max() + 1) for k in range(3)],
                             axis=1).astype(np.int64) for c in sets]
            n = len(sets[0])
    if n < 2:
        return None
    rng = np.random.default_rng(seed)
    aps = np.empty((len(sets), int(n_resamples)))
    chunk = max(1, 4_000_000 // n)  # draws per chunk: memory stays ~100 MB for any number of images
    for start in range(0, aps.shape[1], chunk):
        draws = rng.integers(0, n, size=(min(chunk, aps.shape[1] - start), n))
        for k, c in enumerate(sets):
            sums = c[draws].sum(axis=1)  # pooled TP, FP, FN of each resample
            total = sums.sum(axis=1)
            aps[k, start:start + len(draws)] = np.where(total > 0, sums[:, 0] / np.maximum(total, 1), 1.0)
    return aps


def _central(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_ap_interval(tables: Sequence[pd.DataFrame], threshold: float = 0.5,
                          n_resamples: int = BOOTSTRAP_RESAMPLES, level: float = BOOTSTRAP_LEVEL,
                          seed: int = 0, groups: Sequence | None = None) -> tuple[float, float]:
    """Confidence interval of the pooled AP at ``threshold``, by resampling the images.

    A percentile bootstrap: ``n_resamples`` times, as many images as there are
    are drawn with replacement and their TP, FP and FN pooled into
    TP/(TP+FP+FN) (1.0 for a draw of images that hold no object and predict
    none, as in :func:`counts_to_scores`); the interval holds the central
    ``level`` of those APs. It answers "how much would this figure move on
    another test set drawn like this one", which is what comparing against a
    published figure needs. Frames of one time-lapse are alike: give
    ``groups`` (per table, e.g. its stack's name) and whole groups are drawn.

    Parameters
    ----------
    tables : per-image :func:`instance_scores` tables (one per image).
    threshold : the IoU threshold (one of the tables' thresholds).
    n_resamples, level, seed : bootstrap resamples (>= 1), confidence level (0..1), random seed.
    groups : optional, one key per table; tables with one key are resampled together.

    Returns
    -------
    (low, high) : floats in [0, 1]; NaN for both with fewer than two images (or groups).
    """
    aps = _resampled_aps([counts_at_threshold(tables, threshold)], n_resamples, level, seed, groups)
    return (float("nan"), float("nan")) if aps is None else _central(aps[0], level)


def bootstrap_ap_difference(counts_before: np.ndarray, counts_after: np.ndarray,
                            n_resamples: int = BOOTSTRAP_RESAMPLES, level: float = BOOTSTRAP_LEVEL,
                            seed: int = 0, groups: Sequence | None = None) -> tuple[float, float, float]:
    """How much one segmentation beats another on the same images: AP(after) - AP(before), paired.

    Both are scored on the same images; each bootstrap draw takes the same
    images for both, so what the images have in common (hard ones, easy ones)
    cancels, and the interval is usually far narrower than either AP's own
    (:func:`bootstrap_ap_interval`; so when the two do well and badly on the
    same images). An interval that holds 0 means the images cannot tell the
    two apart. It says nothing of how much retraining with another random
    seed would move a model.

    Parameters
    ----------
    counts_before, counts_after : (n_images, 3) TP, FP, FN per image at one IoU threshold
        (:func:`counts_at_threshold`), rows in the same image order.
    n_resamples, level, seed, groups : as in :func:`bootstrap_ap_interval`.

    Returns
    -------
    (difference, low, high) : the pooled AP difference and its interval (NaN for the
    interval with fewer than two images or groups).
    """
    before = np.asarray(counts_before, dtype=np.int64).reshape(-1, 3)
    after = np.asarray(counts_after, dtype=np.int64).reshape(-1, 3)

    def pooled_ap(c: np.ndarray) -> float:
        return counts_to_scores(*(int(v) for v in c.sum(axis=0)))["iou"]

    aps = _resampled_aps([before, after], n_resamples, level, seed, groups)
    difference = pooled_ap(after) - pooled_ap(before)
    low, high = (float("nan"), float("nan")) if aps is None else _central(aps[1] - aps[0], level)
    return difference, low, high


def evaluate_segmentation(gt: np.ndarray, pred: np.ndarray, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                          left_out: np.ndarray | None = None) -> dict:
    """All scores for one (ground truth, prediction) pair of label images (``left_out``: pixels the pixel
    scores leave out, see :func:`pixel_counts`).

    Returns a flat dict: ``pixel_*`` (tp, fp, fn, tn, precision, recall,
    accuracy, dice, iou), ``object_*`` (the [N] any-overlap tp, fp, fn,
    precision, recall, dice, iou, n_gt, n_pred), ``ap@T``/``f1@T``/
    ``precision@T``/``recall@T`` per threshold, ``map`` (mean AP over the
    thresholds), ``pq``/``sq`` at the first threshold, and ``instance`` (the
    :func:`instance_scores` table, for pooling). Images are (Y, X): a (T, Y, X) stack scored whole took the
    objects of one id in every frame for one object (InputError; :func:`evaluate_dataset` scores a stack
    frame by frame).
    """
    if np.ndim(gt) != 2 or np.ndim(pred) != 2:
        raise InputError(f"evaluate_segmentation scores one (Y, X) image, got shapes {np.shape(gt)} and "
                         f"{np.shape(pred)}: score a (T, Y, X) stack frame by frame (evaluate_dataset does)")
    gt, pred = _check_pair(gt, pred)
    out: dict = {}
    for k, v in pixel_scores(gt, pred, left_out).items():
        out[f"pixel_{k}"] = v
    for k, v in overlap_object_scores(gt, pred).items():
        out[f"object_{k}"] = v
    inst = instance_scores(gt, pred, thresholds)
    out.update(_instance_summary(inst))
    out["instance"] = inst
    return out


def threshold_key(threshold: float) -> str:
    """The column suffix of an IoU threshold (``ap@0.50``): two decimals, more where two would merge
    thresholds or misname them (``0.525``, ``0.501``), so every threshold keeps its own columns."""
    two = f"{float(threshold):.2f}"
    return two if abs(float(two) - float(threshold)) < 1e-9 else f"{float(threshold):.4f}".rstrip("0")


def _instance_summary(inst: pd.DataFrame) -> dict:
    out = {"n_gt": int(inst.n_gt.iloc[0]), "n_pred": int(inst.n_pred.iloc[0])}
    for _, r in inst.iterrows():
        t = threshold_key(r.threshold)
        out[f"ap@{t}"] = r.ap
        out[f"f1@{t}"] = r.f1
        out[f"precision@{t}"] = r.precision
        out[f"recall@{t}"] = r.recall
        out[f"tp@{t}"], out[f"fp@{t}"], out[f"fn@{t}"] = int(r.tp), int(r.fp), int(r.fn)
    out["map"] = float(inst.ap.mean())
    out["pq"] = float(inst.pq.iloc[0])
    out["sq"] = float(inst.sq.iloc[0])
    return out


def stack_keys(names: Iterable[str]) -> list[str]:
    """Per image name, what the bootstrap resamples it with: a frame ``"movie.tif[3]"``
    (:func:`~napari_microseg.io.images.frame_name`) its stack, any other image itself."""
    from ..io.images import sequence_of

    return [sequence_of(name) or str(name) for name in names]


def _frames_of(pairs: Iterable[tuple]) -> Iterable[tuple]:
    """``pairs`` with each (T, Y, X) pair of stacks (and its left-out pixels) given frame by frame, named
    ``"<name>[t]"`` (as the command line names them, and the bootstrap draws them with their stack)."""
    from ..io.images import frame_name

    for name, gt, pred, *left_out in pairs:
        if np.shape(gt) != np.shape(pred):  # (3 vs 2 frames was told to "score the stack frame by frame")
            raise InputError(f"{name}: ground truth shape {np.shape(gt)} does not match prediction shape "
                             f"{np.shape(pred)}")
        if np.ndim(gt) == 3:
            for t in range(np.shape(gt)[0]):
                out = None if not left_out or left_out[0] is None else np.asarray(left_out[0])[t]
                yield (frame_name(name, t), np.asarray(gt[t]), np.asarray(pred[t]), *([out] if left_out else []))
        else:
            yield (name, gt, pred, *left_out)


def evaluate_dataset(pairs: Iterable[tuple[str, np.ndarray, np.ndarray]],
                     thresholds: Sequence[float] = DEFAULT_THRESHOLDS, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Score many images: ``pairs`` yields ``(name, gt_labels, pred_labels)``, or with a fourth item, the
    pixels the pixel scores leave out (bool, or None; see :func:`pixel_counts`); a pair of (T, Y, X) stacks
    is scored frame by frame (rows ``"<name>[t]"``).

    Returns
    -------
    per_image : DataFrame, one row per image (``name`` then the scalar scores
        of :func:`evaluate_segmentation`).
    pooled : dict of data-set scores from pooled counts (pixel, any-overlap
        object and instance scores), plus ``mean_image_map`` (mean over images
        of the per-image mean AP, as the DSB2018 leaderboard averaged; it used the thresholds 0.50-0.95
        and counted IoU strictly above each, where ``thresholds`` here default to 0.50-0.90 and count
        IoU >= T),
        ``ap_low@T`` / ``ap_high@T`` (the 95 % bootstrap interval of the AP at
        the first threshold, :func:`bootstrap_ap_interval` with ``seed``; frames named
        ``"<stack>[t]"`` are drawn with their stack) and ``n_images``.
    """
    rows, inst_tables = [], []
    pix = np.zeros(4, np.int64)
    obj = np.zeros(3, np.int64)
    n_gt_obj = n_pred_obj = n_gt_detected = 0
    for name, gt, pred, *left_out in _frames_of(pairs):
        r = evaluate_segmentation(gt, pred, thresholds, left_out[0] if left_out else None)
        inst_tables.append(r.pop("instance"))
        pix += [r["pixel_tp"], r["pixel_fp"], r["pixel_fn"], r["pixel_tn"]]
        obj += [r["object_tp"], r["object_fp"], r["object_fn"]]
        n_gt_obj += r["object_n_gt"]
        n_pred_obj += r["object_n_pred"]
        n_gt_detected += r["object_gt_detected"]
        rows.append({"name": name, **r})
    if not rows:
        raise InputError("no image pairs to evaluate")
    per_image = pd.DataFrame(rows)
    pooled: dict = {"n_images": len(rows)}
    for k, v in counts_to_scores(*pix[:3], tn=pix[3]).items():
        pooled[f"pixel_{k}"] = v
    for k, v in counts_to_scores(*obj).items():
        pooled[f"object_{k}"] = v
    pooled["object_n_gt"], pooled["object_n_pred"] = n_gt_obj, n_pred_obj
    pooled["object_gt_detected"] = n_gt_detected
    pooled.update(_instance_summary(pool_instance_scores(inst_tables)))
    pooled["mean_image_map"] = float(per_image["map"].mean())
    first = threshold_key(thresholds[0])
    stacks = stack_keys(per_image["name"])
    pooled[f"ap_low@{first}"], pooled[f"ap_high@{first}"] = bootstrap_ap_interval(inst_tables, float(thresholds[0]),
                                                                                   seed=seed, groups=stacks)
    return per_image, pooled
