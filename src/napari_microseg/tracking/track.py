"""Track segmented objects over time with btrack (Bayesian tracker).

Pipeline: label stack (T, Y, X) -> one object per label per frame
(:func:`objects_from_labels`: centroid, area, mean intensity) -> optional
stage-shift correction (:mod:`.shift`) -> btrack: frame-by-frame Bayesian
linking with a Kalman motion model, then (``optimize=True``) a global
optimisation of tracklet hypotheses (link across gaps, appear, disappear,
false positive and, for the ``cell`` configuration, divide) -> a
:class:`TrackResult` whose table follows the ``tracks.csv`` contract.

btrack's *dummy objects* (positions it predicts for a track in frames where it
found no detection, used to bridge gaps of up to ``max_lost`` frames) are not
kept: they have no label and no measurement. A track bridged over a gap is one
track whose rows skip the missing frames (``t`` jumps). The Tracks layer draws
across the gap; the CTC export splits such a track at the gap (see
:func:`napari_microseg.tracking.export.write_ctc`).

Coordinates are pixels (``y`` row, ``x`` column, centroid of the label) and
``t`` is the frame index. Track ids are renumbered 1..N by first frame.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generator

import numpy as np
import pandas as pd

from ..errors import InputError
from ..io.images import is_lazy  # a stack on disk (dask, zarr) is tracked frame by frame, never whole
from ..measure.labels import MaskCheck, compact_labels, mask_frame_labels, masks_to_labels, sparse_limit
from ..progress import Progress

#: columns of ``tracks.csv`` in contract order (measurements follow them)
TRACK_COLUMNS = ["track_id", "t", "y", "x", "parent_track_id", "root_track_id", "generation", "label"]

#: folder of the JSON configurations shipped with the package
CONFIG_DIR = Path(__file__).resolve().parent / "configs"

#: ``update_method="auto"`` uses EXACT Bayesian updates up to this many objects
#: in the most crowded frame and APPROXIMATE (local, within the search radius)
#: above it. EXACT costs grow ~N^3 per frame (12 s for 100 x 500 objects here).
APPROXIMATE_ABOVE = 100

#: what to tell the user when :func:`track` took a mask stack (``result.info["mask_converted"]``)
MASK_NOTE = "a 0/1 mask, not labels: tracked its connected objects (8-connected, per frame)"


def stage_jumps_note(result: "TrackResult") -> str:
    """A warning when the stage-shift correction measured jumps longer than it accepts and left them out
    (a failed estimate is taken for such a jump, but a real one then breaks the tracks across it); "" otherwise."""
    rejected = result.info.get("stage_jumps_rejected") or []
    if not rejected:
        return ""
    limit = float(result.info.get("max_stage_shift", 0.0))
    listed = ", ".join(f"frame {t}: {length:g} px" for t, length in rejected[:3]) + (" ..." if len(rejected) > 3 else "")
    return (f"the stage-shift correction left out {len(rejected)} jump(s) longer than {limit:g} px, taken for failed "
            f"estimates ({listed}): if the stage did jump that far, tracks across them break; allow it with "
            "--max-stage-shift (command line)")


def empty_frames_note(result: "TrackResult") -> str:
    """A warning when frames of the tracked stack hold no objects (tracks cannot cross a gap of
    several of them; a stack segmented on its current frame only looks like this); "" otherwise."""
    n_frames = int(result.n_frames or 0)
    if result.info.get("no_objects"):
        return f"none of the {n_frames} frames holds an object: no tracks; counts.csv holds zeros"
    if n_frames < 2 or result.table.empty:
        return ""
    n_empty = n_frames - int(result.table["t"].nunique())
    if n_empty == 0:
        return ""
    advice = (": was only one frame segmented? Segment the whole stack, then track"
              if n_empty >= n_frames / 2 else "")
    return f"{n_empty} of {n_frames} frames hold no objects{advice}"

def unlinked_note(result: "TrackResult") -> str:
    """A warning when the tracker could link some objects to no track (they are tracks of their own
    in the tables: an object that moved further than the search radius); "" otherwise."""
    n = int(result.info.get("n_unlinked") or 0)
    if not n:
        return ""
    radius = result.info.get("search_radius_px")
    within = f" within the search radius ({radius:g} px)" if radius else ""
    return (f"{n} object(s) could not be linked{within}: each is a one-frame track of its own; if they moved "
            f"further between frames, raise the search radius")


def broken_tracks_note(result: "TrackResult") -> str:
    """A warning when tracks look broken by a move beyond the search radius: a track that begins after the
    first frame, without a mother and away from the field's edge, whose nearest track ending in the frame
    before (itself away from the edge) lies further than the radius but within three times it, each the
    other's nearest (an object that moved that far is tracked as two), at least two such pairs; ""
    otherwise. Entries and exits at the edge, beside an unrelated death, are no such pair."""
    from scipy.spatial import cKDTree

    radius = result.info.get("search_radius_px")
    table = result.table
    if not radius or table.empty or not {"track_id", "t", "y", "x", "parent_track_id"} <= set(table.columns):
        return ""
    ordered = table.sort_values("t", kind="stable")
    spans = ordered.groupby("track_id", sort=False)
    first, last = spans.head(1), spans.tail(1)
    n_frames = int(table["t"].max()) + 1
    shape = (result.config or {}).get("image_shape")
    coords = ["y", "x"]

    def inside(rows: pd.DataFrame) -> pd.DataFrame:
        if not shape or len(shape) < 3:
            return rows
        height, width = float(shape[-2]), float(shape[-1])
        margin = float(radius)
        keep = (rows["y"] > margin) & (rows["x"] > margin) & (rows["y"] < height - 1 - margin) & (rows["x"] < width - 1 - margin)
        return rows[keep]

    starts = inside(first[(first["t"] > 0) & (first["parent_track_id"] == 0)])
    ends = inside(last[last["t"] < n_frames - 1])
    broken = 0
    for t, begun in starts.groupby("t"):
        ended = ends[ends["t"] == t - 1]
        if ended.empty:
            continue
        a, b = begun[coords].to_numpy(float), ended[coords].to_numpy(float)
        to_end, nearest_end = cKDTree(b).query(a, distance_upper_bound=3.0 * radius + 1e-6)  # (bound excluded)
        _, nearest_start = cKDTree(a).query(b)
        for i, (distance, j) in enumerate(zip(to_end, nearest_end)):
            broken += bool(radius < distance <= 3.0 * radius and nearest_start[j] == i)
    if broken < 2:  # one such pair: as likely a missed division beside an unrelated death
        return ""
    return (f"{broken} tracks begin one frame after another ended {radius:g}-{3 * radius:g} px away (beyond the "
            "search radius): if objects move that far between frames, raise the search radius (in a crowded "
            "field a larger radius tells near objects apart less surely), or each is tracked as two")


def one_frame_tracks_note(result: "TrackResult") -> str:
    """A warning when most tracks (half or more, at least 4) are one frame long in a movie of 3 frames or
    more: objects moving further than 3 search radii between frames (:func:`broken_tracks_note` looks no
    further) or found in single frames only; "" otherwise. (Each unlinked object is a one-frame track:
    12 tracks of 2 objects stepping 50 px at a 15 px radius went without a word.)"""
    table = result.table
    if table.empty or "track_id" not in table.columns or int(table["t"].max()) + 1 < 3:
        return ""
    lengths = table.groupby("track_id")["t"].nunique()
    single = int((lengths == 1).sum())
    if single < max(4, 0.5 * len(lengths)):
        return ""
    radius = result.info.get("search_radius_px")
    within = f" ({radius:g} px)" if radius else ""
    return (f"{single} of {len(lengths)} tracks are one frame long: if objects move further than the search "
            f"radius{within} between frames, raise it; else objects are found in single frames only (check the "
            "segmentation)")


def reach_note(result: "TrackResult") -> str:
    """A warning when the motion model links steps shorter than the search radius asked for (btrack's
    largest integration window caps it: about 143 px for the cell model, 66 px for the particle model)."""
    reach, radius = result.info.get("motion_reach_px"), result.info.get("search_radius_px")
    if reach is None or not radius or reach >= 0.98 * radius:
        return ""
    return (f"the motion model links steps up to {reach:g} px, not the search radius {radius:g} px (btrack's "
            "limit): objects moving further are tracked in pieces")


def track_warnings(result: "TrackResult") -> list[str]:
    """The warnings a tracking run's user should read (empty frames, objects left unlinked, tracks that a
    move beyond the search radius may have broken, a search radius beyond the motion model's reach)."""
    broken = broken_tracks_note(result)
    notes = (stage_jumps_note(result), empty_frames_note(result), unlinked_note(result), broken,
             "" if broken else one_frame_tracks_note(result),  # (the same advice once)
             reach_note(result))
    return [note for note in notes if note]


#: GLPK options used for the global optimisation (quiet, 60 s limit)
QUIET_GLPK = {"tm_lim": 60_000, "msg_lev": "GLP_MSG_OFF"}


