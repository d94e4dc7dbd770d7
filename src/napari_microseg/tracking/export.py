"""Write and read tracking results; curation edits on a :class:`TrackResult`.

Files (all written atomically):

- ``tracks.csv``: :data:`napari_microseg.tracking.track.TRACK_COLUMNS` then measurements.
- ``counts.csv``: ``t, count, divisions, appeared, left_field, disappeared`` per
  frame: ``count`` objects tracked in frame t; ``divisions`` mothers (fate
  ``divided``) whose first daughter appears in frame t; ``appeared`` tracks without a
  parent that begin in frame t > 0 (entering the field, or first detected
  late); ``left_field`` / ``disappeared`` tracks whose last frame is t and
  whose fate in ``track_summary.csv`` is ``left the field`` / ``disappeared``
  (died, merged, or lost by the tracker). Mothers and daughters count under
  ``divisions`` only; tracks that reach the last frame end nowhere.
- ``track_summary.csv``: one row per track (:func:`track_summary`): span, gaps, daughters,
  fate, displacement, path length, speed, straightness; in physical units too when the
  pixel size and frame interval are given.
- Cell Tracking Challenge folder: ``res_track.txt`` (lines ``L B E P``) and
  ``mask000.tif`` ... (uint16; 3-digit names up to 1000 frames, 4-digit above).
  A track with gaps (frames bridged by the tracker) is cut at each gap into
  CTC tracks, each later piece having the previous one as parent (the CTC
  convention for gap closing).

Curation helpers are pure functions: they return a new consistent
:class:`TrackResult` (table, tracks_data, graph, relabelled) and never modify
their input.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError
from ..io.atomic import atomic_path, atomic_write_text
from .track import TRACK_COLUMNS, TrackResult, finalize


def _table(obj: TrackResult | pd.DataFrame) -> pd.DataFrame:
    return obj.table if isinstance(obj, TrackResult) else obj


# ----------------------------------------------------------------------------- CSV
def write_tracks_csv(result: TrackResult | pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``tracks.csv`` (contract columns first, then measurements); an existing file is replaced (the
    command line and the docks check for one first)."""
    table = _table(result)
    missing = [c for c in TRACK_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"tracks table lacks columns {missing}")
    cols = TRACK_COLUMNS + [c for c in table.columns if c not in TRACK_COLUMNS]
    return atomic_write_text(path, table[cols].to_csv(index=False, lineterminator="\n"))


def read_tracks_csv(path: str | os.PathLike, labels: np.ndarray | None = None, n_frames: int | None = None) -> TrackResult:
    """Read a ``tracks.csv`` back into a :class:`TrackResult` (optionally with its label stack)."""
    from ..io.tables import read_csv_table

    return tracks_result_from_table(read_csv_table(path), str(path), labels, n_frames)


def tracks_result_from_table(table: pd.DataFrame, name: str = "tracks table", labels: np.ndarray | None = None,
                             n_frames: int | None = None) -> TrackResult:
    """A :class:`TrackResult` from a tracks.csv-style table (``track_id, t, y, x``, optional
    ``parent_track_id``); ``name`` for messages."""
    missing = [c for c in ("track_id", "t", "y", "x") if c not in table.columns]
    if missing:
        raise InputError(f"{name} is not a tracks table (missing {missing})")
    table = table.copy()
    if "parent_track_id" not in table.columns:
        table["parent_track_id"] = 0
    table["parent_track_id"] = table["parent_track_id"].fillna(0)
    _check_track_columns(table, name)
    _warn_of_dropped_links(table, name)
    return finalize(table, n_frames=n_frames, labels=labels)


def _warn_of_dropped_links(table: pd.DataFrame, name: str) -> None:
    """Warn (MicrosegWarning) of the division links :func:`~napari_microseg.tracking.track.finalize` will drop
    from ``table`` (checked, numeric columns): a parent no row holds, or one that does not end before its
    daughter starts (a daughter sharing its mother's last frame). They went without a word: a lineage saved
    from a napari Tracks layer reopened with none."""
    import warnings

    from ..errors import MicrosegWarning

    ids = pd.to_numeric(table["track_id"]).astype(np.int64)
    frames = pd.to_numeric(table["t"]).astype(np.int64)
    parents = pd.to_numeric(table["parent_track_id"]).astype(np.int64).groupby(ids).first()
    parents = parents[parents != 0]
    if not len(parents):
        return
    first, last = frames.groupby(ids).min(), frames.groupby(ids).max()
    missing = parents[~parents.isin(first.index)]
    held = parents[parents.isin(first.index)]
    late = held[last.reindex(held.to_numpy()).to_numpy() >= first.reindex(held.index).to_numpy()]
    said = []
    if len(missing):
        said.append(f"{len(missing)} whose parent no row holds (track {int(missing.index[0])}: parent "
                    f"{int(missing.iloc[0])})")
    if len(late):
        child, parent = int(late.index[0]), int(late.iloc[0])
        said.append(f"{len(late)} whose parent does not end before the daughter starts (track {child} starts at "
                    f"t={int(first[child])}, its parent {parent} ends at t={int(last[parent])})")
    if said:
        warnings.warn(MicrosegWarning(f"{name}: {len(missing) + len(late)} division link(s) left out: "
                                      + "; ".join(said) + ". Those tracks are taken without a parent"), stacklevel=3)


