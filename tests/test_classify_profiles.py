"""[P] profile classifier: Siamese two-view input, training on simulated hole profiles, population summary."""

from __future__ import annotations

import io

import numpy as np

from napari_microseg.classify.data import simulated_profile_data
from napari_microseg.classify.evaluate import classification_report
from napari_microseg.classify.predict import classify_profiles, population_summary, predict_proba
from napari_microseg.classify.trainer import train_classifier
from napari_microseg.progress import run_with_text_progress

# a hole of radius 0.3 (study: 0.1) in a centred particle, so that a few hundred particles and
# seconds of training suffice (the study's set-up needs tens of thousands)
HOLE = dict(hole_radius=0.3, hole_radius_sd=0.02, offset_sd=0.0)


def _cfg(**kw):
    cfg = {"task": "profiles", "model": {"architecture": "profile_cnn"}, "epochs": 15, "batch_size": 32, "lr": 3e-3,
           "optimizer": "adam", "augment": "none", "device": "cpu", "val_fraction": 0.0, "seed": 0,
           "num_threads": 1, "early_stopping_patience": None}
    cfg.update(kw)
    return cfg


def test_hole_profiles_training_beats_chance(tmp_path):
    train = simulated_profile_data(600, task="hole", n_views=1, seed=0, **HOLE)
    test = simulated_profile_data(200, task="hole", n_views=1, seed=1, **HOLE)
    res = run_with_text_progress(train_classifier(_cfg(), train, out_path=tmp_path / "p.pt"), stream=io.StringIO())
    prob = predict_proba(res.model_path, test.x)
    acc = classification_report(test.y, prob.argmax(1), test.class_names, prob=prob)["summary"]["accuracy"]
    assert acc > 0.7
    df = classify_profiles(res.model_path, test.x)
    assert list(df.columns[:3]) == ["index", "class", "probability"]
    assert set(df["class"]) <= {"solid", "hole"} and df["probability"].between(0.5, 1).all()
    pop = population_summary(df, ["solid", "hole"])
    assert pop["percent"].sum() == 100.0 and pop["count"].sum() == len(test)


def test_siamese_net_with_the_same_view_twice_trains(tmp_path):
    one = simulated_profile_data(400, task="hole", n_views=1, seed=0, **HOLE)
    twice = np.concatenate([one.x, one.x], axis=1)
    from napari_microseg.classify.data import ClassificationData

    data = ClassificationData(twice, one.y, one.class_names)
    res = run_with_text_progress(train_classifier(_cfg(epochs=8), data, out_path=tmp_path / "p2.pt"), stream=io.StringIO())
    test = simulated_profile_data(100, task="hole", n_views=1, seed=1, **HOLE)
    prob = predict_proba(res.model_path, np.concatenate([test.x, test.x], axis=1))
    assert prob.shape == (100, 2) and np.allclose(prob.sum(1), 1)
    assert (prob.argmax(1) == test.y).mean() > 0.6
