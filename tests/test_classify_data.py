"""Crops, class balancing, folds and metrics of the classification core."""

from __future__ import annotations

import numpy as np
import pytest

from napari_microseg.classify.crops import object_crops
from napari_microseg.classify.data import (
    class_weights_from_labels,
    crop_around,
    epoch_indices,
    fold_indices,
    oversample_indices,
    response_crops,
    undersample_majority,
)
from napari_microseg.classify.evaluate import (
    choose_threshold,
    classification_report,
    confusion_at_threshold,
    per_class_metrics,
    per_subclass_accuracy,
    row_normalize,
)
from napari_microseg.errors import InputError


def _two_objects():
    image = np.zeros((120, 140), np.float32)
    labels = np.zeros((120, 140), np.uint16)
    yy, xx = np.mgrid[:120, :140]
    disk = (yy - 40) ** 2 + (xx - 50) ** 2 < 15**2
    labels[disk] = 1
    labels[90:100, 100:130] = 2  # a 10 x 30 bar
    rng = np.random.default_rng(0)
    image[:] = rng.uniform(0.4, 0.6, image.shape)
    image[disk] = 1.0
    return image, labels


@pytest.mark.parametrize("mode", ["margin", "tight", "masked"])
def test_object_crop_modes_shapes(mode):
    image, labels = _two_objects()
    crops, ids = object_crops(image, labels, mode=mode, size=(28, 28), margin=20, normalization={"kind": "none"})
    assert crops.shape == (2, 28, 28) and crops.dtype == np.float32
    assert list(ids) == [1, 2]
    crops32, _ = object_crops(image, labels, mode=mode, size=(32, 32), normalization={"kind": "none"})
    assert crops32.shape == (2, 32, 32)


def test_masked_crop_zeroes_outside_the_object():
    image, labels = _two_objects()
    masked, _ = object_crops(image, labels, mode="masked", size=(28, 28), normalization={"kind": "none"})
    tight, _ = object_crops(image, labels, mode="tight", size=(28, 28), normalization={"kind": "none"})
    # the disk fills its tight box: corners are outside the disk -> 0 in masked, background (~0.5) in tight
    assert masked[0, 0, 0] == 0 and masked[0, -1, -1] == 0
    assert tight[0, 0, 0] > 0.3
    assert masked[0, 14, 14] == pytest.approx(1.0, abs=1e-3)
    # the bar (10 x 30) is squared: rows above and below it are outside -> exactly 0
    assert np.all(masked[1, :5] == 0) and np.all(masked[1, -5:] == 0)
    assert np.all(masked[1, 12:16, 2:-2] > 0.3)


def test_margin_crop_sees_more_surroundings():
    image, labels = _two_objects()
    margin, _ = object_crops(image, labels, mode="margin", margin=30, size=(28, 28), normalization={"kind": "none"})
    tight, _ = object_crops(image, labels, mode="tight", size=(28, 28), normalization={"kind": "none"})
    # the bright disk covers a smaller share of the margin crop than of the tight crop
    assert (margin[0] > 0.8).mean() < (tight[0] > 0.8).mean()


def test_object_crops_bad_input():
    image, labels = _two_objects()
    with pytest.raises(InputError):
        object_crops(image, labels[:-1])
    with pytest.raises(InputError):
        object_crops(image, labels, mode="round")


def test_response_crop_around_box_and_mask():
    img = np.arange(100 * 80, dtype=np.uint16).reshape(100, 80)
    c = crop_around(img, (10, 5, 49, 47), (39, 42))  # box of exactly the crop size: cut as is
    assert c.shape == (39, 42) and c[0, 0] == img[10, 5]
    mask = np.zeros((100, 80), bool)
    mask[40:70, 20:49] = True  # 30 x 29 integration area, centre (55, 34.5)
    x = response_crops([img], masks=[mask])
    assert x.shape == (1, 1, 39, 42) and x.dtype == np.float32
    assert x.min() == 0 and x.max() == pytest.approx(1.0)  # per-image min-max
    fixed = response_crops([img], masks=[mask], normalization={"kind": "fixed", "offset": 0, "scale": 65535})
    assert fixed.max() < 0.2  # 16-bit scale kept
    with pytest.raises(InputError):
        response_crops([img])  # no box, wrong size


def test_oversampling_balances_classes():
    y = np.array([0] * 50 + [1] * 7 + [2] * 3)
    idx = oversample_indices(y, 0)
    counts = np.bincount(y[idx])
    assert list(counts) == [50, 50, 50]
    # every minority sample is used (repeated whole before random extras)
    assert set(idx[y[idx] == 2]) == {57, 58, 59}
    kept = undersample_majority(y, 0.2, 0)
    assert np.bincount(y[kept]).tolist() == [40, 7, 3]
    ep = epoch_indices(y, np.random.default_rng(1), oversample=True, undersample_fraction=0.2)
    assert np.bincount(y[ep]).tolist() == [40, 40, 40]


