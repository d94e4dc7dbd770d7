"""Hunt 39 (io): a colour time-lapse saved with its calibration; a Labels layer's features saved beside its
labels (and read back only with those labels); write-protected files are not replaced."""

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


@pytest.mark.parametrize("first_unit, first_scale", [("minute", 2.0), ("micrometer", 1.5)])
def test_rgb_movie_keeps_scale_units_and_translate(tmp_path, first_unit, first_scale):
    """An RGB(A) time-lapse (T, Y, X, 3) or colour Z stack saved with the image writer reopened at 1 pixel per
    unit, at 0 (its calibration was dropped without a word); a colour still image kept them."""
    from napari_microseg._writer import write_image_tiff

    rng = np.random.default_rng(0)
    for samples in (3, 4):
        data = rng.integers(0, 255, (3, 16, 20, samples), dtype=np.uint8)
        meta = {"rgb": True, "scale": (first_scale, 0.5, 0.5), "translate": (0.0, 10.0, 20.0),
                "units": (first_unit, "micrometer", "micrometer")}
        (written,) = write_image_tiff(str(tmp_path / f"movie{samples}.tif"), data, meta)
        back, kwargs, kind = _read_one(written)
        assert kind == "image" and kwargs.get("rgb") is True and np.array_equal(back, data)
        assert tuple(kwargs.get("scale", ())) == pytest.approx((first_scale, 0.5, 0.5))
        assert tuple(kwargs.get("units", ())) == (first_unit, "micrometer", "micrometer")
        assert tuple(kwargs.get("translate", ())) == pytest.approx((0.0, 10.0, 20.0))
    # one frame: its frame axis and calibration kept too
    one = rng.integers(0, 255, (1, 16, 20, 3), dtype=np.uint8)
    (written,) = write_image_tiff(str(tmp_path / "one.tif"), one, {"rgb": True, "scale": (2.0, 0.25, 0.25),
                                  "translate": (0.0, 1.0, 2.0), "units": ("minute", "micrometer", "micrometer")})
    back, kwargs, _ = _read_one(written)
    assert back.shape == one.shape and tuple(kwargs.get("scale", ())) == pytest.approx((2.0, 0.25, 0.25))
    assert tuple(kwargs.get("translate", ())) == pytest.approx((0.0, 1.0, 2.0))


def _labels_with_classes():
    labels = np.zeros((2, 24, 24), np.uint16)
    labels[:, 2:8, 2:8] = 1
    labels[1, 12:20, 10:16] = 4
    features = pd.DataFrame({"label": [0, 1, 3, 4], "class": ["background", "NA", "None", "cell"],
                             "lamellarity": ["", "uni", "multi", "uni"], "radius": [0.0, 2.5, 7.125, 1 / 3],
                             "track_id": [0, 11, 13, 14], "pixels": [9, 9, 9, 9], "index": [0, 1, 3, 4]})
    return labels, features


