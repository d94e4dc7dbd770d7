"""Session 38: fixes found by reading the code and by helpers' hunts (each test failed before its fix)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest


def _disks(shape=(64, 64), step=16, radius=5) -> np.ndarray:
    """uint16 instance labels: a grid of disks (ids 1..N)."""
    from skimage.draw import disk

    labels = np.zeros(shape, np.uint16)
    label = 1
    for y in range(step // 2, shape[0], step):
        for x in range(step // 2, shape[1], step):
            rr, cc = disk((y, x), radius, shape=shape)
            labels[rr, cc] = label
            label += 1
    return labels


@pytest.mark.parametrize("mode", ["binary", "three_class"])
def test_training_targets_are_kept_in_one_byte_a_pixel_and_batches_are_int64(mode):
    """int64 targets were 8 B/px held for the whole training (two thirds of the data's memory); they are int8 now,
    with the same values, and the batches the network gets are still int64."""
    from napari_microseg.training.data import PatchSampler, make_target, prepare_training_data, tile_for_validation

    labels = np.stack([_disks(), _disks()[::-1]])
    image = (labels > 0).astype(np.float32) * 100 + np.random.default_rng(0).normal(0, 5, labels.shape)
    data = prepare_training_data(image, labels, output_mode=mode)
    assert [item.target.dtype for item in data.items] == [np.dtype(np.int8)] * 2
    for item, frame in zip(data.items, labels):
        np.testing.assert_array_equal(item.target, make_target(frame, mode))  # the same classes
    x, y = PatchSampler(data, 32, seed=1).sample(4)
    assert x.dtype == np.float32 and y.dtype == np.int64 and y.min() >= 0 and y.max() == (2 if mode == "three_class" else 1)
    assert tile_for_validation(data, 32)[1].dtype == np.int64


def test_many_classes_get_a_wider_target_type():
    from napari_microseg.training.data import prepare_training_data, target_dtype

    assert target_dtype(2) == np.int8 and target_dtype(128) == np.int8 and target_dtype(129) == np.int16
    labels = np.arange(64 * 64, dtype=np.int32).reshape(64, 64) % 200
    data = prepare_training_data(np.random.default_rng(0).random((64, 64)), labels, output_mode="multiclass",
                                 n_classes=200)
    assert data.items[0].target.dtype == np.int16 and int(data.items[0].target.max()) == 199


def test_a_resumed_run_knows_its_validation_images_by_the_digests_recorded_with_int64_targets():
    """The run record names validation images by a digest of their targets: the int8 targets must give the digest
    the int64 ones gave, or runs recorded before could not be resumed."""
    from napari_microseg.training.data import make_target, prepare_training_data
    from napari_microseg.training.trainer import annotation_digest

    labels = _disks()
    item = prepare_training_data(labels.astype(np.float32), labels, output_mode="three_class").items[0]
    target64 = np.ascontiguousarray(make_target(labels, "three_class"), dtype=np.int64)
    recorded = hashlib.sha1(repr(target64.shape).encode() + target64.tobytes()).hexdigest()[:16]
    assert annotation_digest(item) == recorded
