"""Post-processing: thresholds, size filters, holes, border removal, watershed split of touching nuclei."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_microseg.inference.postprocess import (
    binary_to_labels,
    class_map_to_instances,
    fill_enclosed_holes,
    filter_labels,
    label_dtype,
    multiclass_to_classes,
    probabilities_to_labels,
    three_class_to_labels,
)


def disc(shape, center, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2


def touching_nuclei(shape=(100, 120), c1=(50, 42), c2=(50, 68), r=15):
    """Two overlapping discs and three_class-like probabilities (background, interior, boundary)."""
    d1, d2 = disc(shape, c1, r), disc(shape, c2, r)
    union = d1 | d2
    outline = union & ~ndi.binary_erosion(union, iterations=2)
    # contact line: pixels of the union that are about equally far from both centres
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    dist1 = np.hypot(yy - c1[0], xx - c1[1])
    dist2 = np.hypot(yy - c2[0], xx - c2[1])
    contact = union & (np.abs(dist1 - dist2) <= 2.0)
    boundary = outline | contact
    interior = union & ~boundary
    p = np.full((3,) + shape, 0.05, np.float32)
    p[0][~union] = 0.9
    p[1][interior] = 0.9
    p[2][boundary] = 0.9
    p /= p.sum(0, keepdims=True)
    return p, d1, d2


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_watershed_splits_touching_nuclei():
    p, d1, d2 = touching_nuclei()
    labels = three_class_to_labels(p)
    assert labels.dtype == np.uint16
    assert labels.max() == 2
    ids = [np.bincount(labels[d].ravel()).argmax() for d in (d1 & ~d2, d2 & ~d1)]
    assert set(ids) == {1, 2}
    for lab_id, d in zip(ids, (d1, d2)):
        assert iou(labels == lab_id, d) > 0.8
    # boundary pixels are part of the objects: foreground covers the union
    assert iou(labels > 0, d1 | d2) > 0.97
    # the binary route (threshold + connected components) sees one clump, as in [N]
    fg = 1 - p[0]
    assert binary_to_labels(fg).max() == 1
    # dispatcher
    np.testing.assert_array_equal(probabilities_to_labels(p, "three_class"), labels)


def test_unseeded_foreground_is_kept():
    p, d1, d2 = touching_nuclei()
    # a small blob that is all boundary class (no interior seed)
    blob = disc(p.shape[1:], (15, 15), 4)
    p[:, blob] = np.array([0.05, 0.05, 0.9], np.float32)[:, None]
    labels = three_class_to_labels(p)
    assert labels.max() == 3
    assert np.unique(labels[blob]).tolist() == [3]


def test_binary_threshold_sizes_holes_border():
    fg = np.zeros((60, 60), np.float32)
    fg[10:20, 10:20] = 0.9          # 100 px square with a hole
    fg[14:16, 14:16] = 0.1
    fg[30:32, 30:32] = 0.8          # 4 px speck
    fg[0:10, 40:50] = 0.7           # touches the top border
    fg[40:55, 40:55] = 0.49         # below threshold
    lab = binary_to_labels(fg, min_size=8)
    assert lab.max() == 2
    assert (lab > 0).sum() == 100 + 100  # hole filled
    assert binary_to_labels(fg, min_size=0).max() == 3
    assert binary_to_labels(fg, min_size=0, fill_holes=False)[14, 14] == 0
    lab_nb = binary_to_labels(fg, min_size=8, remove_border=True)
    assert lab_nb.max() == 1 and lab_nb[15, 15] == 1
    assert binary_to_labels(fg, max_size=50, min_size=0).max() == 1  # only the speck
    assert binary_to_labels(fg, threshold=0.4, min_size=0).max() == 4
    # K=1 and K=2 outputs give the same labels
    two = np.stack([1 - fg, fg])
    np.testing.assert_array_equal(probabilities_to_labels(fg[None], "binary"), probabilities_to_labels(two, "binary"))


def test_filter_relabels_sequentially_and_dtype():
    lab = np.zeros((10, 10), np.int32)
    lab[1:3, 1:3] = 7
    lab[5:9, 5:9] = 70000
    out = filter_labels(lab)
    assert sorted(np.unique(out).tolist()) == [0, 1, 2] and out.dtype == np.uint16
    assert label_dtype(65535) == np.uint16 and label_dtype(65536) == np.uint32
    assert filter_labels(np.zeros((4, 4), int)).max() == 0


def test_fill_label_holes():
    lab = np.zeros((12, 12), np.uint16)
    lab[2:9, 2:9] = 3
    lab[4:6, 4:6] = 0
    filled = fill_enclosed_holes(lab)
    assert (filled[4:6, 4:6] == 3).all()
    assert (filled[0] == 0).all()


def test_multiclass_argmax_and_instances():
    p = np.zeros((4, 20, 20), np.float32)
    p[0] = 0.5
    p[1, :, 0:2] = 0.9          # glowing column
    p[3, 5:7, 10:12] = 0.9      # cluster
    p[3, 15:17, 15:17] = 0.9    # another cluster
    cm = multiclass_to_classes(p)
    assert cm.dtype == np.uint8
    assert set(np.unique(cm).tolist()) == {0, 1, 3}
    inst, classes = class_map_to_instances(cm)
    assert inst.max() == 3 and sorted(classes.tolist()) == [1, 3, 3]
    np.testing.assert_array_equal(probabilities_to_labels(p, "multiclass"), cm)
    with pytest.raises(ValueError):
        probabilities_to_labels(p, "nonsense")


def test_fill_mask_holes_matches_scipy():
    from napari_microseg.inference.postprocess import fill_mask_holes

    rng = np.random.default_rng(5)
    for _ in range(5):
        mask = ndi.gaussian_filter(rng.random((90, 110)), 2) > 0.5
        np.testing.assert_array_equal(fill_mask_holes(mask), ndi.binary_fill_holes(mask))
    assert fill_mask_holes(np.ones((4, 4), bool)).all()
    assert not fill_mask_holes(np.zeros((4, 4), bool)).any()


def test_distance_seeds_split_nuclei_whose_cores_touch():
    """Two touching discs whose predicted interiors join (no boundary predicted between them):
    the probability seeds see one core, the distance seeds find two peaks."""
    shape = (100, 120)
    d1, d2 = disc(shape, (50, 40), 16), disc(shape, (50, 70), 16)
    union = d1 | d2
    p = np.full((3,) + shape, 0.05, np.float32)
    p[0][~union] = 0.9
    p[1][union] = 0.9
    p /= p.sum(0, keepdims=True)
    assert three_class_to_labels(p, seed_method="probability").max() == 1
    labels = three_class_to_labels(p, seed_method="distance")
    assert labels.max() == 2
    for d in (d1 & ~d2, d2 & ~d1):
        assert len(np.unique(labels[d])) == 1
    # a high seed_dynamics merges the two peaks again
    assert three_class_to_labels(p, seed_method="distance", seed_dynamics=30.0).max() == 1
    with pytest.raises(ValueError, match="seed_method"):
        three_class_to_labels(p, seed_method="nope")


def test_watershed_in_row_groups_equals_the_whole_frame_watershed(monkeypatch):
    # many blobs, several markers in most: flooding them in groups of a few rows at a time
    # gives exactly the labels of one whole-frame watershed
    from skimage.segmentation import watershed

    import napari_microseg.inference.postprocess as pp

    rng = np.random.default_rng(5)
    height = ndi.gaussian_filter(rng.random((300, 200)).astype(np.float32), 2)
    mask = height > np.percentile(height, 55)
    peaks = (height == ndi.maximum_filter(height, size=3)) & mask
    markers, n = ndi.label(peaks, structure=np.ones((3, 3), bool))
    comp, n_comp = ndi.label(mask)
    assert n > n_comp > 20  # several components hold two or more markers
    reference = watershed(-height, markers=markers, mask=mask)
    whole = pp.watershed_where_needed(-height, markers, mask)
    monkeypatch.setattr(pp, "WATERSHED_ROWS", 16)
    grouped = pp.watershed_where_needed(-height, markers, mask)
    np.testing.assert_array_equal(whole, reference)
    np.testing.assert_array_equal(grouped, reference)


def test_merge_by_dynamics_matches_h_maxima_seeded_watershed():
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    from napari_microseg.inference.postprocess import merge_basins_by_dynamics

    rng = np.random.default_rng(3)
    height = ndi.gaussian_filter(rng.random((120, 140)).astype(np.float32), 3) * 40
    mask = height > np.percentile(height, 30)
    height = np.where(mask, height - height[mask].min() + 0.1, 0).astype(np.float32)
    for dyn in (0.2, 0.5, 1.5):
        fast = merge_basins_by_dynamics(height, mask, dyn)
        seeds, _ = ndi.label(h_maxima(height, dyn) & mask, structure=np.ones((3, 3)))
        ref = watershed(-height, markers=seeds, mask=mask)
        assert fast.max() > 0 and len(np.unique(fast)) == len(np.unique(ref))
        # same partition (up to label values): each fast basin maps to one reference basin
        pairs = np.unique(np.stack([fast[mask], ref[mask]]), axis=1)
        agree = sum(((fast == a) & (ref == b)).sum() for a, b in pairs.T if a and b)
        assert agree / mask.sum() > 0.97


def test_banded_three_class_matches_whole_frame():
    """Huge frames are post-processed in bands; every object comes out once and the same as on the whole frame."""
    from napari_microseg.evaluation.metrics import compute_overlaps, match_instances
    from napari_microseg.inference.postprocess import three_class_to_labels_banded

    rng = np.random.default_rng(7)
    shape = (700, 260)
    truth = np.zeros(shape, np.int32)
    for i in range(1, 140):  # discs, many touching, some across band edges
        cy, cx, r = rng.integers(10, shape[0] - 10), rng.integers(10, shape[1] - 10), rng.integers(6, 11)
        d = disc(shape, (cy, cx), r)
        truth[d & (truth == 0)] = i
    boundary = (ndi.grey_dilation(truth, size=3) != ndi.grey_erosion(truth, size=3)) & (truth > 0)
    p = np.full((3,) + shape, 0.05, np.float32)
    p[0][truth == 0] = 0.9
    p[1][(truth > 0) & ~boundary] = 0.9
    p[2][boundary] = 0.9
    p /= p.sum(0, keepdims=True)
    whole = three_class_to_labels(p)
    banded = three_class_to_labels_banded(p.astype(np.float16), band_rows=160, margin=40)
    assert banded.max() == whole.max()
    overlaps = compute_overlaps(whole, banded)
    matched = len(match_instances(overlaps, 0.9)[0])
    assert matched >= 0.97 * whole.max()
    assert len(np.unique(banded)) - 1 == banded.max()  # sequential, each id once


def test_unsure_objects_are_dropped_by_mean_interior_probability():
    shape = (80, 120)
    sure, unsure = disc(shape, (40, 30), 12), disc(shape, (40, 90), 12)
    p = np.zeros((3,) + shape, np.float32)
    p[0] = 1.0
    # the sure nucleus: interior 0.9; the unsure one (a faint neurite-like blob): foreground, interior only 0.3
    p[0][sure], p[1][sure], p[2][sure] = 0.02, 0.9, 0.08
    p[0][unsure], p[1][unsure], p[2][unsure] = 0.1, 0.3, 0.6
    p[1][unsure & disc(shape, (40, 90), 3)] = 0.75  # a small confident core gives it a seed
    p[2][unsure & disc(shape, (40, 90), 3)] = 0.15
    kept_all = three_class_to_labels(p, seed_threshold=0.7)
    assert kept_all.max() == 2
    filtered = three_class_to_labels(p, seed_threshold=0.7, min_mean_interior=0.4)
    assert filtered.max() == 1
    assert iou(filtered == 1, sure) > 0.9 and not (filtered[unsure] > 0).any()
    # 0 keeps everything, as before the option existed
    np.testing.assert_array_equal(three_class_to_labels(p, seed_threshold=0.7, min_mean_interior=0.0), kept_all)


def small_and_large_nuclei(shape=(60, 90)):
    """Three-class probabilities of a 3x3 nucleus with an unsure rim, a 7-px-radius nucleus and a 2-px speck.

    The small nucleus's rim (one pixel around it, 4-connected) has P(foreground)
    0.3: below the mask threshold 0.5 but above GROW_MIN_FOREGROUND; the large
    one has the same rim; the speck (2 px) lies in background of P(fg) 0.3.
    """
    p = np.zeros((3,) + shape, np.float32)
    p[0] = 0.95
    p[2] = 0.05
    small = np.zeros(shape, bool)
    small[19:22, 19:22] = True
    large = disc(shape, (30, 60), 7)
    speck = np.zeros(shape, bool)
    speck[50, 10:12] = True
    cross = ndi.generate_binary_structure(2, 1)
    for obj in (small, large, speck):
        rim = ndi.binary_dilation(obj, cross) & ~obj
        p[0][rim], p[1][rim], p[2][rim] = 0.7, 0.1, 0.2
        p[0][obj], p[1][obj], p[2][obj] = 0.05, 0.9, 0.05
    return p, small, large, speck


def test_small_objects_grow_one_pixel_where_the_network_is_unsure():
    from napari_microseg.inference.postprocess import GROW_MIN_FOREGROUND

    assert 0.3 > GROW_MIN_FOREGROUND
    p, small, large, speck = small_and_large_nuclei()
    plain = three_class_to_labels(p, seed_method="probability", min_size=4)
    grown = three_class_to_labels(p, seed_method="probability", min_size=4, grow_small_below=40)
    assert plain.max() == grown.max() == 2  # the speck (2 px) is under min_size either way
    s_plain, s_grown = plain[20, 20], grown[20, 20]
    assert (plain == s_plain).sum() == 9
    expected = ndi.binary_dilation(small, ndi.generate_binary_structure(2, 1))  # 9 + 12 px
    np.testing.assert_array_equal(grown == s_grown, expected)
    # the large nucleus (149 px) and everything else stay as they were
    l_plain, l_grown = plain[30, 60], grown[30, 60]
    np.testing.assert_array_equal(plain == l_plain, grown == l_grown)
    assert not grown[speck].any()
    # 0 (the default) changes nothing
    np.testing.assert_array_equal(three_class_to_labels(p, seed_method="probability", min_size=4, grow_small_below=0),
                                  plain)


def test_growth_stops_at_confident_background_and_other_objects():
    from napari_microseg.inference.postprocess import grow_small_objects

    labels = np.zeros((8, 12), np.uint16)
    labels[3:5, 2:4] = 1           # 4 px
    labels[3:5, 5:7] = 2           # 4 px, one pixel of background between them (column 4)
    labels[3:5, 9:11] = 3          # 4 px
    p_bg = np.full(labels.shape, 0.5, np.float32)
    p_bg[:, 11] = 0.95             # confident background right of object 3
    out = grow_small_objects(labels, p_bg, below_area=5)
    assert out is not labels and labels[2, 2] == 0  # a copy; the input is untouched
    np.testing.assert_array_equal(out[labels > 0], labels[labels > 0])  # labelled pixels keep their label
    assert out[3, 4] == 2          # the gap between two small objects goes to the higher label
    assert out[2, 2] == 1 and out[5, 3] == 1 and out[3, 1] == 1
    assert out[3, 11] == 0 and out[3, 8] == 3
    assert out[2, 1] == 0          # 4-connected: no diagonal growth
    np.testing.assert_array_equal(grow_small_objects(labels, p_bg, below_area=4), labels)  # none under 4 px


def test_growth_in_bands_equals_whole_frame(monkeypatch):
    """Band edges (1024 rows in real use) do not change the result, also when growing in place."""
    from napari_microseg.inference import postprocess
    from napari_microseg.inference.postprocess import grow_small_objects

    rng = np.random.default_rng(3)
    labels, _ = ndi.label(rng.random((97, 64)) > 0.8)
    labels = labels.astype(np.uint32)
    p_bg = rng.random(labels.shape).astype(np.float32)
    whole = grow_small_objects(labels, p_bg, below_area=4, min_foreground=0.2)
    assert (whole != labels).sum() > 50
    monkeypatch.setattr(postprocess, "_BAND", 7)
    np.testing.assert_array_equal(grow_small_objects(labels, p_bg, below_area=4, min_foreground=0.2), whole)
    inplace = labels.copy()
    assert grow_small_objects(inplace, p_bg, below_area=4, min_foreground=0.2, in_place=True) is inplace
    np.testing.assert_array_equal(inplace, whole)


def test_banded_three_class_grows_small_objects_like_the_whole_frame():
    from napari_microseg.inference.postprocess import three_class_to_labels_banded

    p, small, large, speck = small_and_large_nuclei(shape=(400, 90))
    kw = dict(seed_method="probability", min_size=4, grow_small_below=40)
    whole = three_class_to_labels(p, **kw)
    banded = three_class_to_labels_banded(p, band_rows=20, margin=20, **kw)  # a band edge cuts the small one
    np.testing.assert_array_equal(banded > 0, whole > 0)
    assert banded[20, 20] > 0 and (banded == banded[20, 20]).sum() == 21
