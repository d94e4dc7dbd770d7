"""Classification fixes from session 38's hunt: each test failed on the code before its fix."""

from __future__ import annotations

import json

import numpy as np
import pytest

TRAIN = ("--epochs", "1", "--device", "cpu", "--threads", "1")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny classifiers: ``hole1`` (profiles, hole, 1 view), ``chir2`` (profiles, chirality, 2 views, centred
    particles, 60 degrees, 24 points), ``enc`` (objects, encapsulation, 2 images of 4 particles)."""
    from napari_microseg.cli import main

    folder = tmp_path_factory.mktemp("models")
    runs = {"hole1": ["profiles", "--simulated", "12"],
            "chir2": ["profiles", "--simulated", "12", "--task", "chirality", "--views", "2", "--offset-sd", "0",
                      "--view-angle", "60", "--points", "24"],
            "enc": ["objects", "--simulated", "2", "--particles", "4", "--task", "encapsulation"]}
    paths = {}
    for name, args in runs.items():
        paths[name] = folder / f"{name}.pt"
        assert main(["classify", "train", *args, *TRAIN, "--out", str(paths[name])]) == 0
    return paths


@pytest.fixture(scope="module")
def liposomes(tmp_path_factory):
    """A simulated liposome folder (images/, labels/, classes.csv): 3 images of 128 x 128 px."""
    from napari_microseg.cli import main

    out = tmp_path_factory.mktemp("lip") / "lip"
    assert main(["simulate", "liposomes", "--out", str(out), "--n", "3", "--seed", "2", "--shape", "128", "128",
                 "--particles", "4"]) == 0
    return out


def _counting(monkeypatch, module, name):
    """Replace ``module.name`` by a wrapper that counts its calls; returns the list of calls."""
    calls = []
    original = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_classify_with_a_model_of_another_task_fails_once_before_reading_inputs(models, liposomes, tmp_path,
                                                                                capsys, monkeypatch):
    """`classify objects` with a profiles model read every image and said 'skipped ...: this model classifies
    profiles, not objects' of each before it failed; `classify profiles` with an objects model read the profiles
    first. Now one error, exit 2, and nothing read."""
    from napari_microseg.cli import classify as cli_classify
    from napari_microseg.cli import main

    reads = _counting(monkeypatch, cli_classify, "_read")
    capsys.readouterr()
    assert main(["classify", "objects", "--model", str(models["hole1"]), "--input", str(liposomes),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "skipped" not in err and err.count("error:") == 1, err
    assert "classifies profiles, not objects" in err
    assert reads == []

    np.save(tmp_path / "p.npy", np.random.default_rng(0).random((5, 32)))
    assert main(["classify", "profiles", "--model", str(models["enc"]), "--input", str(tmp_path / "p.npy"),
                 "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "classifies objects, not profiles" in err, err
    assert reads == []
    assert not (tmp_path / "p" / "profiles.csv").exists()


@pytest.mark.gui
def test_classification_dock_takes_a_single_view_profile_layer(make_napari_viewer, wait_worker, models):
    """The dock refused an (N, points) profile layer ("profiles must be an (N, views, points) layer") that
    `classify_profiles()` and the CLI take for a model of one view; a 2-view model is told clearly."""
    from napari_microseg.classify.predict import classify_profiles
    from napari_microseg.simulate.nanoparticles import simulate_profiles
    from napari_microseg.widgets.classification import FILE_CHOICE, ClassificationWidget

    profiles = simulate_profiles(10, "hole", 1, seed=9).profiles[:, 0]  # (10, 32): one view per particle
    assert profiles.ndim == 2
    viewer = make_napari_viewer(show=False)
    viewer.add_image(profiles, name="one view")
    widget = ClassificationWidget(viewer)
    widget.task.value = "profiles [P]"
    widget.image_layer.value = "one view"
    widget.model_choice.value = FILE_CHOICE
    widget.model_file.value = str(models["hole1"])
    wait_worker(widget.classify())
    assert widget.status.text() == "classified 10 profiles", widget.status.text()
    expected = classify_profiles(str(models["hole1"]), profiles)
    assert list(widget.results["class"]) == list(expected["class"])
    np.testing.assert_allclose(widget.results["probability"], expected["probability"], rtol=1e-5)
    widget.table.selectRow(7)  # jumps to the profile's row of the 2-D layer
    assert abs(viewer.camera.center[-2] - 7) < 1e-6

    widget.model_file.value = str(models["chir2"])  # 2 views per particle
    assert widget.classify() is None
    said = widget.status.text()
    assert "one profile per particle" in said and "takes 2 views" in said, said


def test_classify_train_resume_takes_the_runs_samples_and_refuses_others_before_simulating(models, tmp_path,
                                                                                          capsys, monkeypatch):
    """`classify train objects|profiles --resume` asked again for --simulated, --particles, --task (profiles:
    --views, --offset-sd, --view-angle, --points ...) and refused a mismatch only after simulating all the data."""
    from napari_microseg.classify import data as classify_data
    from napari_microseg.cli import main
    from napari_microseg.io.models import read_model_config

    objects = _counting(monkeypatch, classify_data, "simulated_liposome_data")
    profiles = _counting(monkeypatch, classify_data, "simulated_profile_data")
    capsys.readouterr()
    for option, value in (("--particles", "5"), ("--task", "lamellarity"), ("--simulated", "3"), ("--seed", "4")):
        assert main(["classify", "train", "objects", "--resume", str(models["enc"]), "--epochs", "2", option, value,
                     "--out", str(tmp_path / "x.pt"), "--threads", "1"]) == 2
        err = capsys.readouterr().err
        assert f"{option} {value}: the run of --resume" in err, err
    for option, value in (("--views", "1"), ("--task", "hole"), ("--offset-sd", "0.3"), ("--view-angle", "90"),
                          ("--points", "32"), ("--simulated", "20")):
        assert main(["classify", "train", "profiles", "--resume", str(models["chir2"]), "--epochs", "2", option,
                     value, "--out", str(tmp_path / "y.pt"), "--threads", "1"]) == 2
        err = capsys.readouterr().err
        assert f"{option} {value}: the run of --resume" in err, err
    assert main(["classify", "train", "profiles", "--resume", str(models["enc"]), "--epochs", "2", "--simulated", "12",
                 "--out", str(tmp_path / "z.pt"), "--threads", "1"]) == 2
    assert "a classifier of objects; this run trains a classifier of profiles" in capsys.readouterr().err
    assert objects == [] and profiles == []  # refused before anything was simulated

    # not given again: the run's own
    assert main(["classify", "train", "objects", "--resume", str(models["enc"]), "--epochs", "2",
                 "--out", str(tmp_path / "enc2.pt"), "--threads", "1"]) == 0
    config = read_model_config(tmp_path / "enc2.pt")
    assert config["class_names"] == ["full", "empty", "uncertain"]
    assert config["training"]["simulation"]["settings"]["n_particles"] == 4
    assert config["training"]["epochs_run"] == 2
    assert main(["classify", "train", "profiles", "--resume", str(models["chir2"]), "--epochs", "2", "--views", "2",
                 "--out", str(tmp_path / "chir3.pt"), "--threads", "1"]) == 0
    config = read_model_config(tmp_path / "chir3.pt")
    assert config["class_names"] == ["clockwise", "anticlockwise"]
    assert config["input_shape"] == [2, 24] and config["training"]["epochs_run"] == 2
    assert config["training"]["simulation"] == read_model_config(models["chir2"])["training"]["simulation"]


def test_metrics_json_and_a_csv_hold_the_row_normalised_confusion_matrix(models, liposomes, tmp_path):
    """METHODS.md asks for the confusion matrix raw and row-normalised; metrics.json held the raw one only."""
    import pandas as pd

    from napari_microseg.cli import main

    sim = tmp_path / "np"
    assert main(["simulate", "nanoparticles", "--out", str(sim), "--n", "10", "--seed", "5"]) == 0
    runs = (("profiles", models["hole1"], sim), ("objects", models["enc"], liposomes))
    for what, model, folder in runs:
        out = tmp_path / what
        assert main(["classify", what, "--model", str(model), "--input", str(folder), "--out", str(out)]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        raw = np.asarray(metrics["confusion"], float)
        rows = raw.sum(axis=1, keepdims=True)
        expected = np.divide(raw, rows, out=np.zeros_like(raw), where=rows > 0)
        np.testing.assert_allclose(metrics["confusion_normalized"], expected)
        table = pd.read_csv(out / "confusion_normalized.csv").set_index("true class")
        assert list(table.index) == metrics["class_names"]
        assert list(table.columns) == [f"predicted {c}" for c in metrics["class_names"]]
        np.testing.assert_allclose(table.to_numpy(float), expected)
    # --overwrite replaces it with the rest (an earlier run's scored outputs go)
    assert main(["classify", "profiles", "--model", str(models["hole1"]), "--input", str(sim / "profiles.tif"),
                 "--out", str(tmp_path / "profiles"), "--overwrite"]) == 0
    assert not (tmp_path / "profiles" / "confusion_normalized.csv").exists()


def test_training_chirality_from_one_view_is_warned(tmp_path, capsys):
    """`classify train profiles --task chirality --views 1` trained without a word, though one view cannot
    tell chirality ([P])."""
    from napari_microseg.cli import main

    capsys.readouterr()
    assert main(["classify", "train", "profiles", "--simulated", "8", "--task", "chirality", *TRAIN,
                 "--out", str(tmp_path / "c1.pt")]) == 0
    err = capsys.readouterr().err
    assert "warning: chirality from one view" in err and "--views 2" in err, err
    assert main(["classify", "train", "profiles", "--simulated", "8", "--task", "chirality", "--views", "2", *TRAIN,
                 "--out", str(tmp_path / "c2.pt")]) == 0
    assert main(["classify", "train", "profiles", "--simulated", "8", *TRAIN, "--out", str(tmp_path / "h1.pt")]) == 0
    assert "chirality from one view" not in capsys.readouterr().err


@pytest.mark.gui
def test_classification_dock_warns_of_chirality_from_one_view(make_napari_viewer, wait_worker, tmp_path, monkeypatch):
    """The dock trained a chirality classifier on one view without a word."""
    from napari_microseg.widgets import classification
    from napari_microseg.widgets.classification import ClassificationWidget

    monkeypatch.setattr(classification, "RECENT_CLASSIFIERS", {})  # this test's models stay out of later tests' lists
    viewer = make_napari_viewer(show=False)
    widget = ClassificationWidget(viewer)
    widget.task.value = "profiles [P]"
    widget.train_n.value = 20
    widget.train_epochs.value = 1
    widget.train_profile_task.value = "chirality"
    widget.train_views.value = 1
    widget.train_out.value = str(tmp_path / "c1.pt")
    wait_worker(widget.train())
    said = widget.status.text()
    assert said.startswith("trained") and "warning: chirality from one view" in said, said
    assert (tmp_path / "c1.pt").is_file()
    widget.train_views.value = 2
    widget.train_out.value = str(tmp_path / "c2.pt")
    wait_worker(widget.train())
    said = widget.status.text()
    assert said.startswith("trained") and "warning" not in said, said
