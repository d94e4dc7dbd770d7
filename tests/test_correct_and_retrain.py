"""Correct-and-retrain: correcting a few objects of a weak model's result and fine-tuning raises the matched F1."""

from __future__ import annotations

import numpy as np

from napari_microseg.evaluation.metrics import instance_scores
from napari_microseg.inference.segment import segment
from napari_microseg.progress import drain
from napari_microseg.simulate.nuclei import simulate_nuclei_image
from napari_microseg.training.finetune import (
    correction_agreement,
    corrections_before_after,
    describe_before_after,
    fine_tune_model,
)


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
    region |= np.isin(truth, np.unique(truth[region])[1:])  # whole nuclei: those reaching into the quarter too
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
    # what the dock reports: the user's changes, followed before and after (the rest of the frame
    # still holds the weak model's output, which the fine-tuned model rightly stops reproducing)
    # (the counting itself is checked by hand below; here: the same changes are found for both models,
    # each of the user's deletions still in the weak model's own output, the counts within their totals)
    before_scores, after_scores = drain(corrections_before_after(tiny_nuclei_model, result.model_path, [image],
                                                                 [corrected]))
    assert before_scores["changed"] == after_scores["changed"] >= n_corrected
    assert before_scores["removed"] == after_scores["removed"] == before_scores["removed_still_found"]
    assert 0 <= after_scores["changed_right"] <= after_scores["changed"]
    print(describe_before_after(before_scores, after_scores))


def test_correction_agreement_counts_only_what_the_user_changed():
    segmented = np.zeros((40, 40), np.int32)
    segmented[2:8, 2:8] = 1      # kept as it was
    segmented[10:16, 2:8] = 2    # redrawn wider by the user
    segmented[20:26, 2:8] = 3    # debris the user deleted
    corrected = segmented.copy()
    corrected[segmented == 3] = 0
    corrected[10:16, 2:12] = 2   # IoU with the old object 36 / 60 = 0.6: changed, yet a match at 0.5
    corrected[2:8, 20:26] = 7    # a nucleus the model missed, painted
    before = correction_agreement(corrected, segmented, segmented)
    assert before == {"changed": 2, "changed_right": 1, "removed": 1, "removed_still_found": 1}
    after = correction_agreement(corrected, segmented, corrected)
    assert after == {"changed": 2, "changed_right": 2, "removed": 1, "removed_still_found": 0}
    # a model that drops the untouched object 1 too: the changes alone are scored, so no penalty here
    assert correction_agreement(corrected, segmented, np.where(corrected == 1, 0, corrected)) == after
    assert describe_before_after(before, after) == (
        "of the 2 object(s) added or redrawn in the old model's output, the new model matches 2 (the old: 1); "
        "of the 1 removed, it still finds 0 (the old: 1)")
    same = correction_agreement(segmented, segmented, segmented)
    assert describe_before_after(same, same) == "no object of the corrected frames is added, removed or reshaped against the old model's output (outlines within IoU 0.95 of the old count as unchanged, -1 as not compared): nothing to compare"
    # pixels marked -1 ("not annotated", as autolabel leaves them) are no deletion
    unsure = corrected.copy()
    unsure[20:26, 2:8] = -1
    assert correction_agreement(unsure, segmented, segmented)["removed"] == 0


def test_the_old_output_is_made_with_the_settings_the_labels_were_made_with(tiny_nuclei_model):
    """Labels segmented with the dock's settings (here: border objects removed) and left as they were
    hold no change, when the comparison segments with the same settings; with other settings the
    border objects would pass for deletions."""
    from napari_microseg.inference.segment import segment

    image, _ = simulate_nuclei_image(shape=(256, 256), n_nuclei=45, seed=99)
    as_segmented = np.asarray(segment(str(tiny_nuclei_model), image, measure=False, remove_border=True).labels)
    same = drain(corrections_before_after(tiny_nuclei_model, tiny_nuclei_model, [image], [as_segmented],
                                          {"remove_border": True, "device": "cpu", "keep_probabilities": False}))
    assert same[0] == same[1] and same[1]["changed"] == same[1]["removed"] == 0
    other = drain(corrections_before_after(tiny_nuclei_model, tiny_nuclei_model, [image], [as_segmented]))
    assert other[1]["removed"] > 0


def test_fine_tuning_keeps_the_base_models_classes_and_tuned_settings(tiny_nuclei_model, tmp_path):
    """A fine-tune keeps what belongs to the base model: a class model its classes and their names
    (whichever of them the corrected frame holds), a nuclei model its tuned watershed settings."""
    import pytest

    from napari_microseg.errors import InputError
    from napari_microseg.inference.tune import store_postprocess
    from napari_microseg.io.models import read_model_file
    from napari_microseg.pretrained import pretrained_path
    from napari_microseg.simulate.ccd import simulate_ccd_frame

    quick = {"epochs": 1, "patches_per_epoch": 2, "batch_size": 2, "patch_size": 64, "val_fraction": 0.0,
             "early_stopping_patience": None, "num_threads": 2, "seed": 0}
    base = pretrained_path("ccd_classes")
    frame = simulate_ccd_frame(shape=(64, 64), seed=4, n_clusters=0, glow_probability=0.0)  # classes 0 and 2 only
    assert set(np.unique(frame.classes)) <= {0, 2}
    result = drain(fine_tune_model(base, [frame.image], [frame.classes], tmp_path / "ccd_ft.pt", quick))
    config, base_config = read_model_file(result.model_path)["config"], read_model_file(base)["config"]
    assert config["n_classes"] == base_config["n_classes"] == 4
    assert config["class_names"] == base_config["class_names"]
    with pytest.raises(InputError, match="n_classes is 4"):  # nuclei ids are no CCD classes: refused
        drain(fine_tune_model(base, [frame.image], [np.arange(64 * 64).reshape(64, 64) % 9], tmp_path / "bad.pt", quick))
    tuned = tmp_path / "tuned.pt"
    tuned.write_bytes(tiny_nuclei_model.read_bytes())
    store_postprocess(tuned, {"seed_dynamics": 0.3, "min_mean_interior": 0.35, "tuned_ap@0.50": 0.9})
    image, truth = simulate_nuclei_image(shape=(128, 128), n_nuclei=12, seed=5)
    result = drain(fine_tune_model(tuned, [image], [truth], tmp_path / "nuc_ft.pt", quick))
    kept = read_model_file(result.model_path)["config"]["postprocess"]
    assert kept["seed_dynamics"] == 0.3 and kept["min_mean_interior"] == 0.35 and "tuned_ap@0.50" not in kept
    assert kept["inherited_from"] == "tuned.pt"
