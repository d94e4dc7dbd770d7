"""Net2Wider widening of a U-Net keeps what the network computes."""

import numpy as np
import pytest
import torch

from napari_microseg.io.models import load_model, save_model
from napari_microseg.models import build_model, resolve_model_config
from napari_microseg.models.widen import widen_model_file, widen_unet


def _trained_like(cfg):
    """A network whose batch-norm statistics are not the defaults (as after training)."""
    torch.manual_seed(0)
    net = build_model(cfg)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(4, cfg.get("in_channels", 1), 32, 32))
    return net.eval()


@pytest.mark.parametrize("depth,n_classes,factor,wide_filters,min_growth", [(3, 3, 2, 16, 3.0), (2, 1, 2, 16, 3.0),
                                                                           (3, 4, 1.5, 12, 2.0)])
def test_widened_unet_computes_the_same(depth, n_classes, factor, wide_filters, min_growth):
    cfg = resolve_model_config({"preset": "small", "depth": depth, "n_classes": n_classes, "base_filters": 8})
    narrow = _trained_like(cfg)
    state, wide_cfg = widen_unet(narrow.state_dict(), cfg, factor=factor, noise=0.0)
    assert wide_cfg["base_filters"] == wide_filters
    wide = build_model(wide_cfg)
    wide.load_state_dict(state)  # every tensor has the wide network's shape
    wide.eval()
    assert sum(p.numel() for p in wide.parameters()) > min_growth * sum(p.numel() for p in narrow.parameters())
    x = torch.randn(2, 1, 40, 36)
    with torch.no_grad():
        np.testing.assert_allclose(wide(x).numpy(), narrow(x).numpy(), atol=1e-4, rtol=1e-4)


def test_noise_breaks_symmetry_but_stays_close():
    cfg = resolve_model_config({"preset": "small", "n_classes": 3, "base_filters": 8})
    narrow = _trained_like(cfg)
    state, wide_cfg = widen_unet(narrow.state_dict(), cfg, factor=2, noise=0.01)
    w = state["encoder.0.0.weight"]
    assert not torch.equal(w[:8], w[8:])  # copies differ
    wide = build_model(wide_cfg)
    wide.load_state_dict(state)
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        a, b = torch.softmax(wide.eval()(x), 1), torch.softmax(narrow(x), 1)
    assert float((a - b).abs().max()) < 0.1


def test_widen_model_file_roundtrip(tmp_path):
    cfg = resolve_model_config({"preset": "small", "n_classes": 3, "base_filters": 4})
    narrow = _trained_like(cfg)
    src = save_model(tmp_path / "narrow.pt", narrow, {"model": cfg, "output_mode": "three_class", "training": {"epochs_run": 3}})
    widen_model_file(src, tmp_path / "wide.pt", noise=0.0)
    loaded = load_model(tmp_path / "wide.pt")
    assert loaded.config["model"]["base_filters"] == 8
    assert loaded.config["training"]["widened_from"] == {"base_filters": 4, "factor": 2}
    x = torch.randn(1, 1, 24, 24)
    with torch.no_grad():
        np.testing.assert_allclose(loaded.model(x).numpy(), narrow(x).numpy(), atol=1e-4, rtol=1e-4)


def test_widen_refuses_factors_that_give_fractional_filters():
    cfg = resolve_model_config({"preset": "small", "n_classes": 3, "base_filters": 8})
    state = build_model(cfg).state_dict()
    with pytest.raises(ValueError, match="whole filter counts"):
        widen_unet(state, cfg, factor=1.3)
    with pytest.raises(ValueError, match=">= 1"):
        widen_unet(state, cfg, factor=0.5)
    with pytest.raises(ValueError, match=">= 1"):
        widen_unet(state, cfg, factor=float("nan"))


def test_widening_a_network_whose_input_channels_equal_its_filters():
    # the image input is the first convolution, whatever its channel count
    cfg = resolve_model_config({"preset": "small", "n_classes": 3, "base_filters": 8, "in_channels": 8})
    narrow = _trained_like(cfg)
    state, wide_cfg = widen_unet(narrow.state_dict(), cfg, factor=1.5, noise=0.0)
    wide = build_model(wide_cfg)
    wide.load_state_dict(state)
    wide.eval()
    x = torch.randn(2, 8, 32, 32)
    with torch.no_grad():
        np.testing.assert_allclose(wide(x).numpy(), narrow(x).numpy(), atol=1e-4, rtol=1e-4)


def test_widen_refuses_other_architectures():
    with pytest.raises(ValueError):
        widen_unet({}, {"architecture": "small_cnn"})
