"""``microseg demo --quick``: the main job runs end to end (simulate, train briefly, segment, track) and writes every output."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from skimage.io import imread

from napari_microseg.cli import main
from napari_microseg.io.tables import TRACKS_COLUMNS
from napari_microseg.pretrained import list_pretrained


def test_shipped_models_have_cards():
    from napari_microseg.pretrained import PRETRAINED_DIR

    names = list_pretrained()
    assert "nuclei_fluorescence" in names
    for name in names:
        card = (PRETRAINED_DIR / f"{name}.md").read_text()
        assert "Held-out metrics" in card and "reproduce" in card
        assert (PRETRAINED_DIR / f"{name}.pt").stat().st_size < 20 * 2**20  # a few MB, shipped in the package


def test_demo_quick_writes_everything(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "TRA" in printed and str(out.resolve()) in printed
    tracks = pd.read_csv(out / "tracks.csv")
    assert list(tracks.columns[:8]) == TRACKS_COLUMNS and len(tracks) > 0
    counts = pd.read_csv(out / "counts.csv")
    assert list(counts.columns[:2]) == ["t", "count"] and len(counts) == 8
    objects = pd.read_csv(out / "objects.csv")
    assert list(objects.columns[:5]) == ["t", "label", "y", "x", "area"]
    assert (out / "ctc_RES" / "res_track.txt").is_file() and (out / "ctc_RES" / "mask000.tif").is_file()
    picture = imread(out / "summary.png")
    assert picture.shape[0] > 300 and picture[..., :3].std() > 10
    report = json.loads((out / "demo_report.json").read_text())
    own = report["scores"]["tracking_with_own_segmentation"]["TRA"]
    truth = report["scores"]["tracking_with_true_segmentation"]["TRA"]
    assert truth > 0.9, f"tracking the true masks should be near perfect, TRA {truth}"
    assert own > 0.7, f"end-to-end TRA with the shipped model is too low: {own}"
    seg = report["scores"]["segmentation"]
    assert seg["f1@0.50"] > 0.7, f"the briefly trained model segments simulated nuclei poorly: {seg}"
    # it trained briefly: a model file that loads, its loss history, and the starting model's score beside it
    from napari_microseg.io.models import load_model

    assert report["model"] == str(out / "model.pt") and "training:" in printed
    loaded = load_model(out / "model.pt")
    assert loaded.output_mode == load_model(report["base_model"]).output_mode
    training = report["scores"]["training"]
    assert training["epochs_run"] == 1 and np.isfinite(training["history"][0]["train_loss"])
    assert len(report["scores"]["training_curve"]) > 0
    assert not (out / "model.pt.last.pt").exists()  # the demo never resumes: no 23 MB checkpoint left behind
    assert report["scores"]["segmentation_before_training"]["f1@0.50"] > 0.7
    # the segmented counts follow the truth
    assert report["scores"]["count_mean_abs_error"] < 3
    # the picture's division bars count divisions as counts.csv does (one per mother, not per daughter)
    from napari_microseg.demo import division_frames

    bars = division_frames(tracks)
    assert int(bars.sum()) == int(counts["divisions"].sum())
    assert all(counts.set_index("t").loc[t, "divisions"] == n for t, n in bars.items())


def test_demo_without_training_uses_the_model_as_it_is(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--train-epochs", "0", "--out", str(out)]) == 0
    report = json.loads((out / "demo_report.json").read_text())
    assert not (out / "model.pt").exists() and "training" not in report["scores"]
    assert report["model"] == report["base_model"] and report["scores"]["segmentation"]["f1@0.50"] > 0.7


def test_demo_rejects_bad_settings(tmp_path, capsys):
    assert main(["demo", "--frames", "1", "--out", str(tmp_path)]) == 2
    assert "need --frames >= 2" in capsys.readouterr().err
    assert main(["demo", "--quick", "--model", "no_such_model", "--out", str(tmp_path)]) == 2
    capsys.readouterr()
    assert main(["demo", "--train-epochs", "-1", "--out", str(tmp_path)]) == 2
    assert "--train-epochs >= 0" in capsys.readouterr().err


def test_demo_replaces_its_own_results_but_not_other_files(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my own notes\n")
    assert main(["demo", "--quick", "--train-epochs", "0", "--out", str(mine)]) == 2
    assert "not a previous demo's (notes.txt)" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "my own notes\n"
    # the user's own files that happen to have a demo's names are not the demo's: refused, kept
    users = tmp_path / "users"
    users.mkdir()
    for name in ("model.pt", "labels.tif", "tracks.csv"):
        (users / name).write_bytes(b"the user's own " + name.encode())
    assert main(["demo", "--quick", "--train-epochs", "0", "--out", str(users)]) == 2
    assert "that no demo wrote there" in capsys.readouterr().err
    assert all((users / name).read_bytes() == b"the user's own " + name.encode()
               for name in ("model.pt", "labels.tif", "tracks.csv"))
    # a demo stopped half-way (its mark and first files, no report yet) is still the demo's folder
    half = tmp_path / "half"
    half.mkdir()
    (half / ".microseg_demo").write_text("")
    (half / "movie.tif").write_bytes(b"partial")
    (half / "model.pt").write_bytes(b"an earlier demo's trained model")
    assert main(["demo", "--quick", "--train-epochs", "0", "--out", str(half)]) == 0
    assert not (half / "model.pt").exists()  # it would pass for this run's model
    # the brief training must not write over the model it starts from
    (half / "model.pt").write_bytes(b"")
    assert main(["demo", "--quick", "--out", str(half), "--model", str(half / "model.pt")]) == 2
    assert "is the file the brief training writes" in capsys.readouterr().err


def test_demo_starts_from_the_model_this_machine_runs_fast(monkeypatch):
    """bfloat16 hardware: the full model; float32 CPUs: the 16-filter model (3x less arithmetic)."""
    from napari_microseg import device
    from napari_microseg.demo import default_demo_model

    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    assert default_demo_model("cpu") == "nuclei_fluorescence"
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    assert default_demo_model("cpu") == "nuclei_fluorescence_fast"