@dataclass
class TrackResult:
    """Tracks found in a time-lapse.

    Attributes
    ----------
    table : DataFrame, one row per tracked object per frame, columns
        ``track_id, t, y, x, parent_track_id, root_track_id, generation, label``
        then measurements (``area`` in pixels, ``mean_intensity`` in image units,
        ...). ``parent_track_id`` is 0 for roots; ``root_track_id`` of a root is
        its own id; ``generation`` counts divisions from the root (root = 0).
        ``label`` is the object's value in the input label stack (0 when tracks
        came from points without labels). Sorted by ``track_id, t``.
    tracks_data : float array (N, 4), ``(track_id, t, y, x)`` for a napari
        Tracks layer.
    graph : dict {child_track_id: [parent_track_id]} for the Tracks layer.
    relabelled : uint16 array (T, Y, X) where each object carries its track id
        (0 = background or untracked; uint32 above 65535 tracks), or None when tracking points.
    config : JSON-able dict with everything needed to repeat the run.
    labels : the input label stack (T, Y, X) or None; kept so that curation
        edits can rebuild ``relabelled``.
    n_frames : number of frames of the time-lapse.
    """

    table: pd.DataFrame
    tracks_data: np.ndarray
    graph: dict
    relabelled: np.ndarray | None
    config: dict
    labels: np.ndarray | None = None
    n_frames: int = 0
    info: dict = field(default_factory=dict)

    @property
    def track_ids(self) -> np.ndarray:
        """Sorted unique track ids."""
        return np.unique(self.table["track_id"].to_numpy())

    @property
    def n_tracks(self) -> int:
        return int(self.table["track_id"].nunique())

    def napari_tracks(self) -> tuple[np.ndarray, dict]:
        """Return ``(data, kwargs)`` for ``viewer.add_tracks(data, **kwargs)``."""
        props = {c: self.table[c].to_numpy() for c in self.table.columns if c not in ("track_id", "t", "y", "x")}
        return self.tracks_data, {"graph": self.graph, "properties": props, "name": "tracks"}


# ----------------------------------------------------------------------------- configuration
def quiet_btrack() -> None:
    import btrack  # noqa: F401  (its import sets its own logger to DEBUG)

    logging.getLogger("btrack").setLevel(logging.WARNING)


def available_configs() -> list[str]:
    """Names of the configurations shipped with the package (``cell``, ``particle``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_config(config: str | os.PathLike | dict = "cell") -> dict:
    """Return a tracker configuration as a JSON-able dict.

    Parameters
    ----------
    config : ``"cell"`` (random-walk motion model, divisions allowed),
        ``"particle"`` (same motion model, no divisions), a path to a JSON file
        (our format, i.e. btrack's ``TrackerConfig`` fields, or a legacy btrack
        file with a ``TrackerConfig`` key) or a dict of the same.

    Returns
    -------
    dict with at least ``motion_model`` and, when optimisation is possible,
    ``hypothesis_model``; matrices as ``{"matrix": [...], "sigma": s}`` or flat
    lists.
    """
    if isinstance(config, dict):
        cfg = copy.deepcopy(config)
    else:
        name = str(config)
        path = CONFIG_DIR / f"{name}.json" if name in available_configs() else Path(name)
        if not path.is_file():
            raise InputError(f"tracking config {name!r} is neither one of {available_configs()} nor a JSON file")
        try:
            cfg = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise InputError(f"tracking config {path} is not valid JSON: {err}") from None
        if not isinstance(cfg, dict):
            raise InputError(f"tracking config {path} holds a JSON {type(cfg).__name__}, not an object with a "
                             "motion_model (see the shipped cell.json)")
    if "TrackerConfig" in cfg:  # legacy btrack layout
        legacy = cfg["TrackerConfig"]
        cfg = {"motion_model": legacy.get("MotionModel"), "hypothesis_model": legacy.get("HypothesisModel") or None}
        cfg = {k: v for k, v in cfg.items() if v}
    if not isinstance(cfg.get("motion_model"), dict):
        raise InputError("tracking config has no motion_model")
    for key in ("motion_model", "hypothesis_model"):  # btrack's own save_config writes unset fields as null
        if isinstance(cfg.get(key), dict):
            cfg[key] = {k: v for k, v in cfg[key].items() if v is not None}
    for key in RUN_RECORD_KEYS:  # a run's own record, not settings: another run's stage offsets took 50 px off
        cfg.pop(key, None)  # this movie's displacements (or failed: an IndexError past their frames)
    return cfg


#: what a run's ``track_config.json`` records of that run alone (its stage offsets, its curation edits):
#: left out when the file is the configuration of another run
RUN_RECORD_KEYS = ("stage_offsets", "edits")


#: btrack's largest motion-model ``accuracy`` (its integration window, px)
BTRACK_MAX_ACCURACY = 10.0


def _link_probability(distance: float, variance: float, accuracy: float) -> float:
    """btrack's probability of linking a track to an object ``distance`` px off its prediction along one axis
    (random-walk model of prediction ``variance`` px², integration window ``accuracy`` px; the other two axes
    on the prediction): the product over axes of the normal mass within ``accuracy`` of the object."""
    import math

    spread = math.sqrt(2.0 * variance)
    centred = math.erf(accuracy / spread)
    return centred * centred * 0.5 * (math.erf((distance + accuracy) / spread) - math.erf((distance - accuracy) / spread))


#: btrack links an object only where its link probability is about this many times ``prob_not_assign``
#: (measured: with 1x, steps of 0.96-1.0 search radii went unlinked for the particle model at radii 20-45 px
#: and a step of exactly the radius for the cell model at 60 px; with 2x every step up to the radius linked)
LINK_FLOOR_FACTOR = 2.0


def motion_reach(motion: dict) -> float:
    """The largest frame-to-frame step (px) a random-walk motion model links (btrack leaves an object further
    than that unlinked, whatever the search radius: its link probability falls below
    :data:`LINK_FLOOR_FACTOR` x ``prob_not_assign``)."""
    variance = _sigma(motion.get("P")) + _sigma(motion.get("Q"))
    accuracy = float(motion.get("accuracy", 2.0))
    floor = LINK_FLOOR_FACTOR * float(motion.get("prob_not_assign", 0.1))
    low, high = 0.0, 1.0
    while _link_probability(high, variance, accuracy) >= floor and high < 1e6:
        low, high = high, 2.0 * high
    for _ in range(50):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if _link_probability(middle, variance, accuracy) >= floor else (low, middle)
    return low


def _sigma(matrix: Any) -> float:
    """The scale of a ``{"matrix": identity, "sigma": s}`` model matrix (its diagonal's first value otherwise)."""
    if isinstance(matrix, dict):
        return float(matrix.get("sigma", 1.0)) * float(np.ravel(matrix.get("matrix", [1.0]))[0])
    return float(np.ravel(matrix)[0]) if matrix is not None else 0.0


#: the motion model's first-link reach, in search radii (:func:`reach_search_radius`). With the reach taken
#: where a link is :data:`LINK_FLOOR_FACTOR` x as likely as none, 1.01 and 1.02 link every step up to the
#: radius (radii 10-60 px, cell and particle models, steps of 0.90-1.00 radii; 1.0 left steps of exactly the
#: radius unlinked at 30 and 45 px); with the floor at 1x, 1.05 left steps of 0.96-1.0 radii unlinked
REACH_MARGIN = 1.02


def reach_search_radius(cfg: dict, radius: float) -> dict:
    """``cfg`` whose random-walk motion model links steps up to ``radius`` px, where the config asks for it
    (``"motion_reach": "search_radius"``, the shipped configs): its integration window (``accuracy``) and
    prediction spread (``P``) scaled together, so that the link probabilities keep their shape in units of
    the radius (up to btrack's largest ``accuracy``, then the spread alone). Without it a 15 px step was left
    unlinked (the shipped cell model reached 14 px), whatever the search radius, and the pieces were taken
    for divisions. The price of a wider reach: near objects are told apart less surely (a dense field of
    1-2 px steps tracked at 30 px: about twice the AOGM errors of 15 px). Other configs are returned as
    they are."""
    motion = cfg.get("motion_model") or {}
    if cfg.get("motion_reach") != "search_radius" or int(motion.get("states", 0)) != 3 \
            or not isinstance(motion.get("P"), dict):
        return cfg
    reach = motion_reach(motion)
    if not (reach > 0 and abs(reach - radius) > 0.01 * radius):
        return cfg
    scaled = copy.deepcopy(cfg)
    model = scaled["motion_model"]
    factor = radius / reach
    model["accuracy"] = min(float(model.get("accuracy", 2.0)) * factor, BTRACK_MAX_ACCURACY)
    unit = float(np.ravel(model["P"].get("matrix", [1.0]))[0])
    own_variance = _sigma(model["P"])
    scaled_variance = own_variance * factor * factor
    # the smallest spread that reaches the radius with this window (exactly the scaled one, unless the
    # window was clipped): a wider spread reaches further until its probabilities fall below the floor
    # everywhere; past that farthest reach, the farthest
    best, farthest = None, (-1.0, scaled_variance)
    for variance in np.geomspace(0.5 * min(own_variance, scaled_variance), 1e4 * scaled_variance, 600):
        model["P"]["sigma"] = float(variance) / unit
        reached = motion_reach(model)
        if reached >= radius * 0.999:
            best = float(variance)
            break
        farthest = max(farthest, (reached, float(variance)))
    model["P"]["sigma"] = (best if best is not None else farthest[1]) / unit
    return scaled


def check_config(config: str | os.PathLike | dict = "cell") -> dict:
    """:func:`load_config`, then its motion and hypothesis models built as btrack would build them,
    so that a bad file is refused (InputError, one line) before any frame is read."""
    cfg = load_config(config)
    _btrack_models(cfg)
    return cfg


def _btrack_models(cfg: dict) -> tuple:
    """btrack's ``MotionModel`` and ``HypothesisModel`` (or None) of a config; InputError naming the
    first invalid field instead of pydantic's many-line report."""
    quiet_btrack()
    from btrack.models import HypothesisModel, MotionModel

    try:
        motion = MotionModel(**cfg["motion_model"])
        hyp = HypothesisModel(**cfg["hypothesis_model"]) if cfg.get("hypothesis_model") else None
    except Exception as err:  # noqa: BLE001 - pydantic's ValidationError, or numpy's reshape error inside it
        errors = err.errors() if hasattr(err, "errors") else []
        if errors:
            first = errors[0]
            where = ".".join(str(part) for part in first.get("loc", ())) or "config"
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            reason = f"{where}: {first.get('msg', '')}{more}"
        else:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"invalid tracking config: {reason}") from None
    return motion, hyp


