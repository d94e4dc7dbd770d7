"""Short classifier trainings: [R] small net on simulated response images, stop / resume / fine-tune, CV."""

from __future__ import annotations

import io
import re
import threading

import numpy as np
import pytest

from napari_microseg.classify.data import ClassificationData, simulated_response_data
from napari_microseg.classify.evaluate import classification_report
from napari_microseg.classify.predict import classify_images, load_classifier, predict_proba
from napari_microseg.classify.trainer import cross_validate, train_classifier, train_with_strategy
from napari_microseg.errors import InputError
from napari_microseg.io.models import read_model_file
from napari_microseg.progress import run_with_text_progress

# the small [R] net with narrower layers so a test trains in seconds on 2 CPU cores
FAST_SMALL = {"architecture": "small_cnn", "filters": [8, 16, 32], "dense": 32}


def _cfg(**kw):
    cfg = {"model": FAST_SMALL, "epochs": 12, "batch_size": 20, "lr": 3e-3, "device": "cpu", "val_fraction": 0.0,
           "seed": 0, "num_threads": 1, "early_stopping_patience": None}
    cfg.update(kw)
    return cfg


@pytest.fixture(scope="module")
def response_sets():
    return simulated_response_data(100, seed=0), simulated_response_data(60, seed=100)


def test_small_net_beats_chance_on_held_out_simulated_images(response_sets, tmp_path):
    train, test = response_sets
    assert train.x.shape == (100, 1, 39, 42) and set(np.unique(train.y)) == {0, 1}
    res = run_with_text_progress(train_classifier(_cfg(), train, out_path=tmp_path / "r.pt"), stream=io.StringIO())
    assert res.stop_reason == "completed" and res.epochs_run == 12
    prob = predict_proba(res.model_path, test.x)
    rep = classification_report(test.y, prob.argmax(1), test.class_names, prob=prob)
    assert rep["summary"]["auc"] > 0.7
    # the stored model reapplies crop + normalisation on raw images
    lm = load_classifier(res.model_path)
    assert lm.config["task"] == "images" and lm.config["normalization"]["kind"] == "minmax"
    assert lm.config["crop"]["size"] == [39, 42]
    assert lm.class_names == ["good", "bad"]


def test_events_stop_and_resume(response_sets, tmp_path):
    train, _ = response_sets
    small = train.subset(np.arange(40))
    out = tmp_path / "m.pt"
    stop = threading.Event()
    gen = train_classifier(_cfg(epochs=3, val_fraction=0.25), small, out_path=out, stop_event=stop)
    events = []
    for e in gen:
        events.append(e)
        for name in ("done", "total", "message", "epoch", "train_loss", "val_loss", "val_accuracy", "lr", "seconds", "device"):
            assert hasattr(e, name)
        if e.kind == "epoch":
            assert e.val_loss is not None and 0 <= e.val_accuracy <= 1
            stop.set()  # stop after the first epoch
    assert out.is_file() and (tmp_path / "m.pt.last.pt").is_file()
    ck = read_model_file(tmp_path / "m.pt.last.pt")
    assert "optimizer_state" in ck
    res = run_with_text_progress(train_classifier(_cfg(epochs=2, val_fraction=0.25), small, out_path=out, resume=out), stream=io.StringIO())
    assert [h["epoch"] for h in res.history] == [1, 2]
    # resuming a run that has done all its epochs: refused with the reason (it wrote no model, said done)
    import pytest

    from napari_microseg.errors import InputError

    with pytest.raises(InputError, match="has done 2 epoch"):
        run_with_text_progress(train_classifier(_cfg(epochs=2, val_fraction=0.25), small, out_path=tmp_path / "n.pt",
                                                resume=out), stream=io.StringIO())


def test_close_before_first_epoch_writes_no_model(response_sets, tmp_path):
    """Ctrl-C before an epoch finished: no untrained network written (with --overwrite it replaced the
    earlier model)."""
    train, _ = response_sets
    gen = train_classifier(_cfg(epochs=2), train.subset(np.arange(40)), out_path=tmp_path / "c.pt")
    next(gen)
    gen.close()
    assert not (tmp_path / "c.pt").exists()


def test_pretrain_freeze_keeps_conv_base(response_sets, tmp_path):
    train, test = response_sets
    sim = train.subset(np.arange(40))
    real = test.subset(np.arange(30))
    out = tmp_path / "f.pt"
    res = run_with_text_progress(train_with_strategy("pretrain_freeze", _cfg(epochs=1), real=real, simulated=sim, out_path=out),
                                 stream=io.StringIO())
    pre = read_model_file(tmp_path / "f.pretrained.pt")["state_dict"]
    fine = read_model_file(out)["state_dict"]
    assert read_model_file(out)["config"]["training"]["frozen_features"] is True
    conv_keys = [k for k in fine if k.startswith("features.")]
    head_keys = [k for k in fine if k.startswith("head.")]
    assert conv_keys and all(np.array_equal(pre[k].numpy(), fine[k].numpy()) for k in conv_keys)
    assert any(not np.array_equal(pre[k].numpy(), fine[k].numpy()) for k in head_keys)
    assert res.model_path == str(out)
    with pytest.raises(InputError):
        next(train_with_strategy("pretrain_finetune", _cfg(), real=None, simulated=sim, out_path=out))


