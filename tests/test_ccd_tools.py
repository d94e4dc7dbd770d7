"""FITS data-section cropping and the tiles-with-class finder."""

from __future__ import annotations

import numpy as np
import pytest

from napari_microseg.errors import InputError
from napari_microseg.io.images import crop_data_section, parse_fits_section
from napari_microseg.measure.tiles import tiles_with_class


def test_parse_fits_section_is_one_based_inclusive():
    rows, cols = parse_fits_section("[9:2056,1:1040]")
    assert (rows.start, rows.stop, cols.start, cols.stop) == (0, 1040, 8, 2056)
    with pytest.raises(InputError):
        parse_fits_section("[a:b]")


def test_crop_data_section_uses_header():
    frame = np.arange(20 * 30).reshape(20, 30)
    cropped, used = crop_data_section(frame, {"DATASEC": "[3:28,1:20]"})
    assert cropped.shape == (20, 26) and cropped[0, 0] == frame[0, 2]
    same, none = crop_data_section(frame, {"OTHER": 1})
    assert none is None and same is frame


def test_tiles_with_class_finds_and_ranks():
    cm = np.zeros((600, 520), np.uint8)
    cm[10:12, 300] = 3          # tile (0, 1): 2 px
    cm[400:410, 20:25] = 3      # tile (1, 0): 50 px
    cm[590:600, 515:520] = 2    # another class, ignored
    table = tiles_with_class(cm, 3, tile=256)
    assert list(zip(table.tile_row, table.tile_col)) == [(1, 0), (0, 1)]
    assert list(table.pixels) == [50, 2]
    assert table.loc[0, "y1"] == 512 and table.loc[1, "x1"] == 512
    assert tiles_with_class(cm, 3, tile=256, min_pixels=10).shape[0] == 1
    assert tiles_with_class(cm, 1).empty


CCD_NAMES = ["background", "glowing", "hot pixel", "cluster"]


def test_shape_rules_keep_hot_lines_turn_hot_blobs_into_clusters_and_drop_big_clusters():
    from napari_microseg.inference.postprocess import ccd_shape_rules

    cls = np.zeros((60, 60), np.uint8)
    cls[5:55, 10] = 2            # a vertical hot line, 1 px wide
    cls[30, 20:50] = 2           # a horizontal one
    cls[40:42, 20:45] = 2        # a 2-px-wide run: still a line
    cls[8:12, 30:34] = 2         # a 4x4 hot blob: a cluster by the rule
    cls[20:28, 54:58] = 2        # four adjacent hot columns, 8 px long: long lines side by side stay hot
    cls[15:17, 45:47] = 3        # a small cluster
    cls[50:58, 30:58] = 3        # a big one (a track)
    cls[2:4, 2:4] = 2            # compact blobs that are no lines: a 2x2 block, a 3x2 block, an L, a diagonal pair
    cls[45:48, 2:4] = 2
    cls[2, 40], cls[3, 40:42] = 2, 2
    cls[25, 2], cls[26, 3] = 2, 2
    cls[58, 2] = 2               # a single hot pixel: a 1 px line
    ruled = ccd_shape_rules(cls, CCD_NAMES)
    for blob in ((slice(2, 4), slice(2, 4)), (slice(45, 48), slice(2, 4)), (2, 40), (3, slice(40, 42)), (25, 2), (26, 3)):
        assert (ruled[blob] == 3).all(), blob
    assert ruled[58, 2] == 2
    assert (ruled[5:55, 10] == 2).all() and (ruled[30, 20:50] == 2).all() and (ruled[40:42, 20:45] == 2).all()
    assert (ruled[8:12, 30:34] == 3).all()
    assert (ruled[20:28, 54:58] == 2).all()
    assert (ruled[50:58, 30:58] == 3).all()  # no size limit asked
    limited = ccd_shape_rules(cls, CCD_NAMES, hot_lines=False, max_cluster_size=50)
    assert (limited[50:58, 30:58] == 0).all() and (limited[15:17, 45:47] == 3).all()
    assert (limited[8:12, 30:34] == 2).all()  # the hot rule was off
    assert ruled.dtype == cls.dtype and cls[8, 30] == 2  # the input is not changed
    with pytest.raises(InputError, match="hot pixel"):
        ccd_shape_rules(cls, ["background", "interior", "boundary"])
    # names written as column names (a folder simulated before "hot pixel" was the name) are the same classes
    np.testing.assert_array_equal(ccd_shape_rules(cls, ["Background", "glowing", "hot_pixel", "cluster"]), ruled)


def test_segment_applies_shape_rules_to_ccd_models_only():
    from napari_microseg.inference.segment import segment
    from napari_microseg.simulate.ccd import simulate_ccd_frame

    frame = simulate_ccd_frame(shape=(256, 256), seed=11, balanced=True)
    plain = np.asarray(segment("ccd_classes", frame.image, measure=False).labels)
    ruled = np.asarray(segment("ccd_classes", frame.image, measure=False,
                               postprocess_options={"shape_rules": True, "max_cluster_size": 30}).labels)
    from napari_microseg.inference.postprocess import ccd_shape_rules

    np.testing.assert_array_equal(ruled, ccd_shape_rules(plain, CCD_NAMES, max_cluster_size=30))
    with pytest.raises(InputError, match="at least 1 px"):
        segment("ccd_classes", frame.image, postprocess_options={"max_cluster_size": 0})
    with pytest.raises(InputError, match="CCD class models only"):
        segment("nuclei_fluorescence", np.zeros((64, 64), np.float32), postprocess_options={"shape_rules": True})
