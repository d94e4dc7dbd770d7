"""The inference copy of the network (batch norm folded, channels_last on CPU) used by prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from napari_microseg.inference.segment import make_predict_fn, segment
from napari_microseg.io.models import LoadedModel, load_model
from napari_microseg.models.registry import build_model
from napari_microseg.training.predict import (
    inference_network,
    optimize_for_inference,
    predict_image,
    predict_patch_batch,
)


def _random_bn_model(n_classes: int = 3, upsampling: str = "transpose") -> LoadedModel:
    """Small U-Net whose batch norms have non-trivial statistics (so folding is really tested)."""
    torch.manual_seed(0)
    cfg = {"preset": "small", "n_classes": n_classes, "upsampling": upsampling}
    net = build_model(cfg)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 2 + 0.1)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    net.eval()
    mode = "binary" if n_classes == 1 else "three_class"
    config = {"model": cfg, "output_mode": mode, "patch_size": [64, 64],
              "normalization": {"kind": "none"}}
    return LoadedModel(model=net, config=config, device="cpu")


@pytest.mark.parametrize("n_classes,upsampling", [(3, "transpose"), (1, "bilinear")])
@pytest.mark.parametrize("shape", [(4, 1, 64, 64), (3, 1, 33, 47)])
def test_optimized_probabilities_match_plain_model(n_classes, upsampling, shape):
    loaded = _random_bn_model(n_classes, upsampling)
    x = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    plain = predict_patch_batch(loaded, x, optimize=False, precision="float32")
    fast = predict_patch_batch(loaded, x, precision="float32")
    assert fast.dtype == np.float32 and fast.shape == plain.shape
    assert fast.flags.c_contiguous
    np.testing.assert_allclose(fast, plain, atol=1e-4, rtol=0)


def test_shipped_model_optimized_matches_plain():
    loaded = load_model("nuclei_fluorescence")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 1, 96, 96)).astype(np.float32)
    np.testing.assert_allclose(predict_patch_batch(loaded, x, precision="float32"), predict_patch_batch(loaded, x, optimize=False, precision="float32"),
                               atol=1e-4, rtol=0)


def test_inference_copy_folds_and_leaves_the_model_alone():
    loaded = _random_bn_model()
    model = loaded.model
    model.train()  # e.g. a model in the middle of training
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    net = inference_network(loaded)
    assert net is not model
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.Dropout2d)) for m in net.modules())
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    predict_patch_batch(loaded, np.zeros((1, 1, 32, 32), np.float32))
    # the original is untouched: same weights and statistics, still training, batch norms in place
    assert model.training
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == n_bn
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.requires_grad for p in model.parameters())


def test_inference_copy_is_cached_and_follows_weight_changes():
    loaded = _random_bn_model()
    net = inference_network(loaded)
    assert inference_network(loaded) is net  # cached
    x = np.random.default_rng(3).normal(size=(2, 1, 32, 32)).astype(np.float32)
    p0 = predict_patch_batch(loaded, x, precision="float32")
    # an optimiser step on the original changes its weights in place: the copy is rebuilt
    opt = torch.optim.SGD(loaded.model.parameters(), lr=0.5)
    loaded.model.train()
    loaded.model(torch.from_numpy(x)).pow(2).mean().backward()
    opt.step()
    loaded.model.eval()
    net2 = inference_network(loaded)
    assert net2 is not net
    p1 = predict_patch_batch(loaded, x, precision="float32")
    assert np.abs(p1 - p0).max() > 1e-3
    np.testing.assert_allclose(p1, predict_patch_batch(loaded, x, optimize=False, precision="float32"), atol=1e-4, rtol=0)
    # load_state_dict (in-place copy) is seen too
    other = _random_bn_model()
    with torch.no_grad():
        for p in other.model.parameters():
            p.mul_(0.5)
    loaded.model.load_state_dict(other.model.state_dict())
    np.testing.assert_allclose(predict_patch_batch(loaded, x, precision="float32"), predict_patch_batch(other, x, optimize=False, precision="float32"),
                               atol=1e-4, rtol=0)


def test_optimize_for_inference_on_unfoldable_model():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU())
    fast = optimize_for_inference(net, "cpu")
    x = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fast(x.contiguous(memory_format=torch.channels_last)), net(x))


def test_segment_optimized_equals_plain():
    loaded = _random_bn_model()
    img = np.random.default_rng(4).random((150, 170)).astype(np.float32)
    a = segment(loaded, img, tile=64, overlap=16, predict_fn=make_predict_fn(loaded, precision="float32"))
    b = segment(loaded, img, tile=64, overlap=16, predict_fn=make_predict_fn(loaded, optimize=False, precision="float32"))
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-4, rtol=0)
    full = predict_image(loaded, img, precision="float32")
    assert full.shape == (3, 150, 170)


def test_model_that_cannot_be_copied_runs_as_it_is(monkeypatch):
    import napari_microseg.training.predict as pred

    loaded = _random_bn_model()
    calls = []

    def broken(model, device="cpu"):
        calls.append(1)
        raise RuntimeError("cannot deepcopy")

    monkeypatch.setattr(pred, "optimize_for_inference", broken)
    x = np.random.default_rng(5).normal(size=(1, 1, 32, 32)).astype(np.float32)
    a = predict_patch_batch(loaded, x, precision="float32")
    b = predict_patch_batch(loaded, x, precision="float32")
    assert len(calls) == 1  # the failure is remembered
    np.testing.assert_allclose(a, b)
    np.testing.assert_allclose(a, predict_patch_batch(loaded, x, optimize=False, precision="float32"), atol=1e-6)
