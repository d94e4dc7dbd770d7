"""Experiment-scale batch processing on Dask (segment, track, autolabel many images; resumable).

See :func:`napari_microseg.batch.runner.run_batch`.
"""

from .manifest import Manifest, sha256_array, sha256_file
from .runner import (TASKS, BatchProgress, BatchSummary, find_batch_inputs, merge_tables, plan_items, run_batch,
                     run_batch_sync)
from .tasks import BatchItem, TaskSpec, run_item

__all__ = [
    "TASKS", "BatchItem", "BatchProgress", "BatchSummary", "Manifest", "TaskSpec", "find_batch_inputs",
    "merge_tables", "plan_items", "run_batch", "run_batch_sync", "run_item", "sha256_array", "sha256_file",
]
