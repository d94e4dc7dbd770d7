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
