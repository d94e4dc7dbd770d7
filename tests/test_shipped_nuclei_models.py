"""The shipped DSB2018 nuclei models on held-out real images: both segment well, the fast one with far less arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from torch.utils.flop_counter import FlopCounterMode

from napari_microseg.evaluation.metrics import evaluate_dataset
from napari_microseg.inference.segment import segment
from napari_microseg.io.models import load_model
from napari_microseg.pretrained import list_pretrained_for

NUCLEI_MODELS = [name for name in list_pretrained_for(None) if name.startswith("nuclei_fluorescence")]


def held_out_pairs(shared_data, n: int = 6):
    """The first ``n`` DSB2018 test images (sorted index % 5 == 0: never trained on) with their masks."""
    files = sorted((shared_data / "dsb2018" / "images").glob("*.tif"))[::5][:n]
    for f in files:
        image = tifffile.imread(f)
        yield f.stem, image[..., :3].mean(-1) if image.ndim == 3 else image, tifffile.imread(f.parent.parent / "labels" / f.name)


def network_flops_per_pixel(name: str) -> float:
    net = load_model(name, device="cpu").model.eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 1, 128, 128))
    return counter.get_total_flops() / 128**2


def test_fast_nuclei_model_is_shipped_with_a_quarter_of_the_arithmetic():
    assert {"nuclei_fluorescence", "nuclei_fluorescence_fast"} <= set(NUCLEI_MODELS)
    assert network_flops_per_pixel("nuclei_fluorescence_fast") < 0.3 * network_flops_per_pixel("nuclei_fluorescence")


@pytest.mark.parametrize("name", NUCLEI_MODELS)
def test_shipped_nuclei_model_segments_held_out_dsb_images(name, shared_data):
    loaded = load_model(name, device="cpu")
    assert loaded.config["postprocess"]["seed_method"] == "network"  # tuned watershed on its distance head

    def pairs():
        for stem, image, truth in held_out_pairs(shared_data):
            yield stem, truth, np.asarray(segment(loaded, image, measure=False).labels)

    _, pooled = evaluate_dataset(pairs())
    assert pooled["f1@0.50"] > 0.85, pooled["f1@0.50"]
    assert 0.9 < pooled["n_pred"] / pooled["n_gt"] < 1.1
