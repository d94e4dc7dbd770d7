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
