"""Work done for one batch item, in a Dask worker (or in the calling process).

:func:`run_item` is the function submitted to Dask for every item. It
computes the input checksum, returns ``"skipped"`` when it equals the checksum
the manifest recorded for the item, otherwise runs the task (segment, track,
autolabel), writes the outputs atomically and returns their paths. It never
raises: any error becomes a ``"failed"`` result with a one-line reason, so a
bad file never stops a batch.

Models are loaded once per worker process (:func:`get_model` keeps the last
loaded model, keyed by path, modification time and device), not per item.
Inside a task Dask runs single-threaded (``scheduler="synchronous"``) so that
lazy Zarr reads never submit tasks back to the cluster.

Output layout under ``OUT`` (``<stem>`` = the input path relative to the input
root, without its suffix):

- segment: ``labels/<stem>.tif`` (Zarr input: ``labels/<stem>.zarr``, one
  frame written per task; a TIFF over 1 GiB: ``labels/<stem>.zarr``, tile by tile), ``shards/objects/<key>.csv``, ``shards/counts/<key>.csv``;
- track: ``tracks_labels/<stem>.tif`` (objects carry their track id),
  ``shards/tracks/<key>.csv``, ``shards/counts/<key>.csv`` and, when a model
  segments the images first, ``labels/<stem>.tif`` (Zarr or a TIFF over 1 GiB:
  ``labels/<stem>.zarr``, tracked from there frame by frame);
- autolabel: as segment, labels made by the classical fluorescence pipeline;
- classify: ``shards/flags/<key>.csv`` (one row: ``probability_bad, verdict, threshold, image``).

Every table shard has an ``image`` column (the input path relative to the
input root) so that the merged tables say where each row came from.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..errors import InputError
from ..io.atomic import replace_tree, temp_prefix
from ..io.images import is_lazy, is_rgb
from .manifest import LOCK_NAME, sha256_array, sha256_file, sha256_json, sha256_tree

#: segment_image keywords a segment (or track) batch task passes on
#: what a task function returns beside its outputs, kept in the item's manifest record: the network
#: arithmetic a segmentation ran in, the calibration (um, min) a tracking used
RECORDED_SETTINGS = ("precision", "units")
SEGMENT_PARAMS = ("tile", "overlap", "batch_size", "threshold", "min_size", "max_size", "fill_holes", "remove_border",
                  "diameter", "postprocess_options", "test_time_augmentation", "precision")


@dataclass(frozen=True)
class BatchItem:
    """One unit of batch work.

    Attributes
    ----------
    key : unique id, also the shard file name: the input path relative to the
        input root without suffix (``plate1/A01``); frames of a Zarr stack are
        ``<stem>.zarr/t000012``.
    source : absolute path of the input file or Zarr store.
    stem : input path relative to the input root, without suffix (names the outputs).
    image : input path relative to the input root, with suffix (the tables' ``image`` column).
    frame : frame index for one frame of a Zarr (T, Y, X) stack; None for a whole input.
    """

    key: str
    source: str
    stem: str
    image: str
    frame: int | None = None

    @property
    def is_zarr(self) -> bool:
        from ..io.images import image_kind

        return image_kind(self.source) == "zarr"


@dataclass(frozen=True)
class TaskSpec:
    """What to do with every item (sent to the workers with each item; small).

    Attributes
    ----------
    task : ``"segment"``, ``"track"``, ``"autolabel"`` or ``"classify"``.
    out : absolute path of the output folder.
    model : model file (segment; optional for track: segment the images first).
    params : keyword arguments of the task function (see :func:`napari_microseg.batch.runner.run_batch`).
    device : torch device for the model (``"auto"``, ``"cpu"``, ``"cuda"``...).
    threads : torch CPU threads per worker (None: leave torch's setting).
    label_dtype : dtype of Zarr label outputs (``uint32``; ``uint8`` for multiclass models).
    lock_owner : the output folder's lock as the run that sent the task wrote it (``pid``, ``host``,
        ``time``); a task writes its outputs only while the lock is still that run's (None: unchecked).
    """

    task: str
    out: str
    model: str | None = None
    params: dict = field(default_factory=dict)
    device: str = "auto"
    threads: int | None = None
    label_dtype: str = "uint32"
    lock_owner: dict | None = None


class RunEnded(Exception):
    """The run that sent a task holds the output folder no more (stopped; another run may hold it now)."""


#: the task this worker thread runs now: (output folder, the lock's owner as its run wrote it)
_CURRENT_RUN = threading.local()


def check_run_holds_out() -> None:
    """Raise :class:`RunEnded` when the run of this thread's task no longer holds its output folder's lock.
    A remote Dask worker's task goes on after its run was stopped (a cancel cannot stop a running task):
    it wrote its labels and shards 75 s later over those of the run that took the folder since. Called
    just before each output is written."""
    held_by = getattr(_CURRENT_RUN, "owner", None)
    if held_by is None:
        return
    out, owner = held_by
    try:
        now = json.loads((Path(out) / LOCK_NAME).read_text())
    except (OSError, ValueError):
        now = None
    if not isinstance(now, dict) or any(now.get(key) != owner.get(key) for key in ("pid", "host", "time")):
        raise RunEnded("the run that started this task has ended (stopped, or another run holds the output "
                       "folder now): its outputs were not written")


# ----------------------------------------------------------------------------- per-worker state
_MODELS: dict = {}


def get_model(path: str, device: str = "auto") -> Any:
    """Load a model file once per process; later calls with the same file (path, mtime, size) and device reuse it."""
    from ..io.models import load_model

    st = os.stat(path)
    key = (os.path.abspath(path), st.st_mtime_ns, st.st_size, device)
    model = _MODELS.get(key)
    if model is None:
        _MODELS.clear()  # keep one model per worker: memory stays bounded
        model = load_model(path, device=device)  # the task checked its kind up front (runner._model_info)
        _MODELS[key] = model
    return model


def _set_threads(threads: int | None) -> None:
    if not threads:
        return
    import torch

    if torch.get_num_threads() != int(threads):
        torch.set_num_threads(int(threads))


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return f"{get_worker().address} pid {os.getpid()}"
    except (ImportError, ValueError):
        return f"local pid {os.getpid()}"


def failure_reason(err: BaseException, limit: int = 500) -> str:
    """One-line reason for a failed item: the message of a :class:`MicrosegError`, else ``Type: message`` and where."""
    from ..errors import MicrosegError, disk_full_hint

    if isinstance(err, MicrosegError):
        text = str(err)
    else:
        text = f"{type(err).__name__}: {err}{disk_full_hint(err)}"
        tb = traceback.extract_tb(err.__traceback__)
        if tb:
            frame = tb[-1]
            text += f" (at {Path(frame.filename).name}:{frame.lineno})"
    text = " ".join(text.split())
    return text[:limit]


# ----------------------------------------------------------------------------- inputs
def read_zarr_frame(item: BatchItem) -> np.ndarray:
    """Frame ``item.frame`` of a Zarr (T, Y, X) stack as a numpy array (read synchronously)."""
    from ..io.images import read_image

    data = read_image(item.source).data
    if data.ndim != 3:
        raise InputError(f"{item.image}: expected a (T,Y,X) stack for per-frame work, got shape {tuple(data.shape)}")
    if not 0 <= item.frame < data.shape[0]:
        raise InputError(f"{item.image}: frame {item.frame} does not exist (stack has {data.shape[0]} frames)")
    return np.asarray(data[item.frame].compute(scheduler="synchronous"))


def integration_mask_path(item: BatchItem) -> Path | None:
    """The integration mask ``classify`` reads with an image of a response folder (``images/x.tif`` ->
    ``integration/x.tif``, as ``simulate response`` writes them); None when there is none."""
    source = Path(item.source)
    mask = source.parent.parent / "integration" / source.name
    return mask if item.frame is None and source.parent.name == "images" and mask.is_file() else None


def item_checksum(item: BatchItem, task: str | None = None) -> tuple[str, np.ndarray | None]:
    """Checksum of an item's input and, for Zarr frames, the frame that was hashed (reused by the task).

    Files: sha256 of the bytes. Zarr stores read whole: sha256 over all files
    of the store. Zarr frames: sha256 of the decoded frame (dtype, shape, bytes). ``task`` "classify":
    the image's integration mask too (an edited mask kept the verdict of the old one), see
    :func:`integration_mask_path`.
    """
    if item.frame is not None:
        frame = read_zarr_frame(item)
        return sha256_array(frame), frame
    path = Path(item.source)
    if not path.exists():
        raise InputError(f"{item.image}: no such file or folder")
    if path.is_dir():
        return sha256_tree(path), None
    mask = integration_mask_path(item) if task == "classify" else None
    if mask is not None:
        return sha256_json([sha256_file(path), sha256_file(mask)]), None
    return sha256_file(path), None


#: notes the reading of the item in progress (this thread's) made, joined into its record's ``note`` by run_item
_READ_NOTES = threading.local()

#: the Stop of a batch run in this process (``run_batch(stop_event=...)``, the Segmentation dock's "Dask workers 0"):
#: checked between the tiles of the image being segmented (it was checked between images: 33 s on a 4096^2 TIFF)
_STOP = threading.local()


class ItemStopped(BaseException):
    """Stop pressed while an item was segmented in this process: the item is neither done nor failed (its
    partial labels are never published), and the run ends. A BaseException: :func:`run_item` records only errors."""


def _segment(loaded: Any, image: Any, **kwargs: Any):
    """:func:`~napari_microseg.inference.segment.segment`, stopping between tiles (:class:`ItemStopped`) once the
    in-process run's stop event (``_STOP.event``) is set."""
    from ..inference.segment import segment, segment_image

    stop = getattr(_STOP, "event", None)
    if stop is None:
        return segment(loaded, image, **kwargs)
    gen = segment_image(loaded, image, **kwargs)
    while True:
        if stop.is_set():
            gen.close()
            raise ItemStopped
        try:
            next(gen)
        except StopIteration as done:
            return done.value


def _read_whole(item: BatchItem, spec: TaskSpec, grey: bool = False, calibration: dict | None = None) -> Any:
    """The whole input: numpy for files, a lazy dask array for Zarr stores and for TIFFs over
    :data:`~napari_microseg.io.images.LAZY_TIFF_BYTES` (read tile by tile, frame by frame, as the
    single-file commands read them).

    ``spec.params["channel"]`` picks one channel of multi-channel TIFFs, ``spec.params["hdu"]``
    the HDU of FITS files (default: the first with image data); with
    ``grey`` an RGB(A) image ``(Y, X, 3|4)`` becomes the mean of its colours. A ``calibration``
    dict receives what the file states (``pixel_size_um``, ``frame_interval_min``), as the
    single-file commands carry it on to their labels and track tables.
    """
    from ..io.images import LAZY_TIFF_BYTES, channel_or_grey, check_complete, is_z_stack, read_image, unnamed_planes

    channel = spec.params.get("channel")
    image = read_image(item.source, hdu=spec.params.get("hdu"), channel=channel, lazy_above_bytes=LAZY_TIFF_BYTES)
    check_complete(image, item.image)
    if is_z_stack(image):  # as segment and track say it: in notes.csv, not "frames" without a word
        getattr(_READ_NOTES, "notes", []).append("a Z stack (axes ZYX): its planes are worked one by one, as "
                                                 "frames (t in the tables is the plane)")
    elif spec.task == "segment" and unnamed_planes(str(image.metadata.get("axes", "")), tuple(image.data.shape)):
        # (as `microseg segment` says it)
        getattr(_READ_NOTES, "notes", []).append(
            f"does not say what its {image.data.shape[0]} planes are: taken as time frames; if they are channels, "
            "save one per file (or an OME / ImageJ TIFF and --channel)")
    if calibration is not None:
        calibration.update(image.metadata.get("calibration") or {})
        if image.metadata.get("origin") and calibration:  # where it lies (an OME-Zarr's translation), um
            calibration["origin"] = dict(image.metadata["origin"])
    if channel is not None and "channel" not in image.metadata and not is_rgb(image.data):
        # as segment and track warn: said (in notes.csv), not ignored without a word
        getattr(_READ_NOTES, "notes", []).append(f"--channel {channel} ignored: the file has no channels")
    if is_lazy(image.data) and not item.is_zarr and image.data.nbytes <= LAZY_TIFF_BYTES:
        image.data = np.asarray(image.data)  # a small pyramidal TIFF (read lazily for its levels): its full resolution
    # grey: --channel picks a colour of an RGB image too, as in `microseg segment`
    data = channel_or_grey(image, channel, item.image, warn=False) if grey else image.data
    if spec.task != "track" and not is_lazy(data) and np.size(data) and np.min(data) == np.max(data):
        # as segment, autolabel and classify warn: said (in notes.csv), not a silent empty result or verdict
        value = np.asarray(data).flat[0]
        getattr(_READ_NOTES, "notes", []).append(
            f"the image is constant (every pixel {value}): {'its verdict means nothing' if spec.task == 'classify' else 'nothing to find'}")
    return data


# ----------------------------------------------------------------------------- writers
def _write_shard(out: Path, kind: str, item: BatchItem, table: pd.DataFrame) -> str:
    from ..io.tables import write_csv

    table = table.copy()
    if "image" not in table.columns:  # a stack's rows name their images themselves (file[i])
        table["image"] = item.image
    rel = f"shards/{kind}/{item.key}.csv"
    check_run_holds_out()
    write_csv(out / rel, table)  # full precision; the merged tables round like the single-image CLI
    return rel


def _write_labels_tiff(out: Path, rel: str, labels: Any, calibration: dict | None = None) -> str:
    from ..io.images import LABELS_SOFTWARE, write_tiff

    # a lazy stack is written frame by frame; the input's pixel size and frame interval go with it
    check_run_holds_out()
    write_tiff(out / rel, labels, overwrite=True, calibration=calibration or None, software=LABELS_SOFTWARE,
               origin=(calibration or {}).get("origin"))
    return rel


def _frame_tables(objects: pd.DataFrame, counts: pd.DataFrame, t: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    objects = objects.copy()
    counts = counts.copy()
    if "t" in objects.columns:
        objects["t"] = int(t)
    if "t" in counts.columns:
        counts["t"] = int(t)
    return objects, counts


def _segment_params(spec: TaskSpec) -> dict:
    kw = {k: spec.params[k] for k in SEGMENT_PARAMS if k in spec.params}
    kw["keep_probabilities"] = False
    return kw


def _labels_into_zarr_store(out: Path, rel: str, make: Callable[[Any], Any], shape: tuple, dtype: str,
                            calibration: dict | None = None) -> Any:
    """Run ``make(zarr_array)`` on a new store in a temporary folder, then rename it to ``out/rel``; the
    store carries the input's ``calibration`` (pixel size, frame interval), as TIFF labels do."""
    import zarr

    from ..io.images import set_zarr_calibration

    target = out / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target.name), dir=target.parent))
    try:
        chunks = tuple([1] * (len(shape) - 2)) + (min(shape[-2], 2048), min(shape[-1], 2048))
        arr = zarr.open_array(str(tmp / "store"), mode="w", shape=shape, chunks=chunks, dtype=dtype)
        set_zarr_calibration(arr, calibration, (calibration or {}).get("origin"))
        result = make(arr)
        check_run_holds_out()
        replace_tree(tmp / "store", target)  # the old store whole until the new one is in place
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def write_zarr_frame(out: Path, rel: str, t: int, labels: np.ndarray) -> None:
    """Write one frame into the batch's Zarr label store (chunks never span frames; each chunk write is atomic)."""
    import zarr

    arr = zarr.open_array(str(out / rel), mode="r+")
    if tuple(arr.shape[1:]) != tuple(labels.shape):
        raise InputError(f"{rel}: frame shape {labels.shape} does not fit the label store {tuple(arr.shape)}")
    check_run_holds_out()
    arr[t] = labels.astype(arr.dtype, copy=False)


