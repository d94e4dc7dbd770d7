"""Simulation dock widget (thin shell over the Qt-free core)."""

from __future__ import annotations

from typing import Any

from ._base import MicrosegDock


class SimulationWidget(MicrosegDock):
    title = "Simulation"
    description = "Generate labelled synthetic data for five domains (nuclei time-lapse, response images, TEM liposomes, STEM profiles, CCD frames). Results arrive as new image, labels and tracks layers."

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
