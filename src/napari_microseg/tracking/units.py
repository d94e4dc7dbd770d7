"""Which calibration a tracking run uses: the labels', the image's, the command line's (micrometres, minutes).

Qt-free; used by ``microseg track`` and ``microseg batch track``.
"""
from __future__ import annotations

import warnings

from ..errors import MicrosegWarning

#: calibration keys compared between the labels and the image (a relative difference above 1e-6 differs)
COMPARED_UNITS = {"pixel_size_um": "um per pixel", "pixel_size_y_um": "um per pixel in Y",
                  "frame_interval_min": "min per frame"}


def _differs(a: float, b: float) -> bool:
    """Two calibration values (same unit) differ by more than a relative 1e-6."""
    return abs(float(a) - float(b)) > 1e-6 * max(abs(float(a)), abs(float(b)))


def merged_calibration(labels_calibration: dict, image_calibration: dict, labels_name: str, image_name: str,
                       given: dict | None = None) -> dict:
    """The calibration a tracking run uses: the labels' own (what is tracked; the Tracking dock takes the
    labels layer's too), the image's where the labels say none (labels written by tools that keep no
    metadata). Where both say a value and they differ, a warning names both (the run used the image's
    without a word before, the dock the labels': 10x apart on one data set).

    Parameters
    ----------
    labels_calibration, image_calibration : ``{"pixel_size_um", "pixel_size_y_um", "frame_interval_min",
        "z_step_um", ...}`` as read from each file (micrometres, minutes).
    given : the values the command line gives (``pixel_size_um``, ``frame_interval_min``; None: not given):
        the files' differences in those are not warned about (the options are used).
    """
    given = {key: value for key, value in (given or {}).items() if value is not None}
    if "pixel_size_um" in given:
        given["pixel_size_y_um"] = given["pixel_size_um"]  # one size for both axes
    clashes = [f"{labels_calibration[key]:g} {unit} in the labels, {image_calibration[key]:g} in the image"
               for key, unit in COMPARED_UNITS.items()
               if key not in given and key in labels_calibration and key in image_calibration
               and _differs(labels_calibration[key], image_calibration[key])]
    if clashes:
        warnings.warn(MicrosegWarning(
            f"{labels_name} and {image_name} are calibrated differently ({'; '.join(clashes)}): the labels' "
            "used (give --pixel-size / --frame-interval to choose); are they the same movie?"), stacklevel=2)
    merged = dict(image_calibration)
    if "pixel_size_um" in labels_calibration:  # both pixel sizes from one file: the labels'
        merged.pop("pixel_size_y_um", None)
    merged.update(labels_calibration)
    return merged


def option_overrides(calibration: dict, pixel_size: float | None, frame_interval: float | None) -> list[str]:
    """Notes for ``--pixel-size`` / ``--frame-interval`` values that replace other ones the files gave
    (``calibration``: theirs, micrometres and minutes); non-square pixels become square."""
    notes = []
    file_x, file_y = calibration.get("pixel_size_um"), calibration.get("pixel_size_y_um")
    if pixel_size is not None and file_y is not None:
        notes.append(f"--pixel-size {pixel_size:g} replaces the file's non-square pixels ({file_x:g} um in X, "
                     f"{file_y:g} um in Y): both axes are taken as {pixel_size:g} um")
    elif pixel_size is not None and file_x is not None and _differs(pixel_size, file_x):
        notes.append(f"--pixel-size {pixel_size:g} replaces the file's {file_x:g} um per pixel")
    file_t = calibration.get("frame_interval_min")
    if frame_interval is not None and file_t is not None and _differs(frame_interval, file_t):
        notes.append(f"--frame-interval {frame_interval:g} replaces the file's {file_t:g} min per frame")
    return notes
