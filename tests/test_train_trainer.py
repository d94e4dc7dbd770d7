"""Real (short) training runs: learning, partial annotation, stopping, resume, fine-tuning."""

import threading

import numpy as np
import pytest
import torch

from napari_microseg.errors import InputError
from napari_microseg.io.models import load_model, read_model_file
from napari_microseg.training import TrainConfig, train
from napari_microseg.training.predict import predict_image
from napari_microseg.training.trainer import last_checkpoint_path
from test_train_data import dice, disk_image, disk_set

TINY = dict(preset="small", model={"base_filters": 8, "depth": 2}, patch_size=64, patches_per_epoch=32,
            batch_size=8, num_threads=2, early_stopping_patience=None, reduce_lr_patience=None, lr=1e-2)


def run(gen):
    events = []
    try:
        while True:
            events.append(next(gen))
            # the consumer's code never runs with autograd switched off by the trainer
            assert torch.is_grad_enabled()
    except StopIteration as stop:
        return events, stop.value


def test_short_training_learns_and_beats_baselines(tmp_path):
    imgs, labs = disk_set(6, seed=1, gradient=0.6, noise=0.06)
    cfg = TrainConfig(epochs=8, seed=0, **TINY)
    events, result = run(train(cfg, (imgs, labs), out_path=tmp_path / "m.pt"))
    epochs = [e for e in events if e.kind == "epoch"]
    assert [e.epoch for e in epochs] == list(range(1, 9))
    assert all(e.done <= e.total for e in events) and events[-1].done == events[-1].total
    assert epochs[-1].train_loss < 0.6 * epochs[0].train_loss
    assert result.stop_reason == "completed" and result.device == "cpu"
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.config["training"]["epochs_run"] == result.best_epoch
    assert loaded.config["normalization"]["kind"] == "percentile"
    # held-out images: Dice beats all-background (0) and a global threshold at mid-range
    test_imgs, test_labs = disk_set(3, seed=99, gradient=0.6, noise=0.06)
    d_model, d_thresh = [], []
    for im, lb in zip(test_imgs, test_labs):
        prob = predict_image(loaded, im)[0]
        d_model.append(dice(prob > 0.5, lb > 0))
        d_thresh.append(dice(im > 0.5 * (im.min() + im.max()), lb > 0))
    assert np.mean(d_model) > 0.85
    assert np.mean(d_model) > np.mean(d_thresh) + 0.05


def test_partial_annotation_learns_from_few_nuclei(tmp_path):
    img, lab = disk_image((160, 160), n=20, seed=7, radius=(5, 8))
    # annotate only 4 nuclei plus a painted background patch; the rest is "not annotated"
    sparse = np.zeros_like(lab)
    for k in (1, 2, 3, 4):
        sparse[lab == k] = 1
    bg = np.zeros(lab.shape, bool)
    bg[::3, ::3] = True
    sparse[bg & (lab == 0)] = 9  # painted background
    cfg = TrainConfig(epochs=5, val_fraction=0.0, unlabelled_is_ignored=True, background_value=9, **TINY)
    _, result = run(train(cfg, ([img], [sparse]), out_path=tmp_path / "p.pt"))
    loaded = load_model(result.model_path)
    test_img, test_lab = disk_image((96, 96), n=8, seed=70, radius=(5, 8))
    prob = predict_image(loaded, test_img)[0]
    assert dice(prob > 0.5, test_lab > 0) > 0.8