def test_classify_images_table(response_sets, tmp_path):
    from napari_microseg.simulate.response import build_balanced_set

    train, _ = response_sets
    res = run_with_text_progress(train_classifier(_cfg(epochs=1), train.subset(np.arange(20)), out_path=tmp_path / "m.pt"),
                                 stream=io.StringIO())
    items = build_balanced_set(4, seed=7)
    df = classify_images(res.model_path, [r.image for r in items], masks=[r.integration_mask for r in items], threshold=0.3)
    assert list(df.columns) == ["index", "probability_bad", "verdict", "threshold"]
    assert ((df["probability_bad"] >= 0.3) == (df["verdict"] == "bad")).all()
    assert df["probability_bad"].between(0, 1).all()


def test_cross_validation_grouped(tmp_path):
    rng = np.random.default_rng(0)
    y = np.tile([0, 1], 12)
    x = rng.normal(0, 1, (24, 1, 39, 42)).astype(np.float32) + y[:, None, None, None] * 1.5
    groups = np.repeat(np.arange(12), 2)
    data = ClassificationData(x, y, ["good", "bad"], groups)
    out = run_with_text_progress(cross_validate(_cfg(epochs=1), data, k=3, out_dir=tmp_path), stream=io.StringIO())
    folds, preds = out["folds"], out["predictions"]
    assert len(folds) == 3 and sorted(preds["index"]) == list(range(24))
    for f in range(1, 4):
        test_groups = set(groups[preds.loc[preds["fold"] == f, "index"]])
        train_groups = set(groups) - test_groups
        assert not test_groups & train_groups
    assert "accuracy" in out["summary"]


@pytest.mark.parametrize("setting, message", [({"lr": 0.0}, "lr (learning rate) must be a number > 0"),
                                              ({"lr": float("nan")}, "lr (learning rate) must be a number > 0"),
                                              ({"weight_decay": -1.0}, "weight_decay must be a number >= 0"),
                                              ({"epochs": 0}, "epochs must be a whole number >= 1"),
                                              ({"batch_size": 2.5}, "batch_size must be a whole number >= 1"),
                                              ({"val_fraction": 1.0}, "val_fraction must be in [0, 1)"),
                                              ({"num_threads": 0}, "num_threads (CPU threads) must be a whole number")])
def test_classifier_training_refuses_settings_that_cannot_train(response_sets, tmp_path, setting, message):
    # the same one-line checks as the segmentation trainer, before any data is touched or a file written
    with pytest.raises(InputError, match=re.escape(message)):
        run_with_text_progress(train_classifier(_cfg(**setting), response_sets[0], out_path=tmp_path / "c.pt"),
                               stream=io.StringIO())
    assert not (tmp_path / "c.pt").exists()


def test_stop_before_first_epoch_writes_no_model(response_sets, tmp_path):
    """The widgets' Stop before an epoch has finished: no untrained network is written or offered
    (model_path None), as the segmentation trainer does (close(), an interrupted script, writes none either)."""
    import threading

    train, _ = response_sets
    stop = threading.Event()
    gen = train_classifier(_cfg(epochs=2), train.subset(np.arange(40)), out_path=tmp_path / "s.pt", stop_event=stop)
    next(gen)
    stop.set()
    try:
        while True:
            next(gen)
    except StopIteration as end:
        result = end.value
    assert result.model_path is None and result.stop_reason == "stopped"
    assert not (tmp_path / "s.pt").exists()


def test_classifier_file_records_how_its_run_stopped(response_sets, tmp_path):
    """As the segmentation trainer's: "completed", or "stopped" for a run closed (Ctrl-C) after an epoch."""
    train, _ = response_sets
    small = train.subset(np.arange(40))
    run_with_text_progress(train_classifier(_cfg(epochs=1), small, out_path=tmp_path / "a.pt"), stream=io.StringIO())
    assert read_model_file(tmp_path / "a.pt")["config"]["training"]["stop_reason"] == "completed"
    gen = train_classifier(_cfg(epochs=5), small, out_path=tmp_path / "b.pt")
    next(event for event in gen if getattr(event, "kind", "") == "epoch")  # run to the end of epoch 1
    gen.close()
    training = read_model_file(tmp_path / "b.pt")["config"]["training"]
    assert training["stop_reason"] == "stopped" and training["epochs_run"] == 1
