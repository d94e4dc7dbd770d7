"""Segmentation dock widget (thin shell over the Qt-free core)."""

from __future__ import annotations

from typing import Any

from ._base import MicrosegDock


class SegmentationWidget(MicrosegDock):
    title = "Segmentation"
    description = "Segment the current frame or a whole stack with a trained model (tiled, no seams); results as a new Labels layer with measurements, counts per frame, CSV export."

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