def _check_track_columns(table: pd.DataFrame, name: str) -> None:
    """InputError naming ``name`` and the first bad row: ids and frames must be whole numbers, coordinates
    finite numbers (a fractional t was cut to its frame, an empty x failed in napari, a text id in int());
    ids, frames and parents (0: none) from 0 (napari's Tracks layer took a negative id for an index and
    asked for 32 GiB)."""
    lowest = {"track_id": 0, "t": 0, "parent_track_id": 0}
    for column in [*lowest, "y", "x"]:  # (an empty z: 2-D tracks of a table that holds 3-D ones too)
        values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(values)
        if column in lowest:
            bad |= np.isfinite(values) & ((values != np.round(values)) | (values < lowest[column]))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            line = table.index[row] + 2 if isinstance(table.index[row], (int, np.integer)) else row + 2  # of the file
            value = table[column].iloc[row]
            value = value.item() if hasattr(value, "item") else value
            shown = repr(value) if isinstance(value, str) else ("an empty cell" if pd.isna(value) else str(value))
            kind = f"whole numbers from {lowest[column]}" if column in lowest else "numbers"
            raise InputError(f"{name}: column {column!r} must hold {kind}; line {line} holds {shown}")


def counts_table(result: TrackResult | pd.DataFrame, n_frames: int | None = None,
                 image_shape: tuple[int, int] | None = None) -> pd.DataFrame:
    """Per-frame ``t, count, divisions, appeared, left_field, disappeared`` (see module doc).

    ``n_frames`` defaults to the result's frame count, else the last tracked frame + 1;
    ``image_shape`` ``(height, width)`` in pixels (default: the result's config) tells a track
    that left the field from one that disappeared; without it every lost track disappeared.
    """
    if not isinstance(result, TrackResult):  # a bare tracks table: made whole (roots, generations) first
        result = finalize(result, n_frames=n_frames)
    table = _table(result)
    if n_frames is None:
        n_frames = result.n_frames or int(table["t"].max()) + 1

    def per_frame(frames) -> np.ndarray:
        frames = np.asarray(frames, dtype=int)
        return np.bincount(frames, minlength=n_frames)[:n_frames] if len(frames) else np.zeros(n_frames, int)

    spans = table.groupby("track_id").agg(start=("t", "min"), parent=("parent_track_id", "first"))
    daughters = spans[spans["parent"] != 0]
    # one division per mother (fate "divided" in track_summary), dated by its first daughter; a
    # mother left with one daughter after curation still divided
    first_of_division = daughters.groupby("parent")["start"].min()
    summary = track_summary(result, image_shape=image_shape, n_frames=n_frames)
    ended = lambda fate: summary.loc[summary["fate"] == fate, "end_t"]  # noqa: E731
    return pd.DataFrame({
        "t": np.arange(n_frames),
        "count": per_frame(table["t"].to_numpy()),
        "divisions": per_frame(first_of_division.to_numpy()),
        "appeared": per_frame(spans.loc[(spans["parent"] == 0) & (spans["start"] > 0), "start"].to_numpy()),
        "left_field": per_frame(ended("left the field")),
        "disappeared": per_frame(ended("disappeared")),
    })


def write_counts_csv(result: TrackResult, path: str | os.PathLike, n_frames: int | None = None,
                     image_shape: tuple[int, int] | None = None) -> Path:
    """Write ``counts.csv`` (see :func:`counts_table`); an existing file is replaced."""
    table = counts_table(result, n_frames, image_shape=image_shape)
    return atomic_write_text(path, table.to_csv(index=False, lineterminator="\n"))