def _json_matrix(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.ravel().tolist()
    return value


def _btrack_config(cfg: dict, *, max_search_radius: float, update_method: str, volume: tuple):
    """Build a btrack ``TrackerConfig`` from our dict."""
    from btrack import constants
    from btrack.config import TrackerConfig

    motion, hyp = _btrack_models(cfg)
    options = dict(QUIET_GLPK)
    options.update(cfg.get("optimizer_options") or {})
    return TrackerConfig(
        name=cfg.get("name", "microseg"),
        verbose=False,
        motion_model=motion,
        hypothesis_model=hyp,
        max_search_radius=float(max_search_radius),
        volume=volume,
        update_method=constants.BayesianUpdates[update_method],
        optimizer_options=options,
    )


# ----------------------------------------------------------------------------- stacks on disk
class FrameStack:
    """A (T, Y, X) label stack on disk (dask or zarr array), read one frame at a time.

    ``stack[t]`` is frame ``t`` as checked integer labels in memory (a mask stack's frame as its
    8-connected objects, like :func:`masks_to_labels`); ``stack.to_dask()`` is the whole stack
    as a lazy dask array of those frames. :func:`track` wraps lazy inputs in it so that a
    movie larger than memory is measured, tracked and relabelled frame by frame.
    """

    def __init__(self, source: Any, mask: bool):
        if len(source.shape) != 3:
            raise InputError(f"labels must be a (T, Y, X) stack, got {len(source.shape)} dimensions {tuple(source.shape)}")
        kind = np.dtype(source.dtype).kind
        if kind not in "iubf":  # floats holding whole numbers are accepted frame by frame
            raise InputError(f"labels must be integers, got {source.dtype} (an image? segment it first)")
        self.source = source
        self.mask = bool(mask)
        self.shape = tuple(int(v) for v in source.shape)
        self.ndim = 3
        self.size = int(np.prod(self.shape))
        self.dtype = np.dtype(np.uint32) if self.mask else (np.dtype(np.int64) if kind in "fb" else np.dtype(source.dtype))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, t: Any) -> np.ndarray:
        if not isinstance(t, (int, np.integer)):
            raise TypeError("a FrameStack is read one frame at a time: stack[t] with an integer t")
        frame = np.asarray(self.source[int(t)])
        if self.mask:
            return mask_frame_labels(frame)
        try:  # the in-memory path's checks, on this frame
            return check_labels_stack(frame[None])[0]
        except InputError as err:
            raise InputError(f"{err} (frame {int(t)})") from None

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = np.stack([self[t] for t in range(self.shape[0])])
        return whole if dtype is None else whole.astype(dtype)

    def to_dask(self, frame_fn: Any = None, dtype: Any = None) -> Any:
        """The stack as a lazy dask array, one chunk per frame: ``frame_fn(t, frame)`` applied to
        each checked frame (default: the frame itself)."""
        import dask.array as da

        frame_fn = frame_fn or (lambda t, frame: frame)

        def block(block_id: tuple) -> np.ndarray:
            t = block_id[0]
            return frame_fn(t, self[t])[None]

        return da.map_blocks(block, dtype=np.dtype(dtype or self.dtype), chunks=((1,) * self.shape[0], (self.shape[1],),
                                                                            (self.shape[2],)), meta=np.empty((0, 0, 0)))


def frame_stack(labels_stack: Any) -> Generator[Progress, None, FrameStack]:
    """A lazy (T, Y, X) stack as a :class:`FrameStack`: unless it is boolean, its frames are read
    once (one at a time, with progress events) to tell a mask stack (0 and one other value)
    from labels."""
    if np.dtype(labels_stack.dtype).kind == "b" or len(labels_stack.shape) != 3:
        return FrameStack(labels_stack, np.dtype(labels_stack.dtype).kind == "b")  # (the latter refused there)
    check = MaskCheck()
    n = int(labels_stack.shape[0])
    for t in range(n):
        if not check.add(labels_stack[t]):
            break
        yield Progress(t + 1, n, "checking the labels frame by frame")
    return FrameStack(labels_stack, check.is_mask)


# ----------------------------------------------------------------------------- objects
def _refuse_intensity_image(frame: np.ndarray) -> None:
    """InputError when a (Y, X) "labels" frame is an intensity image: in labels each id is one object
    (one connected region of several px), while each grey level of an image is scattered over the
    frame in specks (thousands of "objects" per frame, which kept the tracker busy for hours)."""
    from ..measure.labels import scattered_ids

    scattered = scattered_ids(frame)
    if scattered:  # grey levels in many places, or specks of < 4 px
        n_ids, regions = scattered
        raise InputError(f"these labels look like an intensity image: their {n_ids} values make {regions} separate "
                         f"specks in the first frame of {frame.size} px (labels have one region per object); give "
                         "labels: segment the image first (microseg segment, the Segmentation dock, or "
                         "'microseg batch track --model' for many movies)")


def objects_from_labels(labels_stack: np.ndarray, image_stack: np.ndarray | None = None,
                        allow_empty: bool = False) -> pd.DataFrame:
    """Measure every labelled object in every frame (:func:`objects_from_labels_iter`, run to its end)."""
    from ..progress import drain

    return drain(objects_from_labels_iter(labels_stack, image_stack, allow_empty))


def objects_from_labels_iter(labels_stack: np.ndarray, image_stack: np.ndarray | None = None,
                             allow_empty: bool = False) -> Generator[Progress, None, pd.DataFrame]:
    """Measure every labelled object in every frame; one :class:`Progress` per frame (a closed generator
    stops there: 0.2 s a frame of 870 objects, where Stop waited for the whole movie).

    Parameters
    ----------
    labels_stack : int array (T, Y, X); 0 is background.
    image_stack : optional array (T, Y, X) of the same shape (any real dtype).
    allow_empty : a stack without any object gives an empty table (else InputError).

    Returns
    -------
    DataFrame with columns ``t, label, y, x, area`` (+ ``mean_intensity`` with
    an image); ``y, x`` are centroids in pixels, ``area`` in pixels.
    """
    from skimage.measure import regionprops_table

    if not isinstance(labels_stack, FrameStack):
        labels_stack = check_labels_stack(labels_stack)
    if image_stack is not None:
        if not is_lazy(image_stack):
            image_stack = np.asarray(image_stack)
        if tuple(image_stack.shape) != tuple(labels_stack.shape):
            raise InputError(f"image stack shape {tuple(image_stack.shape)} does not match labels shape {tuple(labels_stack.shape)}")
        if isinstance(image_stack, np.ndarray) and image_stack.dtype.kind == "f" and not np.all(np.isfinite(image_stack)):
            raise InputError("image stack contains NaN or infinite values")
    props = ["label", "centroid", "area"] + (["intensity_mean"] if image_stack is not None else [])
    frames = []
    n_frames = int(labels_stack.shape[0])
    for t in range(n_frames):
        yield Progress(t, n_frames, f"measuring objects: frame {t + 1}/{n_frames}")
        frame = np.asarray(labels_stack[t])
        if not frame.any():
            continue
        if not frames:
            _refuse_intensity_image(frame)  # before measuring the whole movie
        frame, original_ids = compact_labels(frame)  # huge sparse ids would size regionprops' tables
        intensity = None if image_stack is None else np.asarray(image_stack[t])
        if intensity is not None and not isinstance(image_stack, np.ndarray) and intensity.dtype.kind == "f":
            _finite_float(t, intensity)  # a stack on disk is checked as its frames are read
        if intensity is not None and intensity.dtype.kind == "f" and intensity.dtype.itemsize < 8:
            intensity = intensity.astype(np.float64)  # means in float64, as objects.csv's (float16 means were rounded)
        tab = regionprops_table(frame, intensity_image=intensity, properties=props)
        ids = tab["label"] if original_ids is None else original_ids[tab["label"]]
        df = pd.DataFrame({"t": t, "label": ids, "y": tab["centroid-0"], "x": tab["centroid-1"], "area": tab["area"]})
        if image_stack is not None:
            df["mean_intensity"] = tab["intensity_mean"]
        frames.append(df)
    if not frames:
        if not allow_empty:
            raise InputError("labels stack is empty: no objects to track")
        columns = ["t", "label", "y", "x", "area"] + (["mean_intensity"] if image_stack is not None else [])
        return pd.DataFrame({name: pd.Series(dtype=np.float64 if name in ("y", "x", "mean_intensity") else np.int64)
                             for name in columns})
    out = pd.concat(frames, ignore_index=True)
    out["t"] = out["t"].astype(np.int64)
    out["label"] = out["label"].astype(np.int64)
    out["area"] = out["area"].astype(np.int64)
    return out


