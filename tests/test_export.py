"""TorchScript export: the exported file alone gives the same output as the model file, config included."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_microseg.cli import main
from napari_microseg.io.export import load_torchscript
from napari_microseg.io.models import load_model
from napari_microseg.training.normalize import normalize


def test_torchscript_export_matches_shipped_nuclei_model(tmp_path):
    out = tmp_path / "nuclei_ts.pt"
    assert main(["export", "--model", "nuclei_fluorescence", "--out", str(out)]) == 0
    module, config = load_torchscript(out)
    loaded = load_model(__import__("napari_microseg.pretrained", fromlist=["x"]).pretrained_path("nuclei_fluorescence"))
    # the export states the cut of percentile-normalised values that the package applies (clip_high)
    assert config["normalization"] == {**loaded.config["normalization"], "clip_high": 5.0}
    assert config["output_mode"] == "three_class"
    rng = np.random.default_rng(0)
    image = rng.gamma(2.0, 20.0, (96, 128)).astype(np.float32)
    x = torch.from_numpy(normalize(image, config["normalization"])[None, None])
    with torch.no_grad():
        expected = loaded.model(x).numpy()
        got = module(x).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert main(["export", "--model", "nuclei_fluorescence", "--out", str(out)]) == 2  # no silent overwrite


@pytest.mark.parametrize("height, width", [(100, 100), (130, 97), (5, 7)])
def test_torchscript_export_takes_sizes_that_need_padding(tmp_path, height, width):
    """The U-Net pads inputs to multiples of 2**depth; the exported file must too (a plain trace
    bakes in the no-padding branch of its 128 x 128 example and fails on other sizes)."""
    out = tmp_path / "fast_ts.pt"
    assert main(["export", "--model", "nuclei_fluorescence_fast", "--out", str(out)]) == 0
    module, _ = load_torchscript(out)
    loaded = load_model("nuclei_fluorescence_fast", device="cpu")
    x = torch.rand(2, 1, height, width)
    with torch.no_grad():
        got = module(x).numpy()
        expected = loaded.model.eval()(x).numpy()
    assert got.shape == (2, 4, height, width)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_export_unknown_model_fails_cleanly(tmp_path, capsys):
    assert main(["export", "--model", "nope", "--out", str(tmp_path / "x.pt")]) == 2
    assert "neither a file nor a shipped model" in capsys.readouterr().err


def test_commands_accept_shipped_model_names(tmp_path):
    import tifffile

    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    image, _ = simulate_nuclei_image(shape=(128, 128), n_nuclei=10, seed=4)
    tifffile.imwrite(tmp_path / "img.tif", image)
    assert main(["segment", "--model", "nuclei_fluorescence", "--input", str(tmp_path / "img.tif"), "--out", str(tmp_path / "seg")]) == 0
    assert (tmp_path / "seg" / "objects.csv").is_file()
    assert load_model("nuclei_fluorescence").output_mode == "three_class"
    with pytest.raises(Exception, match="shipped models: .*nuclei_fluorescence"):
        load_model("no_such_model")


def test_onnx_export_takes_any_size_and_matches_the_network(tmp_path):
    """ONNX: the exported U-Net (padding inside, any H, W) gives the network's logits in onnx's own
    reference runtime, and carries the config; the CLI writes it."""
    import json

    import onnx
    import torch
    from onnx.reference import ReferenceEvaluator

    from napari_microseg.cli import main
    from napari_microseg.io.models import load_model

    out = tmp_path / "fast.onnx"
    assert main(["export", "--model", "nuclei_fluorescence_fast", "--out", str(out)]) == 0
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    config = json.loads({p.key: p.value for p in proto.metadata_props}["config"])
    assert config["output_mode"] == "three_class"
    x = np.random.default_rng(0).normal(size=(1, 1, 70, 50)).astype(np.float32)  # not a multiple of 16
    got = ReferenceEvaluator(proto).run(None, {"input": x})[0]
    net = load_model("nuclei_fluorescence_fast", device="cpu").model.eval()
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    assert got.shape == want.shape == (1, 4, 70, 50)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_onnx_export_of_a_profile_classifier(tmp_path):
    """A 1-D network ([P] profiles, input (B, views, length), output (B, classes)) exports to ONNX with a
    free batch size and gives the network's scores (its axes are not an image's height and width)."""
    import onnx
    import torch
    from onnx.reference import ReferenceEvaluator

    from napari_microseg.classify.predict import load_classifier
    from napari_microseg.cli import main

    model = tmp_path / "profiles.pt"
    assert main(["classify", "train", "profiles", "--simulated", "40", "--epochs", "1", "--views", "2",
                 "--out", str(model), "--device", "cpu"]) == 0
    assert main(["export", "--model", str(model), "--out", str(tmp_path / "profiles.onnx")]) == 0
    proto = onnx.load(str(tmp_path / "profiles.onnx"))
    net = load_classifier(str(model), device="cpu").model.eval()
    shape = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(0).normal(size=(3, *shape[1:])).astype(np.float32)  # another batch size
    got = ReferenceEvaluator(proto).run(None, {"input": x})[0]
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    assert got.shape == want.shape and want.shape[0] == 3
    np.testing.assert_allclose(got, want, atol=1e-4)