# ----------------------------------------------------------------------------- tasks
def segment_item(item: BatchItem, spec: TaskSpec, frame: np.ndarray | None) -> dict:
    """Segment one image, stack or Zarr frame with ``spec.model``; write labels and table shards."""
    segment = _segment  # (stops between tiles when an in-process run is stopped)
    out = Path(spec.out)
    loaded = get_model(spec.model, spec.device)
    kw = _segment_params(spec)
    if frame is not None:  # one frame of a Zarr stack
        result = segment(loaded, frame, **kw)
        rel = f"labels/{item.stem}.zarr"
        write_zarr_frame(out, rel, item.frame, np.asarray(result.labels))
        objects, counts = _frame_tables(result.objects, result.counts, item.frame)
    else:
        calibration: dict = {}
        data = _read_whole(item, spec, grey=True, calibration=calibration)
        if is_lazy(data):  # a Zarr store or a big TIFF (2D or a stack as one item): written chunk by chunk
            import zarr

            rel = f"labels/{item.stem}.zarr"
            result = _labels_into_zarr_store(out, rel, lambda arr: segment(loaded, data, out=arr, **kw),
                                             tuple(data.shape), spec.label_dtype, calibration)
            class_map = zarr.open_array(str(out / rel), mode="r")  # where the store now lies
        else:
            result = segment(loaded, data, **kw)
            rel = _write_labels_tiff(out, f"labels/{item.stem}.tif", result.labels, calibration)
        objects, counts = result.objects, result.counts
    outputs = {"labels": rel, "objects": _write_shard(out, "objects", item, objects),
               "counts": _write_shard(out, "counts", item, counts)}
    # the network arithmetic "auto" resolved to in this worker (bfloat16 or float32), as segment_run.json has it
    outputs["precision"] = result.settings.get("precision")
    # intensities unlike the model's training data, a frame that is one object: said, as segment says them
    said = [str(result.settings[key]) for key in ("scale_warning", "coverage_warning") if result.settings.get(key)]
    if said:
        outputs["note"] = "; ".join(said)
    # a CCD class model: the charge of each cluster (frame by frame; a lazy single frame is read whole
    # here, about its own size in memory, once its labels are written tile by tile)
    if getattr(loaded, "output_mode", None) == "multiclass":
        from ..autolabel.ccd import clusters_per_frame

        if frame is not None:
            clusters = clusters_per_frame(np.asarray(result.labels), frame, loaded.class_names, first_frame=item.frame)
        else:
            clusters = clusters_per_frame(class_map if is_lazy(data) else np.asarray(result.labels), data, loaded.class_names)
        if clusters is not None:
            outputs["clusters"] = _write_shard(out, "clusters", item, clusters)
    return outputs


