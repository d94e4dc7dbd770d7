"""U-Net shapes, presets, registry and the model file contract."""

import json

import numpy as np
import pytest
import torch

from napari_microseg.errors import InputError
from napari_microseg.io.models import load_model, read_model_file, save_model
from napari_microseg.models import PRESETS, UNet, build_model, n_outputs_for_mode, resolve_model_config
from napari_microseg.training.normalize import make_normalization_spec, normalize
from napari_microseg.training.predict import predict_image, predict_patch_batch


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("shape", [(37, 51), (64, 64), (5, 9), (100, 33)])
@pytest.mark.parametrize("upsampling", ["transpose", "bilinear"])
def test_unet_keeps_odd_input_sizes(shape, upsampling):
    net = UNet(in_channels=2, n_classes=3, depth=3, base_filters=4, upsampling=upsampling).eval()
    x = torch.randn(2, 2, *shape)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, 3, *shape)
    assert torch.isfinite(y).all()


def test_unet_padding_does_not_shift_content():
    # a padded-then-cropped prediction must agree with the unpadded one on an exact multiple
    torch.manual_seed(0)
    net = UNet(depth=2, base_filters=4, batch_norm=False, dropout=0).eval()
    x = torch.randn(1, 1, 96, 96)
    with torch.no_grad():
        full = net(x)
        cropped = net(x[..., :94, :94])  # padded inside to 96, then cropped back
    # beyond the receptive field of the padded rows/columns the outputs agree
    assert torch.allclose(full[..., :48, :48], cropped[..., :48, :48], atol=1e-5)
    assert not torch.allclose(full[..., :94, :94], cropped)  # the padding is reflect, not a copy of x


def test_unet_he_init_and_activation():
    net = UNet(depth=2, base_filters=8, activation="elu", batch_norm=False)
    conv = net.encoder[1][0]
    fan_in = conv.weight[0].numel()
    assert abs(conv.weight.std().item() - np.sqrt(2.0 / fan_in)) < 0.2 * np.sqrt(2.0 / fan_in)
    assert any(isinstance(m, torch.nn.ELU) for m in net.modules())
    with pytest.raises(ValueError):
        UNet(activation="tanh")


def test_presets_parameter_counts():
    counts = {name: n_params(build_model({"preset": name})) for name in ("small", "n", "c")}
    # [N]: classic 64-filter, 4-pooling U-Net ~31 M parameters; [C]: 32 base ~7.8 M
    assert 29e6 < counts["n"] < 33e6
    assert 7e6 < counts["c"] < 8.5e6
    assert counts["small"] < 1e6
    n_net = build_model({"preset": "n"})
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in n_net.modules())
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in n_net.modules())
    c_net = build_model({"preset": "c"})
    drops = [m.p for m in c_net.modules() if isinstance(m, torch.nn.Dropout2d)]
    assert drops and all(abs(p - 0.18) < 1e-9 for p in drops)


def test_registry_resolves_and_overrides():
    cfg = resolve_model_config({"preset": "small", "base_filters": 8, "n_classes": 3})
    assert cfg["architecture"] == "unet" and cfg["base_filters"] == 8 and cfg["depth"] == PRESETS["small"]["depth"]
    json.dumps(cfg)
    assert build_model(cfg).head.out_channels == 3
    with pytest.raises(ValueError):
        build_model({"preset": "nope"})
    assert n_outputs_for_mode("binary") == 1
    assert n_outputs_for_mode("three_class") == 3
    assert n_outputs_for_mode("multiclass", 4) == 4
    with pytest.raises(ValueError):
        n_outputs_for_mode("multiclass")


def _model_config(n_classes=1, mode="binary", norm=None):
    return {
        "model": resolve_model_config({"preset": "small", "base_filters": 4, "n_classes": n_classes}),
        "output_mode": mode,
        "class_names": ["background", "foreground"] if mode == "binary" else [f"c{i}" for i in range(n_classes)],
        "normalization": make_normalization_spec(norm or {"kind": "fixed", "offset": 8800, "scale": 1000}),
        "patch_size": [64, 64],
        "training": {"epochs_run": 0, "history": []},
    }


def test_model_file_round_trip(tmp_path):
    torch.manual_seed(1)
    cfg = _model_config(4, "multiclass")
    net = build_model(cfg["model"]).eval()
    path = save_model(tmp_path / "m.pt", net, cfg)
    loaded = load_model(path)
    assert loaded.config == json.loads(json.dumps(cfg))
    assert loaded.normalization == {"kind": "fixed", "offset": 8800.0, "scale": 1000.0}
    assert not loaded.model.training
    x = torch.randn(2, 1, 40, 52)
    with torch.no_grad():
        assert torch.equal(net(x), loaded.model(x))
    probs = predict_patch_batch(loaded, x.numpy())
    assert probs.shape == (2, 4, 40, 52) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    # predict_image applies the stored normalisation: raw ADC in -> same as normalised batch
    raw = (np.random.default_rng(0).normal(8800, 60, (40, 52))).astype(np.float32)
    p1 = predict_image(loaded, raw)
    p2 = predict_patch_batch(loaded, ((raw - 8800) / 1000)[None, None].astype(np.float32))[0]
    np.testing.assert_allclose(p1, p2, atol=1e-6)
    # the file is readable with weights_only (no arbitrary pickles)
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "napari-microseg-model"


def test_binary_prediction_is_one_channel_probability(tmp_path):
    cfg = _model_config(1, "binary", "percentile")
    net = build_model(cfg["model"])
    loaded = load_model(save_model(tmp_path / "b.pt", net, cfg))
    p = predict_image(loaded, np.random.default_rng(0).random((33, 47)))
    assert p.shape == (1, 33, 47) and p.min() >= 0 and p.max() <= 1


def test_non_model_files_give_input_error(tmp_path):
    bad = tmp_path / "notes.pt"
    bad.write_text("hello")
    with pytest.raises(InputError, match="not a napari-microseg model"):
        load_model(bad)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(InputError, match="not a napari-microseg model"):
        load_model(other)
    with pytest.raises(InputError, match="not found"):
        load_model(tmp_path / "missing.pt")


def test_save_is_atomic_and_rejects_unjsonable(tmp_path):
    cfg = _model_config()
    net = build_model(cfg["model"])
    target = tmp_path / "m.pt"
    save_model(target, net, cfg)
    before = target.read_bytes()
    bad = dict(cfg, training={"x": object()})
    with pytest.raises(ValueError):
        save_model(target, net, bad)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_normalization_kinds():
    rng = np.random.default_rng(0)
    img = rng.normal(1000, 50, (64, 64)).astype(np.uint16)
    p = normalize(img)  # percentile 1 / 99.8
    assert p.dtype == np.float32
    assert abs(np.percentile(p, 1)) < 1e-3 and abs(np.percentile(p, 99.8) - 1) < 1e-3
    mm = normalize(img, "minmax")
    assert mm.min() == 0 and mm.max() == 1
    fx = normalize(img, {"kind": "fixed", "offset": 1000, "scale": 50})
    np.testing.assert_allclose(fx, (img.astype(np.float32) - 1000) / 50, rtol=1e-6)
    assert normalize(np.zeros((8, 8)), "percentile").max() == 0  # flat image, no division by zero
    with pytest.raises(InputError):
        normalize(np.array([[np.nan, 1.0]]))
    with pytest.raises(InputError):
        make_normalization_spec("zscore-ish")
