"""Correct-and-retrain: fine-tune a trained model on a few corrected frames (core of the widget's loop)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np


def fine_tune_model(base: Path, images: list, labels: list, out: Path, config: dict, stop_event: threading.Event | None = None):
    """Fine-tune ``base`` on corrected ``(image, labels)`` pairs; a generator returning the TrainResult.

    ``images`` / ``labels``: lists of (Y, X) arrays (labels: instance ids, 0 background).
    Architecture, normalisation and output mode come from ``base``; ``config`` holds the
    training settings (epochs, lr, patch size, ...); the result is written to ``out``.
    """
    from ..io.models import load_model
    from .trainer import train

    # architecture, normalisation and output mode come from the base model (init_model)
    cfg = {"output_mode": load_model(base, segmentation=True).output_mode, **config}
    return (yield from train(cfg, (images, labels), out_path=out, init_model=base, stop_event=stop_event))


#: a corrected object whose IoU with every object of the model's own output is below this was changed by the user
UNCHANGED_IOU = 0.95


def correction_agreement(corrected: np.ndarray, segmented: np.ndarray, output: np.ndarray, iou: float = 0.5) -> dict:
    """How ``output`` agrees with what the user changed in ``segmented`` to make ``corrected``.

    Only the changes count: a partly corrected frame still holds the old model's
    uncorrected objects, which a better model rightly stops reproducing.

    Parameters
    ----------
    corrected : (Y, X) instance labels after the user's corrections (0 background).
    segmented : (Y, X) instance labels the model gave before the corrections.
    output : (Y, X) instance labels of the model to score (before or after a fine-tune).
    iou : IoU from which an object of ``output`` counts as matching one of ``corrected``.

    Returns
    -------
    dict: ``changed`` (corrected objects added or redrawn: IoU with every object of
    ``segmented`` below :data:`UNCHANGED_IOU`), ``changed_right`` (of those, matched
    one-to-one in ``output`` at ``iou``), ``removed`` (objects of ``segmented`` the user
    deleted: no corrected object matches them at ``iou`` and most of their pixels are now
    background) and ``removed_still_found`` (of those, matched in ``output`` at ``iou``).
    """
    from ..evaluation.metrics import compute_overlaps, match_instances

    corrected, segmented, output = (np.asarray(a) for a in (corrected, segmented, output))
    was = compute_overlaps(corrected, segmented)  # "gt" = corrected, "pred" = segmented
    best = np.zeros(was.n_gt)
    np.maximum.at(best, was.pairs_gt, was.iou)
    changed = set(was.gt_ids[best < UNCHANGED_IOU].tolist())
    kept = np.zeros(was.n_pred, bool)
    kept[was.pairs_pred[was.iou >= iou]] = True
    on_background = [(corrected[segmented == label] == 0).mean() > 0.5 for label in was.pred_ids]
    removed = [int(label) for label, k, bg in zip(was.pred_ids, kept, on_background) if not k and bg]

    now = compute_overlaps(corrected, output)
    g, _, _ = match_instances(now, iou)
    changed_right = len(changed & set(now.gt_ids[g].tolist()))
    still = compute_overlaps(np.where(np.isin(segmented, removed), segmented, 0), output)
    removed_still_found = len(match_instances(still, iou)[0])
    return {"changed": len(changed), "changed_right": changed_right, "removed": len(removed),
            "removed_still_found": removed_still_found}


def corrections_before_after(base: Any, tuned: Any, images: list, corrected: list) -> tuple[dict, dict]:
    """:func:`correction_agreement` summed over corrected frames, for the base model's own output
    (``before``) and for the fine-tuned model's (``after``). The labels "as segmented" are the base
    model's output on each (Y, X) image now (stored settings). Runs the networks: call it off the GUI thread."""
    from ..inference.segment import segment
    from ..io.models import load_model

    base_model, tuned_model = load_model(base, segmentation=True), load_model(tuned, segmentation=True)
    before: dict = {}
    after: dict = {}
    for image, labels in zip(images, corrected):
        segmented = np.asarray(segment(base_model, image, measure=False).labels)
        output = np.asarray(segment(tuned_model, image, measure=False).labels)
        for total, scores in ((before, correction_agreement(labels, segmented, segmented)),
                              (after, correction_agreement(labels, segmented, output))):
            for key, value in scores.items():
                total[key] = total.get(key, 0) + value
    return before, after


def describe_before_after(before: dict, after: dict) -> str:
    """One line for the dock: how the fine-tune follows the user's changes (from :func:`corrections_before_after`)."""
    parts = []
    if after.get("changed"):
        parts.append(f"of the {after['changed']} object(s) you added or redrew, {after['changed_right']} now match "
                     f"(before: {before['changed_right']})")
    if after.get("removed"):
        parts.append(f"of the {after['removed']} you removed, {after['removed_still_found']} still found "
                     f"(before: {before['removed_still_found']})")
    return "; ".join(parts) if parts else "the corrected frames hold no change to the model's own output"
