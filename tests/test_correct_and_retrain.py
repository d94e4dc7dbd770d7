"""Correct-and-retrain: correcting a few objects of a weak model's result and fine-tuning raises the matched F1."""

from __future__ import annotations

import numpy as np

from napari_microseg.evaluation.metrics import instance_scores
from napari_microseg.inference.segment import segment
from napari_microseg.progress import drain
from napari_microseg.simulate.nuclei import simulate_nuclei_image
from napari_microseg.training.finetune import fine_tune_model


def f1(truth, pred) -> float:
    return float(instance_scores(truth, np.asarray(pred), thresholds=[0.5]).f1.iloc[0])


def test_corrections_on_a_few_objects_raise_f1(tiny_nuclei_model, tmp_path):
    image, truth = simulate_nuclei_image(shape=(256, 256), n_nuclei=45, seed=99)
    before = segment(str(tiny_nuclei_model), image).labels
    f1_before = f1(truth, before)

    # the user corrects the top-left quarter: removes wrong objects there and paints the true nuclei
    corrected = np.asarray(before).astype(np.int32).copy()
    region = np.zeros(truth.shape, bool)
    region[:128, :128] = True
    corrected[region] = 0
    touched = np.unique(corrected[region])
    offset = int(corrected.max()) + 1
    corrected[region & (truth > 0)] = truth[region & (truth > 0)] + offset
    n_corrected = len(np.unique(truth[region])) - 1
    assert 3 <= n_corrected <= 25 and len(touched) == 1  # a few objects, one region

    result = drain(fine_tune_model(tiny_nuclei_model, [image], [corrected], tmp_path / "ft.pt",
                                   {"epochs": 6, "patches_per_epoch": 32, "batch_size": 4, "lr": 1e-3, "patch_size": 128,
                                    "val_fraction": 0.0, "early_stopping_patience": None, "num_threads": 2, "seed": 0}))
    after = segment(result.model_path, image).labels
    f1_after = f1(truth, after)
    print(f"correct-and-retrain: F1@0.5 {f1_before:.3f} -> {f1_after:.3f} after correcting {n_corrected} nuclei")
    assert f1_after > f1_before + 0.03, f"fine-tuning on corrections did not help: F1 {f1_before:.3f} -> {f1_after:.3f}"
