"""Distance head: normalised interior distance targets, training with the extra channel, seeds from it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_microseg.errors import InputError
from napari_microseg.inference.postprocess import three_class_to_labels
from napari_microseg.inference.segment import segment
from napari_microseg.io.models import load_model
from napari_microseg.progress import drain
from napari_microseg.simulate.nuclei import simulate_nuclei_image
from napari_microseg.training.data import make_target
from napari_microseg.training.losses import normalized_interior_distance, with_distance_head
from napari_microseg.training.trainer import train


def two_touching_squares():
    lab = np.zeros((1, 40, 60), np.int64)
    lab[0, 10:30, 10:30] = 1
    lab[0, 10:30, 30:50] = 2
    return lab


def test_distance_target_peaks_at_centres_and_is_zero_between_touching_nuclei():
    lab = two_touching_squares()
    target = torch.from_numpy(make_target(lab[0], "three_class"))[None]
    dist = normalized_interior_distance(target)[0].numpy()
    assert dist.shape == (40, 60) and dist.dtype == np.float32
    assert dist.max() == pytest.approx(1.0)
    assert dist[19:21, 19:21].max() == pytest.approx(1.0) and dist[19:21, 39:41].max() == pytest.approx(1.0)
    assert (dist[:, 29:31] == 0).all()  # the two boundary columns where the squares touch
    assert (dist[lab[0] == 0] == 0).all()
    # a small nucleus peaks at 1 too: the map is scale-free
    small = np.zeros((1, 20, 20), np.int64)
    small[0, 5:11, 5:11] = 1
    assert normalized_interior_distance(torch.from_numpy(make_target(small[0], "three_class"))[None]).max() == pytest.approx(1.0)


def test_distance_loss_is_class_loss_plus_masked_mse():
    target = torch.from_numpy(make_target(two_touching_squares()[0], "three_class"))[None]
    target[0, :5] = -1  # ignored rows add nothing
    logits = torch.zeros(1, 4, 40, 60, requires_grad=True)

    def class_loss(lo, t):
        return lo.sum() * 0

    value = with_distance_head(class_loss, 3, weight=2.0)(logits, target)
    dist = normalized_interior_distance(target)[0]
    valid = target[0] >= 0
    expected = 2.0 * float(((0.5 - dist[valid]) ** 2).mean())
    assert float(value) == pytest.approx(expected, rel=1e-5)
    value.backward()
    assert float(logits.grad[0, 3, :5].abs().sum()) == 0.0


def test_network_seeds_split_nuclei_whose_cores_join():
    shape = (60, 90)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    d1, d2 = np.hypot(yy - 30, xx - 32), np.hypot(yy - 30, xx - 58)
    union = (d1 <= 15) | (d2 <= 15)
    p = np.zeros((4,) + shape, np.float32)
    p[0][~union] = 1.0
    p[1][union] = 0.95  # one joined core: the distance of the core alone sees one blob at best
    p[2][union] = 0.05
    p[3] = np.where(union, np.clip(1 - np.minimum(d1, d2) / 15, 0, 1), 0)  # two peaks, saddle between
    labels = three_class_to_labels(p, seed_method="network", distance_sigma=1.0, seed_dynamics=0.1)
    assert labels.max() == 2
    assert labels[30, 32] != labels[30, 58]
    with pytest.raises(ValueError, match="distance head"):
        three_class_to_labels(p[:3], seed_method="network")


def test_training_with_distance_head_from_a_three_class_model(tiny_nuclei_model, tmp_path):
    pairs = [simulate_nuclei_image(shape=(96, 96), n_nuclei=10, seed=70 + s) for s in range(3)]
    out = tmp_path / "dist.pt"
    cfg = {"output_mode": "three_class", "distance_head": True, "patch_size": 64, "patches_per_epoch": 8,
           "batch_size": 4, "epochs": 1, "lr": 1e-3, "seed": 0, "num_threads": 2, "val_fraction": 0.34}
    result = drain(train(cfg, ([p[0] for p in pairs], [p[1] for p in pairs]), out_path=out, init_model=tiny_nuclei_model))
    assert result.epochs_run == 1
    loaded = load_model(out)
    assert loaded.config["distance_head"] is True and loaded.config["model"]["n_classes"] == 4
    # the three class channels of the output layer were taken over from the init model, the 4th is new
    base = load_model(tiny_nuclei_model)
    assert loaded.model.head.weight.shape[0] == 4
    # two Adam steps at lr 1e-3 move a weight by ~2e-3; a fresh initialisation would be ~0.3 away
    assert torch.allclose(loaded.model.head.weight[:3], base.model.head.weight, atol=0.02)
    res = segment(loaded, pairs[0][0], measure=False, keep_probabilities=True, postprocess_options={"seed_method": "network", "seed_dynamics": 0.1})
    assert res.probabilities.shape == (4, 96, 96)
    np.testing.assert_allclose(res.probabilities[:3].sum(0), 1.0, atol=1e-4)
    assert 0.0 <= res.probabilities[3].min() and res.probabilities[3].max() <= 1.0
    assert res.labels.shape == (96, 96)
    # without stored settings, a distance-head model seeds from its distance map
    assert segment(loaded, pairs[0][0], measure=False).settings["postprocess"]["seed_method"] == "network"
    # stored (tuned) settings are used as they are: no default of the other seed method mixes in
    from napari_microseg.inference.tune import store_postprocess

    store_postprocess(out, {"threshold": 0.5, "seed_threshold": 0.7, "seed_dynamics": 0.5})
    used = segment(load_model(out), pairs[0][0], measure=False).settings["postprocess"]
    assert used.get("seed_method", "distance") == "distance" and used["seed_dynamics"] == 0.5
    assert base.model.head.weight.shape[0] == 3


def test_distance_head_needs_three_class():
    img, lab = simulate_nuclei_image(shape=(64, 64), n_nuclei=4, seed=1)
    with pytest.raises(InputError, match="three_class"):
        drain(train({"output_mode": "binary", "distance_head": True, "epochs": 1}, ([img], [lab])))


def test_fine_tuning_a_distance_head_model_keeps_the_head(tiny_nuclei_model, tmp_path):
    from napari_microseg.training.finetune import fine_tune_model

    pairs = [simulate_nuclei_image(shape=(96, 96), n_nuclei=10, seed=80 + s) for s in range(2)]
    cfg = {"patch_size": 64, "patches_per_epoch": 8, "batch_size": 4, "epochs": 1, "lr": 1e-3, "seed": 0,
           "num_threads": 2, "val_fraction": 0.5}
    first = tmp_path / "with_head.pt"
    drain(train({**cfg, "output_mode": "three_class", "distance_head": True},
                ([p[0] for p in pairs], [p[1] for p in pairs]), out_path=first, init_model=tiny_nuclei_model))
    second = tmp_path / "corrected.pt"
    # the correct-and-retrain path does not mention the head: it is kept, trained weights and all
    drain(fine_tune_model(first, [pairs[0][0]], [pairs[0][1]], second, {**cfg, "val_fraction": 0.3}))
    before, after = load_model(first), load_model(second)
    assert after.config["distance_head"] is True and after.model.head.weight.shape[0] == 4
    assert torch.allclose(after.model.head.weight, before.model.head.weight, atol=0.02)
