"""Tuning the three-class watershed settings on annotated images and storing them in the model file."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from napari_microseg.errors import InputError
from napari_microseg.inference.segment import segment, tuned_postprocess
from napari_microseg.inference.tune import store_postprocess, tune_postprocess
from napari_microseg.io.models import load_model
from napari_microseg.progress import drain
from napari_microseg.simulate.nuclei import simulate_nuclei_image


def test_tune_picks_best_of_grid_and_segment_uses_it(tiny_nuclei_model, tmp_path):
    model = tmp_path / "m.pt"
    shutil.copy(tiny_nuclei_model, model)
    pairs = [simulate_nuclei_image(shape=(96, 96), n_nuclei=8, seed=50 + s) for s in range(2)]
    grid = {"threshold": (0.3, 0.5), "seed_threshold": (0.5, 0.7), "distance_sigma": (1.0,)}
    result = drain(tune_postprocess(model, [p[0] for p in pairs], [p[1] for p in pairs], grid=grid))
    assert len(result.table) == 4
    assert result.best_ap == pytest.approx(result.table["ap"].max())
    assert result.best["threshold"] in grid["threshold"] and result.best["seed_threshold"] in grid["seed_threshold"]
    # the AP of the winner is recomputed from its counts
    row = result.table.loc[result.table["ap"].idxmax()]
    assert row["ap"] == pytest.approx(row["tp"] / (row["tp"] + row["fp"] + row["fn"]))

    store_postprocess(model, {"threshold": 0.3, "seed_threshold": 0.6, "tuned_on": "test images"})
    loaded = load_model(model)
    assert loaded.config["postprocess"]["tuned_on"] == "test images"
    assert tuned_postprocess(loaded) == {"threshold": 0.3, "seed_threshold": 0.6}
    res = segment(loaded, pairs[0][0], measure=False)
    assert res.settings["threshold"] == 0.3 and res.settings["postprocess"]["seed_threshold"] == 0.6
    explicit = segment(loaded, pairs[0][0], measure=False, threshold=0.5, postprocess_options={"seed_threshold": 0.9})
    assert explicit.settings["threshold"] == 0.5 and explicit.settings["postprocess"]["seed_threshold"] == 0.9
    # a whole settings dict (as tune returns it, threshold included) can be passed as the options
    as_options = segment(loaded, pairs[0][0], measure=False, postprocess_options={"threshold": 0.5, "seed_threshold": 0.9})
    assert as_options.settings["threshold"] == 0.5 and "threshold" not in as_options.settings["postprocess"]
    np.testing.assert_array_equal(as_options.labels, explicit.labels)
    # the weights were kept
    np.testing.assert_array_equal(segment(load_model(tiny_nuclei_model), pairs[0][0], measure=False, threshold=0.3,
                                          postprocess_options={"seed_threshold": 0.6}).labels, res.labels)


def test_tune_rejects_bad_input(tiny_nuclei_model):
    img, lab = simulate_nuclei_image(shape=(64, 64), n_nuclei=3, seed=1)
    with pytest.raises(InputError, match="matching"):
        drain(tune_postprocess(tiny_nuclei_model, [img], []))
    with pytest.raises(InputError, match="same 2D shape"):
        drain(tune_postprocess(tiny_nuclei_model, [img], [lab[:32]]))


def test_tune_takes_a_list_of_grids(tiny_nuclei_model):
    pairs = [simulate_nuclei_image(shape=(96, 96), n_nuclei=8, seed=60)]
    grids = [{"threshold": (0.4, 0.5), "seed_method": ("distance",)},
             {"threshold": (0.5,), "seed_method": ("probability",), "seed_threshold": (0.6, 0.8)}]
    result = drain(tune_postprocess(tiny_nuclei_model, [pairs[0][0]], [pairs[0][1]], grid=grids))
    assert len(result.table) == 4
    best_row = result.table.loc[result.table["ap"].idxmax()]
    assert result.best["seed_method"] == best_row["seed_method"]
    # the winner carries exactly the keys of its own grid
    expected_keys = set(grids[0]) if best_row["seed_method"] == "distance" else set(grids[1])
    assert set(result.best) == expected_keys
    with pytest.raises(InputError, match="empty"):
        drain(tune_postprocess(tiny_nuclei_model, [pairs[0][0]], [pairs[0][1]], grid=[]))


def test_stored_small_object_growth_reaches_segment(tiny_nuclei_model, tmp_path):
    """grow_small_below stored in the model (as train_pretrained tunes it) is applied by segment."""
    model = tmp_path / "m.pt"
    shutil.copy(tiny_nuclei_model, model)
    image = simulate_nuclei_image(shape=(96, 96), n_nuclei=8, seed=70)[0]
    plain = segment(load_model(model), image, measure=False).labels
    store_postprocess(model, {"grow_small_below": 10**6})  # every object counts as small
    grown = segment(load_model(model), image, measure=False)
    assert grown.settings["postprocess"]["grow_small_below"] == 10**6
    labels = np.asarray(grown.labels)
    assert (labels > 0).sum() > (plain > 0).sum()
    np.testing.assert_array_equal(labels[plain > 0], plain[plain > 0])  # objects only gain pixels
