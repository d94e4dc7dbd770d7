"""Border weights on the seams between touching nuclei (``touching_weight``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_microseg.errors import InputError
from napari_microseg.io.models import load_model
from napari_microseg.progress import drain
from napari_microseg.simulate.nuclei import simulate_nuclei_image
from napari_microseg.training.data import make_target
from napari_microseg.training.losses import normalized_interior_distance, touching_boundary_mask, with_touching_weight
from napari_microseg.training.trainer import train


def touching_pair_and_a_loner() -> np.ndarray:
    """Instance labels (40, 70): squares 1 and 2 touch along columns 29/30; square 3 stands alone."""
    lab = np.zeros((40, 70), np.int64)
    lab[10:30, 10:30] = 1
    lab[10:30, 30:50] = 2
    lab[15:25, 56:66] = 3
    return lab


def test_seam_is_the_boundary_between_touching_nuclei_only():
    target = torch.from_numpy(make_target(touching_pair_and_a_loner(), "three_class"))[None]
    seam = touching_boundary_mask(target)[0].numpy()
    assert seam.dtype == bool and seam.shape == (40, 70)
    cols = np.flatnonzero(seam.any(0))
    assert cols.tolist() == [29, 30]  # the two inner-boundary columns where the squares meet
    assert seam[10:30, 29].all() and seam[10:30, 30].all()
    assert not seam[:, 50:].any()  # the lone nucleus has no seam
    assert not seam[target[0].numpy() == 0].any()
    # an image with one nucleus, or none, has no seam
    one = torch.from_numpy(make_target((touching_pair_and_a_loner() == 3).astype(np.int64), "three_class"))[None]
    assert not touching_boundary_mask(one).any()
    # a stripe of ignored pixels (partial annotation) through the lone nucleus does not split it
    striped = target.clone()
    striped[0, :, 60] = -1
    striped_seam = touching_boundary_mask(striped)[0].numpy()
    assert not striped_seam[:, 50:].any() and striped_seam[10:30, 29:31].all()


def test_touching_weight_adds_weighted_seam_cross_entropy_over_annotated_pixels():
    target = torch.from_numpy(make_target(touching_pair_and_a_loner(), "three_class"))[None]
    target[0, :5] = -1  # ignored rows: not counted in the mean
    logits = torch.zeros(1, 3, 40, 70, requires_grad=True)

    def base(lo, t):
        return lo.sum() * 0

    value = with_touching_weight(base, 3, weight=4.0)(logits, target)
    n_seam = int(touching_boundary_mask(target).sum())
    n_valid = int((target >= 0).sum())
    assert n_seam == 40
    # uniform logits: every pixel's cross-entropy is log(3)
    assert float(value.detach()) == pytest.approx(4.0 * n_seam * math.log(3) / n_valid, rel=1e-5)
    value.backward()
    grad = logits.grad[0].abs().sum(0).numpy()
    seam = touching_boundary_mask(target)[0].numpy()
    assert (grad[seam] > 0).all() and (grad[~seam] == 0).all()


def test_touching_weight_with_a_distance_head_weights_the_seams_distance_error_too():
    target = torch.from_numpy(make_target(touching_pair_and_a_loner(), "three_class"))[None]
    logits = torch.zeros(1, 4, 40, 70)  # sigmoid(0) = 0.5 everywhere on the distance channel
    value = with_touching_weight(lambda lo, t: lo.sum() * 0, 3, weight=2.0, distance_weight=3.0)(logits, target)
    seam = touching_boundary_mask(target)[0]
    dist = normalized_interior_distance(target)[0]
    n_valid = target.numel()
    expected = 2.0 * (int(seam.sum()) * math.log(3) + 3.0 * float(((0.5 - dist[seam]) ** 2).sum())) / n_valid
    assert float(value) == pytest.approx(expected, rel=1e-5)
    # on the seams the distance target is 0 (boundary pixels), so the term is not empty
    assert float(((0.5 - dist[seam]) ** 2).sum()) > 0


@pytest.mark.parametrize("mode,weight,reason", [("binary", 2.0, "needs output mode three_class"),
                                                ("three_class", -1.0, "a number >= 0"),
                                                ("three_class", float("nan"), "a number >= 0")])
def test_touching_weight_needs_three_class_and_a_non_negative_value(mode, weight, reason):
    img, lab = simulate_nuclei_image(shape=(64, 64), n_nuclei=4, seed=1)
    with pytest.raises(InputError, match=reason):
        drain(train({"output_mode": mode, "touching_weight": weight, "epochs": 1}, ([img], [lab])))


def test_training_with_touching_weight_and_distance_head_is_recorded(tiny_nuclei_model, tmp_path, monkeypatch):
    from napari_microseg.training import losses

    wrapped = []
    real = losses.with_touching_weight

    def spy(loss_fn, n_classes=3, weight=5.0, distance_weight=None):
        wrapped.append((n_classes, weight, distance_weight))
        return real(loss_fn, n_classes, weight, distance_weight)

    monkeypatch.setattr(losses, "with_touching_weight", spy)
    pairs = [simulate_nuclei_image(shape=(96, 96), n_nuclei=14, seed=90 + s) for s in range(3)]
    out = tmp_path / "seams.pt"
    cfg = {"output_mode": "three_class", "distance_head": True, "distance_weight": 4.0, "touching_weight": 5.0, "patch_size": 64,
           "patches_per_epoch": 8, "batch_size": 4, "epochs": 1, "lr": 1e-3, "seed": 0, "num_threads": 2,
           "val_fraction": 0.34}
    result = drain(train(cfg, ([p[0] for p in pairs], [p[1] for p in pairs]), out_path=out, init_model=tiny_nuclei_model))
    assert result.epochs_run == 1 and np.isfinite(result.history[-1]["train_loss"])
    assert load_model(out).config["training"]["config"]["touching_weight"] == 5.0
    # the trainer's loss carries the seam term, with the distance head's weight
    assert wrapped == [(3, 5.0, 4.0)]