def check_labels_stack(labels_stack: np.ndarray) -> np.ndarray:
    """Validate a (T, Y, X) integer label stack and return it as an array."""
    labels_stack = np.asarray(labels_stack)
    if labels_stack.ndim != 3:
        raise InputError(f"labels must be a (T, Y, X) stack, got {labels_stack.ndim} dimensions {labels_stack.shape}")
    if labels_stack.dtype.kind == "b":  # a mask stack: each connected component is an object
        labels_stack = masks_to_labels(labels_stack)[0] if labels_stack.size else labels_stack.astype(np.int32)
    if labels_stack.dtype.kind not in "iu":
        if labels_stack.dtype.kind == "f" and np.all(np.isfinite(labels_stack)) and np.all(labels_stack == np.round(labels_stack)):
            labels_stack = labels_stack.astype(np.int64)
        else:
            raise InputError(f"labels must be integers, got {labels_stack.dtype} (an image? segment it first)")
    if labels_stack.dtype.kind == "i" and labels_stack.size and labels_stack.min() < 0:
        if labels_stack.min() == -1:  # the "not annotated" mark of auto-labels (nuclei outside the size range)
            raise InputError("labels hold -1 ('not annotated', as Auto-label marks nuclei outside its diameter "
                             "range): set those pixels to 0 to track the other objects, or widen the range")
        raise InputError("labels must be >= 0")
    if labels_stack.dtype == np.uint64 and labels_stack.size and int(labels_stack.max()) > np.iinfo(np.int64).max:
        # the tables' label column is int64: such ids wrapped negative and the relabelled masks came out empty
        raise InputError(f"labels hold ids up to {int(labels_stack.max())}, beyond the 64-bit signed integers the "
                         "tables hold (9223372036854775807): renumber the objects (e.g. skimage.segmentation."
                         "relabel_sequential) first")
    return labels_stack


# ----------------------------------------------------------------------------- tracking core
def _choose_update_method(update_method: str, max_per_frame: int) -> str:
    method = update_method.lower()
    if method == "auto":
        return "APPROXIMATE" if max_per_frame > APPROXIMATE_ABOVE else "EXACT"
    if method not in ("exact", "approximate"):
        raise InputError(f"update_method must be 'auto', 'exact' or 'approximate', not {update_method!r}")
    return method.upper()


def track_points_iter(
    points: pd.DataFrame,
    *,
    config: str | os.PathLike | dict = "particle",
    max_search_radius: float | None = None,
    update_method: str = "auto",
    optimize: bool = True,
    volume: tuple | None = None,
    offsets: np.ndarray | None = None,
    n_frames: int | None = None,
    step_size: int = 10,
    tile_objects: int | None = 600,
) -> Generator[Progress, None, TrackResult]:
    """Link points into tracks; a generator yielding :class:`Progress`, returning a :class:`TrackResult`.

    Parameters
    ----------
    points : DataFrame with columns ``t`` (int frame), ``y``, ``x`` (pixels),
        optional ``label`` (int, object value in a label image) and any
        measurement columns (copied to the result table).
    config : see :func:`load_config`.
    max_search_radius : largest displacement between frames considered for a
        link, pixels (default: the config's value, else 20); it also caps the optimiser's link
        distance (the hypothesis model's ``dist_thresh``), given or not (the default left 30 px for the
        cell model, so a run at its own radius linked other moves than one given that radius, as the
        Tracking dock gives it).
    update_method : ``"auto"`` (EXACT up to :data:`APPROXIMATE_ABOVE` objects
        per frame, else APPROXIMATE), ``"exact"`` or ``"approximate"``.
    optimize : run btrack's global optimisation of hypotheses (joins broken
        tracklets, and for configs with ``P_branch``, finds divisions).
    volume : ``((x0, x1), (y0, y1))`` imaging volume in pixels (after shift
        correction); default: bounding box of the points padded by the search
        radius. Tracks predicted outside it are ended.
    offsets : optional (T, 2) float array of per-frame ``(dy, dx)`` stage
        displacements (see :func:`napari_microseg.tracking.shift.estimate_stage_shift`);
        linking uses ``(y - dy, x - dx)`` but the table keeps the original
        coordinates.
    n_frames : number of frames of the time-lapse (default: last ``t`` + 1).
    step_size : frames per tracking step (one progress event each).
    tile_objects : when a frame holds more objects than this, the field is cut
        into overlapping tiles of about this many objects per frame, each
        tracked on its own, and the links are stitched (each link is taken
        from the tile whose core holds its first object; tiles overlap by
        twice the larger of the search radius and the gap-closing distance).
        btrack's per-frame cost grows with the square of the object count, so
        this keeps 5000 objects per frame fast. None disables tiling.
    """
    for col in ("t", "y", "x"):
        if col not in points.columns:
            raise InputError(f"points need a {col!r} column")
    if len(points) == 0:
        raise InputError("no points to track")
    pts = points.reset_index(drop=True)
    t_values = pd.to_numeric(pts["t"], errors="coerce").to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(t_values)) or np.any(t_values != np.round(t_values)):
        raise InputError("frame index t must be a whole number for every point (NaN or fractional t found)")
    t = t_values.astype(np.int64)
    if t.min() < 0:
        raise InputError("frame index t must be >= 0")
    if n_frames is not None and int(n_frames) <= int(t.max()):
        raise InputError(f"n_frames is {n_frames} but points reach frame {int(t.max())}")
    y = pts["y"].to_numpy(dtype=np.float64)
    x = pts["x"].to_numpy(dtype=np.float64)
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(x))):
        raise InputError("point coordinates contain NaN or infinite values")
    n_frames = int(n_frames if n_frames is not None else t.max() + 1)
    yc, xc = y.copy(), x.copy()
    if offsets is not None:
        offsets = np.asarray(offsets, dtype=np.float64)
        if offsets.shape != (n_frames, 2):
            raise InputError(f"offsets must have shape ({n_frames}, 2), got {offsets.shape}")
        yc -= offsets[t, 0]
        xc -= offsets[t, 1]

    cfg = load_config(config)
    radius = float(max_search_radius if max_search_radius is not None else cfg.get("max_search_radius", 20.0))
    if not (np.isfinite(radius) and radius > 0):
        raise InputError(f"max_search_radius must be a number > 0 (pixels), got {radius}")
    # the model's first-link reach a little beyond the radius: after the first link its Kalman spread narrows,
    # and a model reaching the radius exactly left steps of 0.93-0.97 of it unlinked (tracks cut into pieces,
    # without a word); btrack's search radius itself still cuts every link beyond the radius
    cfg = reach_search_radius(cfg, radius * REACH_MARGIN)
    hypotheses = cfg.get("hypothesis_model") or {}
    if float(hypotheses.get("dist_thresh", 0.0)) > radius:
        # the displacement limit holds for the optimiser's links across gaps too
        cfg = {**cfg, "hypothesis_model": {**hypotheses, "dist_thresh": radius}}
    counts = np.bincount(t)
    method = _choose_update_method(update_method, int(counts.max()))
    if volume is None:
        volume = ((float(xc.min() - radius), float(xc.max() + radius)), (float(yc.min() - radius), float(yc.max() + radius)))
    volume3 = (tuple(map(float, volume[0])), tuple(map(float, volume[1])), (-1e5, 1e5))
    do_opt = bool(optimize and cfg.get("hypothesis_model"))

    bt_cfg = _btrack_config(cfg, max_search_radius=radius, update_method=method, volume=volume3)
    use_tiles = bool(tile_objects) and int(counts.max()) > int(tile_objects)
    total = n_frames + 2
    yield Progress(0, total, f"tracking {len(pts)} objects ({method.lower()}{', tiled' if use_tiles else ''})")
    if t.min() == t.max():
        # one frame holds every object: nothing to link (btrack finds "no trackable frames"),
        # so each object is a track of its own
        raw = {"ids": list(range(1, len(t) + 1)), "parents": list(range(1, len(t) + 1)),
               "refs": [np.array([i]) for i in range(len(t))], "n_dummies": 0}
        do_opt = False
    elif use_tiles:
        hyp_dist = float((cfg.get("hypothesis_model") or {}).get("dist_thresh", radius)) if do_opt else 0.0
        raw = yield from _run_tiled(
            xc, yc, t, cfg, radius=radius, method=method, do_opt=do_opt, tile_objects=int(tile_objects),
            margin=2.0 * max(radius, hyp_dist), max_per_frame=int(counts.max()), n_frames=n_frames, total=total,
        )
    else:
        raw = yield from _run_btrack(xc, yc, t, bt_cfg, do_opt=do_opt, step_size=step_size, n_frames=n_frames, total=total)
    yield Progress(total - 1, total, "building tables")
    if not any(r.size for r in raw["refs"]):
        raise InputError("the tracker returned no tracks: check the tracking config (max_lost >= 1, probabilities in (0, 1))")
    table = _table_from_raw(raw, pts)
    hyps = (cfg.get("hypothesis_model") or {}).get("hypotheses", [])
    div_opts = {**DIVISION_DEFAULTS, **(cfg.get("divisions") or {})}
    n_div = 0
    if do_opt and "P_branch" in hyps and div_opts.get("repair", True):
        table, n_div = repair_divisions(
            table, max_distance=float(div_opts["max_distance"]), area_ratio=float(div_opts["area_ratio"]), offsets=offsets
        )
    saved_cfg = copy.deepcopy(cfg)
    saved_cfg["max_search_radius"] = radius
    saved_cfg["update_method"] = method
    saved_cfg["optimize"] = do_opt
    # what was asked ("auto" picks by the objects per frame; a one-frame run cannot optimise): what a rerun
    # from this file repeats, where the two above say what this run did
    saved_cfg["requested"] = {"update_method": str(update_method).lower(), "optimize": bool(optimize)}
    saved_cfg["tile_objects"] = int(tile_objects) if use_tiles else None
    if "P_branch" in hyps:
        saved_cfg["divisions"] = div_opts
    saved_cfg["volume"] = [list(volume3[0]), list(volume3[1])]
    saved_cfg["motion_model"] = {k: _json_matrix(v) for k, v in saved_cfg["motion_model"].items()}
    try:
        import btrack

        saved_cfg["btrack_version"] = btrack.__version__
    except AttributeError:  # pragma: no cover
        pass
    if offsets is not None:
        saved_cfg["stage_offsets"] = np.round(offsets, 3).tolist()
    result = finalize(table, n_frames=n_frames, labels=None, config=saved_cfg)
    result.info["n_dummies_dropped"] = int(raw["n_dummies"])
    linked = np.concatenate([np.asarray(r) for r in raw["refs"]] or [np.zeros(0, int)])
    result.info["n_unlinked"] = int(len(pts) - np.unique(linked).size)  # each a track of its own
    result.info["search_radius_px"] = radius
    if cfg.get("motion_reach") == "search_radius":  # how far the scaled motion model links (btrack caps it)
        result.info["motion_reach_px"] = round(motion_reach(cfg["motion_model"]), 2)
    result.info["n_divisions_repaired"] = int(n_div)
    yield Progress(total, total, f"{result.n_tracks} tracks")
    return result