def check_units(pixel_size: float | None, frame_interval: float | None) -> None:
    """InputError unless each given value is a finite number > 0 (micrometres per pixel, minutes)."""
    for name, value, unit in (("pixel size", pixel_size, "micrometres per pixel"),
                              ("frame interval", frame_interval, "minutes")):
        if value is not None and not (np.isfinite(value) and value > 0):
            raise InputError(f"{name} must be a number > 0 ({unit}), got {value}")


#: name of the Cell Tracking Challenge result folder that ``track --ctc``, the Tracking widget and
#: the demo write (the challenge calls result folders ``<sequence>_RES``)
CTC_FOLDER = "ctc_RES"

#: fates of :func:`track_summary`
FATES = ("divided", "end of movie", "left the field", "disappeared")


def track_summary(
    result: TrackResult,
    *,
    pixel_size: float | None = None,
    frame_interval: float | None = None,
    image_shape: tuple[int, int] | None = None,
    n_frames: int | None = None,
    pixel_size_y: float | None = None,
) -> pd.DataFrame:
    """One row per track, like TrackMate's track statistics.

    Parameters
    ----------
    result : tracks (``result.table``; ``n_frames`` and ``config["image_shape"]`` when known).
    pixel_size : micrometres per pixel (along X); adds the ``*_um`` columns.
    frame_interval : minutes between frames; adds ``duration_min`` (and, with ``pixel_size``,
        ``mean_speed_um_per_min``).
    image_shape : ``(height, width)`` in pixels (default: from the result's config) to tell a
        track that left the field from one that disappeared inside it.
    n_frames : frames in the movie (default: the result's, else the last tracked frame + 1);
        a track that reaches the last frame ends as ``end of movie``.
    pixel_size_y : micrometres per pixel along Y where the pixels are not square (default:
        ``pixel_size``): each step's Y and X parts are scaled by their own size.

    Movement is measured in the sample: with stage-shift correction (``config["stage_offsets"]``)
    each frame's stage offset is taken off first, so a stage jump is not a cell's step.

    Returns
    -------
    DataFrame with ``track_id, parent_track_id, root_track_id, generation, start_t, end_t``
    (frames), ``frames`` (objects found), ``gap_frames`` (frames bridged without an object),
    ``daughters``, ``fate`` (one of :data:`FATES`: ``divided``; ``end of movie`` when it lasts
    to the last frame; ``left the field`` when its last object lies within its own radius + 2 px
    of the image edge; else ``disappeared``: died, merged into a neighbour, or was not found
    any more), ``net_displacement_px`` (first to last centroid), ``path_length_px`` (sum of
    the steps), ``mean_speed_px_per_frame`` (path length / frames spanned; NaN for one
    frame), ``straightness`` (net displacement / path length, 0..1; NaN when it never
    moved), ``mean_area_px`` (with an ``area`` column), then the physical-unit columns.
    """
    table = _table(result).sort_values(["track_id", "t"], kind="stable")
    check_units(pixel_size, frame_interval)
    if pixel_size is not None:
        check_units(pixel_size_y, None)
    size_y = pixel_size_y if pixel_size_y is not None else pixel_size
    if n_frames is None:
        n_frames = getattr(result, "n_frames", 0) or (int(table["t"].max()) + 1 if len(table) else 0)
    if image_shape is None and isinstance(result, TrackResult) and result.config.get("image_shape"):
        image_shape = tuple(result.config["image_shape"][-2:])
    columns = ["track_id", "parent_track_id", "root_track_id", "generation", "start_t", "end_t", "frames",
               "gap_frames", "daughters", "fate", "net_displacement_px", "path_length_px",
               "mean_speed_px_per_frame", "straightness"]
    extra = (["mean_area_px"] if "area" in table.columns else []) \
        + (["net_displacement_um", "path_length_um"] if pixel_size is not None else []) \
        + (["duration_min"] if frame_interval is not None else []) \
        + (["mean_speed_um_per_min"] if pixel_size is not None and frame_interval is not None else [])
    if not len(table):
        return pd.DataFrame(columns=columns + extra)
    offsets = isinstance(result, TrackResult) and result.config.get("stage_offsets")
    t_index = table["t"].to_numpy()
    sample_y, sample_x = table["y"].to_numpy(float), table["x"].to_numpy(float)
    if offsets:  # positions in the sample: the stage's own jumps taken off
        offsets = np.asarray(offsets, dtype=float)
        if offsets.ndim != 2 or len(offsets) <= int(t_index.max()):
            raise InputError(f"the tracks' record holds stage offsets for {len(offsets)} frame(s), the tracks reach "
                             f"frame {int(t_index.max())}: they are another movie's (track again)")
        sample_y, sample_x = sample_y - offsets[t_index, 0], sample_x - offsets[t_index, 1]
    table = table.assign(sample_y=sample_y, sample_x=sample_x)
    step_y, step_x = table.groupby("track_id")["sample_y"].diff(), table.groupby("track_id")["sample_x"].diff()
    table = table.assign(step=np.hypot(step_y, step_x).fillna(0.0))
    if pixel_size is not None:  # micrometres: Y and X each by their own pixel size (non-square pixels)
        table = table.assign(step_um=np.hypot(step_y * size_y, step_x * pixel_size).fillna(0.0))
    agg = {"parent_track_id": ("parent_track_id", "first"), "root_track_id": ("root_track_id", "first"),
           "generation": ("generation", "first"), "start_t": ("t", "min"), "end_t": ("t", "max"),
           "frames": ("t", "size"), "y0": ("sample_y", "first"), "x0": ("sample_x", "first"),
           "y1": ("sample_y", "last"), "x1": ("sample_x", "last"), "last_y": ("y", "last"), "last_x": ("x", "last"),
           "path_length_px": ("step", "sum")}
    if pixel_size is not None:
        agg["path_length_um"] = ("step_um", "sum")
    if "area" in table.columns:
        agg.update(mean_area_px=("area", "mean"), last_area=("area", "last"))
    out = table.groupby("track_id").agg(**agg).reset_index()
    daughters = table.groupby("track_id")["parent_track_id"].first()
    n_daughters = daughters[daughters != 0].value_counts()
    out["daughters"] = out["track_id"].map(n_daughters).fillna(0).astype(np.int64)
    out["gap_frames"] = out["end_t"] - out["start_t"] + 1 - out["frames"]
    out["net_displacement_px"] = np.hypot(out["y1"] - out["y0"], out["x1"] - out["x0"])
    span = (out["end_t"] - out["start_t"]).astype(float)
    out["mean_speed_px_per_frame"] = np.where(span > 0, out["path_length_px"] / span.where(span > 0, 1.0), np.nan)
    path = out["path_length_px"]
    out["straightness"] = np.where(path > 0, out["net_displacement_px"] / path.where(path > 0, 1.0), np.nan)
    radius = pd.Series(3.0, index=out.index)
    if "last_area" in out.columns:
        radius = np.sqrt(out["last_area"] / np.pi).fillna(3.0)
    fate = np.full(len(out), "disappeared", dtype=object)
    if image_shape is not None:  # the edge of the image: raw positions, where the object was seen
        height, width = image_shape
        edge = np.minimum.reduce([out["last_y"], out["last_x"], height - 1 - out["last_y"], width - 1 - out["last_x"]])
        fate[(edge <= radius + 2.0).to_numpy()] = "left the field"
    fate[(out["end_t"] >= n_frames - 1).to_numpy()] = "end of movie"
    fate[(out["daughters"] > 0).to_numpy()] = "divided"
    out["fate"] = fate
    if pixel_size is not None:
        out["net_displacement_um"] = np.hypot((out["y1"] - out["y0"]) * size_y, (out["x1"] - out["x0"]) * pixel_size)
    if frame_interval is not None:
        out["duration_min"] = span * frame_interval
        if pixel_size is not None:
            out["mean_speed_um_per_min"] = np.where(
                span > 0, out["path_length_um"] / (span.where(span > 0, 1.0) * frame_interval), np.nan)
    return out[columns + extra]


