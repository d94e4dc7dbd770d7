"""Hunt 39 (review): a stale features table is kept, not deleted; ``x.tif`` and ``x.tiff`` keep apart tables;
the output-ownership rule knows classify's and the demo's folders and refuses only real overlaps; a
write-protected checkpoint is no divergence; write-protected outputs are not replaced by --overwrite."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
import pytest


def _read_one(path):
    from napari_microseg._reader import read_layers

    (data, kwargs, kind), = read_layers(str(path))
    return np.asarray(data), kwargs, kind


def _tables_holding(folder, text):
    return sorted(p.name for p in folder.iterdir() if p.suffix == ".csv" and text in p.read_text())


def test_stale_features_table_is_kept_when_labels_are_saved_without_them(tmp_path):
    """The labels TIFF edited by another tool (its saved table now stale, left out on reading), then the layer
    saved back without those features: the table with the annotations was deleted."""
    import tifffile

    from napari_microseg._writer import write_labels_tiff

    labels = np.zeros((32, 32), np.uint16)
    labels[2:8, 2:8] = 1
    labels[12:20, 12:20] = 2
    folder = tmp_path / "labels"  # (a TIFF another program wrote opens as labels from a labels folder)
    folder.mkdir()
    target = folder / "x.tif"
    write_labels_tiff(str(target), labels, {"features": pd.DataFrame({"label": [1, 2], "cls": ["good", "bad"]})})
    edited = tifffile.imread(target)
    edited[30, 30] = 3
    tifffile.imwrite(target, edited)  # another program saves the labels again
    with pytest.warns(UserWarning, match="saved with an earlier x.tif"):
        data, kwargs, _ = _read_one(target)
    assert "cls" not in kwargs["features"].columns
    with pytest.warns(UserWarning, match="kept as"):
        write_labels_tiff(str(target), data, {"features": kwargs["features"]})
    assert len(_tables_holding(folder, "good")) == 1, sorted(p.name for p in folder.iterdir())

    # saved with features of its own over a stale table: the stale one is kept apart, not replaced
    write_labels_tiff(str(target), data, {"features": pd.DataFrame({"label": [1, 2], "cls": ["fine", "poor"]})})
    tifffile.imwrite(target, edited[::-1].copy())
    with pytest.warns(UserWarning, match="kept as"):
        write_labels_tiff(str(target), data, {"features": pd.DataFrame({"label": [1], "cls": ["new"]})})
    assert len(_tables_holding(folder, "good")) == 1 and len(_tables_holding(folder, "fine")) == 1
    assert len(_tables_holding(folder, "new")) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _read_one(target)[1]["features"].set_index("label").loc[1, "cls"] == "new"


def test_tif_and_tiff_of_one_stem_keep_their_own_features(tmp_path):
    """``cells.tif`` and ``cells.tiff`` shared ``cells.features.csv``: saving one removed or replaced the
    other's features."""
    from napari_microseg._writer import features_path, write_labels_tiff

    a = np.zeros((16, 16), np.uint16)
    a[2:6, 2:6] = 1
    b = np.zeros((16, 16), np.uint16)
    b[8:14, 8:14] = 1
    written = write_labels_tiff(str(tmp_path / "cells.tif"), a, {"features": pd.DataFrame({"label": [1], "cls": ["mitotic"]})})
    assert os.path.basename(written[1]) == "cells.tif.features.csv"
    assert features_path(tmp_path / "cells.tiff").name == "cells.tiff.features.csv"
    write_labels_tiff(str(tmp_path / "cells.tiff"), b, {})  # no features: cells.tif's stay
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _read_one(tmp_path / "cells.tif")[1]["features"].set_index("label").loc[1, "cls"] == "mitotic"
    write_labels_tiff(str(tmp_path / "cells.tiff"), b, {"features": pd.DataFrame({"label": [1], "cls": ["other"]})})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _read_one(tmp_path / "cells.tif")[1]["features"].set_index("label").loc[1, "cls"] == "mitotic"
        assert _read_one(tmp_path / "cells.tiff")[1]["features"].set_index("label").loc[1, "cls"] == "other"
