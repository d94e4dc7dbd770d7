"""Segmentation metrics on hand-computed cases (incl. the METHODS [N] expert table) and edge cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_microseg.errors import InputError
from napari_microseg.evaluation.metrics import (
    DEFAULT_THRESHOLDS,
    Overlaps,
    bootstrap_ap_difference,
    bootstrap_ap_interval,
    compute_overlaps,
    counts_to_scores,
    evaluate_dataset,
    evaluate_segmentation,
    instance_scores,
    match_instances,
    overlap_object_counts,
    overlap_object_scores,
    pixel_scores,
    pool_instance_scores,
)


def test_expert_table_from_methods_n():
    s = counts_to_scores(tp=2062, fp=28, fn=2)
    assert round(s["precision"], 3) == 0.987
    assert round(s["recall"], 3) == 0.999
    assert round(s["dice"], 3) == 0.993
    assert round(s["iou"], 3) == 0.986
    assert s["f1"] == s["dice"]


def test_counts_to_scores_accuracy_and_empty():
    s = counts_to_scores(3, 1, 2, tn=4)
    assert s["precision"] == pytest.approx(3 / 4)
    assert s["recall"] == pytest.approx(3 / 5)
    assert s["accuracy"] == pytest.approx(7 / 10)
    assert s["iou"] == pytest.approx(3 / 6)
    empty = counts_to_scores(0, 0, 0)
    assert empty["precision"] == empty["recall"] == empty["dice"] == empty["iou"] == 1.0
    only_fp = counts_to_scores(0, 2, 0)
    assert only_fp["precision"] == 0.0 and only_fp["iou"] == 0.0


def test_pixel_scores_hand_computed():
    gt = np.zeros((4, 4), int)
    pred = np.zeros((4, 4), int)
    gt[0, :4] = 1          # 4 px
    pred[0, 2:4] = 5       # 2 px overlap
    pred[3, 3] = 2         # 1 px false positive
    s = pixel_scores(gt, pred)
    assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (2, 1, 2, 11)
    assert s["precision"] == pytest.approx(2 / 3)
    assert s["recall"] == pytest.approx(0.5)
    assert s["accuracy"] == pytest.approx(13 / 16)
    assert s["dice"] == pytest.approx(4 / 7)
    assert s["iou"] == pytest.approx(2 / 5)


def test_any_overlap_object_counts():
    gt = np.zeros((20, 40), np.uint16)
    gt[2:6, 2:6] = 1      # A
    gt[2:6, 8:12] = 2     # B
    gt[12:16, 30:34] = 3  # C: missed
    pred = np.zeros_like(gt)
    pred[3:5, 3:11] = 1    # clump over A and B -> one TP
    pred[15:19, 2:6] = 2   # no overlap -> FP
    pred[5:8, 5:8] = 3     # touches A by one pixel -> TP (no IoU threshold)
    c = overlap_object_counts(gt, pred)
    assert c == {"tp": 2, "fp": 1, "fn": 1, "n_gt": 3, "n_pred": 3, "gt_detected": 2}
    s = overlap_object_scores(gt, pred)
    assert s["precision"] == pytest.approx(2 / 3)
    assert s["recall"] == pytest.approx(2 / 3)
    assert s["iou"] == pytest.approx(2 / 4)


def test_iou_matching_thresholds():
    gt = np.zeros((30, 30), np.uint16)
    pred = np.zeros_like(gt)
    gt[5:15, 5:15] = 4         # 100 px
    pred[5:15, 7:17] = 9       # shifted 2 px: intersection 80, union 120 -> IoU 2/3
    gt[20:25, 20:25] = 1       # unmatched gt
    ov = compute_overlaps(gt, pred)
    np.testing.assert_allclose(ov.dense(), [[0.0], [2 / 3]])
    assert ov.gt_ids.tolist() == [1, 4] and ov.pred_ids.tolist() == [9]
    table = instance_scores(gt, pred)
    assert table.threshold.tolist() == pytest.approx(list(DEFAULT_THRESHOLDS))
    assert len(table) == 9
    matched = table.set_index("threshold").tp
    assert matched.loc[0.65] == 1 and matched.loc[0.7] == 0
    row = table.iloc[0]
    assert (row.tp, row.fp, row.fn) == (1, 0, 1)
    assert row.ap == pytest.approx(0.5)
    assert row.f1 == pytest.approx(2 / 3)
    assert row.sq == pytest.approx(2 / 3)
    assert row.pq == pytest.approx(4 / 9)
    last = table.iloc[-1]
    assert (last.tp, last.fp, last.fn, last.ap) == (0, 1, 2, 0.0)


def test_hungarian_beats_greedy():
    # G0-P0 0.9 would be chosen greedily and leave one match; two matches are possible
    ov = Overlaps(gt_ids=np.array([1, 2]), pred_ids=np.array([1, 2]),
                  pairs_gt=np.array([0, 0, 1]), pairs_pred=np.array([0, 1, 0]), iou=np.array([0.9, 0.4, 0.4]))
    g, p, iou = match_instances(ov, threshold=0.3)
    assert sorted(zip(g.tolist(), p.tolist())) == [(0, 1), (1, 0)]
    g, p, iou = match_instances(ov, threshold=0.5)
    assert list(zip(g.tolist(), p.tolist())) == [(0, 0)] and iou.tolist() == [0.9]


def test_empty_gt_and_empty_pred():
    empty = np.zeros((10, 10), np.uint16)
    objs = empty.copy()
    objs[1:3, 1:3] = 1
    objs[5:8, 5:8] = 2
    both = evaluate_segmentation(empty, empty)
    assert both["ap@0.50"] == 1.0 and both["pixel_dice"] == 1.0 and both["object_precision"] == 1.0
    no_gt = evaluate_segmentation(empty, objs)
    assert no_gt["ap@0.50"] == 0.0 and no_gt["object_fp"] == 2 and no_gt["precision@0.50"] == 0.0
    no_pred = evaluate_segmentation(objs, empty)
    assert no_pred["ap@0.50"] == 0.0 and no_pred["object_fn"] == 2 and no_pred["recall@0.50"] == 0.0
    assert no_pred["n_gt"] == 2 and no_pred["n_pred"] == 0
    with pytest.raises(InputError):
        evaluate_segmentation(empty, np.zeros((10, 11), np.uint16))


def test_identical_labels_score_one_with_permuted_ids():
    rng = np.random.default_rng(0)
    gt = np.zeros((64, 64), np.uint16)
    for i in range(1, 9):
        y, x = rng.integers(0, 56, 2)
        gt[y:y + 6, x:x + 6] = i
    perm = np.array([0] + rng.permutation(np.arange(100, 100 + 8)).tolist())
    pred = perm[gt]
    r = evaluate_segmentation(gt, pred)
    n = len(np.unique(gt)) - 1
    assert r["n_gt"] == r["n_pred"] == n
    assert r["map"] == 1.0 and r["pq"] == 1.0 and r["pixel_iou"] == 1.0


def test_dataset_pooling():
    a_gt = np.zeros((10, 10), np.uint16)
    a_gt[0:4, 0:4] = 1
    a_pred = a_gt.copy()          # 1 TP
    b_gt = np.zeros((10, 10), np.uint16)
    b_gt[0:4, 0:4] = 1
    b_gt[6:9, 6:9] = 2
    b_pred = np.zeros_like(b_gt)
    b_pred[0:4, 5:9] = 1          # FP, and both gt missed
    per_image, pooled = evaluate_dataset([("a", a_gt, a_pred), ("b", b_gt, b_pred)])
    assert per_image.name.tolist() == ["a", "b"]
    assert per_image["ap@0.50"].tolist() == [1.0, 0.0]
    # pooled: TP 1, FP 1, FN 2 -> AP 1/4, not the mean of per-image APs (0.5)
    assert pooled["ap@0.50"] == pytest.approx(0.25)
    assert pooled["mean_image_map"] == pytest.approx(0.5)
    assert pooled["object_tp"] == 1 and pooled["object_fp"] == 1 and pooled["object_fn"] == 2
    assert pooled["pixel_tp"] == 16 and pooled["n_images"] == 2
    pooled_table = pool_instance_scores([instance_scores(a_gt, a_pred), instance_scores(b_gt, b_pred)])
    assert pooled_table.iloc[0].ap == pytest.approx(0.25)
    with pytest.raises(InputError):
        evaluate_dataset([])


def test_bootstrap_interval_of_the_pooled_ap():
    a_gt = np.zeros((10, 10), np.uint16)
    a_gt[0:4, 0:4] = 1
    b_gt = a_gt.copy()
    b_gt[6:9, 6:9] = 2
    b_pred = np.zeros_like(b_gt)
    b_pred[0:4, 5:9] = 1
    good, bad = instance_scores(a_gt, a_gt), instance_scores(b_gt, b_pred)  # AP 1 (1/1/0/0), AP 0 (TP 0, FP 1, FN 2)
    # resamples of two images: {a, a} AP 1, {b, b} AP 0, {a, b} AP 1/4: the 95 % interval spans 0..1
    assert bootstrap_ap_interval([good, bad]) == pytest.approx((0.0, 1.0))
    # only {a, b} (half of all draws) gives 1/4: a 40 % interval holds nothing else
    assert bootstrap_ap_interval([good, bad], level=0.4) == pytest.approx((0.25, 0.25))
    # images alike: no spread; many images of both kinds: a narrow interval around the pooled AP 1/4
    assert bootstrap_ap_interval([bad, bad, bad]) == (0.0, 0.0)
    low, high = bootstrap_ap_interval([good, bad] * 200)
    assert 0.2 < low < 0.25 < high < 0.3
    # resamples drawn in chunks (400 images: 10,000 per chunk) give the same kind of interval
    low_many, high_many = bootstrap_ap_interval([good, bad] * 200, n_resamples=25_000)
    assert abs(low_many - low) < 0.01 and abs(high_many - high) < 0.01
    # frames of one stack are drawn together: two stacks behave as two images
    # (stack m: TP 2; stack n: TP 0, FP 2, FN 4; {m, n} pools to 2 / 8)
    stacked = bootstrap_ap_interval([good, good, bad, bad], groups=["m", "m", "n", "n"], level=0.4)
    assert stacked == pytest.approx((0.25, 0.25))
    assert all(np.isnan(bootstrap_ap_interval([good, good], groups=["m", "m"])))  # one stack: no interval
    with pytest.raises(InputError, match="n_resamples"):
        bootstrap_ap_interval([good, bad], n_resamples=0)
    with pytest.raises(InputError, match="groups"):
        bootstrap_ap_interval([good, bad], groups=["m"])
    assert all(np.isnan(bootstrap_ap_interval([good])))
    with pytest.raises(InputError, match="threshold"):
        bootstrap_ap_interval([good, bad], threshold=0.33)
    with pytest.raises(InputError, match="level"):
        bootstrap_ap_interval([good, bad], level=1.0)
    _, pooled = evaluate_dataset([("a", a_gt, a_gt), ("b", b_gt, b_pred)])
    assert (pooled["ap_low@0.50"], pooled["ap_high@0.50"]) == pytest.approx((0.0, 1.0))
    # frames of one stack ("name[t]") are one draw: a single stack gives no interval
    _, pooled = evaluate_dataset([("movie.tif[0]", a_gt, a_gt), ("movie.tif[1]", b_gt, b_pred)])
    assert np.isnan(pooled["ap_low@0.50"]) and np.isnan(pooled["ap_high@0.50"])


def test_paired_bootstrap_sees_a_small_gain_that_the_images_alone_would_hide():
    rng = np.random.default_rng(1)
    n_gt = rng.integers(5, 60, size=80)  # images from sparse to crowded, some hard (few found), some easy
    found = (n_gt * rng.uniform(0.5, 1.0, size=80)).astype(int)
    before = np.stack([found, np.zeros(80, int), n_gt - found], axis=1)
    after = before.copy()
    after[::2, 0] += (after[::2, 2] > 0)  # one more nucleus found in every other image
    after[::2, 2] -= (before[::2, 2] > 0)
    difference, low, high = bootstrap_ap_difference(before, after)
    gained = (after[:, 0].sum() - before[:, 0].sum()) / n_gt.sum()
    assert difference == pytest.approx(gained) and 0 < low < difference < high
    own_low, own_high = bootstrap_ap_interval([pd.DataFrame({"threshold": [0.5], "tp": [c[0]], "fp": [c[1]], "fn": [c[2]]})
                                               for c in before])
    assert (high - low) < 0.25 * (own_high - own_low)  # the images' own spread cancels in the pairs
    assert bootstrap_ap_difference(before, before)[1:] == (0.0, 0.0)
    assert all(np.isnan(bootstrap_ap_difference(before[:1], after[:1])[1:]))
    with pytest.raises(InputError, match="different numbers of images"):
        bootstrap_ap_difference(before, after[:10])


def test_label_images_that_are_not_labels_are_refused():
    one = np.zeros((10, 10), np.int32)
    one[2:5, 2:5] = 1
    negative = one.copy()
    negative[0, 0] = -1  # e.g. an "ignore" value: not an object, not background
    with pytest.raises(InputError, match="negative values"):
        evaluate_segmentation(negative, one)
    with pytest.raises(InputError, match="non-integer"):
        evaluate_segmentation(one.astype(float) + 0.5, one)
    with pytest.raises(InputError, match="empty"):
        evaluate_segmentation(np.zeros((0, 0), int), np.zeros((0, 0), int))
    with pytest.raises(InputError, match="thresholds"):
        evaluate_segmentation(one, one, thresholds=())
    assert evaluate_segmentation(one.astype(float), one)["ap@0.50"] == 1.0