_OBJECT_FIELDS = ["ID", "x", "y", "z", "t", "dummy", "states", "label", "n_features"]
_OBJECT_FORMATS = ["<i8", "<f8", "<f8", "<f8", "<u4", "?", "<u4", "<i4", "<i4"]


def _object_array(xc: np.ndarray, yc: np.ndarray, t: np.ndarray):
    """A ctypes array of btrack ``PyTrackObject`` filled through a numpy view (fast)."""
    import ctypes

    from btrack import btypes, constants

    cls = btypes.PyTrackObject
    n = len(xc)
    arr = (cls * n)()
    dtype = np.dtype(
        {
            "names": _OBJECT_FIELDS,
            "formats": _OBJECT_FORMATS,
            "offsets": [getattr(cls, f).offset for f in _OBJECT_FIELDS],
            "itemsize": ctypes.sizeof(cls),
        }
    )
    view = np.frombuffer((ctypes.c_char * ctypes.sizeof(arr)).from_address(ctypes.addressof(arr)), dtype=dtype)
    view["ID"] = np.arange(n)
    view["x"], view["y"], view["z"] = xc, yc, 0.0
    view["t"] = t
    view["dummy"] = False
    view["states"] = len(constants.States)
    view["label"] = constants.States.NULL.value
    view["n_features"] = 0
    return arr


def _run_btrack(xc, yc, t, bt_cfg, *, do_opt: bool, step_size: int, n_frames: int, total: int, report: bool = True):
    """Run btrack on points; generator of Progress returning raw tracks (refs index the given arrays)."""
    quiet_btrack()
    from btrack import BayesianTracker

    objects = _object_array(xc, yc, t)
    with BayesianTracker(verbose=False) as tracker:
        tracker.configure(bt_cfg)
        lib, engine = tracker._lib, tracker._engine
        for i in range(len(objects)):
            lib.append(engine, objects[i])
        tracker._frame_range = [int(t.min()), int(t.max())]
        lib.set_update_features(engine, sum(int(f.value) for f in tracker.configuration.tracking_updates))
        stats = tracker.step()
        done = 0
        while stats is not None and stats.tracker_active:
            stats = tracker.step(step_size)
            done = min(n_frames, done + step_size)
            if report:
                yield Progress(done, total, "linking frames")
        # btrack 0.7's engine reports itself complete before it has linked the last frame's
        # objects; they are added on the next call (without it they vanish whenever the
        # last step ends on the last frame: 3, 13, 23, ... frames with steps of 10)
        tracker.step(1)
        if do_opt:
            if report:
                yield Progress(n_frames, total, "optimising hypotheses")
            tracker.optimise(options=dict(tracker.configuration.optimizer_options))
        raw = _read_tracks(tracker)
    return raw


def _run_tiled(xc, yc, t, cfg, *, radius, method, do_opt, tile_objects, margin, max_per_frame, n_frames, total):
    """Track overlapping spatial tiles separately and stitch their links (see ``tile_objects``)."""
    n_tiles = int(np.ceil(max_per_frame / tile_objects))
    x0, x1, y0, y1 = xc.min(), xc.max() + 1e-6, yc.min(), yc.max() + 1e-6
    aspect = (x1 - x0) / max(y1 - y0, 1e-6)
    nx = max(1, int(round(np.sqrt(n_tiles * aspect))))
    ny = max(1, int(np.ceil(n_tiles / nx)))
    xe, ye = np.linspace(x0, x1, nx + 1), np.linspace(y0, y1, ny + 1)
    succ: dict[int, list[tuple[float, int]]] = {}
    n_dummies = 0
    k = 0
    for iy in range(ny):
        for ix in range(nx):
            k += 1
            core = (xc >= xe[ix]) & (xc < xe[ix + 1]) & (yc >= ye[iy]) & (yc < ye[iy + 1])
            if not core.any():
                continue
            lo_x, hi_x, lo_y, hi_y = xe[ix] - margin, xe[ix + 1] + margin, ye[iy] - margin, ye[iy + 1] + margin
            sel = np.flatnonzero((xc >= lo_x) & (xc < hi_x) & (yc >= lo_y) & (yc < hi_y))
            vol = ((lo_x - radius, hi_x + radius), (lo_y - radius, hi_y + radius), (-1e5, 1e5))
            bt_cfg = _btrack_config(cfg, max_search_radius=radius, update_method=method, volume=vol)
            raw = yield from _run_btrack(xc[sel], yc[sel], t[sel], bt_cfg, do_opt=do_opt, step_size=n_frames + 1, n_frames=n_frames, total=total, report=False)
            n_dummies += raw["n_dummies"]
            last = {}
            for tid, r in zip(raw["ids"], raw["refs"]):
                if r.size:
                    last[tid] = int(sel[r[-1]])
            for tid, par, r in zip(raw["ids"], raw["parents"], raw["refs"]):
                if r.size == 0:
                    continue
                g = sel[r]
                links = list(zip(g[:-1].tolist(), g[1:].tolist()))
                if par != tid and par in last:
                    links.append((last[par], int(g[0])))
                for a, b in links:
                    if core[a]:
                        d = float(np.hypot(xc[a] - xc[b], yc[a] - yc[b]))
                        succ.setdefault(a, []).append((d, b))
            yield Progress(int(n_frames * k / (nx * ny)), total, f"tile {k}/{nx * ny}")
    return _raw_from_links(succ, len(xc), n_dummies)


