"""Inference precision: float32 everywhere, bfloat16 where the hardware computes it natively."""

from __future__ import annotations

import numpy as np
import pytest

from napari_microseg.device import PRECISIONS, cpu_has_native_bf16, resolve_precision
from napari_microseg.errors import InputError
from napari_microseg.inference.segment import segment
from napari_microseg.io.models import load_model
from napari_microseg.simulate.nuclei import simulate_nuclei_image


def test_resolve_precision():
    assert resolve_precision("float32", "cpu") == "float32"
    assert resolve_precision("bfloat16", "cpu") == "bfloat16"
    assert resolve_precision("auto", "cuda") == "bfloat16"
    assert resolve_precision("auto", "mps") == "float32"
    assert resolve_precision("auto", "cpu") == ("bfloat16" if cpu_has_native_bf16() else "float32")
    assert resolve_precision(None, "cpu") in PRECISIONS
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("half", "cpu")


def test_bfloat16_and_float32_segment_alike(tiny_nuclei_model):
    image, _ = simulate_nuclei_image(shape=(128, 128), n_nuclei=12, seed=5)
    loaded = load_model(tiny_nuclei_model)
    exact = segment(loaded, image, measure=False, keep_probabilities=True, precision="float32")
    fast = segment(loaded, image, measure=False, keep_probabilities=True, precision="bfloat16")
    assert exact.settings["precision"] == "float32" and fast.settings["precision"] == "bfloat16"
    diff = np.abs(exact.probabilities - fast.probabilities)
    assert diff.mean() < 0.01 and diff.max() < 0.2
    assert not np.array_equal(exact.probabilities, fast.probabilities)  # bfloat16 really ran
    agree = ((exact.labels > 0) == (fast.labels > 0)).mean()
    assert agree > 0.98
    with pytest.raises(InputError, match="unknown precision"):
        segment(loaded, image, measure=False, precision="int8")


def test_training_uses_bfloat16_autocast_where_native(tmp_path):
    from napari_microseg.progress import drain
    from napari_microseg.training.trainer import train

    pairs = [simulate_nuclei_image(shape=(96, 96), n_nuclei=10, seed=90 + s) for s in range(3)]
    cfg = {"output_mode": "three_class", "patch_size": 64, "patches_per_epoch": 8, "batch_size": 4, "epochs": 1,
           "seed": 0, "num_threads": 2, "val_fraction": 0.34, "device": "cpu"}
    data = ([p[0] for p in pairs], [p[1] for p in pairs])
    drain(train({**cfg, "amp": True}, data, out_path=tmp_path / "amp.pt"))
    drain(train({**cfg, "amp": False}, data, out_path=tmp_path / "fp32.pt"))
    with_amp = load_model(tmp_path / "amp.pt").config["training"]
    without = load_model(tmp_path / "fp32.pt").config["training"]
    assert with_amp["amp"] == ("bfloat16" if cpu_has_native_bf16() else None)
    assert without["amp"] is None
    assert np.isfinite(with_amp["history"][0]["train_loss"]) and np.isfinite(with_amp["history"][0]["val_loss"])


def test_cuda_bfloat16_only_where_the_gpu_computes_it(monkeypatch):
    """GPUs before compute capability 8 (V100, T4) would emulate bfloat16: they get float16."""
    import torch

    from napari_microseg.device import cuda_has_native_bf16

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    capability = {0: (7, 0), 1: (8, 0)}
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: capability[index])
    assert cuda_has_native_bf16("cuda") is False and cuda_has_native_bf16("cuda:0") is False
    assert cuda_has_native_bf16("cuda:1") is True
    from napari_microseg.device import network_precision

    assert network_precision("auto", "cuda:0") == "float16" and network_precision("bfloat16", "cuda:1") == "bfloat16"
    assert network_precision("float32", "cuda:0") == "float32"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cuda_has_native_bf16("cuda:1") is False
