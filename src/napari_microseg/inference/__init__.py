"""Inference: tiled prediction with blending, post-processing to labels, whole-image segmentation.

Qt-free; heavy imports (torch, scikit-image) happen inside the functions.
"""

from .postprocess import (
    binary_to_labels,
    class_map_to_instances,
    filter_labels,
    multiclass_to_classes,
    probabilities_to_labels,
    three_class_to_labels,
)
from .segment import SegmentResult, make_predict_fn, segment, segment_image
from .tiling import blending_window, predict_tiled, predict_tiled_iter

__all__ = [
    "SegmentResult",
    "segment",
    "segment_image",
    "make_predict_fn",
    "predict_tiled",
    "predict_tiled_iter",
    "blending_window",
    "probabilities_to_labels",
    "binary_to_labels",
    "three_class_to_labels",
    "multiclass_to_classes",
    "class_map_to_instances",
    "filter_labels",
]
