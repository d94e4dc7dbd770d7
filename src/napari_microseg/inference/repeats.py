"""The CCD repeat rule ("hot pixels repeat") over any number of exposures, in bounded memory.

:func:`segment_image` with ``postprocess_options={"hot_repeats": True}`` holds the
class maps and per-pixel probabilities of a whole (T, Y, X) stack (about 7 bytes
per pixel of all exposures): a few hundred 4096 x 4096 frames fill a workstation.
:func:`segment_exposures` gives the same labels and tables in two passes over the
exposures, one at a time:

1. each exposure is segmented (network, shape rules) and what the rule and the
   measuring need later is written to a scratch folder: the pixels that are not
   background (flat index, class, probability of that class; hot-pixel and
   cluster pixels also both of those classes' probabilities), 9 bytes per such
   pixel (21 for hot pixels and clusters), so a frame of charge deposits on a
   quiet sensor costs a small fraction of a byte per pixel; the count of frames
   in which each pixel held charge (hot pixel or cluster) is summed in one
   (Y, X) array;
2. each exposure's class map is rebuilt, the rule applied with the persistent
   pixels of all exposures, the objects measured on the exposure as read again,
   and its labels handed to ``write_labels``.

Memory holds one exposure, its float32 probabilities (4 bytes per pixel and
class: also above 4096 x 4096, where :func:`segment_image` keeps float16 ones, so
class choices there can differ from it at near-ties) and the (Y, X) count; the
scratch folder is removed at the end, on an error and when the generator is
closed (not when the process is killed). A scratch folder the caller names
(``scratch_dir``) is left for the caller to remove once its outputs are written;
after an error or a stop, a rerun with the same ``resume_keys`` takes the
exposures already segmented from it and goes on.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generator, Sequence

import numpy as np
import pandas as pd

from ..errors import InputError
from ..io.atomic import atomic_path
from ..progress import Progress
from . import postprocess
from .segment import (_class_probability, _hot_cluster_probabilities, _measure_frame, _resolve_loaded, _tables,
                      segment_image)

#: what a first-pass record holds for the second pass (besides its key and settings)
RECORD_FIELDS = ("shape", "where", "classes", "confidence", "charged", "p_hot", "p_cluster")
#: progress units per exposure: the first pass (network) and the second (read again, rule, measure, write)
FIRST_PASS_UNITS, SECOND_PASS_UNITS = 80, 20


@dataclass
class RepeatsResult:
    """Result of :func:`segment_exposures`.

    Attributes
    ----------
    objects : objects table of all exposures (``t`` = the exposure's index), as :func:`segment_image` makes it
        for a class model after the rule (``class_id``, ``class``, ``probability``).
    counts : per exposure ``t, count, count_<class>..., fraction_<class>...``.
    class_names : the model's class names (class map value i is ``class_names[i]``).
    clusters : charge clusters per exposure (:func:`autolabel.ccd.clusters_per_frame`): ``t, label, y, x,
        size_px, charge_adc, peak_adc, charge_core_adc, at_edge``.
    defects : bool (Y, X): the persistent pixels, those that held charge (hot pixel or cluster) in at least
        :func:`postprocess.persistent_frames_needed` exposures: the sensor's defects, to mask in an analysis.
    settings : what :func:`segment_image` reports for the first exposure, with ``hot_repeats=True``,
        ``exposures`` (their count), ``exposures_resumed`` (taken from an earlier run's scratch folder),
        ``scratch_bytes`` (the largest the scratch folder grew, bytes) and
        :func:`postprocess.repeat_rule_summary`'s ``persistent_pixels``, ``persistent_frames_needed``,
        ``chance_defect_pixels`` and ``repeat_warning`` (None, or why the defects may be wrong).
    """

    objects: pd.DataFrame
    counts: pd.DataFrame
    clusters: pd.DataFrame
    class_names: list = field(default_factory=list)
    defects: np.ndarray | None = None
    settings: dict = field(default_factory=dict)


def segment_exposures(
    model: Any,
    read_exposure: Callable[[int], np.ndarray],
    n_exposures: int,
    write_labels: Callable[[int, np.ndarray], None] | None = None,
    scratch_parent: str | Path | None = None,
    share: float = postprocess.PERSISTENT_SHARE,
    device: str = "auto",
    exposure_names: Sequence[str] | None = None,
    scratch_dir: str | Path | None = None,
    resume_keys: Sequence[str] | None = None,
    **segment_options: Any,
) -> Generator[Progress, None, RepeatsResult]:
    """Segment exposures of one CCD with a class model and apply the repeat rule; generator yielding
    progress, returning a :class:`RepeatsResult`.

    Parameters
    ----------
    model : LoadedModel or path of a CCD class model (classes ``background``, ``hot pixel``, ``cluster``).
    read_exposure : ``read_exposure(t)`` -> (Y, X) array of exposure ``t`` in ADC; every exposure has one
        shape. It is called twice per exposure (once per pass).
    n_exposures : how many (at least 2).
    write_labels : ``write_labels(t, class_map)`` gets each exposure's (Y, X) uint8 class map after the rule,
        in order; None to keep nothing but the tables.
    scratch_parent : folder in which the scratch folder is made (default: the system's temporary folder).
    share : share of the exposures in which a pixel must hold charge to be a defect
        (:func:`postprocess.persistent_frames_needed`).
    device : where a model path is loaded.
    exposure_names : names of the exposures (file names) for messages; default "exposure 1", ...
    scratch_dir : the scratch folder itself (made if missing) instead of a temporary one in
        ``scratch_parent``; it is left in place, also when the run fails or is stopped (a rerun goes on
        from it): the caller removes it once it has written what it needs.
    resume_keys : with ``scratch_dir``, one string per exposure naming its input and the settings (e.g.
        path, size, modification time, model, options): an exposure whose record in ``scratch_dir`` holds
        the same key is not segmented again (an interrupted run resumes); None: always segmented.
    segment_options : passed to :func:`segment_image` for each exposure (``tile``, ``overlap``,
        ``batch_size``, ``test_time_augmentation``, ``precision``, ``postprocess_options`` with the shape
        rules ...); ``out``, ``measure`` and ``keep_probabilities`` are set here.
    """
    from ..autolabel.ccd import clusters_per_frame

    n_exposures = int(n_exposures)
    if n_exposures < 2:
        raise InputError(f"the rule 'hot pixels repeat' needs at least 2 exposures of one sensor, got {n_exposures}")
    if not 0 < share <= 1:  # also NaN
        raise InputError(f"share must be in (0, 1], got {share}")
    names = list(exposure_names) if exposure_names is not None else [f"exposure {t + 1}" for t in range(n_exposures)]
    if len(names) != n_exposures:
        raise InputError(f"{len(names)} exposure names for {n_exposures} exposures")
    for key in ("out", "measure", "keep_probabilities"):
        if key in segment_options:
            raise TypeError(f"segment_exposures sets {key!r} itself")
    options = dict(segment_options.pop("postprocess_options", None) or {})
    options.pop("hot_repeats", None)
    loaded = _resolve_loaded(model, device)
    class_names = list(getattr(loaded, "class_names", None) or [])
    if loaded.output_mode != "multiclass":
        raise InputError("the rule 'hot pixels repeat' applies to CCD class models only")
    background, hot, cluster = postprocess.ccd_class_indices(class_names)

    if resume_keys is not None and (scratch_dir is None or len(resume_keys) != n_exposures):
        raise InputError("resume_keys need a scratch_dir and one key per exposure")
    if scratch_dir is not None:
        scratch = Path(scratch_dir)
        scratch.mkdir(parents=True, exist_ok=True)
    else:
        scratch = Path(tempfile.mkdtemp(prefix=".microseg-repeats-", dir=scratch_parent))
    try:
        shape = None
        times_charged = None
        settings: dict = {}
        scratch_bytes = resumed = hot_before = 0
        charged_counts = []  # each exposure's charged pixels, for the chance of repeats
        total = n_exposures * (FIRST_PASS_UNITS + SECOND_PASS_UNITS)
        for t in range(n_exposures):
            stored = _stored_exposure(scratch / f"{t}.npz", resume_keys[t] if resume_keys is not None else None)
            if stored is not None:  # segmented by an earlier, interrupted run with the same input and settings
                classes = np.full(tuple(stored["shape"]), background, np.uint8)
                classes.ravel()[stored["where"]] = stored["classes"]
                if not settings:
                    settings = json.loads(str(stored["settings"]))
                resumed += 1
                yield Progress((t + 1) * FIRST_PASS_UNITS, total, f"exposure {t + 1}/{n_exposures} (kept from an earlier run)")
            else:
                classes = yield from _segment_one_exposure(loaded, read_exposure, t, n_exposures, names[t], options,
                                                           segment_options, scratch, total,
                                                           resume_keys[t] if resume_keys is not None else None, settings)
            if shape is None:
                shape = classes.shape
                times_charged = np.zeros(shape, np.int32)
            elif classes.shape != shape:
                raise InputError(f"{names[t]} has shape {classes.shape} where {names[0]} has {shape}: "
                                 "the repeat rule compares exposures of one sensor")
            charged_counts.append(postprocess.count_charged(classes, class_names, times_charged))
            hot_before += int(np.count_nonzero(classes == hot))
            scratch_bytes += (scratch / f"{t}.npz").stat().st_size
            del classes

        persistent, summary = postprocess.persistent_pixels(
            times_charged, charged_counts, hot_before, share,
            lambda likely: [_charged_on(scratch / f"{t}.npz", likely.ravel(), hot, cluster) for t in range(n_exposures)])
        del times_charged
        object_tables, fractions, cluster_tables = [], [], []
        for t in range(n_exposures):
            with np.load(scratch / f"{t}.npz") as stored:
                where, confidence = stored["where"], stored["confidence"]
                charged, p_hot, p_cluster = stored["charged"], stored["p_hot"], stored["p_cluster"]
                before = np.full(shape, background, np.uint8)
                before.ravel()[where] = stored["classes"]
            after = postprocess.ccd_repeat_frame(before, persistent, class_names)
            pixel_confidence = np.zeros(before.size, np.float32)
            pixel_confidence[where] = confidence
            postprocess.repeat_rule_confidence(pixel_confidence, before, after, charged, p_hot, p_cluster, hot)
            image = np.asarray(read_exposure(t))
            if image.shape != shape:
                raise InputError(f"{names[t]} has shape {image.shape}, not {shape} as when it was segmented: did it change?")
            object_tables.append(_measure_frame(after, image, t, "multiclass", class_names,
                                                pixel_confidence.reshape(shape)))
            fractions.append(_fractions(after, class_names, t))
            cluster_tables.append(clusters_per_frame(after, image, class_names, first_frame=t))
            if write_labels is not None:
                write_labels(t, after)
            yield Progress(n_exposures * FIRST_PASS_UNITS + (t + 1) * SECOND_PASS_UNITS, total,
                           f"repeat rule, exposure {t + 1}/{n_exposures}")
    finally:
        if scratch_dir is None:  # the caller's scratch_dir is the caller's to remove, once its outputs are written
            shutil.rmtree(scratch, ignore_errors=True)

    objects, counts = _tables(object_tables, None, n_exposures, "multiclass", class_names,
                              fractions=pd.concat(fractions, ignore_index=True))
    clusters = pd.concat(cluster_tables, ignore_index=True)
    settings.update(hot_repeats=True, exposures=n_exposures, scratch_bytes=int(scratch_bytes), exposures_resumed=resumed,
                    **summary)
    return RepeatsResult(objects=objects, counts=counts, clusters=clusters, class_names=class_names, defects=persistent,
                         settings=settings)


def _segment_one_exposure(loaded: Any, read_exposure: Callable, t: int, n_exposures: int, name: str, options: dict,
                          segment_options: dict, scratch: Path, total: int, key: str | None, settings: dict):
    """First pass on exposure ``t``: segment it, store what the second pass needs in ``scratch/t.npz``
    (written under another name and renamed, so a killed run never leaves half a file); fills ``settings``
    from the first exposure segmented. Generator of progress; returns the (Y, X) uint8 class map."""
    image = np.asarray(read_exposure(t))
    if image.ndim != 2:
        raise InputError(f"{name} has shape {image.shape}; the repeat rule takes (Y, X) exposures")
    gen = segment_image(loaded, image, measure=False, keep_probabilities=True, postprocess_options=options,
                        **segment_options)
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            result = stop.value
            break
        except InputError as err:  # say which exposure (there may be thousands)
            raise InputError(f"{name}: {err}") from None
        fraction = min(1.0, event.done / event.total) if event.total else 0.0
        yield Progress(t * FIRST_PASS_UNITS + int(fraction * FIRST_PASS_UNITS), total, f"exposure {t + 1}/{n_exposures}")
    if not settings:
        settings.update(result.settings)
    class_names = list(loaded.class_names)
    background = postprocess.ccd_class_indices(class_names)[0]
    classes = np.asarray(result.labels)
    flat = classes.ravel()
    where = np.flatnonzero(flat != background)
    confidence = _class_probability(result.probabilities, classes).ravel()[where]
    charged, p_hot, p_cluster = _hot_cluster_probabilities(result.probabilities, classes, class_names)
    index_type = np.min_scalar_type(flat.size)
    extra = {} if key is None else {"key": np.array(key), "settings": np.array(json.dumps(result.settings, default=str))}
    with atomic_path(scratch / f"{t}.npz") as partial:  # a killed run leaves no half record
        np.savez(partial, shape=np.array(classes.shape), where=where.astype(index_type), classes=flat[where],
                 confidence=confidence, charged=charged.astype(index_type), p_hot=p_hot, p_cluster=p_cluster, **extra)
    return classes


def _charged_on(record: Path, mask: np.ndarray, hot: int, cluster: int) -> int:
    """How many of a recorded exposure's hot-pixel and cluster pixels lie where the flat bool ``mask`` is set."""
    with np.load(record) as stored:
        where, classes = stored["where"], stored["classes"]
    return int(np.count_nonzero(mask[where[(classes == hot) | (classes == cluster)]]))


def _stored_exposure(path: Path, key: str | None) -> dict | None:
    """The first pass's record of an exposure in ``path`` when it holds ``key`` (None: never reused);
    None when missing or made for another input or other settings. A damaged record (a truncated or
    corrupted file) is deleted, so that exposure is segmented again."""
    if key is None or not path.exists():
        return None
    try:
        with np.load(path) as stored:
            if "key" not in stored or str(stored["key"]) != key:
                return None
            record = {name: stored[name] for name in RECORD_FIELDS}  # every member read: the second pass needs them
            record["settings"] = stored["settings"]
            return record
    except Exception:  # noqa: BLE001 - BadZipFile, EOFError, ValueError, KeyError, OSError ...: not reusable
        path.unlink(missing_ok=True)
        return None


def _fractions(class_map: np.ndarray, class_names: list, t: int) -> pd.DataFrame:
    """``t, fraction_<class>...`` of one (Y, X) class map."""
    from ..measure.counts import class_fractions

    table = class_fractions(class_map[None], class_names)
    table["t"] = t
    return table
