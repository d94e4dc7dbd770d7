"""Correct-and-retrain: fine-tune a trained model on a few corrected frames (core of the widget's loop)."""

from __future__ import annotations

import threading
from pathlib import Path


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