def _raw_from_links(succ: dict, n_objects: int, n_dummies: int) -> dict:
    """Turn object-to-object links into raw tracks (ids, parents, refs); a target
    claimed by several sources keeps the closest one."""
    pred: dict[int, tuple[float, int]] = {}
    for a, outs in succ.items():
        for d, b in outs:
            if b not in pred or d < pred[b][0]:
                pred[b] = (d, a)
    children: dict[int, list[int]] = {}
    for b, (_, a) in pred.items():
        children.setdefault(a, []).append(b)
    ids, parents, refs = [], [], []
    track_of = np.zeros(n_objects, dtype=np.int64)
    next_id = 1
    # roots first; daughters are queued when their mother's track is built
    queue = [i for i in range(n_objects - 1, -1, -1) if i not in pred]
    while queue:
        head = queue.pop()
        chain = [head]
        cur = head
        while len(children.get(cur, [])) == 1:
            cur = children[cur][0]
            chain.append(cur)
        tid = next_id
        next_id += 1
        track_of[chain] = tid
        parent = int(track_of[pred[head][1]]) if head in pred else tid
        ids.append(tid)
        parents.append(parent)
        refs.append(np.asarray(chain, dtype=np.int64))
        queue.extend(children.get(cur, []) if len(children.get(cur, [])) > 1 else [])
    return {"ids": ids, "parents": parents, "refs": refs, "n_dummies": n_dummies}


def _read_tracks(tracker) -> dict:
    """Pull tracks out of the btrack engine without building btrack Tracklets (fast)."""
    lib, engine = tracker._lib, tracker._engine
    n = lib.size(engine)
    ids, parents, refs = [], [], []
    n_dummies = 0
    for i in range(n):
        length = lib.track_length(engine, i)
        r = np.zeros((length,), dtype=np.int32)
        lib.get_refs(engine, r, i)
        ids.append(int(lib.get_ID(engine, i)))
        parents.append(int(lib.get_parent(engine, i)))
        keep = r[r >= 0]
        n_dummies += int(length - keep.size)
        refs.append(keep)
    return {"ids": ids, "parents": parents, "refs": refs, "n_dummies": n_dummies}


def _table_from_raw(raw: dict, pts: pd.DataFrame) -> pd.DataFrame:
    ids, parents, refs = raw["ids"], raw["parents"], raw["refs"]
    parent_of = {i: p for i, p in zip(ids, parents) if p != i and p in set(ids)}
    empty = {i for i, r in zip(ids, refs) if r.size == 0}

    def live_parent(i: int) -> int:
        p = parent_of.get(i, 0)
        while p in empty:  # a parent made only of dummies: skip it
            p = parent_of.get(p, 0)
        return p

    rows_idx, rows_tid, rows_parent = [], [], []
    for i, r in zip(ids, refs):
        if r.size == 0:
            continue
        rows_idx.append(r)
        rows_tid.append(np.full(r.size, i, dtype=np.int64))
        rows_parent.append(np.full(r.size, live_parent(i), dtype=np.int64))
    # objects the tracker left in no track (btrack drops some it cannot link within the search radius):
    # each becomes a track of its own, so that every object of the labels is in the table and the counts
    covered = np.zeros(len(pts), bool)
    for r in rows_idx:
        covered[r] = True
    left_out = np.flatnonzero(~covered)
    if left_out.size:
        first_free = max([int(i) for i in ids] + [0]) + 1
        rows_idx.append(left_out)
        rows_tid.append(np.arange(first_free, first_free + left_out.size, dtype=np.int64))
        rows_parent.append(np.zeros(left_out.size, dtype=np.int64))
    idx = np.concatenate(rows_idx)
    table = pts.iloc[idx].reset_index(drop=True).copy()
    table["track_id"] = np.concatenate(rows_tid)
    table["parent_track_id"] = np.concatenate(rows_parent)
    if "label" not in table.columns:
        table["label"] = 0
    return renumber_tracks(table)


#: division repair defaults (config key ``"divisions"``): a new track that
#: starts within ``max_distance`` pixels of where a running track was one frame
#: before, on the opposite side of it, while both objects are smaller than
#: ``area_ratio`` x the mother's area (when areas are known), is taken as the
#: second daughter of a division that the frame-by-frame linker hid by
#: continuing the mother into the first daughter (case A); a track that ends
#: with two such new tracks next to it one frame later becomes their mother
#: (case B). ``max_distance`` should be about a nucleus diameter (12 px was
#: best on simulated nuclei of 8-20 px: division precision 0.95-1.0, recall 0.9).
DIVISION_DEFAULTS = {"repair": True, "max_distance": 12.0, "area_ratio": 1.0}


#: a mother's mean step over its last 3 frames (px) above which the daughters are also measured from where it
#: was going (below it, a random walk's steps say little of the next one: taken from one step, that test added
#: false divisions, 456 -> 515 among 3000 walkers breaking 5 % a frame)
MOVING_STEP_PX = 2.0


def _last_steps(positions: dict, t_last: int, tracks: pd.DataFrame, frames: int = 3) -> np.ndarray:
    """(N, 2) each track's mean step per frame (y, x px, stage offsets taken off) over its last ``frames``
    frames up to its position ``ycorr__p`` / ``xcorr__p`` in ``tracks`` at frame ``t_last`` (``positions``:
    frame -> rows indexed by ``track_id``, columns ``ycorr_, xcorr_``); 0 for a track not in an earlier frame.
    A mean over frames: one step of a random walk says little of the next one."""
    steps = np.zeros((len(tracks), 2))
    if not len(tracks):
        return steps
    ids = tracks["track_id"].to_numpy()
    now = np.c_[tracks["ycorr__p"].to_numpy(float), tracks["xcorr__p"].to_numpy(float)]
    found = np.zeros(len(tracks), bool)
    for back in range(frames, 0, -1):  # the earliest of the last ``frames`` frames each track was in
        earlier = positions.get(t_last - back)
        if earlier is None:
            continue
        known = ~found & np.isin(ids, earlier.index.to_numpy())
        if known.any():
            steps[known] = (now[known] - earlier.loc[ids[known]].to_numpy(float)) / back
            found |= known
    return steps


