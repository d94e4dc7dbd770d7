"""napari sample-data hooks: real images shipped in ``sample_data/`` and simulated samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .io.images import read_image

SAMPLE_DIR = Path(__file__).parent / "sample_data"
DSB_ID = "0287e7ee5b007c91"


def dsb2018_nuclei() -> list[tuple]:
    """A real 256x256 fluorescence nuclei image (DSB2018, CC0) with its instance labels."""
    image = read_image(SAMPLE_DIR / f"dsb2018_{DSB_ID}_image.tif").data
    labels = read_image(SAMPLE_DIR / f"dsb2018_{DSB_ID}_labels.tif").data.astype(np.uint32)
    return [
        (image, {"name": "DSB2018 nuclei"}, "image"),
        (labels, {"name": "DSB2018 nuclei labels", "opacity": 0.4}, "labels"),
    ]


def ccd_fe55() -> list[tuple]:
    """A 256x512 crop of a real CCD frame exposed to Fe-55 X-rays, in ADC (BSD-3-Clause)."""
    image = read_image(SAMPLE_DIR / "ccd_fe55_ESIS1_00002_crop.fits.gz")
    lo, hi = np.percentile(image.data, [0.5, 99.9])
    return [(image.data, {"name": "CCD Fe-55 (ADC)", "contrast_limits": (float(lo), float(hi)), "metadata": {"header": image.metadata}}, "image")]
