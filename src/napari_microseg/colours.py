"""Fixed class colours for class maps (CCD classes, per-object classes): the same class has the
same colour in every layer the plugin makes, simulated or segmented. Qt- and napari-free: a
Labels layer takes :func:`class_colours` as its ``colormap``; the docks build the same colours as
a cyclic napari colormap (``widgets._base.class_colormap``), which napari draws without compiling."""

from __future__ import annotations

#: colour of class id i (0, background, transparent); ids past the end wrap around to id 1's colour
CLASS_COLOURS = ["transparent", "#ff9f1c", "#2ec4b6", "#e71d95", "#8ac926", "#1982c4", "#ffca3a", "#6a4c93"]


def class_colour(class_id: int) -> str:
    """Colour of a class id: ``"transparent"`` for 0 (background), else one of ``CLASS_COLOURS[1:]``,
    cycling (id 8 has id 1's colour)."""
    class_id = int(class_id)
    return "transparent" if class_id == 0 else CLASS_COLOURS[1 + (class_id - 1) % (len(CLASS_COLOURS) - 1)]


def class_colours(n_classes: int) -> dict:
    """Class id -> colour (:func:`class_colour`) for ids 0..n_classes-1; napari makes it a direct label
    colormap."""
    colours: dict = {i: class_colour(i) for i in range(n_classes)}
    colours[None] = "transparent"
    return colours
