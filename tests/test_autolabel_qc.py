"""[N] data-set QC filter: drop the 25 % of tiles with the fewest nucleus pixels and tiles with > 50 % foreground."""

from __future__ import annotations

import numpy as np
import pytest

from napari_microseg.autolabel.qc import qc_filter, tile_statistics
from napari_microseg.errors import InputError


def tiles_with_foreground(pixel_counts, shape=(10, 10)):
    """One label tile per count, its first ``count`` pixels (row-major) set, as two objects when possible."""
    out = []
    for c in pixel_counts:
        t = np.zeros(shape, np.uint16).ravel()
        t[:c] = 1
        t[c // 2 : c] = 2 if c >= 2 else t[c // 2 : c]
        out.append(t.reshape(shape))
    return out


def test_statistics_count_pixels_and_objects():
    tiles = tiles_with_foreground([0, 10, 37])
    st = tile_statistics(tiles)
    assert st.foreground_pixels.tolist() == [0, 10, 37]
    assert np.allclose(st.foreground_fraction, [0, 0.1, 0.37])
    assert st.n_objects.tolist() == [0, 2, 2]
    # binary masks: objects are connected components
    mask = np.zeros((10, 10), bool)
    mask[1, 1] = mask[5, 5] = mask[5, 6] = True
    assert tile_statistics([mask]).n_objects.tolist() == [2]


def test_drops_lowest_quarter_and_crowded_tiles():
    counts = [5, 40, 10, 30, 60, 20, 15, 25]  # tile 4 has 60 % foreground
    kept, table = qc_filter(tiles_with_foreground(counts))
    # 7 tiles survive the foreground rule -> floor(0.25 * 7) = 1 dropped as lowest: tile 0 (5 px)
    assert table.loc[4, "reason"] == "too_much_foreground"
    assert table.loc[0, "reason"] == "lowest_foreground"
    assert kept.tolist() == [1, 2, 3, 5, 6, 7]
    assert table.kept.tolist() == [i in kept for i in range(8)]
    assert set(table.columns) >= {"tile", "foreground_pixels", "foreground_fraction", "n_objects", "kept", "reason"}
    assert (table.reason[table.kept] == "").all()


def test_fraction_is_adjustable():
    counts = [1, 2, 3, 4, 5, 6, 7, 8]
    kept, _ = qc_filter(tiles_with_foreground(counts), drop_lowest_fraction=0.5)
    assert kept.tolist() == [4, 5, 6, 7]
    kept, _ = qc_filter(tiles_with_foreground(counts), drop_lowest_fraction=0.0, max_foreground_fraction=0.05)
    assert kept.tolist() == [0, 1, 2, 3, 4]


def test_all_tiles_empty():
    kept, table = qc_filter([np.zeros((8, 8), np.uint16) for _ in range(5)], drop_empty=True)
    assert kept.size == 0
    assert (table.reason == "empty").sum() + (table.reason == "lowest_foreground").sum() == 5
    kept, table = qc_filter([np.zeros((8, 8), np.uint16) for _ in range(5)], drop_empty=False)
    assert kept.tolist() == [1, 2, 3, 4]  # only floor(0.25 * 5) = 1 dropped, ties broken by index


def test_fewer_than_four_tiles_lose_none_to_the_quantile():
    kept, table = qc_filter(tiles_with_foreground([3, 9, 20]))
    assert kept.tolist() == [0, 1, 2]
    kept, table = qc_filter(tiles_with_foreground([7]))
    assert kept.tolist() == [0]
    kept, table = qc_filter([])
    assert kept.size == 0 and len(table) == 0


def test_ties_drop_exactly_the_quota_by_index():
    kept, table = qc_filter(tiles_with_foreground([10, 10, 10, 10, 10, 10, 10, 10]))
    assert (table.reason == "lowest_foreground").sum() == 2
    assert kept.tolist() == [2, 3, 4, 5, 6, 7]


def test_all_tiles_over_half_foreground():
    kept, table = qc_filter(tiles_with_foreground([51, 70, 99, 100]))
    assert kept.size == 0
    assert (table.reason == "too_much_foreground").all()


def test_exactly_half_is_kept():
    kept, _ = qc_filter(tiles_with_foreground([50, 20, 30]))
    assert 0 in kept


def test_real_autolabelled_tiles(shared_data):
    import skimage.io

    from napari_microseg.autolabel.fluorescence import autolabel_fluorescence
    from napari_microseg.autolabel.pairing import tile_positions

    dapi = skimage.io.imread(shared_data / "isl_phase_dapi" / "dapi.png")[:512, :512]
    lab = autolabel_fluorescence(dapi, diameter_range=(10, 60), clear_border=False)
    pos, (h, w) = tile_positions(lab.shape, 128)
    tiles = [lab[y : y + h, x : x + w] for y, x in pos]
    kept, table = qc_filter(tiles)
    assert len(table) == 16 and len(kept) <= 12
    dropped_low = table[table.reason.isin(["lowest_foreground", "empty"])]
    # every dropped-as-lowest tile has no more nucleus pixels than any kept tile
    assert dropped_low.foreground_pixels.max() <= table[table.kept].foreground_pixels.min()


@pytest.mark.parametrize("kw", [{"drop_lowest_fraction": 1.0}, {"drop_lowest_fraction": -0.1}, {"max_foreground_fraction": 0}])
def test_bad_settings(kw):
    with pytest.raises(InputError):
        qc_filter(tiles_with_foreground([1, 2]), **kw)


def test_bad_tile_shape():
    with pytest.raises(InputError):
        qc_filter([np.zeros((2, 3, 4))])
