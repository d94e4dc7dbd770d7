"""Classification metrics: confusion matrices, per-class rates, ROC / AUC, thresholds.

Per-class rates from a confusion matrix ``cm`` (rows = true class, columns = predicted),
for class ``c`` with ``TP = cm[c, c]``, ``FN = row sum - TP``, ``FP = column sum - TP``,
``TN = total - TP - FN - FP``:

- recall (sensitivity) = TP / (TP + FN)
- precision (PPV) = TP / (TP + FP)
- specificity = TN / (TN + FP)
- NPV = TN / (TN + FN)
- F1 = 2 precision recall / (precision + recall)

A rate whose denominator is 0 is NaN. Beware the accuracy paradox ([T]): with 97 %
"full" particles, always answering "full" scores 97 % accuracy; read the per-class rates.

For the binary [R] classifier the positive class is "bad" and the score is
``probability_bad``; an image is flagged bad when ``probability_bad >= threshold``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import InputError

__all__ = [
    "confusion_matrix",
    "row_normalize",
    "per_class_metrics",
    "classification_report",
    "per_subclass_accuracy",
    "roc_curve_auc",
    "confusion_at_threshold",
    "choose_threshold",
]


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int | None = None) -> np.ndarray:
    """Raw confusion matrix ``(n_classes, n_classes)`` int64; rows = true, columns = predicted."""
    y_true = np.asarray(y_true, np.int64)
    y_pred = np.asarray(y_pred, np.int64)
    if y_true.shape != y_pred.shape:
        raise InputError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    n = int(n_classes) if n_classes is not None else int(max(y_true.max(initial=-1), y_pred.max(initial=-1)) + 1)
    for which, values in (("true", y_true), ("predicted", y_pred)):  # a -1 counted as class n - 1 (numpy's wrap)
        if values.size and (values.min() < 0 or values.max() >= n):
            raise InputError(f"{which} labels must be classes 0 to {n - 1}; got {int(values.min())} to {int(values.max())}")
    cm = np.zeros((n, n), np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def row_normalize(cm: np.ndarray) -> np.ndarray:
    """Row-normalised confusion matrix (each true class sums to 1; an empty row stays 0)."""
    cm = np.asarray(cm, float)
    s = cm.sum(1, keepdims=True)
    return np.divide(cm, s, out=np.zeros_like(cm), where=s > 0)


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b > 0 else float("nan")


def per_class_metrics(cm: np.ndarray, class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-class support, recall, precision, specificity, NPV and F1 from a confusion matrix.

    Returns
    -------
    DataFrame with columns ``class, support, tp, fn, fp, tn, recall, precision,
    specificity, npv, f1`` (one row per class).
    """
    cm = np.asarray(cm, np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise InputError(f"confusion matrix must be square, got shape {cm.shape}")
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(cm))]
    total = cm.sum()
    rows = []
    for c, name in enumerate(names):
        tp = int(cm[c, c])
        fn = int(cm[c].sum() - tp)
        fp = int(cm[:, c].sum() - tp)
        tn = int(total - tp - fn - fp)
        rec = _ratio(tp, tp + fn)
        prec = _ratio(tp, tp + fp)
        if tp == 0:
            f1 = 0.0 if (tp + fn + fp) > 0 else float("nan")  # no hit although the class occurs or is predicted
        else:
            f1 = float(2 * prec * rec / (prec + rec))
        rows.append({"class": name, "support": tp + fn, "tp": tp, "fn": fn, "fp": fp, "tn": tn, "recall": rec,
                     "precision": prec, "specificity": _ratio(tn, tn + fp), "npv": _ratio(tn, tn + fn), "f1": f1})
    return pd.DataFrame(rows)


def classification_report(y_true, y_pred, class_names: Sequence[str], prob: np.ndarray | None = None) -> dict:
    """Everything at once: ``{"confusion", "confusion_normalized", "per_class", "summary"}``.

    ``summary`` holds accuracy, balanced accuracy (mean recall), macro F1 and, for two
    classes with ``prob`` ((N, 2) or (N,) probability of class 1), the ROC AUC.
    """
    cm = confusion_matrix(y_true, y_pred, len(class_names))
    per = per_class_metrics(cm, class_names)
    summary = {
        "accuracy": _ratio(np.trace(cm), cm.sum()),
        "balanced_accuracy": float(np.nanmean(per["recall"])) if per["recall"].notna().any() else float("nan"),
        "macro_f1": float(np.nanmean(per["f1"])) if per["f1"].notna().any() else float("nan"),
    }
    if prob is not None and len(class_names) == 2:
        p = np.asarray(prob)
        p1 = p[:, 1] if p.ndim == 2 else p
        if len(np.unique(y_true)) == 2:
            summary["auc"] = roc_curve_auc(y_true, p1)["auc"]
    return {"confusion": cm, "confusion_normalized": row_normalize(cm), "per_class": per, "summary": summary}