def test_labels_features_are_saved_beside_the_labels_and_read_back(tmp_path):
    """The labels writer dropped the layer's ``features`` (classes, ground truth, track ids) without a word;
    reopened, only label / pixels / index were there."""
    from napari_microseg._writer import write_labels_tiff

    labels, features = _labels_with_classes()
    meta = {"scale": (1.0, 0.5, 0.5), "units": ("minute", "micrometer", "micrometer"), "features": features}
    written = write_labels_tiff(str(tmp_path / "cells.tif"), labels, meta)
    assert [os.path.basename(p) for p in written] == ["cells.tif", "cells.tif.features.csv"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about
        back, kwargs, kind = _read_one(written[0])
    assert kind == "labels" and np.array_equal(back, labels)
    got = kwargs["features"].set_index("label")
    assert {"class", "lamellarity", "radius", "track_id", "pixels", "index"} <= set(got.columns)
    assert got.loc[1, "class"] == "NA" and got.loc[3, "class"] == "None" and got.loc[4, "class"] == "cell"
    assert got.loc[0, "class"] == "background" and got.loc[1, "lamellarity"] == "uni"
    assert got.loc[3, "radius"] == 7.125 and got.loc[4, "radius"] == 1 / 3 and got.loc[4, "track_id"] == 14
    # pixels and index are the reader's own (counted from the labels), not the saved ones
    assert got.loc[1, "pixels"] == 72 and got.loc[4, "pixels"] == 48 and got.loc[3, "pixels"] == 0
    assert (got["index"] == got.index).all()

    # saved again (edited): the table follows
    edited = features.assign(**{"class": ["background", "dead", "None", "cell"]})
    write_labels_tiff(str(tmp_path / "cells.tif"), labels, {**meta, "features": edited})
    assert _read_one(tmp_path / "cells.tif")[1]["features"].set_index("label").loc[1, "class"] == "dead"

    # the labels written again by something else: the table is not theirs (warned, left out)
    from napari_microseg.io.images import LABELS_SOFTWARE, write_tiff

    write_tiff(tmp_path / "cells.tif", labels[::-1].copy(), overwrite=True, software=LABELS_SOFTWARE)
    with pytest.warns(UserWarning, match="cells.tif.features.csv was saved with an earlier cells.tif"):
        _, kwargs, _ = _read_one(tmp_path / "cells.tif")
    assert "class" not in kwargs["features"].columns

    # saved over by labels with no features of their own: the earlier save's table (stale) is kept aside
    with pytest.warns(UserWarning, match="kept as cells.tif.features.stale.csv"):
        write_labels_tiff(str(tmp_path / "cells.tif"), labels, {"features": pd.DataFrame({"label": [1, 4]})})
    assert not (tmp_path / "cells.tif.features.csv").exists()
    assert (tmp_path / "cells.tif.features.stale.csv").is_file()


def test_a_users_features_csv_is_not_replaced(tmp_path):
    """``<name>.features.csv`` that this plugin did not write (the user's own table) is neither replaced nor
    removed, nor read as the labels' features."""
    from napari_microseg._writer import write_labels_tiff
    from napari_microseg.errors import WriteRefused

    labels, features = _labels_with_classes()
    own = tmp_path / "cells.tif.features.csv"
    own.write_text("label,note\n1,my own notes\n")
    with pytest.raises(WriteRefused, match="cells.tif.features.csv exists beside cells.tif"):
        write_labels_tiff(str(tmp_path / "cells.tif"), labels, {"features": features})
    assert not (tmp_path / "cells.tif").exists() and own.read_text() == "label,note\n1,my own notes\n"
    # labels with nothing to keep beside them save, and leave it alone
    write_labels_tiff(str(tmp_path / "cells.tif"), labels, {"features": pd.DataFrame({"label": [1, 4]})})
    assert own.read_text() == "label,note\n1,my own notes\n"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, kwargs, _ = _read_one(tmp_path / "cells.tif")
    assert "note" not in kwargs["features"].columns


def test_napari_save_keeps_a_sample_layers_features(make_napari_viewer, tmp_path):
    """Through napari's own Save (``layer.save`` with this plugin) and Open: the class names stay."""
    viewer = make_napari_viewer(show=False)
    labels, features = _labels_with_classes()
    layer = viewer.add_labels(labels, name="classes", features=features.drop(columns=["pixels", "index"]))
    saved = layer.save(str(tmp_path / "classes.tif"), plugin="napari-microseg")
    assert sorted(os.path.basename(p) for p in saved) == ["classes.tif", "classes.tif.features.csv"]
    (back,) = viewer.open(str(tmp_path / "classes.tif"), plugin="napari-microseg")
    assert back.features.set_index("label").loc[4, "class"] == "cell"


def test_write_protected_file_is_not_replaced(tmp_path):
    """atomic_path replaced a regular file of mode 0444 (its folder writable); a link to one was already
    replaced, not written through."""
    from napari_microseg._writer import write_image_tiff
    from napari_microseg.errors import InputError, WriteRefused
    from napari_microseg.io.atomic import atomic_write_text

    raw = tmp_path / "raw.csv"
    raw.write_text("raw\n")
    os.chmod(raw, 0o444)
    with pytest.raises(InputError, match="write-protected"):
        atomic_write_text(raw, "new\n")
    assert raw.read_text() == "raw\n" and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    image = tmp_path / "raw.tif"
    image.write_bytes(b"not replaced")
    os.chmod(image, 0o444)
    with pytest.raises(WriteRefused, match="chmod u\\+w"):
        write_image_tiff(str(image), np.ones((8, 8), np.uint16), {})
    assert image.read_bytes() == b"not replaced"
    os.chmod(raw, 0o644)  # writable again: replaced
    atomic_write_text(raw, "new\n")
    assert raw.read_text() == "new\n"

    # a write-protected features table beside labels: refused before the labels are written again
    from napari_microseg._writer import write_labels_tiff

    labels, features = _labels_with_classes()
    write_labels_tiff(str(tmp_path / "cells.tif"), labels, {"features": features})
    before = (tmp_path / "cells.tif").read_bytes()
    os.chmod(tmp_path / "cells.tif.features.csv", 0o444)
    with pytest.raises(WriteRefused, match="cells.tif.features.csv: is write-protected"):
        write_labels_tiff(str(tmp_path / "cells.tif"), labels[::-1].copy(), {"features": features})
    assert (tmp_path / "cells.tif").read_bytes() == before
