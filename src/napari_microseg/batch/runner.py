"""Experiment-scale batch processing on Dask: :func:`run_batch`.

One task per input file (per frame for Zarr (T, Y, X) stacks in ``segment``
and ``autolabel``), run on a Dask cluster: a ``LocalCluster`` of worker
processes started for the run (one thread each, since torch uses threads
itself), or an existing cluster given by its scheduler address or a
``distributed.Client``. ``workers=0`` runs the items one after another in the
calling process (no cluster; small jobs and debugging).

Results are written as items finish: label images (TIFF, or a Zarr store for
Zarr input), table shards (``OUT/shards/<kind>/<key>.csv``) and a line in
``OUT/manifest.jsonl`` (see :mod:`.manifest`), appended only once the
outputs are in place. At the end the shards of all done items are merged into
``OUT/objects.csv`` + ``OUT/counts.csv`` (segment, autolabel),
``OUT/tracks.csv`` + ``OUT/counts.csv`` (track) or ``OUT/flags.csv``
(classify: ``image, probability_bad, verdict, threshold``), sorted by image then frame,
with an ``image`` column (the input path relative to the input root).

Resuming: a rerun with the same settings and ``OUT`` skips every item the
manifest records as done whose input checksum is unchanged and whose outputs
exist (the checksums are computed in the driver with a few threads before any
cluster starts, so a rerun with nothing left to do starts none); a killed run
loses at most the items that were in flight. Inputs added since are
processed; the merged tables hold the items of the current inputs only (an
input deleted since leaves them). A run whose inputs leave out inputs done
before that are still in place (another folder or pattern into the same
``OUT``) is refused unless ``overwrite=True``, which replaces the tables with
this run's inputs only. A rerun with other settings (model, threshold, tile...)
is refused unless ``overwrite=True``, which redoes every item.
Failed items (unreadable file, wrong shape...) are recorded with their reason
in ``OUT/failures.csv`` and retried by the next run; they never stop a batch.

The run is a generator yielding :class:`BatchProgress` and returning a
:class:`BatchSummary`: the CLI drives it with a text bar, a widget in a
thread worker. Closing the generator (``gen.close()``, or an exception in the
driver) cancels the outstanding tasks and shuts down a cluster the run started.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generator, Iterable, Iterator, Sequence

import pandas as pd

from .. import __version__
from ..errors import InputError
from ..io.atomic import temp_prefix
from ..progress import Progress
from .manifest import (CONFIG_NAME, FAILURES_NAME, LOCK_NAME, MANIFEST_NAME, RUN_NAME, Manifest, is_done, sha256_file,
                       sha256_json, utc_now, write_failures_csv)
from .tasks import (PER_FRAME_TASKS, SEGMENT_PARAMS, BatchItem, TaskSpec, autolabel_function, failure_reason,
                    item_checksum, run_item)

#: batch tasks
TASKS = ("segment", "track", "autolabel", "classify")

#: keyword parameters accepted per task (passed to the task function on the workers)
TRACK_PARAMS = ("config", "max_search_radius", "update_method", "optimize", "stage_shift", "pixel_size",
                "frame_interval", "ctc")
TASK_PARAMS = {  # every task takes "channel" (of multi-channel TIFFs) and "hdu" (of FITS files)
    "segment": SEGMENT_PARAMS + ("channel", "hdu"),
    "track": TRACK_PARAMS + SEGMENT_PARAMS + ("channel", "hdu"),
    "autolabel": ("autolabel", "channel", "hdu"),
    "classify": ("box", "threshold", "channel", "hdu"),
}
#: module preloaded into local Dask workers and nannies (they leave Ctrl-C to the batch command)
WORKER_SETUP = "napari_microseg.batch._worker_setup"
#: parameters that do not change results (left out of the settings hash)
NEUTRAL_PARAMS = ("batch_size",)

#: merged table name and sort keys per shard kind
MERGED_TABLES = {
    "objects": ("objects.csv", ["image", "t", "label"]),
    "counts": ("counts.csv", ["image", "t"]),
    "clusters": ("clusters.csv", ["image", "t", "label"]),
    "tracks": ("tracks.csv", ["image", "track_id", "t"]),
    "track_summary": ("track_summary.csv", ["image", "track_id"]),
    "flags": ("flags.csv", ["image"]),
}


@dataclass
class BatchProgress(Progress):
    """Progress of a batch: ``done`` = processed + skipped + failed of ``total`` items.

    Attributes
    ----------
    processed : items computed in this run.
    skipped : items already done by an earlier run (same input checksum, outputs present).
    failed : items that failed in this run (reasons in ``failures.csv``).
    in_flight : items submitted and not finished.
    elapsed : seconds since the run started.
    eta : estimated seconds left (from the rate of processed items), None while unknown.
    last : manifest record of the item that just finished (None for heartbeat events).
    """

    processed: int = 0
    skipped: int = 0
    failed: int = 0
    in_flight: int = 0
    elapsed: float = 0.0
    eta: float | None = None
    last: dict | None = None


@dataclass
class BatchSummary:
    """What a finished batch did.

    Attributes
    ----------
    task : the task run.
    out : output folder.
    total, processed, skipped, failed : item counts (``processed`` = computed in this run).
    seconds : wall time of the run.
    tables : merged tables written, ``{kind: path}`` (``objects``, ``counts``, ``tracks``).
    failures : failed records of this run (``key, input, frame, reason``).
    manifest, failures_csv : paths of ``manifest.jsonl`` and ``failures.csv``.
    workers : number of Dask workers used (0: in process).
    ignored : files of other types found in the input folders and left out (paths).
    """

    task: str
    out: Path
    total: int
    processed: int
    skipped: int
    failed: int
    seconds: float
    tables: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)
    manifest: Path | None = None
    failures_csv: Path | None = None
    workers: int = 0
    ignored: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def items_per_second(self) -> float:
        """Processed (not skipped) items per second of wall time."""
        return self.processed / self.seconds if self.seconds > 0 else float("nan")

    def left_out_note(self) -> str | None:
        """One line saying which files of the input folders were left out (``ignored``: a PNG among the
        TIFFs, previews, label folders, earlier results), ``None`` when none was: said, never silent."""
        if not self.ignored:
            return None
        names = ", ".join(Path(p).name for p in self.ignored[:3]) + (" ..." if len(self.ignored) > 3 else "")
        return (f"{len(self.ignored)} file(s) or folder(s) in the input folders were left out: other types, "
                "previews, label folders such as labels/, a simulated movie's images this task does not read (its "
                "labels.tif truth), earlier runs' results, "
                f"or folders reached already through a link ({names}; listed in batch_run.json)")

    def notes_note(self) -> str | None:
        """One line on the inputs noted (e.g. far brighter or dimmer than the model's training data: results
        may be empty), naming ``notes.csv`` and the first; ``None`` when none was."""
        if not self.notes:
            return None
        first = self.notes[0]
        return (f"{len(self.notes)} input(s) noted, listed in {Path(self.out) / 'notes.csv'}; first: "
                f"{Path(str(first['image'])).name}: {first['note']}")


# ----------------------------------------------------------------------------- inputs
def split_image_suffix(name: str) -> tuple[str, str]:
    """``(stem, suffix)`` of a file name or relative path: the longest image suffix that ends it
    (``a/b.tif`` -> ``("a/b", ".tif")``, ``x.fits.gz`` -> ``("x", ".fits.gz")``), else its last one."""
    from ..io.images import FITS_SUFFIXES, TIFF_SUFFIXES, ZARR_SUFFIXES

    lower = name.lower()
    for suffix in sorted(FITS_SUFFIXES + TIFF_SUFFIXES + ZARR_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)], name[-len(suffix):]
    stem, dot, ext = name.rpartition(".")
    return (stem, dot + ext) if dot and stem else (name, "")


def _is_within(path: Path, folder: Path | None) -> bool:
    if folder is None:
        return False
    try:
        path.resolve().relative_to(folder)
        return True
    except ValueError:
        return False


def _walk_images(folder: Path, exclude: Path | None, ignored: list | None = None,
                 skip_label_folders: bool = False, keep_run_labels: bool = False,
                 simulation_inputs: Sequence[str] | None = None) -> list[Path]:
    """Images under ``folder`` (recursive; Zarr stores taken whole); hidden names and ``exclude`` are
    skipped; files of other types are appended to ``ignored`` when given. Linked folders that lead out
    of ``folder`` are searched too (a linked data share); one that leads back into it is not (its images
    are found under their own names). Left out, their images appended to ``ignored``: an earlier run's
    results (:func:`~napari_microseg.io.images.run_output`: the ``labels/``, ``probabilities/``,
    relabelled stacks of a folder holding a run record; with ``keep_run_labels`` its ``labels/`` are
    kept, for tracking) and, with ``skip_label_folders``, sub-folders named as label folders
    (``labels/``, ``masks/``, ... : a data set's ground truth beside its images) and, with
    ``simulation_inputs``, the images of a simulated nuclei movie not named there (its truth,
    ``labels.tif``, for the tasks that read images)."""
    from ..io.images import RUN_LABELS, RUN_OUTPUTS, SIMULATED_MOVIE_IMAGES, image_kind, run_record, simulated_movie
    from ..training.data import LABEL_FOLDERS

    found: list[Path] = []
    real_root = os.path.realpath(folder)
    seen = {real_root}  # each real folder once, whatever links lead to it

    def leave_out(path: Path) -> None:
        if ignored is None:
            return
        if path.is_dir() and image_kind(path) != "zarr":  # its images (Zarr stores whole, not their chunks)
            ignored.extend(_walk_images(path, exclude))
        elif image_kind(path) is not None:
            ignored.append(path)

    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        here = Path(dirpath)
        results = RUN_OUTPUTS if run_record(here) else ()  # an earlier run's --out: its results are no inputs
        not_inputs = (tuple(n for n in SIMULATED_MOVIE_IMAGES if n not in simulation_inputs)
                      if simulation_inputs is not None and simulated_movie(here) else ())
        keep = []
        for d in sorted(dirnames):
            sub = here / d
            real = os.path.realpath(sub)
            if d.startswith(".") or _is_within(sub, exclude):
                continue
            if real in seen or (sub.is_symlink() and (real == real_root or real.startswith(real_root + os.sep))):
                if ignored is not None:  # a folder searched already, or under its own name: said, not silent
                    ignored.append(sub)
                continue
            if (d in results and not (keep_run_labels and d == "labels")) \
                    or (skip_label_folders and d.lower() in LABEL_FOLDERS):
                leave_out(sub)
                continue
            if image_kind(sub) == "zarr":
                found.append(sub)
            else:
                keep.append(d)
                seen.add(real)
        dirnames[:] = keep
        for f in filenames:
            path = here / f
            if f.startswith(".") or not path.is_file():
                continue
            if (f in results and not (keep_run_labels and f in RUN_LABELS)) or f in not_inputs:
                leave_out(path)  # a relabelled stack beside a run's tables; a simulation's truth (or its phase)
            elif image_kind(path) is not None:
                found.append(path)
            elif ignored is not None:
                ignored.append(path)
    return found


def find_batch_inputs(inputs: str | os.PathLike | Iterable[str | os.PathLike],
                      exclude: str | os.PathLike | None = None,
                      root: str | os.PathLike | None = None,
                      ignored: list | None = None, skip_label_folders: bool = False,
                      keep_run_labels: bool = False,
                      simulation_inputs: Sequence[str] | None = None) -> list[tuple[Path, str]]:
    """Resolve the batch inputs to ``[(absolute path, path relative to the input root), ...]``, sorted.

    Parameters
    ----------
    inputs : one or several of: an image file (TIFF, FITS, Zarr store), a
        folder (searched recursively; Zarr stores inside are taken whole), a
        glob pattern (``"plate*/**/*.tif"``, recursive ``**`` allowed).
    exclude : a folder to leave out (the output folder, when it lies inside an input folder).
    root : the input root of an earlier run into the same output folder: inputs under it are
        named from it as before (so a rerun with inputs added skips the done ones); inputs
        outside it are named from the deepest folder holding it and them.
    ignored : a list that receives the files of other types found in input folders (a PNG
        among TIFFs), so that the caller can say they were left out.
    skip_label_folders : leave out sub-folders of input folders named as label folders
        (``labels/``, ``masks/``, ...: ground truth beside the images), listed in ``ignored``;
        for the tasks that read images (all but track; a folder given itself is always searched).
    keep_run_labels : earlier runs' ``labels/`` are inputs (tracking segmentation results); their
        other results (probabilities, relabelled stacks) are left out all the same.
    simulation_inputs : in a folder holding a simulated nuclei movie (``microseg simulate nuclei``),
        which of its images (``fluorescence.tif``, ``phase.tif``, ``labels.tif``) are inputs; the
        others are left out and listed in ``ignored`` (the truth is no image to segment; a phase
        image no stain to auto-label). None: all of them.

    The input root is the deepest folder holding all inputs; relative paths from it name
    the outputs, so inputs in different sub-folders may share a name. Symbolic links keep
    their own names (two links to one file are two inputs). Raises InputError when nothing
    is found or two inputs would share outputs.
    """
    from ..io.images import drop_previews, glob_fixed_part, image_kind, run_output
    from ..training.data import LABEL_FOLDERS

    specs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not specs:
        raise InputError("no inputs given")
    excl = Path(exclude).resolve() if exclude is not None else None
    paths: list[Path] = []
    for spec in specs:
        p = Path(spec)
        previews: list[Path] = []
        if p.exists() and (p.is_file() or image_kind(p) == "zarr"):
            paths.append(p)
        elif p.is_dir():
            before = len(ignored) if ignored is not None else 0
            found, previews = drop_previews(_walk_images(p, excl, ignored, skip_label_folders, keep_run_labels,
                                                         simulation_inputs))
            if not found:
                left = (f" ({len(ignored) - before} left out: label folders or earlier runs' results)"
                        if ignored is not None and len(ignored) > before else "")
                raise InputError(f"{p}: folder holds no images (.tif, .tiff, .fits, .fit, .zarr, .png, .jpg){left}")
            paths.extend(found)
        elif any(ch in str(spec) for ch in "*?["):
            matches = [Path(q) for q in glob.glob(str(spec), recursive=True)
                       if image_kind(q) is not None and not Path(q).name.startswith(".")]
            # the arrays inside a Zarr store the pattern also matched are the store's, not inputs of their own
            stores = {q for q in matches if image_kind(q) == "zarr"}
            matches = [q for q in matches if not any(parent in stores for parent in q.parents)]
            # as in folders: run outputs (and, for the tasks that read images, label folders) below the
            # pattern's fixed part are left out
            fixed = glob_fixed_part(str(spec))
            records: dict = {}
            left_out = [q for q in matches if run_output(q, fixed, keep_run_labels, records) or (skip_label_folders and Path(
                os.path.abspath(q)).is_relative_to(fixed) and any(part.lower() in LABEL_FOLDERS for part in
                                                                 Path(os.path.abspath(q)).relative_to(fixed).parent.parts))
                        or _simulation_left_out(q, simulation_inputs)]
            if left_out:
                dropped = set(left_out)
                matches = [q for q in matches if q not in dropped]
                if ignored is not None:
                    ignored.extend(left_out)
            # a pattern follows linked folders: the same folder reached twice (plate1/link/, plate3/ -> real/)
            # gives its images once, under their own folder's name where it matched (as a folder search names
            # them), else the first; two linked files in one folder stay two inputs
            reached: set = set()
            once = []
            for q in sorted(matches, key=lambda q: (os.path.realpath(q.parent) != os.path.abspath(q.parent), str(q))):
                where = (os.path.realpath(q.parent), q.name)
                if where in reached:
                    if ignored is not None:
                        ignored.append(q)
                    continue
                reached.add(where)
                once.append(q)
            matches = sorted(once)
            found, previews = drop_previews(matches)
            if not found:
                left = f" ({len(left_out)} left out: label folders or earlier runs' results)" if left_out else ""
                raise InputError(f"no images match {str(spec)!r}{left}")
            paths.extend(found)
        else:
            raise InputError(f"{spec}: no such file or folder")
        if previews and ignored is not None:  # PNG previews beside the TIFFs: left out and listed
            ignored.extend(previews)
    # absolute but not resolved: a link is named as the user sees it; the same path given twice is one input
    unique = sorted({Path(os.path.abspath(p)) for p in paths if not _is_within(p, excl)})
    if not unique:
        raise InputError("all inputs lie inside the output folder")
    from ..io.images import refuse_undecodable_names

    refuse_undecodable_names(unique)
    common = Path(os.path.commonpath([str(p.parent) for p in unique] + ([os.path.abspath(root)] if root else [])))
    root = Path(os.path.abspath(root)) if root else common
    result = [(p, p.relative_to(root if p.is_relative_to(root) else common).as_posix()) for p in unique]
    stems: dict[str, Path] = {}
    for path, rel in result:
        stem = split_image_suffix(rel)[0]
        if stem in stems:
            raise InputError(f"inputs {stems[stem]} and {path} would write the same outputs ({stem!r}); "
                             "run them into separate --out folders")
        stems[stem] = path
    return result


def plan_items(inputs: Sequence[tuple[Path, str]], task: str) -> tuple[list[BatchItem], dict[str, tuple], dict[str, dict]]:
    """Items for the task: one per input; one per frame of a Zarr (T,Y,X) stack for per-frame tasks.

    Returns the items, ``{stem: shape}`` of the Zarr stacks split into frames (their label stores
    are created before the run) and ``{stem: calibration}`` of those stacks (what their metadata state).
    """
    from ..io.images import image_kind, is_rgb, read_image

    items: list[BatchItem] = []
    stacks: dict[str, tuple] = {}
    calibrations: dict[str, dict] = {}
    for path, rel in inputs:
        stem = split_image_suffix(rel)[0]
        if task in PER_FRAME_TASKS and image_kind(path) == "zarr":
            try:
                stack = read_image(path)
                shape = tuple(int(s) for s in stack.data.shape)
            except InputError:
                shape = None  # the worker reports the reason
            axes = str(stack.metadata.get("axes", "")).upper() if shape is not None else ""
            colour = shape is not None and (axes.endswith(("S", "C")) if len(axes) == 3 else is_rgb(stack.data))
            if shape is not None and len(shape) == 3 and not colour:  # (a colour image is one item, read as grey)
                stacks[stem] = shape
                calibrations[stem] = dict(stack.metadata.get("calibration") or {})
                if stack.metadata.get("origin") and calibrations[stem]:  # where it lies (OME-Zarr's translation)
                    calibrations[stem]["origin"] = dict(stack.metadata["origin"])
                digits = max(6, len(str(shape[0] - 1)))
                items.extend(BatchItem(key=f"{stem}.zarr/t{t:0{digits}d}", source=str(path), stem=stem, image=rel,
                                       frame=t) for t in range(shape[0]))
                continue
        items.append(BatchItem(key=stem, source=str(path), stem=stem, image=rel))
    return items, stacks, calibrations


def prepare_zarr_stores(out: Path, stacks: dict[str, tuple], dtype: str,
                        calibrations: dict[str, dict] | None = None) -> set[str]:
    """Create ``OUT/labels/<stem>.zarr`` (T,Y,X) stores, one frame per chunk row, for per-frame tasks,
    carrying their stack's calibration (``calibrations[stem]``: pixel size, frame interval).

    An existing store of the right shape and dtype is kept (resume); one that
    does not fit is replaced. Returns the stems whose stores are new (none of
    their frames can be skipped).
    """
    import zarr

    from ..io.images import set_zarr_calibration

    fresh = set()
    for stem, shape in stacks.items():
        target = out / "labels" / f"{stem}.zarr"
        if target.exists():
            try:
                arr = zarr.open_array(str(target), mode="r+")
                fits = tuple(arr.shape) == tuple(shape) and str(arr.dtype) == dtype
            except Exception:  # noqa: BLE001 - a damaged store is replaced
                fits = False
            if fits:  # kept for this run's frames: complete again only once they are all written
                arr.attrs["microseg_batch"] = {"complete": False}
                continue
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target.name), dir=target.parent))
        try:
            chunks = (1, min(shape[1], 2048), min(shape[2], 2048))
            arr = zarr.open_array(str(tmp / "store"), mode="w", shape=shape, chunks=chunks, dtype=dtype)
            arr.attrs["microseg_batch"] = {"complete": False}
            set_zarr_calibration(arr, (calibrations or {}).get(stem), ((calibrations or {}).get(stem) or {}).get("origin"))
            os.replace(tmp / "store", target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        fresh.add(stem)
    return fresh


# ----------------------------------------------------------------------------- output folder
def remove_stale_temporaries(out: Path, folders: Sequence[str] = ("labels", "tracks_labels", "shards")) -> int:
    """Delete temporary files/folders (names starting with ``.``) that a killed run left under the output folders.

    Only called while holding the folder's lock. Returns how many were removed.
    """
    removed = 0
    for name in folders:
        base = out / name
        if not base.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            here = Path(dirpath)
            for d in [d for d in dirnames if d.startswith(".")]:
                shutil.rmtree(here / d, ignore_errors=True)
                dirnames.remove(d)
                removed += 1
            dirnames[:] = [d for d in dirnames if not d.endswith(".zarr")]  # inside a store: zarr's own files
            for f in filenames:
                if f.startswith("."):
                    (here / f).unlink(missing_ok=True)
                    removed += 1
    return removed


def release_out_lock(lock: Path) -> None:
    """Remove an output folder's lock (:func:`acquire_out_lock`). A folder that became read-only keeps it (the
    next run takes a stale lock over): its error replaced the run's own ("Read-only file system: .batch.lock"
    for a run that failed writing objects.csv, or that had finished)."""
    with contextlib.suppress(OSError):
        lock.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (psutil: ``os.kill(pid, 0)`` would send Ctrl-C to it
    on Windows, where signal 0 is CTRL_C_EVENT)."""
    import psutil

    return psutil.pid_exists(pid)