def test_ignored_labels_do_not_affect_training(tmp_path):
    img, lab = disk_image((64, 64), n=4, seed=11)
    lab_a = lab.copy()
    lab_b = lab.copy()
    lab_a[:, :20] = -1
    lab_b[:, :20] = -1
    lab_b[10:20, 5:15] = 1  # overwritten... back to ignore below
    lab_b[:, :20] = np.where(lab_b[:, :20] == 1, -1, lab_b[:, :20])
    cfg = TrainConfig(epochs=1, val_fraction=0.0, augment=False, seed=3, **TINY)
    mask_a = np.zeros(lab.shape, bool)
    mask_a[:, :20] = True
    # same underlying labels, one ignored by value, one by an explicit mask over different labels
    from napari_microseg.training.data import prepare_training_data

    other = lab.copy()
    other[:, :20] = 5
    td_a = prepare_training_data(img, lab_a)
    td_b = prepare_training_data(img, other, ignore_masks=[mask_a])
    _, ra = run(train(cfg, td_a, out_path=tmp_path / "a.pt"))
    _, rb = run(train(cfg, td_b, out_path=tmp_path / "b.pt"))
    assert ra.history[0]["train_loss"] == rb.history[0]["train_loss"]
    sa, sb = read_model_file(tmp_path / "a.pt")["state_dict"], read_model_file(tmp_path / "b.pt")["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_stop_by_close_keeps_valid_model_and_resume_continues(tmp_path):
    imgs, labs = disk_set(4, seed=2)
    out = tmp_path / "r.pt"
    cfg2 = TrainConfig(epochs=2, seed=5, **TINY)
    _, r2 = run(train(cfg2, (imgs, labs), out_path=out))
    assert r2.epochs_run == 2 and last_checkpoint_path(out).is_file()
    ck = read_model_file(last_checkpoint_path(out))
    assert "optimizer_state" in ck and ck["optimizer_state"]["state"]
    cfg4 = TrainConfig(epochs=4, seed=5, **TINY)
    events, r4 = run(train(cfg4, (imgs, labs), out_path=out, resume=last_checkpoint_path(out)))
    assert sorted({e.epoch for e in events if e.kind != "prepare"}) == [3, 4]  # (before them: preparing the data)
    assert [h["epoch"] for h in r4.history] == [1, 2, 3, 4]
    # the resumed run equals an uninterrupted 4-epoch run (optimiser state, per-epoch seeding)
    _, full = run(train(cfg4, (imgs, labs), out_path=tmp_path / "full.pt"))
    assert [round(h["train_loss"], 5) for h in full.history] == [round(h["train_loss"], 5) for h in r4.history]
    # settings the saved optimiser state belongs to cannot change on resume: one clear reason, no traceback
    for changed in ({"optimizer": "sgd"}, {"freeze_encoder": True}, {"normalization": "minmax"}):
        with pytest.raises(InputError, match="cannot resume with"):
            run(train(TrainConfig(epochs=6, seed=5, **{**TINY, **changed}), (imgs, labs), out_path=out, resume=out))
    # the architecture is the checkpoint's: a preset setting that was not used is not recorded as used
    cfg_n = TrainConfig(epochs=5, seed=5, **{**TINY, "preset": "n"})
    from napari_microseg.training.trainer import resume_settings

    kept = resume_settings(out)  # what the Training widget keeps on resume
    assert kept["optimizer"] == "adam" and kept["normalization"]["kind"] == "percentile"
    # and its validation share and measure: the best epoch stays chosen by validation loss throughout
    assert kept["val_fraction"] == TrainConfig(**TINY).val_fraction and kept["monitor"] == "val_loss"
    with pytest.raises(InputError, match="cannot resume with validation share 0"):  # other images, or none
        run(train(TrainConfig(epochs=6, seed=5, **{**TINY, "val_fraction": 0.0}), (imgs, labs), out_path=out, resume=out))
    _, r5 = run(train(cfg_n, (imgs, labs), out_path=out, resume=out))
    saved = load_model(out).config
    assert saved["training"]["config"]["preset"] == saved["model"]["preset"] == ck["config"]["model"]["preset"]

    # stop mid-epoch by closing the generator: best model file stays valid
    gen = train(TrainConfig(epochs=50, seed=1, **TINY), (imgs, labs), out_path=tmp_path / "s.pt")
    for ev in gen:
        if ev.kind == "epoch" and ev.epoch == 2:
            break
    next(gen)  # one step into epoch 3
    gen.close()
    loaded = load_model(tmp_path / "s.pt")
    assert loaded.config["training"]["complete"] is True
    assert loaded.config["training"]["stop_reason"] == "stopped" and loaded.config["training"]["epochs_run"] == 2
    assert len(read_model_file(last_checkpoint_path(tmp_path / "s.pt"))["config"]["training"]["history"]) == 2

    # Ctrl-C (or SIGTERM, which the CLI turns into the same) while a step runs inside the trainer: the
    # interrupt arrives in its frame, not as a close; the file still records the stop
    gen = train(TrainConfig(epochs=50, seed=1, **TINY), (imgs, labs), out_path=tmp_path / "ctrl_c.pt")
    for ev in gen:
        if ev.kind == "epoch" and ev.epoch == 1:
            break
    with pytest.raises(KeyboardInterrupt):
        gen.throw(KeyboardInterrupt)
    interrupted = load_model(tmp_path / "ctrl_c.pt").config["training"]
    assert interrupted["stop_reason"] == "stopped" and interrupted["epochs_run"] == 1

    # stop before any epoch finished: nothing written, and an earlier run's file there stays as it was
    gen = train(TrainConfig(epochs=5, seed=1, **TINY), (imgs, labs), out_path=tmp_path / "early.pt")
    next(gen)
    gen.close()
    assert not (tmp_path / "early.pt").exists()
    before = (tmp_path / "s.pt").read_bytes()
    gen = train(TrainConfig(epochs=5, seed=1, **TINY), (imgs, labs), out_path=tmp_path / "s.pt")
    next(gen)
    gen.close()
    assert (tmp_path / "s.pt").read_bytes() == before


def test_stop_event_and_early_stopping(tmp_path):
    imgs, labs = disk_set(3, seed=4)
    stop = threading.Event()
    gen = train(TrainConfig(epochs=50, **TINY), (imgs, labs), out_path=tmp_path / "e.pt", stop_event=stop)
    n = 0
    for ev in gen:
        n += ev.kind != "prepare"  # (the data's preparation is said before the first step)
        if ev.kind == "epoch":
            stop.set()
    assert n <= 4 + 1 + 1  # 4 steps + validation + epoch event, then stop within one step
    cfg = dict(TINY, early_stopping_patience=1, lr=1e-30)  # SGD steps below float32 resolution: no learning, no improvement after epoch 1
    _, res = run(train(TrainConfig(epochs=10, optimizer="sgd", **{k: v for k, v in cfg.items()}), (imgs, labs), out_path=tmp_path / "es.pt"))
    assert res.stop_reason == "early_stopping" and res.epochs_run == 2
    # the kept file holds the best epoch's weights but describes the whole run
    kept = load_model(tmp_path / "es.pt").config["training"]
    assert kept["best_epoch"] == 1 and kept["metrics"]["epoch"] == 1
    assert kept["epochs_run"] == 2 and kept["stop_reason"] == "early_stopping"
    assert [h["epoch"] for h in kept["history"]] == [1, 2]


def test_three_class_multiclass_and_finetune(tmp_path):
    imgs, labs = disk_set(3, seed=6, radius=(6, 10))
    _, r3 = run(train(TrainConfig(epochs=1, output_mode="three_class", **TINY), (imgs, labs), out_path=tmp_path / "t.pt"))
    m3 = load_model(r3.model_path)
    assert m3.config["class_names"] == ["background", "interior", "boundary"]
    p = predict_image(m3, imgs[0])
    assert p.shape == (3, 96, 96) and np.allclose(p.sum(0), 1, atol=1e-5)
    # multiclass with fixed normalisation (raw-ADC-like) and weighted CE
    cls = [np.clip(lb, 0, 3) for lb in labs]
    adc = [8800 + 1000 * im for im in imgs]
    cfg = TrainConfig(epochs=1, output_mode="multiclass", n_classes=4, optimizer="adadelta",
                      normalization={"kind": "fixed", "offset": 8800, "scale": 1000}, **dict(TINY, lr=1.0))
    _, rm = run(train(cfg, (adc, cls), out_path=tmp_path / "mc.pt"))
    mm = load_model(rm.model_path)
    assert mm.config["normalization"] == {"kind": "fixed", "offset": 8800.0, "scale": 1000.0}
    assert len(mm.config["training"]["class_weights"]) == 4
    # fine-tune the binary-free three-class model from the 3-class weights with a frozen encoder
    before = read_model_file(r3.model_path)["state_dict"]
    _, rf = run(train(TrainConfig(epochs=1, output_mode="three_class", freeze_encoder=True, **TINY), (imgs, labs),
                      out_path=tmp_path / "ft.pt", init_model=r3.model_path))
    after = read_model_file(rf.model_path)["state_dict"]
    enc = [k for k in before if k.startswith("encoder.") and "weight" in k and "num_batches" not in k]
    dec = [k for k in before if k.startswith("decoder.") and k.endswith("weight")]
    assert all(torch.equal(before[k], after[k]) for k in enc)
    assert any(not torch.equal(before[k], after[k]) for k in dec)
    with pytest.raises(InputError, match="output mode"):
        next(train(TrainConfig(epochs=2, output_mode="binary", **TINY), (imgs, labs), out_path=tmp_path / "x.pt",
                   resume=last_checkpoint_path(tmp_path / "t.pt")))


def test_unknown_image_sampling_is_refused_before_training(tmp_path):
    imgs, labs = disk_set(2, seed=4)
    with pytest.raises(InputError, match="image_sampling must be one of pixels, objects"):
        next(train(TrainConfig(epochs=1, image_sampling="area", **TINY), (imgs, labs), out_path=tmp_path / "x.pt"))
    assert not (tmp_path / "x.pt").exists()


def test_split_seed_keeps_the_validation_images_across_seeds(tmp_path):
    """Runs with other seeds hold out other images; with one split_seed, the same ones (recorded by name)."""
    imgs, labs = disk_set(20, seed=5)
    base = dict(TINY, patches_per_epoch=8, val_fraction=0.2)

    def held_out(**seeds):
        run(train(TrainConfig(epochs=1, **seeds, **base), (imgs, labs), out_path=tmp_path / "m.pt"))
        meta = read_model_file(tmp_path / "m.pt")["config"]["training"]
        assert meta["config"]["split_seed"] == seeds.get("split_seed", seeds["seed"])  # the one used
        return meta["validation_images"]

    by_seed = {seed: held_out(seed=seed) for seed in (0, 1, 2)}
    assert all(len(names) == 4 and all(n.startswith("image ") for n in names) for names in by_seed.values())
    assert len({tuple(names) for names in by_seed.values()}) > 1  # the seed alone moves the split
    assert held_out(seed=1, split_seed=0) == held_out(seed=2, split_seed=0) == by_seed[0]


def test_split_seed_draws_the_validation_tiles_and_survives_a_resume(tmp_path, monkeypatch):
    import napari_microseg.training.trainer as trainer_module

    drawn = []
    real = trainer_module.tile_for_validation
    monkeypatch.setattr(trainer_module, "tile_for_validation",
                        lambda *a, **k: drawn.append(k["seed"]) or real(*a, **k))
    imgs, labs = disk_set(20, seed=5)
    base = dict(TINY, patches_per_epoch=8, val_fraction=0.2, val_max_tiles=2)
    run(train(TrainConfig(epochs=1, seed=1, split_seed=0, **base), (imgs, labs), out_path=tmp_path / "m.pt"))
    first = read_model_file(tmp_path / "m.pt")["config"]["training"]["validation_images"]
    # resumed with another seed and no split_seed: the checkpoint's split and tiles go on
    run(train(TrainConfig(epochs=2, seed=2, **base), (imgs, labs), out_path=tmp_path / "m.pt", resume=tmp_path / "m.pt"))
    meta = read_model_file(tmp_path / "m.pt")["config"]["training"]
    assert drawn == [0, 0] and meta["validation_images"] == first and meta["config"]["split_seed"] == 0
    assert meta["config"]["seed"] == 2 and meta["epochs_run"] == 2
    for bad in ({"split_seed": -1}, {"split_seed": 1.5}, {"seed": True}, {"seed": -3}):
        with pytest.raises(InputError, match="seed must be a whole number >= 0"):
            next(train(TrainConfig(epochs=1, **{"seed": 0, **bad}, **base), (imgs, labs), out_path=tmp_path / "x.pt"))


def test_cosine_schedule_falls_from_lr_to_min_lr_and_resumes_on_it(tmp_path):
    imgs, labs = disk_set(3, seed=2)
    base = dict(TINY, patches_per_epoch=8, lr=1e-2, min_lr=1e-4, lr_schedule="cosine")
    events, _ = run(train(TrainConfig(epochs=4, seed=0, **base), (imgs, labs), out_path=tmp_path / "m.pt"))
    lrs = [e.lr for e in events if e.kind == "epoch"]
    expected = [1e-4 + (1e-2 - 1e-4) * (1 + np.cos(np.pi * k / 4)) / 2 for k in range(4)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-6)
    # resuming up to more epochs continues where the schedule stood, not from the start
    events, _ = run(train(TrainConfig(epochs=5, seed=0, **base), (imgs, labs), out_path=tmp_path / "m.pt",
                          resume=tmp_path / "m.pt"))
    assert [e.epoch for e in events if e.kind == "epoch"] == [5]
    np.testing.assert_allclose([e.lr for e in events if e.kind == "epoch"],
                               [1e-4 + (1e-2 - 1e-4) * (1 + np.cos(np.pi * 4 / 5)) / 2], rtol=1e-6)
    with pytest.raises(InputError, match="lr_schedule"):
        next(train(TrainConfig(epochs=1, lr_schedule="step", **TINY), (imgs, labs), out_path=tmp_path / "x.pt"))


@pytest.mark.parametrize("normalization, exact", [({"kind": "pedestal", "scale": 200.0}, True),
                                                  ({"kind": "fixed", "offset": 8800, "scale": 1000}, True),
                                                  ("percentile", False)])
def test_raw_adc_training_uses_only_exact_augmentations(tmp_path, monkeypatch, normalization, exact):
    """[C]: classes told apart by their level in ADC train on flips and quarter turns only: no intensity
    scale/gamma (glow and hot ranges would overlap) and no bilinear warp (it smears 1-px hot lines
    into the glow range); per-image normalisations keep the full default augmentation."""
    import napari_microseg.training.trainer as trainer_module

    seen = []
    original = trainer_module.augment_batch

    def spy(x, y, config, **kwargs):
        seen.append(config)
        return original(x, y, config, **kwargs)

    monkeypatch.setattr(trainer_module, "augment_batch", spy)
    imgs, labs = disk_set(2, seed=3, radius=(6, 10))
    cfg = TrainConfig(epochs=1, output_mode="multiclass", n_classes=3, normalization=normalization, **TINY)
    run(train(cfg, ([8800 + 1000 * im for im in imgs], [np.clip(lb, 0, 2) for lb in labs]), out_path=tmp_path / "m.pt"))
    assert seen, "no batch was augmented"
    assert all((c.intensity, c.affine_p > 0) == (not exact, not exact) for c in seen)
    assert all(c.flips and c.rot90 for c in seen)
