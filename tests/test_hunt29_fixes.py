"""Fixes of session 29's bug hunts, each test failing on the code before its fix."""

from __future__ import annotations

import shutil

import numpy as np
import pytest


def test_segmentation_dock_chooses_a_model_just_trained_unless_the_user_picked_one(make_napari_viewer, tmp_path):
    """After a training the Segmentation dock kept the shipped model selected: a biologist pressed Run
    and segmented with the shipped model, not the one just trained. A dock whose model the user has not
    picked now follows the newest model trained; a user's pick (or a fine-tune's result) stays."""
    from napari_microseg.pretrained import resolve_model
    from napari_microseg.widgets.segmentation import SegmentationWidget, add_recent_model

    trained = tmp_path / "mine.pt"
    shutil.copy(resolve_model("nuclei_fluorescence_fast"), trained)
    viewer = make_napari_viewer(show=False)
    untouched, picked = SegmentationWidget(viewer), SegmentationWidget(viewer)
    assert untouched.model_choice.value == "nuclei_fluorescence"
    picked.model_choice.value = "nuclei_fluorescence_fast"
    add_recent_model(str(trained))  # what the Training dock calls when its run ends
    assert untouched.model_choice.value == str(trained)
    assert picked.model_choice.value == "nuclei_fluorescence_fast"
    assert picked.model_choice.choices[0] == str(trained)  # offered first all the same
    assert SegmentationWidget(viewer).model_choice.value == str(trained)  # a dock opened afterwards
    fine_tuned, second = tmp_path / "mine-ft1.pt", tmp_path / "mine2.pt"
    shutil.copy(trained, fine_tuned), shutil.copy(trained, second)
    untouched.set_model(str(fine_tuned))  # a fine-tune's result, chosen for the user
    add_recent_model(str(second))
    assert untouched.model_choice.value == str(fine_tuned)
    for path in (trained, fine_tuned, second):
        path.unlink()
    assert SegmentationWidget(viewer).model_choice.value == "nuclei_fluorescence"  # the files are gone
