"""Classifier architectures: parameter counts and shapes ([R], [T], [P])."""

from __future__ import annotations

import pytest
import torch

from napari_microseg.models.classifiers import LipNet, SmallCNN, VGG16Like, count_parameters
from napari_microseg.models.profile import ProfileCNN


def test_vgg16_like_parameter_count_matches_methods():
    # METHODS [R]: ~40 M for 39x42x1 (reading: 'same' pooling, flatten 2x2x512; see module docstring)
    net = VGG16Like(input_size=(39, 42))
    n = count_parameters(net)
    assert abs(n - 40e6) / 40e6 < 0.01
    assert net(torch.zeros(2, 1, 39, 42)).shape == (2, 1)


def test_vgg16_floor_pooling_reading_is_smaller():
    # the other reading of the pooling gives 33.6 M, which is why ceil pooling is the default
    assert count_parameters(VGG16Like(pool_ceil=False)) < 35e6


def test_small_cnn_parameter_count_matches_methods():
    net = SmallCNN(input_size=(39, 42))
    n = count_parameters(net)
    assert abs(n - 352e3) / 352e3 < 0.01
    out = net(torch.rand(3, 1, 39, 42))
    assert out.shape == (3, 1)


def test_small_cnn_rejects_too_small_input():
    with pytest.raises(ValueError):
        SmallCNN(input_size=(20, 20))


@pytest.mark.parametrize("n_conv, size", [(1, 28), (2, 28), (4, 28), (6, 32)])
def test_lipnet_shapes(n_conv, size):
    net = LipNet(n_conv=n_conv, input_size=(size, size), n_classes=3)
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == n_conv
    assert all(c.out_channels == 32 and c.kernel_size == (3, 3) for c in convs)
    assert net(torch.rand(4, 1, size, size)).shape == (4, 3)


def test_lipnet4_layout_and_all_conv_variant():
    net = LipNet(4)
    pools = [m for m in net.features if isinstance(m, torch.nn.MaxPool2d)]
    dense = [m for m in net.head if isinstance(m, torch.nn.Linear)]
    assert len(pools) == 2 and len(dense) == 1
    assert dense[0].in_features == 32 * 7 * 7 and dense[0].out_features == 3
    netc = LipNet(4, all_conv=True)
    assert not any(isinstance(m, (torch.nn.MaxPool2d, torch.nn.Linear)) for m in netc.modules())
    strides = [m.stride for m in netc.features if isinstance(m, torch.nn.Conv2d)]
    assert strides == [(1, 1), (2, 2), (1, 1), (2, 2)]
    assert netc(torch.rand(2, 1, 28, 28)).shape == (2, 3)


def test_profile_cnn_parameter_count_and_siamese_sharing():
    single = ProfileCNN(n_views=1, data_points=32)
    assert abs(count_parameters(single) - 12.5e3) / 12.5e3 < 0.05
    double = ProfileCNN(n_views=2, data_points=32)
    # the views share the branch: only the first joint layer grows
    grow = count_parameters(double) - count_parameters(single)
    assert grow == double.head[0].in_features // 2 * double.head[0].out_features


def test_profile_cnn_same_view_twice_runs():
    net = ProfileCNN(n_views=2).eval()
    x = torch.rand(5, 1, 32)
    out = net(torch.cat([x, x], 1))
    assert out.shape == (5, 2)
    with pytest.raises(ValueError):
        net(x)  # one view into a two-view net


def test_classifiers_rebuild_through_model_files(tmp_path):
    from napari_microseg.classify.predict import load_classifier
    from napari_microseg.io.models import save_model

    net = LipNet(4)
    cfg = {"model": {"architecture": "lipnet", "n_conv": 4, "n_classes": 3}, "task": "objects",
           "class_names": ["a", "b", "c"]}
    save_model(tmp_path / "m.pt", net, cfg)
    lm = load_classifier(tmp_path / "m.pt")
    x = torch.rand(2, 1, 28, 28)
    net.eval()
    assert torch.allclose(lm.model(x), net(x))
