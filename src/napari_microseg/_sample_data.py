"""napari sample-data hooks: real images shipped in ``sample_data/`` and simulated samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .io.images import read_image

SAMPLE_DIR = Path(__file__).parent / "sample_data"
DSB_ID = "0287e7ee5b007c91"


def dsb2018_nuclei() -> list[tuple]:
    """A real 256x256 fluorescence nuclei image (DSB2018, CC0) with its instance labels (their ``features``:
    one row per nucleus, its ``label``, area and centroid in pixels and mean intensity)."""
    from .measure.tables import object_table
    from .widgets._base import label_features

    image = read_image(SAMPLE_DIR / f"dsb2018_{DSB_ID}_image.tif").data
    labels = read_image(SAMPLE_DIR / f"dsb2018_{DSB_ID}_labels.tif").data.astype(np.uint32)
    features = label_features(object_table(labels, image).drop(columns="t", errors="ignore"))
    return [
        (image, {"name": "DSB2018 nuclei"}, "image"),
        (labels, {"name": "DSB2018 nuclei labels", "opacity": 0.4, "features": features}, "labels"),
    ]


def ccd_fe55() -> list[tuple]:
    """A 256x512 crop of a real CCD frame exposed to Fe-55 X-rays, in ADC (BSD-3-Clause)."""
    from ._reader import _fits_contrast

    image = read_image(SAMPLE_DIR / "ccd_fe55_ESIS1_00002_crop.fits.gz")
    return [(image.data, {"name": "CCD Fe-55 (ADC)", **_fits_contrast(image.data),  # as the reader opens FITS
                          "metadata": {"source_kind": image.kind, "header": image.metadata}}, "image")]


#: the seed of the samples a classifier is tried on: seed 0 made the training data of the Classification
#: dock and of the shipped response model, so a sample of seed 0 would be scored on its own training images
TEST_SEED = 1


def _simulated(generator, params: dict, seed: int = 0) -> list[tuple]:
    from .progress import drain

    return drain(generator(params, seed))


def simulated_nuclei() -> list[tuple]:
    """A simulated 20-frame nuclei time-lapse with labels and ground-truth tracks (divisions included)."""
    from .simulate.samples import generate_nuclei

    return _simulated(generate_nuclei, {"n_frames": 20, "size": 256, "n_nuclei": 30, "stage_shift": 0, "enter_leave": True})


def simulated_ccd() -> list[tuple]:
    """A simulated 256x256 CCD frame in ADC with its exact class map."""
    from .simulate.samples import generate_ccd

    return _simulated(generate_ccd, {"n_images": 1, "size": 256, "balanced": False})


def simulated_response() -> list[tuple]:
    """A balanced stack of 16 simulated response images (good / bad with artefacts)."""
    from .simulate.samples import generate_response

    from .widgets._base import contrast_per_image  # (napari's side: the simulator stays free of it)

    return contrast_per_image(_simulated(generate_response, {"n_images": 16}, seed=TEST_SEED))


def simulated_liposomes() -> list[tuple]:
    """A simulated TEM image of liposomes with one label per particle and its class table."""
    from .simulate.samples import generate_liposomes

    return _simulated(generate_liposomes, {"size": 512, "n_particles": 30}, seed=TEST_SEED)


def simulated_nanoparticles() -> list[tuple]:
    """Simulated STEM nanoparticles (with and without holes) and their two-view thickness profiles."""
    from .simulate.samples import generate_profiles

    return _simulated(generate_profiles, {"n": 32, "task": "hole", "n_views": 2}, seed=TEST_SEED)
