"""Training dock widget (thin shell over the Qt-free core)."""

from __future__ import annotations

from typing import Any

from ._base import MicrosegDock


class TrainingWidget(MicrosegDock):
    title = "Training"
    description = "Train a U-Net on image + labels layers in a background thread, with a live loss plot, Stop (keeps the best model) and resume."

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
