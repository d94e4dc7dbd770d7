"""Tracking: link labelled objects over time (btrack), stage-shift correction,
CSV / Cell Tracking Challenge export, curation edits and CTC metrics.

Nothing here imports Qt or napari; btrack and traccuracy are imported lazily
when tracking or scoring runs.
"""

from .export import (
    counts_table,
    delete_track,
    merge_tracks,
    read_ctc,
    read_tracks_csv,
    split_track,
    write_config_json,
    write_counts_csv,
    write_ctc,
    write_tracks_csv,
)
from .metrics import ctc_scores, link_recall, point_link_recall, unbroken_fraction
from .shift import estimate_stage_shift
from .track import (
    TRACK_COLUMNS,
    TrackResult,
    available_configs,
    load_config,
    objects_from_labels,
    run_tracking,
    track,
    track_points,
    track_points_iter,
)

__all__ = [
    "TRACK_COLUMNS",
    "TrackResult",
    "available_configs",
    "counts_table",
    "ctc_scores",
    "delete_track",
    "estimate_stage_shift",
    "link_recall",
    "load_config",
    "merge_tracks",
    "objects_from_labels",
    "point_link_recall",
    "read_ctc",
    "read_tracks_csv",
    "run_tracking",
    "split_track",
    "track",
    "track_points",
    "track_points_iter",
    "unbroken_fraction",
    "write_config_json",
    "write_counts_csv",
    "write_ctc",
    "write_tracks_csv",
]
