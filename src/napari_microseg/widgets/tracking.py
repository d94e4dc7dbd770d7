"""Tracking dock widget (thin shell over the Qt-free core)."""

from __future__ import annotations

from typing import Any

from ._base import MicrosegDock


class TrackingWidget(MicrosegDock):
    title = "Tracking"
    description = "Link objects of a labels time-lapse into tracks with btrack (divisions included); results as Tracks + relabelled Labels layers, CSV and Cell Tracking Challenge export."

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