def _refuse_if_in_use(out: Path) -> None:
    """InputError when another run holds ``out``'s lock (:func:`acquire_out_lock`)."""
    try:
        held = json.loads((out / LOCK_NAME).read_text())
    except (OSError, ValueError):
        return
    if isinstance(held, dict):
        _refuse_if_held(out, held)


def _refuse_if_held(out: Path, held: dict, lock: Path | None = None) -> None:
    """InputError when the lock record ``held`` is another run's: on another host, or a live process here."""
    pid = int(held.get("pid", 0) or 0)
    if held.get("host") != socket.gethostname() or (pid and pid != os.getpid() and pid_alive(pid)):
        raise InputError(f"{out} is in use by another run (pid {pid} on {held.get('host')}); wait for it, or delete "
                         f"{lock or out / LOCK_NAME} if that run is gone")


#: an empty or unreadable run lock older than this (s) is a dead run's (its writer failed before writing)
UNWRITTEN_LOCK_S = 10.0


def acquire_out_lock(out: Path, lock_name: str = LOCK_NAME, what: Path | None = None) -> Path:
    """Create ``OUT/<lock_name>`` (``.batch.lock``); refuse when a live run on this host holds it (a stale
    lock is taken over). ``microseg batch``, ``segment``, ``track`` and ``simulate`` take it on their output
    folder, so two runs never write one folder's tables at once (the last to finish replaced the other's);
    ``train`` one named after its model file (``what``, named in the refusal; default ``out``)."""
    lock = out / lock_name
    me = {"pid": os.getpid(), "host": socket.gethostname(), "time": utc_now()}
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                held = json.loads(lock.read_text())
            except (OSError, ValueError):
                held = {}
            try:  # an empty or unreadable lock some seconds old: its run died before writing it (a full disk)
                stale = not held and time.time() - lock.stat().st_mtime > UNWRITTEN_LOCK_S
            except OSError:
                stale = False
            if not stale:  # (an empty one just made may be a run's that is writing it now)
                _refuse_if_held(what or out, held if isinstance(held, dict) else {}, lock)
            lock.unlink(missing_ok=True)  # stale: its run was killed
            continue
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
        except BaseException:  # not written (a full disk): no empty lock left to refuse every later run
            lock.unlink(missing_ok=True)
            raise
        return lock
    raise InputError(f"cannot lock {out} ({lock} keeps reappearing)")