def test_class_weights_inverse_frequency():
    w = class_weights_from_labels(np.array([0, 0, 0, 1]), 3)
    assert w[0] == pytest.approx(4 / 9) and w[1] == pytest.approx(4 / 3) and w[2] == 0


def test_grouped_folds_keep_groups_together():
    y = np.tile([0, 1], 20)
    groups = np.repeat(np.arange(10), 4)  # 4 copies (gains) per sample
    folds = fold_indices(y, 5, groups=groups)
    assert len(folds) == 5
    for tr, te in folds:
        assert not set(groups[tr]) & set(groups[te])
    strat = fold_indices(y, 5)
    for tr, te in strat:
        assert np.bincount(y[te]).tolist() == [4, 4]


def test_metrics_on_hand_computed_confusion():
    cm = np.array([[50, 5, 0], [10, 30, 10], [0, 0, 5]])
    per = per_class_metrics(cm, ["a", "b", "c"]).set_index("class")
    # class a: tp 50, fn 5, fp 10, tn 45
    assert per.loc["a", "recall"] == pytest.approx(50 / 55)
    assert per.loc["a", "precision"] == pytest.approx(50 / 60)
    assert per.loc["a", "specificity"] == pytest.approx(45 / 55)
    assert per.loc["a", "npv"] == pytest.approx(45 / 50)
    # class c: tp 5, fn 0, fp 10, tn 95
    assert per.loc["c", "specificity"] == pytest.approx(95 / 105)
    assert per.loc["c", "npv"] == pytest.approx(1.0)
    assert per.loc["c", "f1"] == pytest.approx(2 * (5 / 15) * 1 / (5 / 15 + 1))
    rn = row_normalize(cm)
    assert rn[1].tolist() == pytest.approx([0.2, 0.6, 0.2])
    y_true = np.repeat([0, 0, 0, 1, 1, 1, 2, 2, 2], cm.ravel())
    y_pred = np.repeat([0, 1, 2, 0, 1, 2, 0, 1, 2], cm.ravel())
    rep = classification_report(y_true, y_pred, ["a", "b", "c"])
    assert (rep["confusion"] == cm).all()
    assert rep["summary"]["accuracy"] == pytest.approx(85 / 110)


def test_thresholds_flag_and_discard():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    c = confusion_at_threshold(y, p, 0.5)
    assert (c["tp"], c["fn"], c["fp"], c["tn"]) == (3, 1, 1, 3)
    flag = choose_threshold(y, p, "flag", max_rate=0.0)  # no bad image may pass
    assert flag["fn"] == 0 and flag["threshold"] == pytest.approx(0.4)
    discard = choose_threshold(y, p, "discard", max_rate=0.0)  # no good image may be thrown away
    assert discard["fp"] == 0 and discard["threshold"] > 0.6
    sub = per_subclass_accuracy([0, 1, 1], [0, 0, 1], ["good", "spike", "spike"]).set_index("subclass")
    assert sub.loc["spike", "accuracy"] == 0.5 and sub.loc["good", "accuracy"] == 1.0


def test_svm_baseline_separates_simple_shapes():
    from napari_microseg.classify.baseline import FEATURE_NAMES, features_from_crops, train_svm_baseline

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:28, :28]
    crops, y = [], []
    for i in range(40):
        r = rng.uniform(8, 12)
        d = np.hypot(yy - 14, xx - 14)
        if i % 2:  # ring
            c = np.exp(-0.5 * ((d - r) / 1.2) ** 2)
        else:  # filled
            c = 0.6 * (d < r) + 0.2
        c = (c + rng.normal(0, 0.05, c.shape)) * (d < r + 2)
        crops.append(c)
        y.append(i % 2)
    f = features_from_crops(np.array(crops))
    assert f.shape == (40, len(FEATURE_NAMES))
    clf = train_svm_baseline(f[:30], np.array(y[:30]))
    assert (clf.predict(f[30:]) == np.array(y[30:])).mean() >= 0.8


def test_grouped_folds_spread_a_rare_class_over_the_folds():
    """[T]'s 'uncertain' class is rare: with copies of each sample grouped, every test fold still gets
    some of it (GroupKFold alone packed the rare groups into a few folds), and groups stay whole."""
    y = np.zeros(400, int)
    y[np.arange(0, 400, 40)] = 1  # 10 rare samples ...
    groups = np.arange(400) // 2  # ... each with a second copy (2 gains) in its group
    y[np.arange(1, 400, 40)] = 1
    folds = fold_indices(y, 5, groups=groups, seed=0)
    for tr, te in folds:
        assert not set(groups[tr]) & set(groups[te])
        assert y[te].sum() >= 2, "a test fold without the rare class"
    for tr, te in fold_indices(y, 5, groups=groups, stratified=False):  # groups alone: still whole
        assert not set(groups[tr]) & set(groups[te])