def per_subclass_accuracy(y_true, y_pred, subclass) -> pd.DataFrame:
    """Accuracy per subclass (e.g. artefact type): columns ``subclass, n, correct, accuracy``."""
    df = pd.DataFrame({"subclass": np.asarray(subclass).astype(str), "ok": np.asarray(y_true) == np.asarray(y_pred)})
    out = df.groupby("subclass", sort=True)["ok"].agg(["size", "sum"]).reset_index()
    out.columns = ["subclass", "n", "correct"]
    out["accuracy"] = out["correct"] / out["n"]
    return out


def roc_curve_auc(y_true, score) -> dict:
    """ROC curve and AUC (``sklearn.metrics``) of a binary score (higher = more likely class 1).

    Returns
    -------
    dict with ``fpr``, ``tpr``, ``thresholds`` (arrays) and ``auc`` (float; NaN when only one
    class is present).
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    y_true = np.asarray(y_true).astype(int)
    score = np.asarray(score, float)
    if len(np.unique(y_true)) < 2:
        return {"fpr": np.array([]), "tpr": np.array([]), "thresholds": np.array([]), "auc": float("nan")}
    fpr, tpr, thr = roc_curve(y_true, score)
    return {"fpr": fpr, "tpr": tpr, "thresholds": thr, "auc": float(roc_auc_score(y_true, score))}


def confusion_at_threshold(y_true, probability_bad, threshold: float = 0.5) -> dict:
    """Binary confusion of the [R] classifier at ``threshold`` (bad = 1 = positive).

    Returns
    -------
    dict with ``tp`` (bad flagged), ``fn`` (bad passed as good), ``fp`` (good thrown away),
    ``tn`` (good kept), ``accuracy``, ``bad_passed_rate`` = fn / bad,
    ``good_discarded_rate`` = fp / good, ``flagged_fraction``.
    """
    y = np.asarray(y_true).astype(int)
    pred = (np.asarray(probability_bad, float) >= float(threshold)).astype(int)
    tp = int(((pred == 1) & (y == 1)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    return {"threshold": float(threshold), "tp": tp, "fn": fn, "fp": fp, "tn": tn,
            "accuracy": _ratio(tp + tn, len(y)), "bad_passed_rate": _ratio(fn, tp + fn),
            "good_discarded_rate": _ratio(fp, fp + tn), "flagged_fraction": _ratio(tp + fp, len(y))}


def choose_threshold(y_true, probability_bad, mode: str = "flag", max_rate: float = 0.05) -> dict:
    """Pick a decision threshold on ``probability_bad`` for a use case.

    Parameters
    ----------
    y_true : 0 good / 1 bad.
    probability_bad : classifier score per image.
    mode : ``"flag"``: few bad images passed as good -- the highest threshold whose
        bad-passed rate (fn / bad) is <= ``max_rate`` (flag everything doubtful for a
        human to check); ``"discard"``: few good images thrown away -- the lowest threshold
        whose good-discarded rate (fp / good) is <= ``max_rate`` (drop only sure bad ones).
    max_rate : tolerated error rate of the kind the mode protects against.

    Returns
    -------
    :func:`confusion_at_threshold` at the chosen threshold, plus ``mode`` and ``max_rate``.
    """
    if mode not in ("flag", "discard"):
        raise InputError(f"mode must be 'flag' or 'discard', got {mode!r}")
    y = np.asarray(y_true).astype(int)
    p = np.asarray(probability_bad, float)
    cands = np.unique(np.concatenate([p, [0.0, 1.0 + 1e-9]]))
    best = None
    if mode == "flag":
        for t in cands[::-1]:  # high to low: the first that passes few enough bad
            c = confusion_at_threshold(y, p, t)
            if not (c["bad_passed_rate"] > max_rate):
                best = c
                break
    else:
        for t in cands:  # low to high: the first that throws away few enough good
            c = confusion_at_threshold(y, p, t)
            if not (c["good_discarded_rate"] > max_rate):
                best = c
                break
    best = best or confusion_at_threshold(y, p, 0.0 if mode == "flag" else 1.0 + 1e-9)
    best.update(mode=mode, max_rate=float(max_rate))
    return best
