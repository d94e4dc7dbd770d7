"""Losses honour the ignore mask; focal / weighted CE behave as defined."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_microseg.training.losses import LOSSES, class_weights_from_frequencies, focal_loss, make_loss


def _batch(k, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, k, 16, 16, generator=g)
    ncls = 2 if k == 1 else k
    target = torch.randint(0, ncls, (2, 16, 16), generator=g)
    return logits, target


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("name", LOSSES)
def test_ignored_pixels_do_not_change_loss_or_gradient(name, k):
    logits, target = _batch(k)
    ignore = torch.zeros_like(target, dtype=torch.bool)
    ignore[:, :5] = True
    target = target.masked_fill(ignore, -1)
    loss_fn = make_loss(name, class_weights=[0.5, 2.0, 3.0][: max(2, k)])
    a = logits.clone().requires_grad_(True)
    la = loss_fn(a, target)
    la.backward()
    # change the logits where ignored: loss identical, gradient zero there
    b = logits.clone()
    b[:, :, :5] += 10 * torch.randn_like(b[:, :, :5])
    b.requires_grad_(True)
    lb = loss_fn(b, target)
    assert torch.isfinite(la) and torch.allclose(la, lb, atol=1e-6)
    assert float(a.grad[:, :, :5].abs().max()) == 0.0
    assert float(a.grad[:, :, 5:].abs().max()) > 0.0


def test_all_ignored_gives_zero_loss_with_graph():
    logits, target = _batch(1)
    target[:] = -1
    for name in LOSSES:
        lo = logits.clone().requires_grad_(True)
        loss = make_loss(name, class_weights=[1.0, 1.0])(lo, target)
        assert float(loss.detach()) == pytest.approx(0.0, abs=1e-6)
        loss.backward()


def test_binary_losses_match_torch_reference():
    logits, target = _batch(1)
    ref = F.binary_cross_entropy_with_logits(logits[:, 0], target.float())
    assert torch.allclose(make_loss("bce")(logits, target), ref, atol=1e-6)
    # focal with gamma 0, alpha 0.5 is half the BCE
    assert torch.allclose(focal_loss(logits, target, gamma=0.0, alpha=0.5), 0.5 * ref, atol=1e-6)
    # focal with gamma 2 down-weights easy pixels: below the gamma-0 value
    assert focal_loss(logits, target, gamma=2.0, alpha=0.5) < 0.5 * ref


def test_weighted_ce_matches_torch_and_weights_rare_classes():
    logits, target = _batch(4)
    w = [0.2, 1.0, 2.0, 5.0]
    ref = F.cross_entropy(logits, target, weight=torch.tensor(w))
    assert torch.allclose(make_loss("weighted_ce", class_weights=w)(logits, target), ref, atol=1e-6)
    cw = class_weights_from_frequencies([0.41, 0.25, 0.21, 0.13])
    assert cw == sorted(cw)  # rarest (last) weighted most
    assert np.dot(cw, [0.41, 0.25, 0.21, 0.13]) == pytest.approx(1.0)
    cw2 = class_weights_from_frequencies([0.999, 0.001, 0.0])
    assert cw2[2] == max(cw2) and cw2[1] / cw2[0] <= 50 + 1e-9
    with pytest.raises(ValueError):
        make_loss("weighted_ce")
    with pytest.raises(ValueError):
        make_loss("hinge")


def test_dice_loss_is_zero_for_perfect_prediction():
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, 2:6, 2:6] = 1
    logits = (target.float() * 40 - 20)[:, None]
    assert float(make_loss("dice")(logits, target)) < 1e-3
    assert float(make_loss("dice")(-logits, target)) > 0.9
