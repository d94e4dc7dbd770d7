"""Fixed class colours for class maps (CCD classes, per-object classes): the same class has the
same colour in every layer the plugin makes, simulated or segmented. Qt-free."""

from __future__ import annotations

from typing import Any

#: colour of class id i (0, background, transparent); ids past the end wrap around
CLASS_COLOURS = ["transparent", "#ff9f1c", "#2ec4b6", "#e71d95", "#8ac926", "#1982c4", "#ffca3a", "#6a4c93"]


def class_colormap(n_classes: int) -> Any:
    """A napari label colormap with fixed, distinct colours per class id (background transparent)."""
    from napari.utils.colormaps import DirectLabelColormap

    colours = {i: CLASS_COLOURS[i % len(CLASS_COLOURS)] if i else "transparent" for i in range(n_classes)}
    colours[None] = "transparent"
    return DirectLabelColormap(color_dict=colours)