def autolabel_item(item: BatchItem, spec: TaskSpec, frame: np.ndarray | None) -> dict:
    """Auto-label one fluorescence image (or each frame of a stack / one Zarr frame); write labels and shards."""
    from ..measure.counts import counts_with_area
    from ..measure.tables import object_table

    fn = autolabel_function()
    out = Path(spec.out)
    kw = dict(spec.params.get("autolabel", {}))
    if frame is not None:
        labels = np.asarray(fn(frame, **kw))
        rel = f"labels/{item.stem}.zarr"
        write_zarr_frame(out, rel, item.frame, labels)
        objects = object_table(labels, frame, t_offset=item.frame)
        counts = counts_with_area(objects, [item.frame])
    else:
        calibration: dict = {}
        data = _read_whole(item, spec, grey=True, calibration=calibration)
        if data.ndim not in (2, 3):
            raise InputError(f"{item.image}: expected a (Y,X) image or (T,Y,X) stack, got shape {tuple(data.shape)}")
        if is_lazy(data):  # a Zarr store or a big TIFF: frame by frame into a Zarr label store
            rel = f"labels/{item.stem}.zarr"

            def label_frames(arr: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
                frames = [None] if data.ndim == 2 else range(data.shape[0])
                tables = []
                for t in frames:
                    image = np.asarray(data if t is None else data[t])
                    labels = np.asarray(fn(image, **kw))
                    if t is None:
                        arr[:] = labels
                    else:
                        arr[t] = labels
                    tables.append(object_table(labels, image, t_offset=0 if t is None else t))
                table = pd.concat(tables, ignore_index=True)
                return table, counts_with_area(table, range(len(frames)))

            objects, counts = _labels_into_zarr_store(out, rel, label_frames, tuple(data.shape), spec.label_dtype,
                                                      calibration)
        else:
            labels = (np.asarray(fn(data, **kw)) if data.ndim == 2
                      else np.stack([np.asarray(fn(data[t], **kw)) for t in range(data.shape[0])]))
            rel = _write_labels_tiff(out, f"labels/{item.stem}.tif", labels, calibration)
            objects = object_table(labels, data)
            counts = counts_with_area(objects, range(1 if labels.ndim == 2 else labels.shape[0]))
    return {"labels": rel, "objects": _write_shard(out, "objects", item, objects),
            "counts": _write_shard(out, "counts", item, counts)}


def track_item(item: BatchItem, spec: TaskSpec, frame: np.ndarray | None) -> dict:
    """Track one (T, Y, X) label stack (or segment an image stack with ``spec.model`` first); write tracks and shards."""
    from ..io.images import time_stack
    from ..tracking.export import counts_table, track_summary
    from ..tracking.track import MASK_NOTE, run_tracking

    if frame is not None:
        raise InputError(f"{item.image}: tracking needs the whole stack, not one frame")
    out = Path(spec.out)
    # as `microseg track` reads it: Zarr and big TIFFs stay on disk and are tracked frame by frame
    stated: dict = {}  # the movie's own pixel size and frame interval (OME / ImageJ metadata)
    # images segmented first are read as `batch segment` reads them (an RGB movie grey, or --channel's colour)
    data = time_stack(_read_whole(item, spec, grey=bool(spec.model), calibration=stated), f"{item.image}: tracking input",
                      lazy=True)
    given = {"pixel_size_um": spec.params.get("pixel_size"), "frame_interval_min": spec.params.get("frame_interval")}
    calibration = {key: given[key] if given[key] is not None else stated.get(key) for key in given}
    if given["pixel_size_um"] is None and "pixel_size_y_um" in stated:  # non-square pixels keep their Y size
        calibration["pixel_size_y_um"] = stated["pixel_size_y_um"]
    if calibration["frame_interval_min"] is None and stated.get("z_step_um"):  # a Z stack, linked plane by plane
        calibration["z_step_um"] = stated["z_step_um"]
    if calibration["frame_interval_min"] is None and stated.get("z_planes"):  # one of no stated step: still Z
        calibration["z_planes"] = True
    if stated.get("origin") and calibration["pixel_size_um"] is not None:  # where the movie lies (OME-Zarr's
        calibration["origin"] = stated["origin"]  # translation, micrometres: kept with a --pixel-size too)
    from ..tracking.units import option_overrides

    # the options replace each movie's own calibration: said per movie (notes.csv), and its units recorded
    overridden = option_overrides(stated, given["pixel_size_um"], given["frame_interval_min"])
    outputs: dict = {"units": {k: v for k, v in calibration.items() if v is not None}}
    if spec.model:
        segment = _segment  # (stops between tiles when an in-process run is stopped)
        loaded = get_model(spec.model, spec.device)
        image = data
        if is_lazy(data):  # Zarr or a big TIFF: segmented into a Zarr store, tracked from it frame by frame
            import dask.array as da

            outputs["labels"] = f"labels/{item.stem}.zarr"
            _labels_into_zarr_store(out, outputs["labels"],
                                    lambda arr: segment(loaded, data, out=arr, measure=False, **_segment_params(spec)),
                                    tuple(data.shape), spec.label_dtype, calibration)
            labels = da.from_zarr(str(out / outputs["labels"]))
        else:
            labels = np.asarray(segment(loaded, data, measure=False, **_segment_params(spec)).labels)
            outputs["labels"] = _write_labels_tiff(out, f"labels/{item.stem}.tif", labels, calibration)
    else:  # labels, or a mask stack (tracked as its connected objects)
        labels, image = data, None
    kw = {k: spec.params[k] for k in ("config", "max_search_radius", "update_method", "optimize", "stage_shift")
          if k in spec.params}
    units = {"pixel_size": calibration["pixel_size_um"], "frame_interval": calibration["frame_interval_min"],
             "pixel_size_y": calibration.get("pixel_size_y_um")}
    result = run_tracking(labels, image, **kw)
    notes = ([MASK_NOTE] if result.info.get("mask_converted") else []) + overridden
    if notes:
        outputs["note"] = "; ".join(notes)
    outputs["tracks_labels"] = _write_labels_tiff(out, f"tracks_labels/{item.stem}.tif", result.relabelled, calibration)
    outputs["tracks"] = _write_shard(out, "tracks", item, result.table)
    outputs["counts"] = _write_shard(out, "counts", item, counts_table(result, n_frames=labels.shape[0]))
    outputs["track_summary"] = _write_shard(out, "track_summary", item, track_summary(result, **units))
    from ..tracking.export import CTC_FOLDER, ctc_mask_files, write_ctc

    ctc_folder = out / CTC_FOLDER / item.stem
    if spec.params.get("ctc"):  # per movie: what `microseg evaluate tracks --pred` scores
        outputs["ctc"] = f"{CTC_FOLDER}/{item.stem}"
        write_ctc(result, ctc_folder, overwrite=True)
    elif ctc_folder.is_dir():  # an earlier run's export, of other settings: `evaluate tracks` would score it
        for stale in [*ctc_mask_files(ctc_folder), ctc_folder / "res_track.txt"]:
            stale.unlink(missing_ok=True)
        if not any(ctc_folder.iterdir()):
            ctc_folder.rmdir()
    return outputs


def get_classifier(path: str, device: str = "auto") -> Any:
    """A whole-image classifier model, loaded once per process (see :func:`get_model`)."""
    from ..classify import _register_architectures
    from ..classify.predict import load_classifier

    _register_architectures()  # classifier networks are built from the classify package's registry entries
    return load_classifier(get_model(path, device))


def classify_item(item: BatchItem, spec: TaskSpec, frame: np.ndarray | None) -> dict:
    """Classify one whole 2-D image good / bad with an ``images`` classifier; write a one-row ``flags`` shard.

    ``spec.params``: ``box`` (``y0, x0, y1, x1`` integration area, one for all
    images; without it an image in ``images/`` with a same-named mask in ``integration/``
    beside it uses that mask, and others must already have the model's crop size) and
    ``threshold`` (on ``probability_bad``; default: the model's).
    """
    from ..classify.predict import classify_images
    from ..io.images import read_image

    if frame is not None:
        raise InputError(f"{item.image}: whole-image classification takes 2-D images, not stack frames")
    # an RGB image grey (or --channel's colour), as `classify images` and the Classification dock take it
    image = np.asarray(_read_whole(item, spec, grey=True))
    box = spec.params.get("box")
    if image.ndim == 3 and not is_rgb(image) and box is not None:
        # an (N, Y, X) stack of images (the Simulation dock's, saved), as `classify images` takes it: image i
        # is named file[i]; one box for all (a mask folder pairs whole files only)
        table = classify_images(get_classifier(spec.model, spec.device), list(image), boxes=[list(box)] * len(image),
                                threshold=spec.params.get("threshold"))
        table = table.drop(columns=[c for c in ("index", "file") if c in table.columns])
        table.insert(0, "image", [f"{item.image}[{i}]" for i in range(len(image))])
        return {"flags": _write_shard(Path(spec.out), "flags", item, table)}
    if image.ndim != 2:
        raise InputError(f"{item.image}: expected a 2-D image{' (or an (N, Y, X) stack with --box)' if image.ndim == 3 else ''}, "
                         f"got shape {image.shape}")
    from ..classify.predict import dim_for_16_bit_scale

    if dim_for_16_bit_scale(get_classifier(spec.model, spec.device).config, [image]):  # as `classify images` says it
        getattr(_READ_NOTES, "notes", []).append(
            "values within 0-255 only, where the model keeps the 16-bit scale: an 8-bit image looks almost black to "
            "it (use the 16-bit original or a min-max model)")
    masks = None
    mask_path = integration_mask_path(item)
    if box is None and mask_path is not None:
        # a response folder (as 'simulate response' writes it): the image's own integration area
        masks = [np.asarray(read_image(mask_path).data) > 0]
        if masks[0].shape != image.shape:
            raise InputError(f"{item.image}: its integration mask {mask_path.name} is {masks[0].shape}, the image {image.shape}")
    table = classify_images(get_classifier(spec.model, spec.device), [image], masks=masks,
                            boxes=None if box is None else [list(box)], threshold=spec.params.get("threshold"))
    table = table.drop(columns=[c for c in ("index", "file") if c in table.columns])
    table.insert(0, "image", item.image)
    return {"flags": _write_shard(Path(spec.out), "flags", item, table.drop(columns="image"))}


def autolabel_function() -> Callable:
    """The fluorescence auto-labeller, or InputError when it is not part of the package yet."""
    try:
        from ..autolabel.fluorescence import autolabel_fluorescence
    except ImportError:
        raise InputError("batch autolabel is not available yet: napari_microseg.autolabel.fluorescence "
                         "is missing from this installation") from None
    return autolabel_fluorescence


#: task name -> function(item, spec, zarr_frame_or_None) -> {output kind: path relative to OUT}
TASK_FUNCTIONS: dict[str, Callable[[BatchItem, TaskSpec, Any], dict]] = {
    "segment": segment_item,
    "track": track_item,
    "autolabel": autolabel_item,
    "classify": classify_item,
}

#: tasks whose Zarr (T,Y,X) inputs are split into one item per frame
PER_FRAME_TASKS = {"segment", "autolabel"}


def run_item(item: BatchItem, spec: TaskSpec, expected_checksum: str | None = None) -> dict:
    """Process one item; never raises. Returns a manifest-ready record.

    Parameters
    ----------
    item, spec : what and how.
    expected_checksum : checksum recorded by an earlier run for this item; when
        the input still has it, the item is skipped (``status="skipped"``).

    Returns
    -------
    dict with ``key, input, frame, status ("done", "skipped" or "failed"),
    checksum, outputs ({kind: path relative to OUT}), reason, seconds, worker``,
    ``device`` (the torch device used) for tasks run with a model, ``precision`` (the network
    arithmetic, ``"bfloat16"`` or ``"float32"``) for segmentation, ``units`` (the calibration used:
    ``pixel_size_um``, ``frame_interval_min``, ...) for tracking, and ``note`` when the task
    remarks on its input (e.g. a 0/1 mask stack tracked as its connected objects).
    """
    import dask

    start = time.perf_counter()
    record: dict[str, Any] = {"key": item.key, "input": item.source, "frame": item.frame, "status": "failed",
                              "checksum": None, "outputs": {}, "reason": "", "worker": _worker_name()}
    try:
        with dask.config.set(scheduler="synchronous"):
            checksum, frame = item_checksum(item, spec.task)
            record["checksum"] = checksum
            if expected_checksum is not None and checksum == expected_checksum:
                record["status"] = "skipped"
            else:
                _set_threads(spec.threads)
                _READ_NOTES.notes = []
                if item.frame is not None and spec.params.get("channel") is not None:  # a (T, Y, X) Zarr, by frames
                    _READ_NOTES.notes.append(f"--channel {spec.params['channel']} ignored: the file has no channels")
                _CURRENT_RUN.owner = (spec.out, spec.lock_owner) if spec.lock_owner else None
                try:
                    record["outputs"] = TASK_FUNCTIONS[spec.task](item, spec, frame)
                finally:
                    _CURRENT_RUN.owner = None
                notes = [*_READ_NOTES.notes, record["outputs"].pop("note", None)]
                for setting in RECORDED_SETTINGS:  # settings of the item's run, not output files
                    if setting in record["outputs"]:
                        record[setting] = record["outputs"].pop(setting)
                if any(notes):
                    record["note"] = "; ".join(n for n in notes if n)
                record["status"] = "done"
                if spec.model:  # the device the network ran on in this worker ("auto" resolved)
                    from ..device import resolve_device

                    record["device"] = resolve_device(spec.device)
    except Exception as err:  # noqa: BLE001 - a failed item is recorded, the batch goes on
        record["reason"] = failure_reason(err)
    record["seconds"] = round(time.perf_counter() - start, 4)
    return record
