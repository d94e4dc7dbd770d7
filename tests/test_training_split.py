"""One-image validation split: the held-out strip follows the annotations when a user paints only a corner."""

from __future__ import annotations

import numpy as np
import pytest

from napari_microseg.errors import InputError
from napari_microseg.training.data import IGNORE, LabelledImage, TrainingData, split_train_val


def _data(target: np.ndarray) -> TrainingData:
    image = np.random.default_rng(0).random((1, *target.shape)).astype(np.float32)
    return TrainingData([LabelledImage(image, target, "img")], "binary", 2, {"kind": "none"}, "")


def test_dense_annotation_holds_out_the_end_strip():
    target = np.zeros((100, 200), np.int64)
    train, val = split_train_val(_data(target), val_fraction=0.2)
    assert val.items[0].shape == (100, 40) and len(train.items) == 1 and train.items[0].shape == (100, 160)


def test_sparse_painting_in_left_third_still_splits():
    target = np.full((120, 300), IGNORE, np.int64)
    target[:, :100] = 0
    target[20:40, 10:30] = 1
    target[70:90, 60:80] = 1
    train, val = split_train_val(_data(target), val_fraction=0.2)
    assert val.items[0].n_annotated > 0
    assert sum(it.n_annotated for it in train.items) > val.items[0].n_annotated
    total = sum(it.shape[1] for it in train.items) + val.items[0].shape[1]
    assert total <= 300  # parts never overlap (training parts without annotation are dropped)
    assert val.items[0].shape[1] == 60


def test_unsplittable_annotation_gives_clear_message():
    target = np.full((64, 256), IGNORE, np.int64)
    target[:, 5] = 0  # one annotated column: any strip holds all of it or none
    with pytest.raises(InputError, match="too few or too concentrated"):
        split_train_val(_data(target), val_fraction=0.2)