def repair_divisions(
    table: pd.DataFrame, *, max_distance: float = 12.0, area_ratio: float = 1.0, offsets: np.ndarray | None = None
) -> tuple[pd.DataFrame, int]:
    """Turn "mother continues into one daughter + a new track appears next to it"
    into a division: the mother ends, both daughters get it as parent.

    Parameters
    ----------
    table : tracks table with ``track_id, t, y, x, parent_track_id`` (and
        ``area`` to use the size test).
    max_distance : largest distance in pixels from the mother's last position
        to each daughter's first position.
    area_ratio : each daughter's area must be below ``area_ratio`` x the
        mother's (skipped when there is no ``area`` column).
    offsets : optional (T, 2) stage offsets subtracted from positions.

    Returns
    -------
    (new table, number of divisions created)
    """
    if table.empty:
        return table, 0
    tab = table.copy()
    ys = tab["y"].to_numpy(dtype=float).copy()
    xs = tab["x"].to_numpy(dtype=float).copy()
    if offsets is not None:
        ys -= offsets[tab["t"].to_numpy(), 0]
        xs -= offsets[tab["t"].to_numpy(), 1]
    tab["ycorr_"], tab["xcorr_"] = ys, xs
    has_area = "area" in tab.columns
    first = tab.sort_values("t").groupby("track_id").head(1)
    starts = first[(first["parent_track_id"] == 0) & (first["t"] > tab["t"].min())]
    by_t = {int(t): g for t, g in tab.groupby("t")}
    positions = {t: g.set_index("track_id")[["ycorr_", "xcorr_"]] for t, g in by_t.items()}  # (once per frame)
    next_id = int(tab["track_id"].max()) + 1
    used: set[tuple[int, int]] = set()
    plans = []
    for row in starts.itertuples(index=False):
        t = int(row.t)
        prev, cur = by_t.get(t - 1), by_t.get(t)
        if prev is None or cur is None:
            continue
        both = prev.merge(cur, on="track_id", suffixes=("_p", "_c"))
        both = both[both["track_id"] != row.track_id]
        if both.empty:
            continue
        vq = np.c_[row.ycorr_ - both["ycorr__p"], row.xcorr_ - both["xcorr__p"]]
        vc = np.c_[both["ycorr__c"] - both["ycorr__p"], both["xcorr__c"] - both["xcorr__p"]]
        dq, dc = np.hypot(*vq.T), np.hypot(*vc.T)
        # the daughters part on either side of the mother's last position, or, for a mother that moves (its mean
        # step over 3 frames above MOVING_STEP_PX), of where it was going (from its last position alone, a cell
        # moving 6 px a frame had both daughters ahead of it: no division); a daughter on the very spot counts
        step = _last_steps(positions, t - 1, both)
        aq, ac = vq - step, vc - step
        moving = np.hypot(*step.T) > MOVING_STEP_PX
        parting = (((vq * vc).sum(1) / np.maximum(dq * dc, 1e-9) <= 0.0)
                   | (moving & ((aq * ac).sum(1) / np.maximum(np.hypot(*aq.T) * np.hypot(*ac.T), 1e-9) <= 0.0)))
        ok = (dq <= max_distance) & (dc <= max_distance) & parting
        if has_area:
            mother_area = both["area_p"].to_numpy(dtype=float)
            ok &= (float(row.area) < area_ratio * mother_area) & (both["area_c"].to_numpy(dtype=float) < area_ratio * mother_area)
        if not ok.any():
            continue
        k = int(np.argmin(np.where(ok, dq, np.inf)))
        mother = int(both["track_id"].iloc[k])
        if (mother, t) in used:
            continue
        used.add((mother, t))
        plans.append((mother, t, int(row.track_id)))
    # case B: the mother track ended and two new root tracks start next to it one frame later
    taken = {p[2] for p in plans}
    free = starts[~starts["track_id"].isin(list(taken))]
    last = tab.sort_values("t").groupby("track_id").tail(1)
    has_children = set(tab.loc[tab["parent_track_id"] != 0, "parent_track_id"].tolist())
    enders = last[~last["track_id"].isin(list(has_children))]
    pairs = []
    for m in enders.itertuples(index=False):
        cand = free[free["t"] == m.t + 1]
        if len(cand) < 2:
            continue
        v = np.c_[cand["ycorr_"] - m.ycorr_, cand["xcorr_"] - m.xcorr_]
        d = np.hypot(*v.T)
        ok = d <= max_distance
        if has_area:
            ok &= cand["area"].to_numpy(dtype=float) < area_ratio * float(m.area)
        idx = np.flatnonzero(ok)
        if idx.size < 2:
            continue
        idx = idx[np.argsort(d[idx])][:2]
        # (as above: the two parting on either side of where the mother was going)
        mother_now = pd.DataFrame({"track_id": [m.track_id], "ycorr__p": [m.ycorr_], "xcorr__p": [m.xcorr_]})
        step = _last_steps(positions, int(m.t), mother_now)[0]
        a0, a1 = v[idx[0]] - step, v[idx[1]] - step
        cos = float(v[idx[0]] @ v[idx[1]] / max(d[idx[0]] * d[idx[1]], 1e-9))
        if np.hypot(*step) > MOVING_STEP_PX:
            cos = min(cos, float(a0 @ a1 / max(float(np.hypot(*a0) * np.hypot(*a1)), 1e-9)))
        if cos <= 0.0:
            pairs.append((float(d[idx].sum()), int(m.track_id), [int(cand["track_id"].iloc[i]) for i in idx]))
    for _, mother, kids in sorted(pairs):
        if any(k in taken for k in kids):
            continue
        taken.update(kids)
        plans.append((mother, None, kids))
    if not plans:
        return table, 0
    out = table.copy()
    # case B first, then case A from the latest split backwards, so that a mother
    # that divides twice hands its later daughters on to its first continuation
    plans.sort(key=lambda p: -np.inf if p[1] is None else -p[1])
    for mother, t, second in plans:
        if t is None:  # case B
            out.loc[out["track_id"].isin(second), "parent_track_id"] = mother
            continue
        d1 = next_id
        next_id += 1
        sel = (out["track_id"] == mother) & (out["t"] >= t)
        out.loc[sel, "track_id"] = d1
        out.loc[out["parent_track_id"] == mother, "parent_track_id"] = d1  # mother's old children now hang on d1
        out.loc[out["track_id"] == d1, "parent_track_id"] = mother
        out.loc[out["track_id"] == second, "parent_track_id"] = mother
    return renumber_tracks(out), len(plans)


# ----------------------------------------------------------------------------- tables -> result
def renumber_tracks(table: pd.DataFrame) -> pd.DataFrame:
    """Renumber track ids 1..N ordered by (first frame, first y, first x); parents follow."""
    first = table.sort_values(["t", "y", "x"]).groupby("track_id", sort=False).head(1)
    order = first.sort_values(["t", "y", "x"], kind="stable")["track_id"].to_numpy()
    mapping = {int(old): new for new, old in enumerate(order, start=1)}
    out = table.copy()
    out["track_id"] = out["track_id"].map(mapping).astype(np.int64)
    out["parent_track_id"] = out["parent_track_id"].map(lambda p: mapping.get(int(p), 0)).astype(np.int64)
    return out


def _lineage_columns(table: pd.DataFrame) -> pd.DataFrame:
    """Recompute ``root_track_id`` and ``generation`` from ``parent_track_id``."""
    parent = table.groupby("track_id")["parent_track_id"].first().to_dict()
    root, gen = {}, {}

    def resolve(tid: int) -> tuple[int, int]:
        chain = []
        cur = tid
        while cur not in root:
            p = parent.get(cur, 0)
            if p == 0 or p not in parent or p in chain or p == cur:
                root[cur], gen[cur] = cur, 0
                break
            chain.append(cur)
            cur = p
        for c in reversed(chain):
            p = parent[c]
            root[c], gen[c] = root[p], gen[p] + 1
        return root[tid], gen[tid]

    for tid in parent:
        resolve(tid)
    out = table.copy()
    out["root_track_id"] = out["track_id"].map(root).astype(np.int64)
    out["generation"] = out["track_id"].map(gen).astype(np.int64)
    return out


def finalize(
    table: pd.DataFrame,
    *,
    n_frames: int | None = None,
    labels: np.ndarray | None = None,
    config: dict | None = None,
    info: dict | None = None,
    previous: tuple[np.ndarray, Any] | None = None,
) -> TrackResult:
    """Build a consistent :class:`TrackResult` from a table with at least
    ``track_id, t, y, x, parent_track_id`` (``label`` needed for ``relabelled``).

    ``previous``: ``(relabelled, frames)``, the relabelled stack of an earlier table over
    the same ``labels`` that differs from this one only at ``frames``: only those
    frames are rebuilt (:func:`relabel_frames`), not the whole stack.

    Parent ids that are not present, or whose track does not end before the
    child starts, are set to 0. ``root_track_id`` and ``generation`` are
    recomputed; columns are put in contract order.
    """
    table = table.copy()
    if "label" not in table.columns:
        table["label"] = 0
    if len(table):
        spans = table.groupby("track_id")["t"].agg(["min", "max"])
        tmin, tmax = spans["min"].to_dict(), spans["max"].to_dict()
        first_t = table["track_id"].map(tmin)
        par = table["parent_track_id"].fillna(0).astype(np.int64)
        valid = par.map(lambda p: p in tmax) & (par.map(lambda p: tmax.get(p, np.inf)) < first_t)
        table["parent_track_id"] = np.where(valid, par, 0).astype(np.int64)
    else:
        table["parent_track_id"] = np.zeros(0, np.int64)
    table = _lineage_columns(table) if len(table) else table.assign(root_track_id=np.zeros(0, np.int64), generation=np.zeros(0, np.int64))
    extra = [c for c in table.columns if c not in TRACK_COLUMNS]
    table = table[TRACK_COLUMNS + extra].sort_values(["track_id", "t"], kind="stable").reset_index(drop=True)
    for c in ("track_id", "t", "parent_track_id", "root_track_id", "generation", "label"):
        table[c] = table[c].astype(np.int64)
    tracks_data = table[["track_id", "t", "y", "x"]].to_numpy(dtype=np.float64)
    parents = table.groupby("track_id")["parent_track_id"].first()
    graph = {int(c): [int(p)] for c, p in parents.items() if p != 0}
    if n_frames is None:
        n_frames = int(table["t"].max()) + 1 if len(table) else 0
    if labels is None:
        relabelled = None
    elif previous is not None and previous[0] is not None:
        relabelled = relabel_frames(previous[0], labels, table, previous[1])
    else:
        relabelled = relabel_stack(labels, table)
    return TrackResult(
        table=table,
        tracks_data=tracks_data,
        graph=graph,
        relabelled=relabelled,
        config=config or {},
        labels=labels,
        n_frames=int(n_frames),
        info=dict(info or {}),
    )


def track_id_dtype(table: pd.DataFrame) -> np.dtype:
    """The smallest unsigned dtype holding ``table``'s track ids: uint16, or uint32 above 65535
    (a long time-lapse's relabelled stack is as large as its labels, not twice that)."""
    from ..measure.labels import label_dtype

    return label_dtype(int(table["track_id"].max()) if len(table) else 0)


