"""Measurement: per-object tables (objects.csv) and per-frame counts (counts.csv)."""

from .counts import class_fractions, count_by_area, count_objects, counts_from_objects, mean_object_area
from .tables import OBJECT_COLUMNS, frame_object_table, object_table, write_objects_csv, write_table_csv

__all__ = [
    "OBJECT_COLUMNS",
    "object_table",
    "frame_object_table",
    "write_objects_csv",
    "write_table_csv",
    "count_objects",
    "counts_from_objects",
    "count_by_area",
    "mean_object_area",
    "class_fractions",
]