def write_track_summary_csv(result: TrackResult, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Write ``track_summary.csv`` (see :func:`track_summary`; ``kwargs`` go to it), numbers to 8 digits
    as every table here (6 wrote a 1,234,321 px area as 1.23432e+06, and disagreed with batch track's)."""
    from ..measure.tables import write_table_csv

    return Path(write_table_csv(track_summary(result, **kwargs), path))


def write_config_json(result: TrackResult, path: str | os.PathLike) -> Path:
    """Write the configuration used (JSON) so the run can be repeated; an existing file is replaced."""
    return atomic_write_text(path, json.dumps(result.config, indent=2, default=_json_default) + "\n")


def _json_default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)


# ----------------------------------------------------------------------------- CTC
def ctc_digits(n_frames: int) -> int:
    """Digits in CTC mask names: 3 (``mask000.tif``) up to 1000 frames, else 4."""
    return 3 if n_frames <= 1000 else 4


#: the most tracks a CTC export holds (its masks are 16-bit)
CTC_MAX_TRACKS = 65535


def ctc_tracks(result: TrackResult) -> tuple[pd.DataFrame, pd.DataFrame]:
    """CTC view of a result: ``(lbep, table)`` where ``lbep`` has columns
    ``L, B, E, P`` and ``table`` is the result table with a ``ctc_label`` column.

    Tracks without gaps keep their id as CTC label; a track with gaps is cut
    into pieces, later pieces get new labels with the previous piece as parent.
    """
    table = result.table.sort_values(["track_id", "t"]).reset_index(drop=True)
    ctc_label = table["track_id"].to_numpy().copy()
    next_label = int(table["track_id"].max()) + 1 if len(table) else 1
    last_piece: dict[int, int] = {}
    rows = []
    for tid, grp in table.groupby("track_id", sort=True):
        ts = grp["t"].to_numpy()
        cuts = np.flatnonzero(np.diff(ts) > 1) + 1
        bounds = np.split(np.arange(len(ts)), cuts)
        parent = int(grp["parent_track_id"].iloc[0])
        prev = None
        for k, piece in enumerate(bounds):
            label = int(tid) if k == 0 else next_label
            if k > 0:
                next_label += 1
            ctc_label[grp.index[piece]] = label
            p = parent if k == 0 else prev  # piece 0: fixed below to the mother's last piece
            rows.append((label, int(ts[piece[0]]), int(ts[piece[-1]]), p, int(tid), k))
            prev = label
        last_piece[int(tid)] = prev
    lbep = pd.DataFrame(rows, columns=["L", "B", "E", "P", "track_id", "piece"])
    # parents of daughters must be the *last* piece of the mother track
    lbep.loc[lbep["piece"] == 0, "P"] = [
        last_piece.get(int(p), 0) if p else 0 for p in lbep.loc[lbep["piece"] == 0, "P"]
    ]
    if next_label - 1 > CTC_MAX_TRACKS:
        raise InputError(f"{next_label - 1} CTC tracks, more than the {CTC_MAX_TRACKS} CTC's 16-bit masks hold")
    return lbep[["L", "B", "E", "P"]], table.assign(ctc_label=ctc_label)


def write_ctc(result: TrackResult, folder: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a CTC result folder: ``res_track.txt`` + ``maskNNN.tif`` (uint16).

    Needs ``result.labels`` (the label stack the tracks were built from).
    """
    from ..progress import drain

    return drain(write_ctc_iter(result, folder, overwrite=overwrite))


def write_ctc_iter(result: TrackResult, folder: str | os.PathLike, *, overwrite: bool = False):
    """:func:`write_ctc` as a generator: one :class:`~napari_microseg.progress.Progress` per mask written,
    returning the folder. Closed before the end (Stop in the Tracking dock), it takes away the masks it
    wrote, and the folder when it made it: no half export is left that looks whole."""
    import tifffile

    from ..progress import Progress

    from ..io.images import LABELS_SOFTWARE

    if result.labels is None:
        raise InputError("CTC export needs the label stack (tracks from points have no masks)")
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise InputError(f"{folder} exists and is not empty (use overwrite)")
    made_folder = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lbep, table = ctc_tracks(result)
    # map (t, label) -> ctc label per frame
    from .track import relabel_stack

    masks = relabel_stack(result.labels, table.assign(track_id=table["ctc_label"]))
    digits = ctc_digits(result.n_frames or masks.shape[0])
    written = set()
    try:
        for t in range(masks.shape[0]):
            with atomic_path(folder / f"mask{t:0{digits}d}.tif") as p:
                # a stack on disk: one frame read; tagged as labels (napari opens a mask as Labels)
                tifffile.imwrite(p, np.asarray(masks[t]).astype(np.uint16), software=LABELS_SOFTWARE)
            written.add(f"mask{t:0{digits}d}.tif")
            yield Progress(t + 1, masks.shape[0], f"CTC masks {t + 1}/{masks.shape[0]}")
    except GeneratorExit:  # stopped: nothing of this export is left behind
        for name in written:
            (folder / name).unlink(missing_ok=True)
        if made_folder and not any(folder.iterdir()):
            folder.rmdir()
        raise
    text = "".join(f"{r.L} {r.B} {r.E} {r.P}\n" for r in lbep.itertuples(index=False))
    atomic_write_text(folder / "res_track.txt", text)
    # masks of an earlier, longer result replaced here would corrupt the tracking metrics
    for stale in ctc_mask_files(folder):
        if stale.name not in written:
            stale.unlink()
    return folder


def ctc_mask_files(folder: Path) -> list[Path]:
    """The CTC export's mask files in ``folder`` (``mask`` + digits + ``.tif``), none of a user's
    other files that start with "mask"."""
    return [path for path in Path(folder).glob("mask*.tif") if path.stem[4:].isdigit()]


def is_simulation_folder(folder: str | os.PathLike) -> bool:
    """True when ``folder/params.json`` is a ``microseg simulate`` run's record (its ``sample_seeds`` or its command
    line's ``simulate``), not another command's (``autolabel`` writes a params.json too)."""
    import json

    try:
        record = json.loads((Path(folder) / "params.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and ("sample_seeds" in record or (record.get("cli") or {}).get("command") == "simulate")


def read_tracks_folder(folder: str | os.PathLike) -> TrackResult | Path:
    """Tracks with their masks from a folder, for scoring (:func:`~.metrics.ctc_scores`).

    Accepts what this package writes: a ``microseg track`` result (``tracks.csv`` +
    ``tracks_labels.tif``, objects labelled by track id), a ``microseg simulate nuclei``
    folder (``tracks.csv`` + ``labels.tif``, whose ``label`` column names each object in
    ``labels.tif``), or a Cell Tracking Challenge folder (``*_track.txt`` + masks), which is
    returned as its path for traccuracy's own loader. InputError for anything else.
    """
    from ..io.images import read_image, time_stack

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder")
    if sorted(folder.glob("*_track.txt")):
        return folder
    tracks = folder / "tracks.csv"
    if (tracks.is_file() and (folder / "tracks_labels.tif").is_file() and (folder / "labels.tif").is_file()
            and is_simulation_folder(folder) and not (folder / "track_config.json").is_file()):
        # a simulation's folder with a track run's label stack put in by hand: whose is tracks.csv? (a track run
        # writes track_config.json beside its tracks.csv; any other labels.tif, autolabel's, is no truth)
        raise InputError(f"{folder} holds both labels.tif (a simulation's truth) and tracks_labels.tif (a track "
                         "run's result): which of them tracks.csv belongs to cannot be told; keep each run in a "
                         "folder of its own")
    if tracks.is_file() and (folder / "tracks_labels.tif").is_file():
        # (its own integer type: ids past 2^31 were wrapped by int32, and then matched no row of tracks.csv)
        relabelled = np.asarray(time_stack(read_image(folder / "tracks_labels.tif").data, "tracks_labels.tif"))
        result = read_tracks_csv(tracks, n_frames=relabelled.shape[0])
        _check_tracks_match_masks(folder, result.table, relabelled, "track_id", "tracks_labels.tif")
        result.relabelled = relabelled
        result.config["image_shape"] = list(relabelled.shape)
        return result
    if tracks.is_file() and (folder / "labels.tif").is_file():
        labels = time_stack(read_image(folder / "labels.tif").data, "labels.tif")
        from ..io.tables import read_csv_table

        if "label" not in read_csv_table(tracks, nrows=0).columns:  # the header only: the table is read below
            raise InputError(f"{tracks} has no label column naming the objects of labels.tif")
        result = read_tracks_csv(tracks, labels=labels, n_frames=labels.shape[0])
        _check_tracks_match_masks(folder, result.table, labels, "label", "labels.tif")
        result.config["image_shape"] = list(labels.shape)
        return result
    hint = ""
    movies = sorted(q for q in (folder / CTC_FOLDER).glob("*") if q.is_dir()) if (folder / CTC_FOLDER).is_dir() else []
    inside = sorted(q for q in folder.iterdir() if q.is_dir() and any(q.glob("*_track.txt")))
    if inside:  # a batch's ctc_RES, or any folder of CTC exports: one of them is scored
        movies = inside
    if inside:
        hint = (f"; it holds CTC folders of several movies: give one of {', '.join(str(q) for q in movies[:3])}"
                f"{' ...' if len(movies) > 3 else ''}")
    elif (folder / "batch_config.json").is_file() or (folder / "tracks_labels").is_dir() or movies:
        # a batch track folder holds several movies: one is scored at a time, from its CTC export
        hint = (f"; a batch track folder holds several movies: give one of {', '.join(str(q) for q in movies[:3])}"
                f"{' ...' if len(movies) > 3 else ''}" if movies else
                "; a batch track folder holds several movies: rerun it with --ctc and give one movie's folder "
                f"{folder / CTC_FOLDER / '<movie>'}")
    elif (folder / "tracks.csv").is_file():  # the Tracking widget's CSV export: its CTC export holds the masks
        ctc = sorted(folder.glob(f"{CTC_FOLDER}*"))
        hint = (f"; a Tracking widget export has no label stack: give its CTC folder {ctc[0]}" if ctc else
                "; a Tracking widget export has no label stack: press 'Export CTC' and give that folder")
    raise InputError(f"{folder}: expected tracks.csv with tracks_labels.tif (microseg track) or labels.tif "
                     f"(microseg simulate nuclei), or a CTC folder (*_track.txt + masks){hint}")


def _check_tracks_match_masks(folder: Path, table: pd.DataFrame, stack: np.ndarray, id_column: str,
                              stack_name: str) -> None:
    """InputError unless each frame of the label ``stack`` (``tracks_labels.tif``: objects by track id;
    ``labels.tif`` of ``simulate nuclei``: by ``label``) holds the ids that ``tracks.csv`` lists in that frame
    in ``id_column``, each once, and the table lists no frame beyond the stack's (a row deleted, added or
    copied in a spreadsheet: the metrics could pair nothing, or failed with a traceback)."""
    n_frames = int(stack.shape[0])
    frames = table["t"].to_numpy()
    outside = frames[(frames < 0) | (frames >= n_frames)]
    if outside.size:
        raise InputError(f"{folder}: tracks.csv lists frame {int(outside[0])}, but {stack_name} holds frames 0 to "
                         f"{n_frames - 1} (were rows of tracks.csv edited?)")
    twice = table.duplicated(["t", id_column])
    if twice.any():
        row = table[twice].iloc[0]
        raise InputError(f"{folder}: tracks.csv lists {id_column} {int(row[id_column])} twice in frame {int(row['t'])} "
                         "(a row copied in a spreadsheet?): each object has one row per frame")
    listed = table.groupby("t")[id_column].apply(lambda ids: set(int(i) for i in ids)).to_dict()
    for t in range(n_frames):
        shown = set(int(i) for i in np.unique(stack[t])) - {0}
        expected = listed.get(t, set())
        if shown != expected:
            only_masks, only_table = sorted(shown - expected)[:5], sorted(expected - shown)[:5]
            what = "; ".join(text for text in (
                f"the masks hold {id_column} value(s) {only_masks} that tracks.csv does not list" if only_masks else "",
                f"tracks.csv lists {id_column} value(s) {only_table} that the masks do not hold" if only_table else "")
                if text)
            raise InputError(f"{folder}: tracks.csv and {stack_name} disagree in frame {t}: {what} "
                             "(were rows of tracks.csv edited? score the folder as microseg wrote it)")


def read_ctc(folder: str | os.PathLike, track_file: str | None = None) -> TrackResult:
    """Read a CTC folder (results ``res_track.txt`` + ``mask*.tif`` or ground
    truth ``man_track.txt`` + ``man_track*.tif``) into a :class:`TrackResult`.

    Each CTC track becomes one track; its id is the CTC label (gap pieces stay
    separate tracks linked parent -> child, and ``generation`` counts divisions
    only: a parent of one child is a gap). ``relabelled`` equals the masks.
    """
    import tifffile

    folder = Path(folder)
    if track_file is None:
        found = sorted(folder.glob("*_track.txt"))
        if len(found) != 1:
            raise InputError(f"{folder}: expected one *_track.txt file, found {len(found)}")
        track_path = found[0]
    else:
        track_path = folder / track_file
    files = sorted(p for p in folder.glob("*.tif*") if p.stem.rstrip("0123456789") in ("mask", "man_track", "man_seg"))
    if not files:
        raise InputError(f"{folder}: no mask*.tif or man_track*.tif files")
    masks = np.stack([tifffile.imread(p) for p in files]).astype(np.int32)
    from ..io.tables import read_csv_table

    lbep = read_csv_table(track_path, sep=r"\s+", header=None, names=["L", "B", "E", "P"])
    from skimage.measure import regionprops_table

    frames = []
    for t in range(masks.shape[0]):
        tab = regionprops_table(masks[t], properties=["label", "centroid", "area"])
        frames.append(pd.DataFrame({"t": t, "label": tab["label"], "y": tab["centroid-0"], "x": tab["centroid-1"], "area": tab["area"]}))
    obj = pd.concat(frames, ignore_index=True)
    obj["track_id"] = obj["label"]
    parent = dict(zip(lbep["L"].astype(int), lbep["P"].astype(int)))
    obj["parent_track_id"] = obj["track_id"].map(lambda l: parent.get(int(l), 0))
    result = finalize(obj, n_frames=masks.shape[0], labels=masks, config={"source": str(folder)})
    result.table["generation"] = _ctc_generations(result.table)
    return result


def _ctc_generations(table: pd.DataFrame) -> pd.Series:
    """``generation`` of each row counting divisions only: in CTC files a parent with one child marks a gap
    (the same object, its track cut there), not a division; finalize counted every link (the daughters of a
    mother bridged over a gap were generation 2, the gap's second piece 1, where tracks.csv has 1 and 0)."""
    parent = table.groupby("track_id")["parent_track_id"].first().to_dict()
    n_children = pd.Series(list(parent.values())).value_counts().to_dict()
    generation: dict[int, int] = {}

    def of(track: int) -> int:
        chain: list[int] = []  # up to a track known or a root (without recursion: lineages of many gaps)
        current = track
        while current not in generation:
            up = parent.get(current, 0)
            if up == 0 or up not in parent or up in chain or up == current:
                generation[current] = 0
                break
            chain.append(current)
            current = up
        for child in reversed(chain):
            up = parent[child]
            generation[child] = generation[up] + (1 if n_children.get(up, 0) >= 2 else 0)
        return generation[track]

    return table["track_id"].map(lambda track: of(int(track))).astype(np.int64)


# ----------------------------------------------------------------------------- curation
def _check_track(result: TrackResult, track_id: int) -> None:
    if int(track_id) not in set(result.table["track_id"].tolist()):
        raise InputError(f"no track with id {track_id}")


def _rebuild(result: TrackResult, table: pd.DataFrame, edit: str, frames: Any) -> TrackResult:
    """The result of an edit: ``table`` differs from ``result.table`` only at ``frames``, so only
    those frames of the relabelled stack are rebuilt."""
    config = dict(result.config)
    config["edits"] = list(config.get("edits", [])) + [edit]
    return finalize(table, n_frames=result.n_frames, labels=result.labels, config=config, info=result.info,
                    previous=(result.relabelled, frames))


def _frames(table: pd.DataFrame, rows: Any) -> set:
    return set(table.loc[rows, "t"].astype(int).tolist())


def delete_track(result: TrackResult, track_id: int) -> TrackResult:
    """Remove a track; its daughters become roots."""
    _check_track(result, track_id)
    tab = result.table[result.table["track_id"] != track_id].copy()
    tab.loc[tab["parent_track_id"] == track_id, "parent_track_id"] = 0
    return _rebuild(result, tab, f"delete {track_id}", _frames(result.table, result.table["track_id"] == track_id))


def merge_tracks(result: TrackResult, id_a: int, id_b: int) -> TrackResult:
    """Join track ``id_b`` onto the end of ``id_a`` (b continues a).

    ``a`` must end before ``b`` starts. The merged track keeps id ``a`` and
    takes over b's daughters; a's former daughters become roots, and b's former
    parent loses b.
    """
    _check_track(result, id_a)
    _check_track(result, id_b)
    if id_a == id_b:
        raise InputError("cannot merge a track with itself")
    tab = result.table.copy()
    end_a = tab.loc[tab["track_id"] == id_a, "t"].max()
    start_b = tab.loc[tab["track_id"] == id_b, "t"].min()
    if end_a >= start_b:
        raise InputError(f"track {id_a} ends at t={end_a}, not before track {id_b} starts at t={start_b}")
    tab.loc[tab["parent_track_id"] == id_a, "parent_track_id"] = 0
    parent_a = int(tab.loc[tab["track_id"] == id_a, "parent_track_id"].iloc[0])
    tab.loc[tab["track_id"] == id_b, "track_id"] = id_a
    tab.loc[tab["track_id"] == id_a, "parent_track_id"] = parent_a
    tab.loc[tab["parent_track_id"] == id_b, "parent_track_id"] = id_a
    return _rebuild(result, tab, f"merge {id_a} {id_b}", _frames(result.table, result.table["track_id"] == id_b))


def split_track(result: TrackResult, track_id: int, t: int) -> TrackResult:
    """Cut a track before frame ``t``: rows at ``t`` and later get a new id
    (max id + 1), a root that takes over the track's daughters."""
    _check_track(result, track_id)
    tab = result.table.copy()
    sel = (tab["track_id"] == track_id) & (tab["t"] >= t)
    if not sel.any() or sel.all() or ((tab["track_id"] == track_id) & (tab["t"] < t)).sum() == 0:
        raise InputError(f"track {track_id} has no rows on both sides of t={t}")
    new_id = int(tab["track_id"].max()) + 1
    tab.loc[tab["parent_track_id"] == track_id, "parent_track_id"] = new_id
    tab.loc[sel, "track_id"] = new_id
    tab.loc[sel, "parent_track_id"] = 0
    return _rebuild(result, tab, f"split {track_id} {t}", _frames(tab, sel))
