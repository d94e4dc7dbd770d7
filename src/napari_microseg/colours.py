"""Fixed class colours for class maps (CCD classes, per-object classes): the same class has the
same colour in every layer the plugin makes, simulated or segmented. Qt- and napari-free: a
Labels layer takes :func:`class_colours` as its ``colormap``."""

from __future__ import annotations

#: colour of class id i (0, background, transparent); ids past the end wrap around
CLASS_COLOURS = ["transparent", "#ff9f1c", "#2ec4b6", "#e71d95", "#8ac926", "#1982c4", "#ffca3a", "#6a4c93"]


def class_colours(n_classes: int) -> dict:
    """Class id -> colour for ids 0..n_classes-1 (background and unlisted ids transparent); napari
    makes it a direct label colormap."""
    colours: dict = {i: CLASS_COLOURS[i % len(CLASS_COLOURS)] if i else "transparent" for i in range(n_classes)}
    colours[None] = "transparent"
    return colours
