"""napari writer hooks: Image -> TIFF, Labels -> TIFF, Tracks -> CSV (tracks.csv contract)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import InputError, WriteRefused
from .io.images import (LABELS_SOFTWARE, MICROSEG_SOFTWARE, calibration_from_layer, origin_from_layer, tiff_axes,
                        write_tiff)
from .batch.manifest import sha256_file
from .io.atomic import write_protected_reason
from .io.tables import TRACKS_COLUMNS, tracks_table_from_layer, write_csv


def _with_suffix(path: str, suffixes: tuple[str, ...], default: str) -> Path:
    """``path``, with ``default`` added when it has none of ``suffixes``. A file at the name made that
    way is refused: napari's save dialog asked about the name as typed, so replacing it would lose a
    file (an earlier save, hand-corrected labels) nobody was asked about."""
    p = Path(path)
    if p.name.lower().endswith(suffixes):
        return p
    target = p.with_name(p.name + default)
    if target.exists():
        raise InputError(f"{target.name} exists, and the name given had no {default}, so nobody was asked about "
                         f"replacing it: save again as '{target.name}' to replace it, or choose another name")
    return target


def _full_resolution(data: Any, meta: dict) -> np.ndarray:
    """A layer's data at full resolution: level 0 of a multiscale (pyramid) layer, whose scale is
    the layer's own (the coarser levels would be written with the finest level's pixel size)."""
    if meta.get("multiscale") or isinstance(data, (list, tuple)) or type(data).__name__ == "MultiScaleData":
        data = data[0]
    return data if hasattr(data, "compute") else np.asarray(data)  # a lazy (dask) stack is written frame by frame


def _value_range(arr: Any) -> tuple[int, int]:
    """The smallest and largest value of a numpy or dask array (0, 0 when empty), a lazy one read once."""
    if arr.size == 0:
        return 0, 0
    if hasattr(arr, "compute"):
        import dask

        low, high = dask.compute(arr.min(), arr.max())
        return int(low), int(high)
    return int(arr.min()), int(arr.max())


def _refusals_kept(writer: Any) -> Any:
    """``writer`` raising :class:`WriteRefused` where it raised InputError (a ValueError, whose message
    napari's ``layer.save(path, plugin=...)`` would replace by "not a valid writer")."""
    @functools.wraps(writer)
    def write(path: str, data: Any, meta: dict) -> list[str]:
        try:
            return writer(path, data, meta)
        except InputError as err:
            raise WriteRefused(str(err)) from None
    return write


def _with_z_planes(calibration: dict, meta: dict, ndim: int) -> dict:
    """``calibration`` with ``z_planes`` where a (Z, Y, X) layer names its first axis "z" (napari's
    ``axis_labels``, as the reader sets them for a Z stack of no stated step) and states no frame interval:
    written as ZYX, not as a time-lapse."""
    labels = [str(label).lower() for label in (meta.get("axis_labels") or ())]
    if ndim == 3 and len(labels) == 3 and labels[0] == "z" and "frame_interval_min" not in calibration:
        return {**calibration, "z_planes": True}
    return calibration


@_refusals_kept
def write_image_tiff(path: str, data: Any, meta: dict) -> list[str]:
    """Write an Image layer to TIFF (dtype kept; its scale in um / min kept as OME calibration);
    a multiscale layer: its full resolution."""
    target = _with_suffix(path, (".tif", ".tiff"), ".tif")
    data = _full_resolution(data, meta)
    scale = meta.get("scale") or ()
    # an RGB(A) layer has one scale entry fewer than its data's axes (none for its colour axis)
    rgb = bool(meta.get("rgb")) and data.ndim in (3, 4) and data.shape[-1] in (3, 4) and len(scale) == data.ndim - 1
    # its scale (um, min) as OME calibration: a colour image's or colour movie's too (YXS, TYXS or ZYXS)
    calibration = (_with_z_planes(calibration_from_layer(scale, meta.get("units")), meta, data.ndim - rgb)
                   if len(scale) == data.ndim - rgb else None)
    # colour as colour, not 3 px wide frames; a colour movie as frames (or planes) of colour
    colour = {"photometric": "rgb", "metadata": {"axes": tiff_axes(data.ndim - 1, calibration) + "S"}} if rgb else {}
    # where it lies (translate) with its calibration, as the tracks writer keeps it: saved apart, they lay apart
    origin = origin_from_layer(meta.get("translate"), meta.get("units")) if calibration else None
    write_tiff(target, np.asarray(data) if rgb else data, overwrite=True, calibration=calibration, origin=origin,
               software=MICROSEG_SOFTWARE, **colour)  # its plane positions: where the layer lay
    return [str(target)]


@_refusals_kept
def write_labels_tiff(path: str, data: Any, meta: dict) -> list[str]:
    """Write a Labels layer to TIFF as uint16 (uint32 when ids exceed 65535); with -1 ("not
    annotated", as the Auto-label dock marks nuclei outside its size range and tiles QC dropped) as
    int32, which ``microseg train`` and ``evaluate seg`` read as such. Other ids that these do not
    hold (below -1, or too large) are refused rather than wrapped into other ids. A multiscale layer:
    its full resolution."""
    arr = _full_resolution(data, meta)
    low, high = _value_range(arr)
    low, high = min(low, 0), max(high, 0)
    top = np.iinfo(np.int32).max if low < 0 else np.iinfo(np.uint32).max
    if low < -1 or high > top:
        raise InputError(f"labels hold ids from {low} to {high}: a labels TIFF holds -1 (not annotated) or 0 .. {top}; "
                         "relabel the layer first (e.g. skimage.segmentation.relabel_sequential)")
    from .measure.labels import label_dtype

    dtype = np.int32 if low < 0 else label_dtype(high)
    target = _with_suffix(path, (".tif", ".tiff"), ".tif")
    # the layer's per-object table (classes, ground truth, track ids) beyond what the reader rebuilds: beside it
    kept = _kept_features(meta.get("features"))
    sidecar = features_path(target)
    ours = _is_features_sidecar(sidecar)
    # our table of an earlier save, but of labels other than those replaced now (written since by another tool):
    # its features are in no layer (the reader left them out), so it is kept apart, not removed or replaced
    stale = ours and not _saved_for(sidecar, target)
    if kept is not None:  # checked before anything is written: the labels alone would open without their table
        from .io.atomic import guard_target

        guard_target(sidecar)
        if sidecar.is_dir() or (sidecar.exists() and not ours):
            raise InputError(f"{sidecar.name} exists beside {target.name} and is not a table this plugin saved: "
                             f"the layer's features ({', '.join(map(str, kept.columns[1:4]))}"
                             f"{', ...' if len(kept.columns) > 4 else ''}) are saved there, so nothing was written; "
                             "move or rename it, or save the labels under another name")
        if write_protected_reason(sidecar):  # (refused by atomic_path once the labels were written: refused now)
            raise InputError(f"{sidecar.name}: is write-protected, so the layer's features cannot be saved beside "
                             f"{target.name}; nothing was written (make it writable, or choose another name)")
    # the layer's physical scale (um, min) goes with it, as the reader set it from the movie
    calibration = _with_z_planes(calibration_from_layer(meta.get("scale"), meta.get("units")), meta, arr.ndim)
    write_tiff(target, arr.astype(dtype), overwrite=True, calibration=calibration,
               origin=origin_from_layer(meta.get("translate"), meta.get("units")),  # where it lies, as tracks keep it
               software=LABELS_SOFTWARE)  # reopened as labels, whatever the file's name
    if stale and not write_protected_reason(sidecar):
        _keep_stale_sidecar(sidecar, target, kept is not None)
    elif kept is None and ours and not write_protected_reason(sidecar):
        sidecar.unlink(missing_ok=True)  # the replaced labels' own table: not these labels' (a user's file stays)
    if kept is None:
        return [str(target)]
    if kept["label"].duplicated().any():  # (one row per object per frame): the reader takes one row per label
        import warnings

        from .errors import MicrosegWarning

        warnings.warn(MicrosegWarning(f"{sidecar.name} written with the layer's features, which hold several rows of "
                                      "one label: opening the labels again leaves them out (one row per label)"),
                      stacklevel=2)
    # the labels file it belongs to: labels written again later (``microseg segment --overwrite``) do not take it
    write_csv(sidecar, kept.assign(**{FEATURES_DIGEST_COLUMN: sha256_file(target)}))
    return [str(target), str(sidecar)]


#: columns of a Labels layer's ``features`` that the reader makes itself from the labels (see ``ids_features``)
READER_FEATURE_COLUMNS = ("label", "pixels", "index")

#: column of ``<labels file name>.features.csv`` (``x.tif.features.csv``) holding ``sha256_file`` of the labels file it was saved with
FEATURES_DIGEST_COLUMN = "labels_file_sha256"


def _kept_features(features: Any) -> pd.DataFrame | None:
    """A Labels layer's ``features`` to save beside its labels: ``label`` (napari's ``index`` where there is no
    ``label`` column, else the row number, as napari finds a label's row) and the columns the reader does not
    make itself; None when there are none (or no rows)."""
    if features is None:
        return None
    table = features if isinstance(features, pd.DataFrame) else pd.DataFrame(features)
    others = [c for c in table.columns if c not in READER_FEATURE_COLUMNS and c != FEATURES_DIGEST_COLUMN]
    if not others or not len(table):
        return None
    if "label" in table.columns:
        label = table["label"]
    elif "index" in table.columns:
        label = table["index"]
    else:
        label = pd.Series(np.arange(len(table)))
    kept = table[others].reset_index(drop=True)
    kept.insert(0, "label", np.asarray(label))
    return kept


def features_path(labels: Path) -> Path:
    """The table beside a saved labels file that holds its layer's features (``x.tif`` -> ``x.tif.features.csv``:
    the whole file name, so ``x.tif`` and ``x.tiff`` beside it keep tables of their own)."""
    return labels.with_name(labels.name + ".features.csv")


def _is_features_sidecar(path: Path) -> bool:
    """Whether ``path`` is a features table this plugin saved (its header names ``FEATURES_DIGEST_COLUMN``)."""
    if not path.is_file():
        return False
    try:
        with open(path, "rb") as table:
            header = table.readline(65536).decode("utf-8-sig", "replace")
    except OSError:
        return False
    return FEATURES_DIGEST_COLUMN in [name.strip().strip('"') for name in header.strip().split(",")]


def _saved_for(sidecar: Path, labels: Path) -> bool:
    """Whether our features table ``sidecar`` was saved with the labels file ``labels`` as it is now (its
    ``FEATURES_DIGEST_COLUMN`` names ``sha256_file(labels)`` only)."""
    if not labels.is_file():
        return False
    try:
        digests = pd.read_csv(sidecar, usecols=[FEATURES_DIGEST_COLUMN], dtype=str)[FEATURES_DIGEST_COLUMN]
        return set(digests.dropna()) == {sha256_file(labels)}
    except (OSError, ValueError):
        return False


def _stale_name(sidecar: Path) -> Path:
    """A free name beside ``sidecar`` to keep it under (``x.tif.features.csv`` -> ``x.tif.features.stale.csv``,
    then ``x.tif.features.stale.2.csv``, ...)."""
    base = sidecar.name[:-len(".csv")] if sidecar.name.endswith(".csv") else sidecar.name
    candidate, n = sidecar.with_name(base + ".stale.csv"), 1
    while candidate.exists() or candidate.is_symlink():
        n += 1
        candidate = sidecar.with_name(f"{base}.stale.{n}.csv")
    return candidate


def _keep_stale_sidecar(sidecar: Path, labels: Path, replaced: bool) -> None:
    """Move our features table ``sidecar``, saved with labels other than the ``labels`` file just replaced
    (written since by another tool), out of the way under ``<...>.stale.csv``, warned: its features (classes,
    annotations) were in no layer, so the save did not hold them."""
    import warnings

    from .errors import MicrosegWarning

    kept = _stale_name(sidecar)
    try:
        sidecar.rename(kept)
    except OSError as err:
        if replaced:  # (the labels are written: their features are not, rather than over the earlier ones)
            raise InputError(f"{labels.name} written, but not its features: {sidecar.name}, saved with an earlier "
                             f"{labels.name}, could not be moved aside to {kept.name} ({err.strerror or err})") from None
        said = f"it is left in place ({err.strerror or err})"
    else:
        said = f"it is kept as {kept.name}"
    warnings.warn(MicrosegWarning(
        f"{sidecar.name} was saved with an earlier {labels.name} (written again since, by another program) and its "
        f"features were not in the layer saved now: {said}, not {'replaced' if replaced else 'removed'}; "
        "join its columns to the layer by label to keep them"), stacklevel=4)


@_refusals_kept
def write_tracks_csv(path: str, data: Any, meta: dict) -> list[str]:
    """Write a Tracks layer to ``tracks.csv`` (columns: see ``TRACKS_COLUMNS``)."""
    features = meta.get("features")
    if features is not None and not isinstance(features, pd.DataFrame):
        features = pd.DataFrame(features)
    table = _original_track_ids(tracks_table_from_layer(np.asarray(data), meta.get("graph") or {}, features))
    target = _with_suffix(path, (".csv",), ".csv")
    from .tracking.export import _warn_of_dropped_links

    # links the table holds but no reader of it keeps (a daughter sharing its mother's last frame): said now
    _warn_of_dropped_links(table, f"{target.name} (saved as the layer holds it)")
    assert TRACKS_COLUMNS[:4] == ["track_id", "t", "y", "x"]
    placement = _layer_placement(meta)
    sidecar = placement_path(target)
    if placement:  # checked before anything is written: the table alone would open off the movie
        from .io.atomic import guard_target

        guard_target(sidecar)
    write_csv(target, table, leading=[*TRACKS_COLUMNS[:2], "z", *TRACKS_COLUMNS[2:]])  # z before y for 3-D tracks
    import fnmatch

    if not fnmatch.fnmatchcase(target.name, "*tracks*.csv"):  # the reader's pattern, as napari matches it
        import warnings

        from .errors import MicrosegWarning

        warnings.warn(MicrosegWarning(f"{target.name} written; napari-microseg opens tracks tables named "
                                      f"*tracks*.csv: rename it (e.g. {target.stem}_tracks.csv) to open it again "
                                      "as a Tracks layer"), stacklevel=2)
    if not placement:
        sidecar.unlink(missing_ok=True)  # an earlier save's: not this layer's
        return [str(target)]
    from .io.atomic import atomic_write_text

    # the table (and run) it belongs to: one written again later (``microseg track --overwrite``) is not placed by it
    placement["table_sha256"] = placement_digest(target)
    atomic_write_text(sidecar, json.dumps(placement, indent=2) + "\n")
    return [str(target), str(sidecar)]


def _original_track_ids(table: pd.DataFrame) -> pd.DataFrame:
    """A tracks table with the ids the reader renumbered (their file's ids in ``track_id_original``, see
    ``_reader._compact_track_ids``) given back, parents with them: saved, it matches its labels again."""
    if "track_id_original" not in table.columns or not len(table):
        return table
    original = pd.to_numeric(table["track_id_original"], errors="coerce")
    if original.isna().any():
        return table
    mapping = dict(zip(table["track_id"].astype(np.int64), original.astype(np.int64)))
    if len(set(mapping.values())) != len(mapping):  # (edited into clashing ids: kept as shown)
        return table
    table = table.assign(track_id=table["track_id"].map(mapping))
    for column in ("parent_track_id", "root_track_id"):
        if column in table.columns:
            table[column] = table[column].map(lambda v: mapping.get(int(v), 0) if v else 0)
    return table.drop(columns="track_id_original")


def placement_path(table: Path) -> Path:
    """The file beside a saved tracks table that says where its layer lay (``x.csv`` -> ``x.placement.json``)."""
    return table.with_name(table.stem + ".placement.json")


def placement_digest(table: Path) -> str:
    """``sha256:<hex>`` of a tracks table's bytes and, for a ``tracks*.csv`` of ``microseg track``, of its
    run's ``track_config*.json`` beside it (which holds the units the reader places the table with without a
    saved placement): a saved placement stands for this table of this run only."""
    import hashlib

    digest = hashlib.sha256(table.read_bytes())
    if table.stem.startswith("tracks"):
        config = table.with_name(f"track_config{table.stem[len('tracks'):]}.json")
        if config.is_file():
            digest.update(config.read_bytes())
    return "sha256:" + digest.hexdigest()


def _layer_placement(meta: dict) -> dict:
    """A Tracks layer's ``scale``, ``translate`` and ``units`` when they place it anywhere but at 1 pixel
    per unit from 0 (the table holds frames and pixels), for the reader to put it back; {} otherwise."""
    scale = [float(v) for v in (meta.get("scale") if meta.get("scale") is not None else ())]
    translate = [float(v) for v in (meta.get("translate") if meta.get("translate") is not None else ())]
    units = [str(u) for u in (meta.get("units") or ())]
    plain = all(v == 1.0 for v in scale) and all(v == 0.0 for v in translate) and all(u == "pixel" for u in units)
    if not scale or plain:
        return {}
    return {"scale": scale, "translate": translate or [0.0] * len(scale), "units": units or ["pixel"] * len(scale)}