def relabel_stack(labels_stack: np.ndarray, table: pd.DataFrame) -> np.ndarray:
    """Return a copy of ``labels_stack`` (T, Y, X) where each tracked object carries
    its ``track_id`` (:func:`track_id_dtype`); objects absent from ``table`` become 0.
    A :class:`FrameStack` (a stack on disk) gives a lazy dask array, built frame by frame."""
    if isinstance(labels_stack, FrameStack):  # on disk: a lazy stack, relabelled frame by frame when read
        dtype = track_id_dtype(table)
        rows = {int(t): grp for t, grp in table.groupby("t")}
        empty = table.iloc[:0]
        return labels_stack.to_dask(lambda t, frame: _relabel_frame(frame, rows.get(t, empty), dtype), dtype)
    labels_stack = np.asarray(labels_stack)
    out = np.zeros(labels_stack.shape, dtype=track_id_dtype(table))
    for t, grp in table.groupby("t"):
        t = int(t)
        if 0 <= t < labels_stack.shape[0]:
            out[t] = _relabel_frame(labels_stack[t], grp, out.dtype)
    return out


def relabel_frames(relabelled: np.ndarray, labels_stack: np.ndarray, table: pd.DataFrame, frames: Any) -> np.ndarray:
    """``relabel_stack(labels_stack, table)`` rebuilt only at ``frames`` (frame indices): a copy of
    ``relabelled`` (T, Y, X), the stack of an earlier table that differs from ``table`` only in
    those frames (a curation edit touches the frames of one or two tracks, not the whole movie)."""
    dtype = np.promote_types(np.asarray(relabelled).dtype, track_id_dtype(table))
    out = np.array(relabelled, dtype=dtype, copy=True)
    labels_stack = np.asarray(labels_stack)
    for t in sorted({int(f) for f in frames}):
        if 0 <= t < labels_stack.shape[0]:
            out[t] = _relabel_frame(labels_stack[t], table[table["t"] == t], dtype)
    return out


def _relabel_frame(frame: np.ndarray, rows: pd.DataFrame, dtype: Any = np.uint32) -> np.ndarray:
    """One frame (Y, X) of labels with each object in ``rows`` (``label``, ``track_id``) carrying its
    track id (``dtype``); other objects 0."""
    frame = np.asarray(frame)
    lab = rows["label"].to_numpy(dtype=np.int64)
    lab_ok = lab > 0
    if not lab_ok.any():
        return np.zeros(frame.shape, dtype)
    top = int(max(frame.max(), lab.max()))
    if top <= sparse_limit(frame):
        lut = np.zeros(top + 1, dtype=dtype)
        lut[lab[lab_ok]] = rows["track_id"].to_numpy()[lab_ok]
        return lut[frame]
    # huge sparse ids: look them up instead of sizing a table by the largest
    order = np.argsort(lab[lab_ok])
    ids, track_ids = lab[lab_ok][order], rows["track_id"].to_numpy()[lab_ok][order]
    if frame.dtype == np.uint64:  # (checked below the int64 maximum) compared as int64: uint64 against int64
        frame = frame.astype(np.int64)  # went through float64, where ids above 2**53 a step apart are one
    at = np.minimum(np.searchsorted(ids, frame), len(ids) - 1)
    return np.where(ids[at] == frame, track_ids[at], 0).astype(dtype)


# ----------------------------------------------------------------------------- public entry points
def track_points(points: pd.DataFrame, **kwargs) -> TrackResult:
    """Plain-function form of :func:`track_points_iter` (no progress events)."""
    gen = track_points_iter(points, **kwargs)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def track(
    labels_stack: np.ndarray,
    image_stack: np.ndarray | None = None,
    *,
    config: str | os.PathLike | dict = "cell",
    max_search_radius: float | None = None,
    update_method: str = "auto",
    optimize: bool = True,
    stage_shift: str | None = None,
    max_shift: float | None = None,
) -> Generator[Progress, None, TrackResult]:
    """Track labelled objects through a time-lapse; a generator of :class:`Progress`
    events that returns a :class:`TrackResult`.

    Parameters
    ----------
    labels_stack : int array (T, Y, X), one label per object per frame.
    image_stack : optional array (T, Y, X); adds ``mean_intensity`` and is used
        for ``stage_shift="images"``.
    config : ``"cell"`` (divisions), ``"particle"`` (no divisions), a JSON
        path or a dict (see :func:`load_config`).
    max_search_radius : pixels; default from the config (15 for cell, 10 for particle); the shipped
        configs' motion models link steps up to it (see :func:`reach_search_radius`).
    update_method : ``"auto"``, ``"exact"`` or ``"approximate"``.
    optimize : global optimisation of appear/disappear/link/divide hypotheses.
    stage_shift : None (no correction), ``"images"`` (phase correlation of the
        images) or ``"objects"`` (phase correlation of the object masks).
    max_shift : largest stage jump accepted between two frames, pixels
        (default: a quarter of the smaller image side).

    The imaging volume is the image shape, widened by the stage offsets. A mask stack (bool,
    0/1, 0/255 ...) is tracked as its connected objects (``result.info["mask_converted"]``).

    Stacks on disk (dask or zarr arrays: Zarr files, big TIFFs read lazily) are never read
    whole: labels and images are read frame by frame (:class:`FrameStack`), and
    ``result.relabelled`` is then a lazy dask array (write it with
    :func:`napari_microseg.io.images.write_tiff`, which streams it frame by frame).
    """
    if is_lazy(labels_stack):
        labels_stack = yield from frame_stack(labels_stack)
        was_mask = labels_stack.mask
    else:
        labels_stack, was_mask = masks_to_labels(np.asarray(labels_stack))
        labels_stack = check_labels_stack(labels_stack)
    n_frames, height, width = labels_stack.shape
    offsets = None
    rejected_jumps: list = []  # (frame, px) of stage jumps measured longer than max_shift: not applied, said
    points = yield from objects_from_labels_iter(labels_stack, image_stack, allow_empty=True)
    if points.empty:  # a movie without objects (a well where nothing grew): no tracks, zero counts, not a failure
        saved = {**load_config(config), "image_shape": [int(n_frames), int(height), int(width)],
                 "stage_shift": stage_shift, "note": "no objects in any frame: nothing to track"}
        if max_search_radius is not None:
            saved["max_search_radius"] = float(max_search_radius)
        empty = points.assign(**{name: pd.Series(dtype=np.int64) for name in TRACK_COLUMNS if name not in points})
        return finalize(empty, n_frames=n_frames, labels=labels_stack, config=saved,
                        info={"mask_converted": False, "no_objects": True})
    if stage_shift:
        from .shift import estimate_stage_shift

        mode = str(stage_shift).lower()
        if mode == "images":
            if image_stack is None:
                raise InputError("stage_shift='images' needs an image stack")
            source = _PerFrame(image_stack, _finite_float) if is_lazy(image_stack) else np.asarray(image_stack, dtype=np.float32)
        elif mode == "objects":  # per frame: no float copy of the whole movie
            source = _PerFrame(labels_stack, lambda t, frame: (frame > 0).astype(np.float32))
        else:
            raise InputError(f"stage_shift must be None, 'images' or 'objects', not {stage_shift!r}")
        yield Progress(0, 1, "estimating stage shifts")
        offsets = estimate_stage_shift(source, max_shift=max_shift, rejected=rejected_jumps)
    oy = offsets[:, 0] if offsets is not None else np.zeros(1)
    ox = offsets[:, 1] if offsets is not None else np.zeros(1)
    volume = ((float(-ox.max()), float(width - ox.min())), (float(-oy.max()), float(height - oy.min())))
    result = yield from track_points_iter(
        points,
        config=config,
        max_search_radius=max_search_radius,
        update_method=update_method,
        optimize=optimize,
        volume=volume,
        offsets=offsets,
        n_frames=n_frames,
    )
    result.config["stage_shift"] = stage_shift
    if stage_shift and max_shift is not None:
        result.config["max_stage_shift"] = float(max_shift)
    result.config["image_shape"] = [int(n_frames), int(height), int(width)]
    info = {**result.info, "mask_converted": was_mask}
    if rejected_jumps:
        info["stage_jumps_rejected"] = rejected_jumps
        info["max_stage_shift"] = float(max_shift) if max_shift is not None else min(height, width) / 4.0
    return finalize(result.table, n_frames=n_frames, labels=labels_stack, config=result.config, info=info)


class _PerFrame:
    """A (T, Y, X) stack read one frame at a time through ``fn(t, frame)`` (stage-shift sources)."""

    def __init__(self, stack: Any, fn: Any):
        self.stack, self.fn = stack, fn
        self.shape = tuple(stack.shape)
        self.ndim = 3

    def __getitem__(self, t: int) -> np.ndarray:
        return self.fn(int(t), np.asarray(self.stack[t]))


def _finite_float(t: int, frame: np.ndarray) -> np.ndarray:
    """An image frame as float32; an InputError naming the frame for NaN / infinity (as the
    in-memory path refuses the whole stack)."""
    frame = frame.astype(np.float32)
    if not np.all(np.isfinite(frame)):
        raise InputError(f"image stack contains NaN or infinite values (frame {t})")
    return frame


def run_tracking(labels_stack: np.ndarray, image_stack: np.ndarray | None = None, **kwargs) -> TrackResult:
    """Plain-function form of :func:`track` (no progress events); same arguments."""
    gen = track(labels_stack, image_stack, **kwargs)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
