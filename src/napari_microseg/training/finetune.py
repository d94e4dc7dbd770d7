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
    corrected : (Y, X) instance labels after the user's corrections (0 background; -1,
        "not annotated", is left out: no object lying mostly on it counts as removed).
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
    not_annotated = corrected < 0
    corrected = np.where(not_annotated, 0, corrected)
    was = compute_overlaps(corrected, segmented)  # "gt" = corrected, "pred" = segmented
    best = np.zeros(was.n_gt)
    np.maximum.at(best, was.pairs_gt, was.iou)
    changed = set(was.gt_ids[best < UNCHANGED_IOU].tolist())
    kept = np.zeros(was.n_pred, bool)
    kept[was.pairs_pred[was.iou >= iou]] = True
    # each old object's share of pixels now background (and not "not annotated"), in one pass
    ids, inverse = np.unique(segmented, return_inverse=True)
    inverse = inverse.ravel()
    area = np.bincount(inverse, minlength=len(ids))
    now_background = np.bincount(inverse, weights=((corrected == 0) & ~not_annotated).ravel(), minlength=len(ids))
    share = dict(zip(ids.tolist(), (now_background / np.maximum(area, 1)).tolist()))
    removed = [int(label) for label, k in zip(was.pred_ids, kept) if not k and share.get(int(label), 0.0) > 0.5]

    now = compute_overlaps(corrected, output)
    g, _, _ = match_instances(now, iou)
    changed_right = len(changed & set(now.gt_ids[g].tolist()))
    still = compute_overlaps(np.where(np.isin(segmented, removed), segmented, 0), output)
    removed_still_found = len(match_instances(still, iou)[0])
    return {"changed": len(changed), "changed_right": changed_right, "removed": len(removed),
            "removed_still_found": removed_still_found}


def corrections_before_after(base: Any, tuned: Any, images: list, corrected: list, segment_options: dict | None = None,
                             stop_event: threading.Event | None = None):
    """Generator (yields :class:`~napari_microseg.progress.Progress`; returns ``(before, after)`` or None):
    :func:`correction_agreement` summed over the corrected (Y, X) frames, for the base model's own output
    (``before``) and the fine-tuned model's (``after``). "As segmented" is the base model's output on each
    image now, with ``segment_options`` (the keywords of :func:`~napari_microseg.inference.segment.segment`
    the labels were made with: tile, min_size, diameter, device ...). None when ``stop_event`` is set.
    Runs the networks: call it off the GUI thread."""
    from ..inference.segment import segment_image
    from ..io.models import load_model
    from ..progress import Progress

    options = {k: v for k, v in (segment_options or {}).items() if k != "keep_probabilities"}
    device = options.pop("device", "cpu")
    base_model, tuned_model = (load_model(m, device=device, segmentation=True) for m in (base, tuned))
    before: dict = {}
    after: dict = {}
    def run(model: Any, image: Any, step: int):
        """The model's labels of ``image``, tile by tile: Stop acts between tiles (it waited for two whole
        segmentations of each frame, 26 s on a 4096^2 frame); None when stopped."""
        gen = segment_image(model, image, measure=False, **options)
        try:
            while True:
                if stop_event is not None and stop_event.is_set():
                    return None
                try:
                    event = next(gen)
                except StopIteration as finished:
                    return np.asarray(finished.value.labels)
                share = event.done / event.total if getattr(event, "total", 0) else 0.0
                yield Progress(int(100 * (step + min(share, 1.0))), 200 * len(images),
                               "comparing with the old model on the corrected frames")
        finally:
            gen.close()

    for i, (image, labels) in enumerate(zip(images, corrected)):
        if stop_event is not None and stop_event.is_set():
            return None
        yield Progress(200 * i, 200 * len(images), "comparing with the old model on the corrected frames")
        segmented = yield from run(base_model, image, 2 * i)
        output = None if segmented is None else (yield from run(tuned_model, image, 2 * i + 1))
        if output is None:
            return None
        for total, scores in ((before, correction_agreement(labels, segmented, segmented)),
                              (after, correction_agreement(labels, segmented, output))):
            for key, value in scores.items():
                total[key] = total.get(key, 0) + value
    yield Progress(200 * len(images), 200 * len(images), "compared with the old model")
    return before, after


def describe_before_after(before: dict, after: dict) -> str:
    """One line for the dock: how the fine-tuned model follows the user's changes of the old model's
    output (from :func:`corrections_before_after`)."""
    parts = []
    if after.get("changed"):
        parts.append(f"of the {after['changed']} object(s) added or redrawn in the old model's output, the new model "
                     f"matches {after['changed_right']} (the old: {before['changed_right']})")
    if after.get("removed"):
        parts.append(f"of the {after['removed']} removed, it still finds {after['removed_still_found']} "
                     f"(the old: {before['removed_still_found']})")
    return "; ".join(parts) if parts else "no object of the corrected frames is added, removed or reshaped against the old model's output (outlines within IoU 0.95 of the old count as unchanged, -1 as not compared): nothing to compare"
