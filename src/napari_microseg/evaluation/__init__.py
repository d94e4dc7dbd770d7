"""Evaluation: pixel, any-overlap object ([N]) and IoU-matched instance metrics."""

from .metrics import (
    DEFAULT_THRESHOLDS,
    compute_overlaps,
    counts_to_scores,
    evaluate_dataset,
    evaluate_segmentation,
    instance_scores,
    match_instances,
    overlap_object_scores,
    pixel_scores,
    pool_instance_scores,
)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "counts_to_scores",
    "pixel_scores",
    "overlap_object_scores",
    "compute_overlaps",
    "match_instances",
    "instance_scores",
    "pool_instance_scores",
    "evaluate_segmentation",
    "evaluate_dataset",
]