def _earlier_config(out: Path) -> dict:
    """The ``batch_config.json`` an earlier batch wrote in ``out``; {} when there is none or it is unreadable."""
    try:
        config = json.loads((Path(out) / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def _previous_input_root(out: Path) -> str | None:
    """The input folder an earlier batch in ``out`` named its outputs from (None: no earlier run, one
    from before it was recorded, or a folder that is no longer there: moved, or a share mounted
    elsewhere; the inputs are then named from their own folder, as that run named them, and their
    checksums tell the done ones)."""
    config = _earlier_config(out)
    root = config.get("input_root")
    if not root:
        inputs = config.get("inputs") or []  # a run from before input_root was recorded: its inputs say
        try:
            root = os.path.commonpath([os.path.dirname(p) for p in inputs]) if inputs else None
        except (ValueError, TypeError):
            return None
    return root if isinstance(root, str) and root and os.path.isdir(root) else None


def _earlier_inputs_present(out: Path) -> bool:
    """Whether any input an earlier batch in ``out`` recorded is still where it was."""
    earlier = _earlier_config(out).get("inputs") or []
    return any(isinstance(p, str) and os.path.exists(p) for p in earlier)


def _moved_input_root(paths: Sequence[Path], out: Path) -> str | None:
    """The folder under which ``paths`` carry the names an earlier batch in ``out`` gave its inputs
    (its ``inputs`` relative to its ``input_root``): ``/new/place`` when ``/new/place/w1/a.tif`` was
    ``w1/a.tif``; the folder most paths agree on, None when none matches."""
    from collections import Counter

    config = _earlier_config(out)
    root, earlier = config.get("input_root"), config.get("inputs") or []
    if not root or not earlier:
        return None
    names = set()
    for p in earlier:
        try:
            names.add(Path(p).relative_to(root).as_posix())
        except (ValueError, TypeError):
            continue
    votes: Counter = Counter()
    for path in paths:
        parts = Path(os.path.abspath(path)).parts
        for k in range(1, len(parts)):
            if "/".join(parts[-k:]) in names:
                votes[str(Path(*parts[:-k]))] += 1
                break
    return votes.most_common(1)[0][0] if votes else None


def _root_beside_earlier(paths: Sequence[Path], out: Path) -> str | None:
    """The deepest folder holding ``paths`` and the input folder an earlier batch in ``out`` recorded
    (gone since); None without such a record."""
    root = _earlier_config(out).get("input_root")
    if not isinstance(root, str) or not root or not paths:
        return None
    try:
        return os.path.commonpath([root, *(os.path.dirname(os.path.abspath(p)) for p in paths)])
    except ValueError:  # another drive (Windows)
        return None


def _same_files_as_recorded(found: Sequence[tuple[Path, str]], out: Path, task: str, sample: int = 8) -> bool:
    """True when the files of ``found`` (path, name relative to the moved root) that an earlier batch in
    ``out`` recorded under the same names hold what it recorded (their checksums as ``task`` takes them;
    checked on up to ``sample`` files, most must agree); True too when none can be compared (Zarr stores,
    whose frames are checked one by one, or no records)."""
    records = Manifest(out / MANIFEST_NAME).load()
    compared = same = 0
    for path, rel in found:
        stem = split_image_suffix(rel)[0]
        record = records.get(stem)
        if record is None or not record.get("checksum") or not Path(path).is_file():
            continue
        compared += 1
        try:
            checksum = item_checksum(BatchItem(key=stem, source=str(path), stem=stem, image=rel), task)[0]
        except InputError:
            checksum = None
        same += checksum == record["checksum"]
        if compared >= sample:
            break
    return compared == 0 or same * 2 > compared


def _done_inputs_left_out(out: Path, found: Sequence[tuple[Path, str]]) -> list[str]:
    """The inputs of the earlier run in ``out`` (its ``batch_config.json`` ``inputs``) whose items are done, i.e. rows
    of the merged tables, that this run's inputs ``found`` leave out although they are still where they were: another
    ``--input`` (a folder or pattern selecting other files). Inputs deleted since are not among them (their rows
    leave the tables, which hold the current inputs' items). Sorted paths."""
    earlier = {p for p in _earlier_config(out).get("inputs") or [] if isinstance(p, str)}
    if not earlier:
        return []
    current = {os.path.abspath(p) for p, _ in found}
    if all(os.path.abspath(p) in current for p in earlier):  # a rerun of the same inputs (or more): no manifest read
        return []
    real: set[str] | None = None  # the inputs' real paths, worked out only when a record's path is not among them
    left: set[str] = set()
    for record in Manifest(out / MANIFEST_NAME).load().values():
        source = record.get("input")
        if record.get("status") != "done" or not isinstance(source, str) or source not in earlier \
                or source in left or os.path.abspath(source) in current or not os.path.exists(source):
            continue
        if real is None:
            real = {os.path.realpath(p) for p, _ in found}
        if os.path.realpath(source) not in real:
            left.add(source)
    return sorted(left)


def _refuse_leaving_out_done_inputs(out: Path, found: Sequence[tuple[Path, str]]) -> None:
    """Refuse a run whose inputs leave out done inputs of the earlier run in ``out`` that are still in place
    (see :func:`_done_inputs_left_out`): its merged tables would lose their rows without a word."""
    left = _done_inputs_left_out(out, found)
    if not left:
        return
    root = _earlier_config(out).get("input_root")

    def name(path: str) -> str:
        with contextlib.suppress(ValueError, TypeError):
            return Path(path).relative_to(root).as_posix() if isinstance(root, str) and root else path
        return path

    names = ", ".join(name(p) for p in left[:3]) + (" ..." if len(left) > 3 else "")
    where = f" (in {root})" if isinstance(root, str) and root and all(name(p) != p for p in left[:3]) else ""
    raise InputError(f"{out} holds the results of {len(left)} input(s) done before that this run's inputs leave out, "
                     f"still in place: {names}{where}; the merged tables would lose their rows (and with --overwrite "
                     "this run's label files could replace theirs of the same names). Give them as inputs too "
                     f"(--input), choose another output folder (--out), or delete {out} to start afresh")


def _previous_settings_hash(out: Path) -> str | None:
    """The settings hash an earlier batch recorded in ``out`` (None: none, or unreadable)."""
    return _earlier_config(out).get("settings_hash")


def _check_out_folder(out: Path, task: str, settings_hash: str, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    if not out.exists():
        return
    _refuse_if_in_use(out)  # a microseg segment writing there: say so, not "not empty"
    config_path = out / CONFIG_NAME
    if not config_path.exists():
        if (out / MANIFEST_NAME).exists() or not any(out.iterdir()):
            return
        raise InputError(f"{out} is not empty and holds no batch results ({CONFIG_NAME}); choose a new or empty folder")
    try:
        previous = json.loads(config_path.read_text())
    except (OSError, ValueError):
        previous = {}
    if previous.get("task") not in (None, task):
        raise InputError(f"{out} holds results of 'batch {previous.get('task')}'; choose another folder for 'batch {task}'")
    if previous.get("settings_hash") not in (None, settings_hash) and not overwrite and _holds_done_items(out):
        raise InputError(f"{out} holds results made with other settings or another model; "
                         "choose another folder, or allow overwriting (--overwrite) to redo every item")


def _holds_done_items(out: Path) -> bool:
    """Whether ``out`` holds results: its manifest records an item done, or results lie there all the same (label
    files, merged tables; a manifest deleted). A run whose items all failed, or that stopped or could not reach
    its scheduler before the first, holds none: a rerun with corrected settings goes on there, as that run's
    message told the user to run it."""
    if any(record.get("status") == "done" for record in Manifest(out / MANIFEST_NAME).load().values()):
        return True
    labels = out / "labels"
    return ((labels.is_dir() and any(labels.iterdir()))
            or any((out / name).exists() for name, _ in MERGED_TABLES.values()))


# ----------------------------------------------------------------------------- Dask
def default_workers(threads_per_worker: int = 1) -> int:
    """Worker processes for a local cluster: the CPU cores this process may use / threads per worker (>= 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, int(threads_per_worker)))


#: the least memory limit a local worker is given (bytes): Dask pauses a worker at 80 % of its limit, and one
#: with torch, the package and a segmentation model loaded holds ~470 MiB (paused for ever at 540 MB); 1GB,
#: 1000MB and 1e9 pass
MIN_WORKER_MEMORY = 768 * 2**20

#: seconds without a finished item after which the runner asks whether a local cluster's workers can still run
STALL_CHECK_SECONDS = 20.0
#: seconds a local cluster must look stuck (no worker, or every one paused with nothing running) before the run
#: stops: a nanny restarting a worker killed for memory, or a task finishing while paused, is not stuck
STUCK_FOR_SECONDS = 60.0


def _params_by_content(params: dict) -> dict:
    """``params`` as the settings hash takes them: a tracking config given as a JSON file by its contents
    (an edited file is other settings; the same file named from another folder is not)."""
    config = params.get("config")
    if isinstance(config, str) and config.lower().endswith(".json") and Path(config).is_file():
        from .manifest import sha256_file

        return {**params, "config": sha256_file(config)}
    return params


def _why_workers_cannot_run(client: Any, memory_limit: str | None) -> str | None:
    """Why no worker of a local cluster can run a task now, or None: none left (killed for memory, one after
    another), or every one paused (its memory above Dask's pause level of the limit) with no task running."""
    limit = f" (--memory-limit {memory_limit})" if memory_limit else ""
    try:
        workers = client.scheduler_info().get("workers", {})
        if not workers:
            return (f"no Dask worker is left to run the items (killed for memory{limit}?): run again with a larger "
                    "--memory-limit or fewer threads per worker; finished items are kept")
        if not all(str(w.get("status", "")).lower() == "paused" for w in workers.values()):
            return None
        running = client.run(lambda dask_worker: dask_worker.state.executing_count)
    except Exception:  # noqa: BLE001 - a scheduler or worker that does not answer: not known to be stuck
        return None
    if any(running.values()):
        return None  # paused, but a task goes on (and may free its memory when it ends)
    return (f"every Dask worker is paused with nothing running: its memory is above Dask's pause level of its "
            f"limit{limit}; run again with a larger --memory-limit; finished items are kept")


def check_memory_limit(memory_limit: str | None) -> None:
    """InputError for a per-worker memory limit Dask cannot read or that is too small to run a task."""
    if memory_limit is None or str(memory_limit).strip().lower() == "auto":
        return
    from distributed.worker_memory import parse_memory_limit

    try:  # as Dask reads it: a number up to 1 is a share of the machine's memory
        limit = parse_memory_limit(memory_limit, 1, logger=logging.getLogger(__name__)) or 0
    except (ValueError, TypeError):
        raise InputError(f"memory limit {memory_limit!r} is not a size such as 4GB or 512MB") from None
    if limit < 0 or str(memory_limit).strip().startswith("-"):  # (an OverflowError, then "Nanny failed to start")
        raise InputError(f"memory limit {memory_limit} is negative: give a size such as 4GB (or 0 / auto)")
    if 0 < limit < MIN_WORKER_MEMORY:
        raise InputError(f"memory limit {memory_limit} is below what a worker needs to run a task (~470 MiB with "
                         f"torch, the package and a model; Dask pauses a worker at 80 % of its limit): give at least "
                         f"{MIN_WORKER_MEMORY // 2**20}MiB (1GB)")


@contextlib.contextmanager
def _main_script_not_rerun() -> Iterator[None]:
    """While worker processes start: multiprocessing's spawn runs the parent's ``__main__`` script (or
    module) again in each worker, as ``__mp_main__``. A script that opens napari without an ``if __name__ ==
    "__main__":`` guard (as tutorials write them) then opened a window in each worker and blocked there: the
    Segmentation dock's batch never started and napari could not quit. The workers run this package's tasks
    only and need nothing of ``__main__``: its path and spec are hidden meanwhile."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    with _MAIN_HIDDEN:  # (two docks starting clusters at once: the second would keep "hidden" as the original)
        path, spec = getattr(main, "__file__", None), getattr(main, "__spec__", None)
        try:
            if path is not None:
                del main.__file__
            main.__spec__ = None
            yield
        finally:
            main.__spec__ = spec
            if path is not None:
                main.__file__ = path


#: held while ``__main__`` is hidden (:func:`_main_script_not_rerun`)
_MAIN_HIDDEN = threading.Lock()


def _connect(scheduler: Any, workers: int | None, threads_per_worker: int, memory_limit: str | None):
    """Return ``(client, cluster_or_None, owns_client)``."""
    from distributed import Client, LocalCluster

    if isinstance(scheduler, Client):
        return scheduler, None, False
    if scheduler:
        try:
            client = Client(str(scheduler), timeout="30s")
        except (OSError, TimeoutError, ValueError) as err:  # ValueError: not an address (no port ...)
            raise InputError(f"cannot reach the Dask scheduler at {scheduler} ({err})") from None
        return client, None, True
    n = int(workers) if workers else default_workers(threads_per_worker)
    # no dashboard; the scheduler's small HTTP server takes any free port (no clash with other clusters on 8787)
    kwargs = dict(n_workers=n, threads_per_worker=int(threads_per_worker), processes=True, dashboard_address=None,
                  scheduler_kwargs={"dashboard_address": ":0"}, silence_logs=logging.ERROR)
    if memory_limit is not None:
        kwargs["memory_limit"] = memory_limit
    # the workers ignore Ctrl-C (see _worker_setup): this process handles it and stops them
    kwargs.update(preload=[WORKER_SETUP], preload_nanny=[WORKER_SETUP])
    with _main_script_not_rerun():
        cluster = LocalCluster(**kwargs)
    try:
        client = Client(cluster)
    except BaseException:
        cluster.close()
        raise
    return client, cluster, True


# ----------------------------------------------------------------------------- merging
def merge_tables(out: Path, records: Sequence[dict]) -> dict[str, Path]:
    """Merge the table shards of ``records`` (done items) into ``OUT/<kind>.csv``; returns ``{kind: path}``.

    Rows are sorted by image, then frame (and label / track id). ``objects.csv``
    and ``counts.csv`` are written like ``microseg segment`` writes them
    (6 significant digits), ``tracks.csv`` like ``microseg track``.
    """
    from ..io.tables import write_csv
    from ..measure.tables import write_objects_csv, write_table_csv
    from ..tracking.export import write_tracks_csv

    written: dict[str, Path] = {}
    kinds = sorted({k for rec in records for k in (rec.get("outputs") or {}) if k in MERGED_TABLES})

    def read(kind: str) -> pd.DataFrame:
        return _read_shards([out / rec["outputs"][kind] for rec in records if kind in (rec.get("outputs") or {})])

    cache: dict[str, pd.DataFrame] = {}  # one table in memory at a time, but objects beside counts
    for kind in kinds:
        name, order = MERGED_TABLES[kind]
        table = cache.pop(kind) if kind in cache else read(kind)
        if kind == "counts" and "objects" in kinds:  # its [N] count needs each image's median object area
            cache["objects"] = read("objects")
            table = _count_by_area_per_image(table, cache["objects"])
        keys = [c for c in order if c in table.columns]
        if keys and len(table):
            table = table.sort_values(keys, kind="stable", key=_image_names_in_natural_order).reset_index(drop=True)
        path = out / name
        if kind == "objects" and {"t", "label", "y", "x", "area"} <= set(table.columns):
            write_objects_csv(table, path)
        elif kind == "tracks":
            write_tracks_csv(table, path)
        elif kind == "flags":  # one row per image: the image first, as a spreadsheet reader expects
            write_csv(path, table, leading=["image"])
        else:
            write_table_csv(table, path)
        written[kind] = path
    return written


def _remove_outputs_of_another_version(out: Path, earlier: dict | None, failed: dict) -> list[str]:
    """Remove the output files (labels, table shards) an ``earlier`` done record made from another version
    of the input that has now ``failed`` (a file replaced by a corrupt one): left in place, its labels
    passed for this input's. Kept when the input is the same (its checksum unchanged or unknown: a worker
    that died) and for folders (a Zarr stack's label store, shared by its frames). Returns the paths
    removed, relative to ``out``."""
    if not earlier or earlier.get("status") != "done" or not failed.get("checksum") \
            or failed.get("checksum") == earlier.get("checksum"):
        return []
    removed = []
    for rel in (earlier.get("outputs") or {}).values():
        path = out / rel
        if path.is_file() and not path.is_symlink():
            path.unlink()
            removed.append(str(rel))
    return removed


def simulation_inputs(task: str, reads_labels: bool) -> tuple[str, ...]:
    """Which images of a simulated nuclei movie a batch ``task`` takes: its truth (``labels.tif``) when it
    reads labels (track without a model), only the stain for ``autolabel``, the two channels otherwise."""
    if reads_labels:
        return ("labels.tif",)
    return ("fluorescence.tif",) if task == "autolabel" else ("fluorescence.tif", "phase.tif")


def _simulation_left_out(path: Path, simulation_inputs: Sequence[str] | None) -> bool:
    """Whether ``path`` is an image of a simulated nuclei movie that ``simulation_inputs`` leaves out."""
    from ..io.images import SIMULATED_MOVIE_IMAGES, simulated_movie

    return (simulation_inputs is not None and path.name in SIMULATED_MOVIE_IMAGES
            and path.name not in simulation_inputs and simulated_movie(path.parent))


def _natural_key(text: str) -> tuple:
    """Sort key that orders the numbers inside ``text`` by value: ``stack.tif[2]`` before ``stack.tif[10]``,
    ``img9.tif`` before ``img10.tif``."""
    parts = re.split(r"([0-9]+)", text)  # ASCII digits: "²" is a digit to \\d and str.isdigit, not to int()
    return tuple((0, int(p), p) if p.isdecimal() else (1, 0, p) for p in parts if p)


def _image_names_in_natural_order(column: pd.Series) -> pd.Series:
    """``sort_values`` key: the ``image`` column as ranks in natural order (numbers by value); other
    columns as they are."""
    if column.name != "image":
        return column
    names = column.astype(str)
    rank = {name: i for i, name in enumerate(sorted(names.unique(), key=_natural_key))}
    return names.map(rank)


def _count_by_area_per_image(counts: pd.DataFrame, objects: pd.DataFrame) -> pd.DataFrame:
    """``counts`` with ``count_by_area`` (the [N] count: foreground area / the median object area)
    from the median over all the objects of each image, as ``microseg segment`` computes it: the
    frames of a Zarr stack, each an item of its own, otherwise each divide by their own median."""
    needed = {"image", "foreground_area", "count_by_area"}
    if not needed <= set(counts.columns) or not {"image", "area"} <= set(objects.columns) or not len(counts):
        return counts
    median = counts["image"].map(objects.groupby("image")["area"].median())
    # an image without objects has no median: 0, as counts_with_area gives it
    return counts.assign(count_by_area=(counts["foreground_area"] / median.where(median > 0)).fillna(0.0))


def _read_shards(paths: Sequence[Path]) -> pd.DataFrame:
    """The shards (CSV files of one kind) as one table. Shards with the same header are joined as
    text and parsed once: thousands of small files parse in a fraction of the time that one
    ``read_csv`` each takes (about 7 ms apiece)."""
    import io

    by_header: dict[str, list[str]] = {}
    for path in paths:
        text = Path(path).read_text(encoding="utf-8")
        header, _, body = text.partition("\n")
        by_header.setdefault(header, []).append(body if body.endswith("\n") or not body else body + "\n")
    tables = [pd.read_csv(io.StringIO(header + "\n" + "".join(bodies)))
              for header, bodies in by_header.items()]
    nonempty = [t for t in tables if len(t)]
    return pd.concat(nonempty, ignore_index=True) if len(nonempty) > 1 else (nonempty or tables)[0]


# ----------------------------------------------------------------------------- the run
def _check_params(task: str, params: dict) -> dict:
    allowed = TASK_PARAMS[task]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise InputError(f"batch {task} does not take {', '.join(unknown)} (allowed: {', '.join(allowed)})")
    return {k: v for k, v in params.items() if v is not None}


def _without_stated_defaults(task: str, params: dict, model_path: str | None = None) -> dict:
    """``params`` without tracking and auto-labelling settings stated at their defaults (``--config cell``,
    ``--update-method auto``, ``--otsu-window 51``, ``--diameter-range 5,30``): the defaults of the functions
    themselves, so that a rerun stating one is not taken for a run with other settings."""
    import inspect

    def defaults(function: Any) -> dict:
        return {k: v.default for k, v in inspect.signature(function).parameters.items()
                if v.default is not inspect.Parameter.empty}

    def same(a: Any, b: Any) -> bool:
        return (list(a) == list(b)) if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) else a == b

    out = dict(params)
    if task == "track":
        from ..tracking.track import track

        known = defaults(track)
        for key in ("config", "update_method", "optimize", "stage_shift", "max_search_radius"):
            if key in out and key in known and same(out[key], known[key]):
                del out[key]
    if task == "classify" and model_path is not None and isinstance(out.get("threshold"), (int, float)):
        from ..classify.predict import resolve_threshold

        # the model's own decision threshold stated (--threshold 0.5): no other setting (an unreadable model:
        with contextlib.suppress(Exception):  # the run itself says why)
            if float(out["threshold"]) == resolve_threshold(model_path, None):
                del out["threshold"]
    if task == "autolabel" and isinstance(out.get("autolabel"), dict):
        known = defaults(autolabel_function())
        kept = {k: v for k, v in out["autolabel"].items() if not (k in known and same(v, known[k]))}
        if kept:
            out["autolabel"] = kept
        else:
            del out["autolabel"]
    return out


def _is_default(name: str, value: Any, model_path: str | None) -> bool:
    """Whether a parameter given is the value segmentation uses when it is not given (``--min-size 8``,
    ``--overlap 32``, ``--tile 512`` where the model's patches are no larger): left out of the settings
    hash, so that a rerun stating a default is not taken for a run with other settings."""
    from ..defaults import DEFAULT_MIN_SIZE, DEFAULT_OVERLAP, DEFAULT_TILE

    if name == "min_size":
        return value == DEFAULT_MIN_SIZE
    if name == "overlap":
        return value == DEFAULT_OVERLAP
    if name == "tile" and value == DEFAULT_TILE and model_path is not None:
        from ..io.models import read_model_config

        try:
            patch = read_model_config(model_path).get("patch_size") or (256, 256)
        except Exception:  # noqa: BLE001 - unreadable here: the run itself says why
            return False
        return max(int(v) for v in patch) <= DEFAULT_TILE
    return False


def _model_info(model: str | os.PathLike | None, task: str) -> tuple[str | None, str | None, str]:
    """Absolute model path, its checksum and the label dtype for Zarr outputs."""
    if model is None:
        if task in ("segment", "classify"):
            raise InputError(f"batch {task} needs a model file (--model)")
        return None, None, "uint32"
    from ..io.models import read_model_file
    from ..pretrained import resolve_model

    path = resolve_model(str(model))  # a file, or the name of a shipped model
    config = read_model_file(path)["config"]
    kind = config.get("task")  # classifiers say what they classify; segmentation models have no task
    if task == "classify" and kind != "images":
        raise InputError(f"{path.name}: batch classify needs a whole-image classifier ('classify train images'), "
                         f"this model {'classifies ' + str(kind) if kind else 'segments images'}")
    if task in ("segment", "track"):
        from ..io.models import check_segmentation_config

        check_segmentation_config(config, path.name)
    dtype = "uint8" if config.get("output_mode") == "multiclass" else "uint32"
    return str(path.resolve()), sha256_file(path), dtype


def verify_checksums(items: Sequence[BatchItem], expected: dict[str, str], threads: int = 4, task: str | None = None
                     ) -> Generator[tuple[str, bool], None, None]:
    """Yield ``(key, input checksum == expected[key])`` for each item, hashing in a thread pool (input order);
    ``task``: as :func:`~napari_microseg.batch.tasks.item_checksum` takes it."""
    from concurrent.futures import ThreadPoolExecutor

    def check(item: BatchItem) -> bool:
        try:
            return item_checksum(item, task)[0] == expected.get(item.key)
        except Exception:  # noqa: BLE001 - unreadable now: redo it (the task reports why)
            return False

    if not items:
        return
    with ThreadPoolExecutor(max_workers=max(1, int(threads))) as pool:
        for item, same in zip(items, pool.map(check, items)):
            yield item.key, same


def run_batch(
    task: str,
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    out: str | os.PathLike,
    model: str | os.PathLike | None = None,
    *,
    scheduler: Any = None,
    workers: int | None = None,
    threads_per_worker: int = 1,
    torch_threads: int | None = None,
    memory_limit: str | None = None,
    device: str = "auto",
    overwrite: bool = False,
    max_in_flight: int | None = None,
    heartbeat: float = 1.0,
    resume_threads: int = 4,
    stop_event: threading.Event | None = None,
    **params: Any,
) -> Generator[BatchProgress, None, BatchSummary | None]:
    """Run a task over many images on Dask; a generator of :class:`BatchProgress` returning a :class:`BatchSummary`.

    Parameters
    ----------
    task : ``"segment"``, ``"track"``, ``"autolabel"`` or ``"classify"`` (whole
        images good / bad with an ``images`` classifier).
    inputs : file, folder (recursive), glob pattern or Zarr store, or a list of them
        (see :func:`find_batch_inputs`).
    out : output folder: new, empty, or one written by an earlier run of the
        same task (then done items are skipped).
    model : model file (``segment``; ``track``: optional, segments image stacks
        before tracking; without it the inputs must be (T,Y,X) label stacks).
    scheduler : None (start a ``LocalCluster``), a scheduler address
        (``"tcp://host:8786"``) or a ``distributed.Client`` to use.
    workers : worker processes of the local cluster (default: CPU cores /
        ``threads_per_worker``); ``0`` runs in this process without Dask.
    threads_per_worker : Dask threads per local worker (default 1: torch threads itself).
    torch_threads : torch CPU threads per task (default 1 on a cluster; unchanged in process).
    memory_limit : per-worker memory limit of the local cluster (default: Dask's share of RAM).
    device : torch device for the model on the workers (``"auto"``, ``"cpu"``, ``"cuda"``...).
    overwrite : redo every item when ``out`` holds results made with other settings; replace the merged tables
        with this run's inputs only when ``out`` holds done inputs, still in place, that ``inputs`` leave out.
    max_in_flight : tasks submitted at a time (default 4 per worker thread); bounds
        scheduler memory for 10^4..10^5 items.
    heartbeat : seconds between progress events while waiting (lets a caller cancel).
    resume_threads : threads hashing the inputs of items done by an earlier run
        (in this process, before any cluster starts; a rerun with nothing left
        to do starts no cluster).
    stop_event : with ``workers=0`` (in this process): once set, the run ends (returning None) before its next
        item, or between the tiles of an image being segmented (that item is left for a rerun); a caller that
        closes the generator stops it only between items.
    **params : task settings. segment: ``tile, overlap, batch_size, threshold,
        min_size, max_size, fill_holes, remove_border, diameter`` (see
        :func:`napari_microseg.inference.segment.segment_image`); track:
        ``config, max_search_radius, update_method, optimize, stage_shift``
        (see :func:`napari_microseg.tracking.track.track`) plus the segment
        settings when a model is given; autolabel: ``autolabel`` (dict of
        keyword arguments for
        :func:`napari_microseg.autolabel.fluorescence.autolabel_fluorescence`);
        classify: ``box`` (``(y0, x0, y1, x1)`` integration area for all images)
        and ``threshold`` (on ``probability_bad``).

    Yields
    ------
    BatchProgress after every finished item and every ``heartbeat`` seconds.

    Returns
    -------
    BatchSummary (None when stopped by ``stop_event``). Items that failed are listed in ``OUT/failures.csv`` (and in
    the summary); the batch itself only raises for bad settings or inputs
    that cannot be found.
    """
    start = time.perf_counter()
    if task not in TASK_PARAMS:
        raise InputError(f"unknown batch task {task!r}; choose one of {', '.join(TASKS)}")
    if task == "autolabel":
        autolabel_function()  # raises a clear InputError when the auto-labeller is missing
        if model is not None:
            raise InputError("batch autolabel uses no model (it labels fluorescence images by thresholding)")
    params = _check_params(task, params)
    if workers is not None and int(workers) < 0:
        raise InputError(f"workers must be >= 0, got {workers}")
    if max_in_flight is not None and int(max_in_flight) < 1:
        raise InputError(f"max_in_flight must be >= 1, got {max_in_flight}")
    if not scheduler and (workers is None or int(workers) > 0):  # a local cluster is started: its workers' limit
        check_memory_limit(memory_limit)
    if int(threads_per_worker) < 1:
        raise InputError(f"threads per worker must be >= 1, got {threads_per_worker}")
    model_path, model_sum, label_dtype = _model_info(model, task)
    out = Path(out).resolve()
    settings = {"task": task, "model_sha256": model_sum,
                "params": {k: v for k, v in sorted(_params_by_content(_without_stated_defaults(task, params, model_path)).items())
                           if k not in NEUTRAL_PARAMS and not _is_default(k, v, model_path)}}
    settings_hash = sha256_json(settings)
    # a folder made before defaults were left out of the hash (the Segmentation dock always states tile and
    # min_size): its own hash, with the defaults in, still names these settings and its done items
    stated = {"task": task, "model_sha256": model_sum,
              "params": {k: v for k, v in sorted(params.items()) if k not in NEUTRAL_PARAMS}}
    if stated != settings and _previous_settings_hash(out) == sha256_json(stated):
        settings, settings_hash = stated, sha256_json(stated)
    _check_out_folder(out, task, settings_hash, overwrite)
    # --overwrite of a run with other settings redoes every item: its merged tables and run record go when this
    # run starts (a stopped run left them beside labels of the new settings, "processed 12, failed 0", rows
    # that no longer matched the label files); they are written again when the items are all done
    redo_all = (_previous_settings_hash(out) not in (None, settings_hash)
                and (overwrite or not _holds_done_items(out)))  # (its failures.csv, run record: not this run's)
    # inputs added to an earlier run keep its names (relative to its input folder), so done items are skipped
    previous_root = None if overwrite else _previous_input_root(out)
    ignored: list[Path] = []
    reads_labels = task == "track" and model is None  # track reads labels (unless it segments first); the others images
    search = {"exclude": out, "skip_label_folders": not reads_labels, "keep_run_labels": reads_labels,
              "simulation_inputs": simulation_inputs(task, reads_labels)}
    found = find_batch_inputs(inputs, root=previous_root, ignored=ignored, **search)
    moved_root = None
    if not overwrite and not any(previous_root and p.is_relative_to(previous_root) for p, _ in found) \
            and not _earlier_inputs_present(out):
        # the earlier run's inputs are gone from where they were (a moved folder, a share mounted at another
        # path): named from where its names end, as that run named them, so that its done items are skipped.
        # (While they are still there, another folder's a.tif is another image: named from the deepest folder
        # holding both, it never takes the earlier a.tif's results, which it did, replacing them unasked.)
        moved_root = _moved_input_root([p for p, _ in found], out)
        if moved_root is not None:
            moved_ignored: list[Path] = []
            moved = find_batch_inputs(inputs, root=moved_root, ignored=moved_ignored, **search)
            if _same_files_as_recorded(moved, out, task):  # a moved folder keeps its files' bytes: another plate's
                found, ignored = moved, moved_ignored  # A01.tif under the same names took plate 1's results
            else:  # other images: named from the deepest folder holding them and the earlier run's inputs, as
                moved_root = None  # while those were there (plate2/A01.tif), never taking their results
                distinct = _root_beside_earlier([p for p, _ in found], out)
                if distinct is not None:
                    ignored = []
                    found = find_batch_inputs(inputs, root=distinct, ignored=ignored, **search)
                    moved_root = distinct
    # another --input into the same folder: its earlier inputs' rows left the tables unasked; with --overwrite too
    # (its results, named by another input root, were replaced file by file and stayed "done" in the manifest)
    _refuse_leaving_out_done_inputs(out, found)
    out.mkdir(parents=True, exist_ok=True)
    lock = acquire_out_lock(out)
    manifest = Manifest(out / MANIFEST_NAME)
    client = cluster = None
    owns_client = False
    pending: list = []
    failures: list[dict] = []
    finished = False
    try:
        from ..io.atomic import atomic_write_text

        if redo_all:
            for stale in [name for name, _ in MERGED_TABLES.values()] + [RUN_NAME, NOTES_NAME, FAILURES_NAME]:
                (out / stale).unlink(missing_ok=True)
        input_root = previous_root or moved_root or os.path.commonpath([str(p.parent) for p, _ in found])
        config = {"task": task, "settings_hash": settings_hash, "settings": settings, "model": model_path,
                  "params": params, "inputs": [str(p) for p, _ in found], "input_root": input_root, "device": device,
                  "started": utc_now(), "microseg": __version__}
        atomic_write_text(out / CONFIG_NAME, json.dumps(config, indent=2, default=str) + "\n")
        remove_stale_temporaries(out)
        items, stacks, calibrations = plan_items(found, task)
        fresh = prepare_zarr_stores(out, stacks, label_dtype, calibrations)
        records = manifest.load()
        expected = {}
        for item in items:
            rec = records.get(item.key)
            # --overwrite of a run of other settings redoes every item: a record of these settings from before
            # that run may name files it overwrote (its tasks went on writing after Ctrl-C cancelled them, their
            # records never written: A, stopped B, A again kept B's labels and counts as A's)
            if not redo_all and item.stem not in fresh and is_done(rec, out, settings_hash):
                expected[item.key] = rec.get("checksum")
        total = len(items)
        in_process = workers is not None and int(workers) == 0 and scheduler is None
        owner = None
        if not in_process:  # a cancelled task on a remote worker runs on: it writes only while this run holds OUT
            with contextlib.suppress(OSError, ValueError):
                owner = json.loads(lock.read_text())
        spec = TaskSpec(task=task, out=str(out), model=model_path, params=params, device=device,
                        threads=torch_threads if (torch_threads or in_process) else 1, label_dtype=label_dtype,
                        lock_owner=owner if isinstance(owner, dict) else None)
        counts = {"processed": 0, "skipped": 0, "failed": 0}

        def event(message: str, last: dict | None = None, in_flight: int = 0) -> BatchProgress:
            done = counts["processed"] + counts["skipped"] + counts["failed"]
            elapsed = time.perf_counter() - start
            eta = None
            rate_items = counts["processed"] + counts["failed"]
            if rate_items and compute_start is not None:
                eta = (time.perf_counter() - compute_start) / rate_items * (total - done)
            text = (f"{counts['processed']} done, {counts['skipped']} skipped, {counts['failed']} failed"
                    + (f", {message}" if message else ""))
            return BatchProgress(done, total, text, processed=counts["processed"], skipped=counts["skipped"],
                                 failed=counts["failed"], in_flight=in_flight, elapsed=elapsed, eta=eta, last=last)

        def finish(rec: dict) -> None:
            status = rec.get("status")
            if status == "skipped":
                counts["skipped"] += 1
                return
            rec["settings"] = settings_hash
            rec["time"] = utc_now()
            if status == "done":
                counts["processed"] += 1
            else:
                rec["status"] = "failed"
                counts["failed"] += 1
                removed = _remove_outputs_of_another_version(out, records.get(rec["key"]), rec)
                if removed:
                    rec["reason"] = (f"{rec.get('reason') or 'failed'}; the results of the earlier version of this "
                                     f"input were removed ({', '.join(removed)})")
                failures.append(rec)
            manifest.append(rec)  # outputs are in place: the worker wrote them before returning
            records[rec["key"]] = rec

        compute_start = None
        # resume check: hash the inputs of items done before (threads in this process, no cluster needed)
        todo = items
        if expected:
            yield event(f"checking {len(expected)} items done before")
            skipped = set()
            last_event = time.perf_counter()
            for key, same in verify_checksums([i for i in items if i.key in expected], expected, resume_threads, task):
                if same:
                    skipped.add(key)
                    counts["skipped"] += 1
                if time.perf_counter() - last_event >= heartbeat:
                    last_event = time.perf_counter()
                    yield event("checking items done before")
            todo = [i for i in items if i.key not in skipped]
        n_workers = 0
        if todo:
            yield event("starting" if in_process else "starting Dask workers")
        if in_process and todo:
            compute_start = time.perf_counter()
            from .tasks import _STOP, ItemStopped

            _STOP.event = stop_event  # segmenting stops between tiles once it is set
            try:
                for item in todo:
                    if stop_event is not None and stop_event.is_set():
                        return None
                    try:
                        rec = run_item(item, spec)
                    except ItemStopped:  # the item is not recorded: a rerun does it (done ones are skipped)
                        return None
                    finish(rec)
                    yield event(item.image, last=rec)
            finally:
                _STOP.event = None
        elif todo:
            from distributed import as_completed

            client, cluster, owns_client = _connect(scheduler, workers, threads_per_worker, memory_limit)
            n_threads = sum(client.nthreads().values()) or 1
            n_workers = len(client.nthreads())
            window = int(max_in_flight) if max_in_flight else 4 * n_threads
            by_future: dict = {}
            queue = iter(todo)
            ac = as_completed(with_results=True, raise_errors=False)

            def submit_next() -> bool:
                item = next(queue, None)
                if item is None:
                    return False
                try:
                    fut = client.submit(run_item, item, spec, None, pure=False,
                                        key=f"microseg-batch-{task}-{len(by_future)}-{os.urandom(4).hex()}")
                except Exception as err:  # noqa: BLE001 - the scheduler went away (ClosedClientError: a traceback)
                    if "closed" in type(err).__name__.lower() or "Client is closed" in str(err):
                        raise InputError(f"lost the Dask scheduler ({type(err).__name__}): the items done so far are "
                                         "kept; run the same command again to resume") from None
                    raise
                by_future[fut.key] = item
                pending.append(fut)
                ac.add(fut)
                return True

            for _ in range(window):
                if not submit_next():
                    break
            compute_start = time.perf_counter()
            last_event = time.perf_counter()
            last_progress = time.perf_counter()
            stuck_since = None  # when a local cluster was first seen unable to run anything (None: it can)
            while pending:
                ready = ac.next_batch(block=False)
                if not ready:
                    if time.perf_counter() - last_event >= heartbeat:
                        last_event = time.perf_counter()
                        waiting = ""
                        if cluster is not None and time.perf_counter() - last_progress >= STALL_CHECK_SECONDS:
                            reason = _why_workers_cannot_run(client, memory_limit)  # a remote one may be waiting
                            stuck_since = None if reason is None else (stuck_since or time.perf_counter())
                            if reason and time.perf_counter() - stuck_since >= STUCK_FOR_SECONDS:
                                raise InputError(reason)
                        elif cluster is None and time.perf_counter() - last_progress >= STALL_CHECK_SECONDS:
                            # a remote cluster may gain workers later: waited for, but said (it sat at 0/16 silently)
                            with contextlib.suppress(Exception):
                                if not client.scheduler_info().get("workers"):
                                    waiting = "waiting: the Dask scheduler has no workers (start some: dask worker ADDRESS)"
                        yield event(waiting, in_flight=len(pending))
                    time.sleep(0.02)
                    continue
                last_progress, stuck_since = time.perf_counter(), None
                for fut, result in ready:
                    pending.remove(fut)
                    item = by_future.pop(fut.key)
                    if fut.status != "finished" and not isinstance(result, BaseException):
                        # a failed task comes as its (type, exception, traceback), not as the exception
                        error = result[1] if isinstance(result, tuple) and len(result) == 3 else None
                        result = error if isinstance(error, BaseException) else result
                    if isinstance(result, BaseException) or fut.status != "finished":
                        reason = failure_reason(result) if isinstance(result, BaseException) else f"task {fut.status}"
                        if "KilledWorker" in reason:
                            reason = f"a Dask worker died while processing it (out of memory?): {reason}"
                        result = {"key": item.key, "input": item.source, "frame": item.frame, "status": "failed",
                                  "checksum": None, "outputs": {}, "reason": reason, "worker": None}
                    finish(result)
                    submit_next()
                    last_event = time.perf_counter()
                    yield event(item.image, last=result, in_flight=len(pending))

        yield event("merging tables")
        # a worker killed while writing (its item done again since) left its hidden partial file: gone now, as the
        # run still holds the folder and its own tasks have all ended
        remove_stale_temporaries(out)
        from ..cli._signals import interrupts_deferred

        # the merged tables, failures, notes and the run's record all of this run or none: a Ctrl-C between them
        # left counts.csv of 3 images beside objects.csv of 2, and a batch_run.json of the run before
        with interrupts_deferred():
            done_records = [records[i.key] for i in items if records.get(i.key, {}).get("status") == "done"]
            tables = merge_tables(out, done_records) if done_records else {}
            for name, _ in MERGED_TABLES.values():  # an earlier run's table that this run has no rows for
                if name not in {p.name for p in tables.values()}:
                    (out / name).unlink(missing_ok=True)
            for stem in stacks:
                keys = [i.key for i in items if i.stem == stem]
                statuses = [records.get(k, {}).get("status") for k in keys]
                if all(status == "done" for status in statuses):
                    import zarr

                    arr = zarr.open_array(str(out / "labels" / f"{stem}.zarr"), mode="r+")
                    arr.attrs["microseg_batch"] = {"complete": True, "frames": len(keys)}
                elif all(status in ("done", "failed") for status in statuses):  # finished, some frames failed: said
                    import zarr  # when it is read (their frames are empty), not "unfinished" for ever

                    arr = zarr.open_array(str(out / "labels" / f"{stem}.zarr"), mode="r+")
                    failed = [int(k.rsplit("/t", 1)[-1]) for k, status in zip(keys, statuses) if status == "failed"]
                    arr.attrs["microseg_batch"] = {"complete": False, "frames": len(keys), "failed_frames": failed}
            failures_csv = write_failures_csv(out / FAILURES_NAME, failures)
            notes = write_notes_csv(out, [records[i.key] for i in items if i.key in records],
                                    {i.key: i.image for i in items})
            summary = BatchSummary(task=task, out=out, total=total, processed=counts["processed"],
                                   skipped=counts["skipped"], failed=counts["failed"],
                                   seconds=round(time.perf_counter() - start, 3), tables=tables, failures=failures,
                                   manifest=manifest.path, failures_csv=failures_csv, workers=n_workers,
                                   ignored=[str(p) for p in sorted(ignored)], notes=notes)
            # the run's own record beside its settings: a script (or a person, later) need not parse the terminal
            atomic_write_text(out / RUN_NAME, json.dumps({
                "task": task, "finished": utc_now(), "seconds": summary.seconds, "total": total,
                "processed": summary.processed, "skipped": summary.skipped, "failed": summary.failed,
                "tables": {kind: path.name for kind, path in tables.items()}, "workers": n_workers,
                "failures_csv": failures_csv.name if failures_csv else None,
                "notes": len(notes), "ignored_files": summary.ignored,
                # the arithmetic the network ran in ("auto" resolved per worker; per item in the manifest)
                **({"precision": used} if (used := sorted({str(r["precision"]) for r in done_records
                                                           if r.get("precision")})) else {})}, indent=2) + "\n")
        finished = True
        yield event("finished")
        return summary
    finally:
        try:  # best effort while shutting down: each step's failure leaves the others to run
            if pending and client is not None:
                with contextlib.suppress(Exception):
                    client.cancel(pending, force=True)
            if failures and not finished:
                with contextlib.suppress(OSError):
                    write_failures_csv(out / FAILURES_NAME, failures)
            manifest.close()
            if client is not None and owns_client:
                with contextlib.suppress(Exception):
                    client.close(timeout=10)
            if cluster is not None:
                with contextlib.suppress(Exception):
                    cluster.close(timeout=20)
        finally:  # even when Ctrl-C or TERM cuts the shutdown short: the next run is not locked out
            release_out_lock(lock)


#: what the items of a run remarked on their inputs (e.g. intensities unlike the model's training data)
NOTES_NAME = "notes.csv"


def write_notes_csv(out: Path, records: list[dict], image_names: dict | None = None) -> list[dict]:
    """``OUT/notes.csv`` (``image,note``): the notes of the done items, one per input (a Zarr stack's frames,
    each noted with its own figures, say it once: the first), or no file when there are none (an earlier
    run's is removed). ``image_names``: each record's key -> its image as the merged tables name it (relative
    to the input folder; default: the input's path). Returns the rows."""
    from ..io.tables import write_csv

    rows, seen = [], set()
    for rec in records:
        note = rec.get("note")
        if rec.get("status") == "done" and note and rec.get("input") not in seen:
            seen.add(rec.get("input"))
            rows.append({"image": (image_names or {}).get(rec.get("key"), rec.get("input")), "note": note})
    if rows:
        write_csv(out / NOTES_NAME, pd.DataFrame(rows, columns=["image", "note"]))
    else:
        (out / NOTES_NAME).unlink(missing_ok=True)
    return rows


def run_batch_sync(*args: Any, **kwargs: Any) -> BatchSummary:
    """Plain-call form of :func:`run_batch` (no progress events); same arguments."""
    gen = run_batch(*args, **kwargs)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
