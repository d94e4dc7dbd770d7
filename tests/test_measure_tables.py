"""Object tables, counts per frame, the [N] area-based count, atomic CSV writing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_microseg.errors import InputError
from napari_microseg.measure.counts import (
    class_fractions,
    count_by_area,
    count_objects,
    counts_from_objects,
    mean_object_area,
)
from napari_microseg.measure.tables import (
    OBJECT_COLUMNS,
    check_overwrite,
    frame_object_table,
    object_table,
    write_objects_csv,
)


def two_objects():
    lab = np.zeros((20, 30), np.uint16)
    lab[2:6, 3:9] = 1        # 4 x 6 = 24 px, centroid (3.5, 5.5)
    lab[10:19, 20:23] = 5    # 9 x 3 = 27 px
    img = np.zeros(lab.shape, np.float32)
    img[2:6, 3:9] = 10
    img[2, 3] = 34           # mean (23*10 + 34) / 24 = 11, max 34
    img[10:19, 20:23] = 3
    return lab, img


def test_frame_table_values():
    lab, img = two_objects()
    df = frame_object_table(lab, img, t=4)
    assert list(df.columns[:5]) == OBJECT_COLUMNS
    assert df.label.tolist() == [1, 5]
    assert df.t.tolist() == [4, 4]
    r = df.iloc[0]
    assert (r.y, r.x, r.area) == (3.5, 5.5, 24)
    assert r.mean_intensity == pytest.approx(11.0)
    assert r.max_intensity == 34 and r.min_intensity == 10
    assert r.major_axis_length > r.minor_axis_length
    assert (r.bbox_y0, r.bbox_x0, r.bbox_y1, r.bbox_x1) == (2, 3, 6, 9)
    assert df.iloc[1].area == 27
    no_int = frame_object_table(lab)
    assert "mean_intensity" not in no_int.columns and len(no_int) == 2
    empty = frame_object_table(np.zeros((5, 5), np.uint16), np.zeros((5, 5)))
    assert len(empty) == 0 and list(empty.columns[:5]) == OBJECT_COLUMNS
    with pytest.raises(InputError):
        frame_object_table(lab, img[:5])


def test_stack_table_and_counts():
    lab, img = two_objects()
    stack = np.stack([lab, np.zeros_like(lab), np.where(lab == 5, 5, 0)])
    df = object_table(stack, np.stack([img] * 3))
    assert df.t.tolist() == [0, 0, 2]
    counts = count_objects(stack)
    assert counts.to_dict("list") == {"t": [0, 1, 2], "count": [2, 0, 1]}
    from_table = counts_from_objects(df, 3)
    pd.testing.assert_frame_equal(from_table, counts)


def test_count_by_area():
    lab = np.zeros((50, 50), np.uint16)
    lab[0:5, 0:5] = 1       # 25 px single nucleus
    lab[10:15, 0:5] = 2     # 25 px
    lab[20:30, 20:30] = 3   # 100 px clump of ~4 nuclei
    assert mean_object_area(lab) == 25.0
    assert mean_object_area(lab, "mean") == pytest.approx(50.0)
    c = count_by_area(lab)
    assert c.foreground_area.tolist() == [150]
    assert c.count_by_area.tolist() == [pytest.approx(6.0)]
    assert count_by_area(lab, mean_area=50).count_by_area.tolist() == [pytest.approx(3.0)]
    assert count_objects(lab)["count"].tolist() == [3]   # connected components count the clump once
    assert count_by_area(np.zeros((4, 4), int)).count_by_area.tolist() == [0.0]


def test_class_counts_and_fractions():
    objects = pd.DataFrame({"t": [0, 0, 1], "label": [1, 2, 1], "class": [3, 1, 3]})
    c = counts_from_objects(objects, 2, "class", ["background", "glowing", "hot", "cluster"])
    assert c["count"].tolist() == [2, 1]
    assert c["count_cluster"].tolist() == [1, 1]
    assert c["count_glowing"].tolist() == [1, 0]
    assert c["count_hot"].tolist() == [0, 0]
    cm = np.zeros((2, 10, 10), np.uint8)
    cm[0, :, :3] = 1
    fr = class_fractions(cm, ["bg", "glow"])
    assert fr.fraction_glow.tolist() == [pytest.approx(0.3), 0.0]
    assert fr.fraction_bg.tolist() == [pytest.approx(0.7), 1.0]


def test_objects_csv_atomic_and_no_overwrite(tmp_path):
    lab, img = two_objects()
    df = frame_object_table(lab, img)
    df = df[["area", "x", "label", "y", "t"] + [c for c in df.columns if c not in OBJECT_COLUMNS]]
    path = tmp_path / "objects.csv"
    write_objects_csv(df, path, overwrite=False)
    back = pd.read_csv(path)
    assert list(back.columns[:5]) == OBJECT_COLUMNS
    assert back.area.tolist() == [24, 27]
    assert [p.name for p in tmp_path.iterdir()] == ["objects.csv"]  # no temp file left behind
    with pytest.raises(InputError, match="overwrite"):
        write_objects_csv(df, path, overwrite=False)
    with pytest.raises(InputError):
        check_overwrite([path], overwrite=False)
    check_overwrite([path], overwrite=True)
    with pytest.raises(ValueError):
        write_objects_csv(df.drop(columns=["area"]), tmp_path / "o2.csv")


def test_vectorised_measurements_match_regionprops():
    from scipy import ndimage as ndi
    from skimage.measure import regionprops_table

    rng = np.random.default_rng(0)
    field = ndi.gaussian_filter(rng.random((120, 150)), 3)
    lab, _ = ndi.label(field > np.percentile(field, 60))
    lab[0, 0], lab[119, 149] = lab.max() + 1, lab.max() + 2   # single-pixel objects
    lab[60, 2:12] = lab.max() + 1                               # a straight line
    lab = lab.astype(np.uint16)
    inten = rng.random(lab.shape).astype(np.float32)
    df = frame_object_table(lab, inten, detailed=True)
    rp = pd.DataFrame(regionprops_table(lab.astype(int), inten, properties=[
        "label", "centroid", "area", "bbox", "eccentricity", "axis_major_length", "axis_minor_length",
        "orientation", "equivalent_diameter_area", "intensity_mean", "intensity_max", "intensity_min", "solidity"]))
    pairs = {"label": "label", "y": "centroid-0", "x": "centroid-1", "area": "area", "bbox_y0": "bbox-0",
             "bbox_x0": "bbox-1", "bbox_y1": "bbox-2", "bbox_x1": "bbox-3", "eccentricity": "eccentricity",
             "major_axis_length": "axis_major_length", "minor_axis_length": "axis_minor_length",
             "orientation": "orientation", "equivalent_diameter": "equivalent_diameter_area",
             "mean_intensity": "intensity_mean", "max_intensity": "intensity_max", "min_intensity": "intensity_min",
             "solidity": "solidity"}
    assert len(df) == len(rp) > 20
    for ours, theirs in pairs.items():
        np.testing.assert_allclose(df[ours].to_numpy(float), rp[theirs].to_numpy(float), atol=1e-6, err_msg=ours)


def test_huge_sparse_label_ids_are_measured_without_huge_tables():
    """An id of 3e9 (labels from another tool) must not size a 3e9-entry table (134 GiB)."""
    from napari_microseg.inference.postprocess import filter_labels
    from napari_microseg.measure.labels import compact_labels

    labels = np.zeros((20, 20), np.uint32)
    labels[2:5, 2:5] = 3_000_000_000
    labels[10:15, 10:15] = 7
    table = object_table(labels)
    assert table.label.tolist() == [7, 3_000_000_000] and table.area.tolist() == [25, 9]
    compact, ids = compact_labels(labels)
    np.testing.assert_array_equal(ids[compact], labels)
    kept = filter_labels(labels, min_size=10)
    assert kept.max() == 1 and (kept > 0).sum() == 25


def test_results_are_readable_by_the_group_like_any_new_file(tmp_path):
    """Temporary files are owner-only (0600); a result renamed from one gets the umask's mode."""
    import os

    from napari_microseg.io.images import write_zarr
    from napari_microseg.measure.tables import write_table_csv

    old = os.umask(0o022)
    try:
        write_table_csv(pd.DataFrame({"t": [0], "count": [3]}), tmp_path / "counts.csv")
        write_zarr(tmp_path / "labels.zarr", np.zeros((2, 8, 8), np.uint16))
    finally:
        os.umask(old)
    assert (tmp_path / "counts.csv").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "labels.zarr").stat().st_mode & 0o777 == 0o755
