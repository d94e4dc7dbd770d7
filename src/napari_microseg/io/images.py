"""Reading and writing images: TIFF (tifffile), FITS (astropy), Zarr / OME-Zarr (zarr, lazily via dask),
and PNG / JPEG / BMP exports (scikit-image; read only).

Time-lapse axis order is (T, Y, X). Every failure to read raises
:class:`napari_microseg.errors.InputError` with a one-line message that names
the file, never a bare traceback from a library.
"""

from __future__ import annotations

import gzip
import json
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, MicrosegWarning
from .atomic import atomic_path, guard_target, replace_tree, temp_prefix

TIFF_SUFFIXES = (".tif", ".tiff")
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz", ".fits.fz", ".fz")  # .fz: tile-compressed
ZARR_SUFFIXES = (".zarr", ".ome.zarr")
PLAIN_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")  # 8/16-bit exports (DSB2018 originals, ISL pairs): read only
#: TIFF series larger than this (bytes) open lazily in napari (a dask array read chunk by chunk)
LAZY_TIFF_BYTES = 1 << 30


def image_kind(path: str | os.PathLike) -> str | None:
    """Return ``"tiff"``, ``"fits"``, ``"zarr"``, ``"plain"`` (PNG, JPEG, BMP) or None for a path, by its name."""
    name = str(path).rstrip("/").lower()
    if name.endswith(FITS_SUFFIXES):
        return "fits"
    if name.endswith(TIFF_SUFFIXES):
        return "tiff"
    if name.endswith(PLAIN_SUFFIXES):
        return "plain"
    if name.endswith(ZARR_SUFFIXES) or (Path(path).is_dir() and _looks_like_zarr(Path(path))):
        return "zarr"
    return None


def drop_previews(paths: list) -> tuple[list, list]:
    """``(kept, left out)`` of image paths found in a folder or by a pattern: PNG / JPEG / BMP files in
    a folder that holds TIFF, FITS or Zarr images, or below one (``plate/thumbnails/``), are previews
    or thumbnails, not data, and are left out; a tree of such exports alone (DSB2018's originals) is
    kept whole."""
    data_folders = {Path(os.path.abspath(p)).parent for p in paths if image_kind(p) != "plain"}
    previews = [p for p in paths if image_kind(p) == "plain"
                and any(folder in data_folders for folder in Path(os.path.abspath(p)).parents)]
    if not previews:
        return list(paths), []
    left_out = set(previews)
    return [p for p in paths if p not in left_out], previews


#: the record each command writes into its --out, and keys it holds: a folder with one is a run's output
RUN_RECORDS = {"segment_run.json": ("model", "images"), "batch_config.json": ("task", "settings_hash"),
               "track_config.json": ("max_search_radius", "motion_model"),
               "params.json": ("command", "autolabel", "n_objects_per_frame")}  # autolabel fluorescence's
#: what runs write into their output folder besides tables: results, never inputs of a later search
RUN_OUTPUTS = ("labels", "probabilities", "tracks_labels", "ctc_RES", "defect_masks", "shards", "tracks_labels.tif",
               "labels.tif", "labels_on_target.tif", "tiles")
#: of those, the label images a tracking search takes (``keep_labels``)
RUN_LABELS = ("labels", "labels.tif", "labels_on_target.tif")


def run_record(folder: str | os.PathLike) -> str | None:
    """The run record (:data:`RUN_RECORDS`) ``folder`` holds, told by its keys (a file of that name
    from another tool is not one); None when it holds none."""
    for name, keys in RUN_RECORDS.items():
        record = os.path.join(folder, name)
        if os.path.isfile(record):
            try:
                with open(record, encoding="utf-8") as fh:
                    content = json.load(fh)
            except (OSError, ValueError):
                continue
            if isinstance(content, dict) and all(key in content for key in keys):
                return name
    return None


#: the images ``microseg simulate nuclei`` writes into each movie's folder (with its truth, labels.tif)
SIMULATED_MOVIE_IMAGES = ("fluorescence.tif", "phase.tif", "labels.tif")


def simulated_movie(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a movie ``microseg simulate nuclei`` wrote: a ``movie_params.json`` (one
    movie of several) or a ``params.json`` of domain nuclei beside ``labels.tif``."""
    folder = Path(folder)
    if (folder / "movie_params.json").is_file():
        return True
    try:
        record = json.loads((folder / "params.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("domain") == "nuclei" and "sample_seeds" in record \
        and (folder / "labels.tif").is_file()


def run_output(path: str | os.PathLike, top: str | os.PathLike, keep_labels: bool = False,
               records: dict | None = None) -> bool:
    """Whether ``path`` is a result an earlier run wrote (in one of :data:`RUN_OUTPUTS` of a folder
    holding a :func:`run_record`, at or below ``top``, the folder a search starts from). The run's
    other files (the raw movie a run wrote beside) are not. ``keep_labels``: a run's ``labels/`` are
    inputs (tracking segmentation results). ``records``: a dict that keeps each folder's record
    between calls (a pattern's thousands of matches share their folders)."""
    path = Path(os.path.abspath(path))
    top = Path(os.path.abspath(top))
    records = {} if records is None else records
    for folder in path.parents:
        if folder != top and top not in folder.parents:
            break  # above the search: the user chose it
        if folder not in records:
            records[folder] = run_record(folder)
        if records[folder]:
            first = path.relative_to(folder).parts[0]
            if first in RUN_OUTPUTS and not (keep_labels and first in RUN_LABELS):
                return True
    return False


def glob_fixed_part(pattern: str) -> Path:
    """The folder a glob pattern searches from: its path up to the first wildcard ("data/" of
    "data/plate*/**/*.tif"), absolute."""
    import re

    prefix = re.split(r"[*?\[]", pattern)[0]
    return Path(os.path.abspath(prefix if prefix.endswith(("/", os.sep)) else os.path.dirname(prefix) or "."))


def _looks_like_zarr(path: Path) -> bool:
    return any((path / marker).exists() for marker in (".zarray", ".zgroup", "zarr.json"))


@dataclass
class ImageData:
    """An image read from disk.

    Attributes
    ----------
    data : numpy array (TIFF, FITS) or dask array (Zarr, big TIFF read lazily), shape (Y, X) or
        (T, Y, X) or more; the full resolution.
    kind : "tiff", "fits" or "zarr".
    metadata : header / attributes (FITS header as a dict, OME-Zarr attributes, ...).
    levels : a resolution pyramid (OME-Zarr multiscales, pyramidal TIFF): lazy arrays from the
        full resolution (``levels[0]`` is ``data``) to the coarsest, same axes; empty otherwise.
    """

    data: Any
    kind: str
    metadata: dict = field(default_factory=dict)
    levels: list = field(default_factory=list)

    def index(self, key: tuple) -> None:
        """Index ``data`` and every pyramid level alike (a channel picked, size-1 axes dropped)."""
        self.data = self.data[key]
        self.levels = [level[key] for level in self.levels]


def read_image(path: str | os.PathLike, hdu: int | None = None, min_ndim: int = 2,
               channel: int | str | None = None, lazy_above_bytes: int | None = None,
               channel_option: str | None = None, labels: bool = False) -> ImageData:
    """Read a TIFF, FITS or Zarr image.

    Parameters
    ----------
    path : file (``.tif``, ``.tiff``, ``.fits``, ``.fit``, ``.fts``, optionally ``.gz``) or
        Zarr / OME-Zarr folder.
    hdu : FITS only: index of the HDU to read; default: the first HDU with image data.
    min_ndim : arrays with fewer dimensions are rejected (a 1-D array is not an image).
    channel : TIFF files with a channel axis (``C`` in tifffile's axes: ImageJ hyperstacks,
        OME-TIFF, multi-channel files): the index of the channel to read (0-based), or
        ``"all"`` to keep every channel (``metadata["channel_axis"]`` says which axis).
        With None (default) such a file is refused with a message naming its channels,
        rather than its channels being taken for time points. Ignored for files
        without a channel axis.
    lazy_above_bytes : TIFF only: a series larger than this (bytes, uncompressed) and any
        pyramidal TIFF is read lazily, chunk by chunk, as a dask array (napari opens big files
        this way: :data:`LAZY_TIFF_BYTES`); None (default): into memory.
    channel_option : the command line option that picks this file's channel (e.g. ``--target-channel``),
        for the message refusing a multi-channel file without one; None: the options of every command;
        "": the command has none (the channel is to be saved as a file of its own).
    labels : the file is a label image or class map whatever its name: a palette PNG gives its
        palette indices (by default only one named or filed as labels does, ``*_mask.png``, ``labels/``;
        a photograph's palette indices are no image).

    Returns
    -------
    ImageData with ``data`` of shape (Y, X) or (T, Y, X) (Zarr: a lazy dask array); ``levels``
    holds a resolution pyramid when the file has one.

    Raises
    ------
    InputError for a missing, empty, unreadable or non-image file.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    kind = image_kind(p)
    if kind is None:
        raise InputError(f"{p.name}: unsupported image type (use .tif/.tiff, .fits/.fit/.fts[.gz], .zarr or .png/.jpg)")
    if p.is_file() and p.stat().st_size == 0:
        raise InputError(f"{p.name}: file is empty")
    reader = {"tiff": _read_tiff, "fits": _read_fits, "zarr": _read_zarr, "plain": _read_plain}[kind]
    if kind == "fits":
        result = reader(p, hdu)
    elif kind == "tiff":
        result = reader(p, lazy_above_bytes)
    elif kind == "plain":
        result = reader(p, labels)
    else:
        result = reader(p)
    shape = tuple(result.data.shape)
    if kind == "tiff" and len(shape) == 3 and shape[-1] in (1, 2) and min(shape[:2]) >= 8:
        # (Y, X, 1) or (Y, X, 2): a trailing channel axis (grey; grey + alpha), not Y frames of X x 1 px
        result.metadata["axes"] = "YXC"
    elif kind == "tiff" and len(shape) == 3 and shape[0] == 2 and str(result.metadata.get("axes", "")) == "SYX":
        # one page of 2 planar samples: 2 channels (tifffile writes a 2-frame grey stack as 2 pages, never so;
        # 3-4 planar samples stay frames: a grey 3-4 frame stack written without metadata looks like that)
        result.metadata["axes"] = "CYX"
    elif kind == "tiff" and len(shape) == 4 and shape[-1] == 2 and str(result.metadata.get("axes", "")).endswith("S"):
        # a time-lapse (or Z stack) of 2 interleaved samples per pixel: 2 channels, as of a 2-D image
        result.metadata["axes"] = str(result.metadata["axes"])[:-1] + "C"
    result = _select_channel(result, p.name, channel, channel_option)
    _calibration_of_axes(result)
    if is_z_stack(result) and "z_step_um" not in (result.metadata.get("calibration") or {}):
        # a Z stack whose file states no Z step: said so in the calibration its outputs are written with,
        # or they were written (and then tracked) as time-lapses
        result.metadata["calibration"] = {**(result.metadata.get("calibration") or {}), "z_planes": True}
    if result.data.ndim < min_ndim:
        raise InputError(f"{p.name}: {result.data.ndim}-D array of shape {tuple(result.data.shape)} is not an image (need at least {min_ndim}-D)")
    if 0 in result.data.shape:
        raise InputError(f"{p.name}: image has an empty axis, shape {tuple(result.data.shape)}")
    return result


def _calibration_of_axes(image: ImageData) -> None:
    """Keep only the calibration the image's axes use: a Z step only with a Z axis (microscopes write
    PhysicalSizeZ into time-lapses of one plane too, whose labels would be written back as Z stacks), and
    no frame interval for a Z stack without a T axis."""
    calibration = image.metadata.get("calibration")
    if not calibration:
        return
    axes = str(image.metadata.get("axes", "")).upper()
    if not axes:  # a bare array (Zarr labels written here): its axes as its calibration says, as written
        if "z_step_um" not in calibration:
            return
        axes = tiff_axes(image.data.ndim, calibration)
        if "Z" in axes:  # kept: a Z stack is told by its axes (is_z_stack: worked plane by plane, said)
            image.metadata["axes"] = axes
    imagej = image.metadata.get("imagej")
    plain_imagej = bool(imagej) and not imagej.get("hyperstack")
    if "Z" not in axes:
        calibration.pop("z_step_um", None)
    elif "T" not in axes and plain_imagej and "frame_interval_min" in calibration and axes == "ZYX":
        # a plain ImageJ stack is tagged Z whatever it holds (is_z_stack); with a frame interval (Fiji's Image
        # Sequence of a time-lapse, its interval set in Properties) it is a time-lapse: its axes say so, so that
        # the reader scales its frames as the outputs written from it (TYX) are (labels 2 min a frame over an
        # image of 1 "pixel" a frame did not line up); the interval was dropped before
        image.metadata["axes"] = "TYX"
        calibration.pop("z_step_um", None)
    elif "T" not in axes:  # (a Z stack's TimeIncrement, with or without a Z step: no time axis to scale)
        calibration.pop("frame_interval_min", None)


def _select_channel(image: ImageData, name: str, channel: int | str | None,
                    channel_option: str | None = None) -> ImageData:
    """Apply ``read_image``'s ``channel`` rule to an image whose metadata names its axes."""
    axes = image.metadata.get("axes")
    if not axes or "C" not in axes or len(axes) != image.data.ndim:
        return image
    axis = axes.index("C")
    n_channels = int(image.data.shape[axis])
    pick = (slice(None),) * axis  # indexing works for numpy and dask alike
    if n_channels == 1:
        image.index(pick + (0,))
        image.metadata["axes"] = axes.replace("C", "")
        return image
    if isinstance(channel, str) and channel == "all":
        image.metadata["channel_axis"] = axis
        return image
    if channel is None and channel_option == "":  # a command without a channel option (train, classify)
        raise InputError(f"{name}: {n_channels} channels (axes {axes}, shape {tuple(image.data.shape)}), and this "
                         "takes one: save the channel you want as a file of its own (napari opens each channel "
                         "as a layer: select it, File > Save Selected Layers)")
    if channel is None:
        options = channel_option or "segment, autolabel fluorescence, batch and track --image take --channel"
        raise InputError(f"{name}: {n_channels} channels (axes {axes}, shape {tuple(image.data.shape)}): choose one "
                         f"({options} 0..{n_channels - 1}; napari opens each channel as a layer) or save one channel "
                         "per file")
    if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)) or not 0 <= channel < n_channels:
        raise InputError(f"{name}: channel {channel!r} does not exist (the file has channels 0..{n_channels - 1})")
    image.index(pick + (int(channel),))
    image.metadata["axes"] = axes.replace("C", "")
    image.metadata["channel"] = int(channel)
    return image


def is_lazy(data: Any) -> bool:
    """True for an array read from disk on demand (dask, zarr): to be read piece by piece, never whole."""
    return not isinstance(data, np.ndarray) and hasattr(data, "shape") and hasattr(data, "dtype") \
        and (hasattr(data, "compute") or type(data).__module__.split(".")[0] == "zarr")


def unnamed_planes(axes: str, shape: tuple) -> bool:
    """Whether a (N, Y, X) file of ``axes`` (tifffile's letters) says nothing of what its few (<= 4) planes are:
    a plain TIFF stack (S, Q or I first) holds channels as likely as frames; they are taken as frames, said."""
    axes = str(axes).upper()
    return len(shape) == 3 and len(axes) == 3 and axes[0] in "SQI" and int(shape[0]) <= 4


def is_rgb(data: Any) -> bool:
    """True for an RGB(A) image ``(Y, X, 3|4)`` or time-lapse ``(T, Y, X, 3|4)`` (Y and X over 4 px)."""
    shape = tuple(getattr(data, "shape", ()))
    return len(shape) in (3, 4) and shape[-1] in (3, 4) and min(shape[-3:-1]) > 4


def channel_or_grey(image: "ImageData", channel: int | None, name: str, warn: bool = True,
                    option: str = "--channel") -> Any:
    """The pixels of ``image`` (read by :func:`read_image` with ``channel``) for a grey network:
    where the file had no channel axis, ``channel`` picks a colour of an RGB(A) image or
    time-lapse (InputError for a colour it lacks) and is otherwise ignored (a notice on stderr
    with ``warn``); RGB(A) left whole becomes grey (:func:`rgb_to_grey`). ``option``: the command
    line option that chose ``channel``, as the messages name it."""
    import sys

    data = image.data
    if channel is not None and "channel" not in image.metadata:  # no channel axis: a colour of an RGB image
        if is_rgb(data):
            if not 0 <= channel < data.shape[-1]:
                raise InputError(f"{name}: colour {channel} does not exist (RGB image: {option} 0..{data.shape[-1] - 1})")
            return data[..., channel] if hasattr(data, "compute") else np.asarray(data[..., channel])
        if warn:
            print(f"warning: {name} has no channels: {option} {channel} ignored", file=sys.stderr)
    return rgb_to_grey(data, name)


def rgb_to_grey(data: Any, name: str = "image") -> Any:
    """An RGB(A) image ``(Y, X, 3|4)`` as float32 grey ``(Y, X)``, an RGB(A) time-lapse ``(T, Y, X, 3|4)``
    as ``(T, Y, X)``: the mean of R, G and B (alpha dropped).

    Any other array is returned unchanged; a dask array stays lazy. A notice naming the file goes
    to stderr.
    """
    import sys

    if is_rgb(data):
        print(f"{name}: RGB(A) image of shape {tuple(data.shape)}, using the mean of the colour channels",
              file=sys.stderr)
        colours = data if hasattr(data, "compute") else np.asarray(data)  # a dask image stays lazy
        return colours[..., :3].mean(axis=-1, dtype=np.float32)
    return data


class _TifffileLog:
    """Collects what tifffile logs (it logs damage it reads past, such as a page chain cut short, rather
    than raising) instead of printing it, for :func:`_check_tifffile_log`: each thread its own list (a
    damaged file read in one thread is not another's), through one handler kept on tifffile's logger,
    which outside a collection leaves the message to Python's last-resort output, as without it."""

    _local = threading.local()
    _installed = False
    _lock = threading.Lock()

    @classmethod
    def _install(cls) -> None:
        import logging

        with cls._lock:
            if cls._installed:
                return

            class Collect(logging.Handler):
                def emit(self, record: logging.LogRecord) -> None:
                    messages = getattr(_TifffileLog._local, "messages", None)
                    if messages is not None:
                        messages.append(record.getMessage())
                    elif not logging.getLogger().handlers and logging.lastResort is not None \
                            and record.levelno >= logging.lastResort.level:
                        logging.lastResort.handle(record)  # as if no handler were here

            logging.getLogger("tifffile").addHandler(Collect(logging.WARNING))
            cls._installed = True

    def __enter__(self) -> list[str]:
        self._install()
        self.outer = getattr(self._local, "messages", None)
        self._local.messages = []
        return self._local.messages

    def __exit__(self, *exc: Any) -> None:
        self._local.messages = self.outer


#: what tifffile logs when pages of a file are lost (its page chain points past the end of a file cut
#: short; the shape it states does not fit the pages found)
TIFF_PAGES_LOST = ("invalid page offset", "failed to reshape")


def _check_tifffile_log(messages: list[str], name: str) -> None:
    """InputError when tifffile read past lost pages (``TIFF_PAGES_LOST``: a copy cut short opened as its
    first frames); a warning for other damage it logged (a tag it could not read: the calibration may
    be missing)."""
    lost = [m for m in messages if any(sign in m for sign in TIFF_PAGES_LOST)]
    if lost:
        raise InputError(f"{name}: the file is damaged or cut short (pages are missing: {lost[0]}); copy it "
                         "again from where it came from")
    if messages:
        warnings.warn(MicrosegWarning(f"{name}: damaged TIFF metadata ({messages[0]}); the pixels were read, "
                                      "but its calibration or shape may be missing"), stacklevel=4)
        messages.clear()  # said once


def _read_tiff(path: Path, lazy_above_bytes: int | None = None) -> ImageData:
    with _TifffileLog() as messages:
        image = _read_tiff_logged(path, lazy_above_bytes, messages)
    return image


def _read_tiff_logged(path: Path, lazy_above_bytes: int | None, messages: list[str]) -> ImageData:
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
    except Exception as err:  # tifffile raises several types for corrupt files
        raise InputError(f"{path.name}: not a readable TIFF file ({type(err).__name__}: {err})") from err
    lazy = False
    try:
        series = tif.series[0]
        _check_tifffile_log(messages, path.name)
        if len(tif.pages) and getattr(tif.pages[0], "photometric", None) == tifffile.PHOTOMETRIC.SEPARATED:
            raise InputError(f"{path.name}: a CMYK (print) TIFF; save it as grey or RGB (or export the channel "
                             "to segment) and read that")
        _warn_other_series(tif, path.name)
        axes = str(series.axes)
        meta: dict = {"axes": axes} if len(axes) == len(series.shape) else {}
        # planar "RGB" (SYX) stays as it is: tifffile tags a 3-4 frame grey stack written
        # without metadata the same way, and those frames must stay frames
        if tif.imagej_metadata:
            meta["imagej"] = {k: v for k, v in tif.imagej_metadata.items() if isinstance(v, (int, float, str))}
        software = tif.pages[0].software if len(tif.pages) else ""
        if software:  # LABELS_SOFTWARE: a labels layer saved by this plugin, opened as labels again
            meta["software"] = str(software)
        calibration = _tiff_calibration(tif)
        if calibration:
            meta["calibration"] = calibration
            origin = _tiff_origin(tif)
            if origin:  # where it lies (napari's translate), as the plugin's writers save a placed layer
                meta["origin"] = origin
        pyramid = len(series.levels) > 1
        lazy = lazy_above_bytes is not None and (pyramid or series.nbytes > lazy_above_bytes)
        if lazy:  # chunk by chunk from the open file, which stays open for the arrays' lifetime
            levels = [_tiff_level(series, level) for level in range(len(series.levels))]
            return ImageData(levels[0], "tiff", meta, levels if pyramid else [])
        data = series.asarray()
        _check_tifffile_log(messages, path.name)
    except InputError:
        raise
    except Exception as err:
        raise InputError(f"{path.name}: not a readable TIFF file ({type(err).__name__}: {err})") from err
    finally:
        if not lazy:
            tif.close()
    return ImageData(np.asarray(data), "tiff", meta)


def refuse_undecodable_names(paths: list) -> None:
    """InputError naming the inputs whose file names are not valid UTF-8 (bytes of another encoding, e.g.
    Latin-1 from an old Windows share): their outputs and tables cannot hold the name, and a run found it
    only after the work (labels written, then "skipped"; a batch run ended with no failures.csv)."""
    bad = []
    for path in paths:
        try:
            os.fspath(path).encode("utf-8")
        except UnicodeEncodeError:
            bad.append(os.fspath(path).encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
    if bad:
        raise InputError(f"{len(bad)} input file name(s) are not valid UTF-8 ({', '.join(bad[:3])}"
                         f"{' ...' if len(bad) > 3 else ''}): rename them (e.g. convmv -f latin1 -t utf8 -r --notest "
                         "FOLDER) and run again")


def not_2d_or_stack(name: str, shape: tuple, axes: str = "") -> str:
    """The one-line reason an image of ``shape`` other than (Y, X) or (T, Y, X) is refused: its shape, and its
    ``axes`` where the file names them (a (T, Z, Y, X) movie of Z stacks: one plane or a projection per frame)."""
    shape = tuple(int(v) for v in shape)
    named = f", axes {axes}" if len(axes) == len(shape) else ""
    hint = ("; a movie of Z stacks: save one focal plane (or a projection) per frame, as a (T, Y, X) stack"
            if named and "Z" in axes and "T" in axes else "")
    return f"{name}: expected a (Y,X) image or (T,Y,X) stack, got shape {shape}{named}{hint}"


def _warn_other_series(tif: Any, name: str) -> None:
    """Warn that a TIFF of several image series (OME positions, a stack saved after an image) is read
    as its first: the others would be left out without a word."""
    series = list(tif.series)
    if len(series) < 2:
        return
    shapes = ", ".join(f"{s.name or i} {tuple(s.shape)}" for i, s in enumerate(series[1:5], start=1))
    warnings.warn(MicrosegWarning(
        f"{name}: TIFF file of {len(series)} image series; read series 0 {tuple(series[0].shape)}, the others "
        f"({shapes}{' ...' if len(series) > 5 else ''}) are left out: save each series as a file of its own "
        "(e.g. Fiji's Bio-Formats importer, or tifffile) to use them"), stacklevel=3)


def is_z_stack(image: ImageData) -> bool:
    """True when a (Z, Y, X) file says its first axis is focal planes: OME or an ImageJ hyperstack. A plain
    ImageJ stack (no ``hyperstack=true``) is tagged Z whatever it holds, time-lapses included."""
    if str(image.metadata.get("axes", "")).upper() != "ZYX" or image.data.ndim != 3:
        return False
    imagej = image.metadata.get("imagej")
    return not imagej or bool(imagej.get("hyperstack"))


def _tiff_level(series: Any, level: int) -> Any:
    """One resolution level of a TIFF series as a dask array of the file's own chunks (tiles, strips or pages)."""
    import dask.array as da
    import zarr

    return da.from_zarr(zarr.open(series.aszarr(level=level), mode="r"))


def _read_plain(path: Path, labels: bool = False) -> ImageData:
    """A PNG, JPEG or BMP file: grey (Y, X) or colour (Y, X, 3|4) as stored (8 or 16 bit); grey with
    alpha (Y, X, 2) is its grey channel. 16-bit colour and grey-with-alpha PNGs are decoded by
    imagecodecs (Pillow cut them to 8 bits); a palette PNG named or filed as labels (``*_mask.png``,
    ``labels/``) or read as ``labels`` gives its palette indices, its object or class ids, not their colours."""
    import skimage.io

    try:
        header = path.read_bytes()[:26] if path.suffix.lower() == ".png" else b""
        # PNG IHDR: bit depth at byte 24, colour type at 25 (2 RGB, 3 palette, 4 grey + alpha, 6 RGBA)
        depth, colour = (header[24], header[25]) if len(header) == 26 and header[:8] == b"\x89PNG\r\n\x1a\n" else (0, 0)
        if depth == 16 and colour in (2, 4, 6):
            import imagecodecs

            data = np.asarray(imagecodecs.png_decode(path.read_bytes()))
        elif colour == 3 and (labels or _named_as_labels(path)):
            from PIL import Image

            with Image.open(path) as picture:
                data = np.asarray(picture)  # mode "P": the indices
        else:
            from PIL import Image

            with Image.open(path) as picture:
                cmyk = picture.mode == "CMYK"
                if cmyk:  # (print / Photoshop exports): as RGB, not C, M, Y taken for R, G, B and K for alpha
                    data = np.asarray(picture.convert("RGB"))
            if not cmyk:
                data = np.asarray(skimage.io.imread(path))
    except Exception as err:  # noqa: BLE001 - any decoder error is bad input
        raise InputError(f"{path.name}: not a readable image ({type(err).__name__}: {err})") from err
    if data.ndim == 3 and data.shape[-1] == 2:  # grey + alpha: the alpha is not an image
        data = data[..., 0]
    return ImageData(data, "plain", {})


def _named_as_labels(path: Path) -> bool:
    from ..training.data import named_as_labels

    return named_as_labels(path)


def in_unit(value: Any, unit: Any, target: str) -> float | None:
    """``value`` ``unit`` (e.g. 0.325 "micron", 300 "s") in ``target`` units; None when either is not
    a positive number of a known length / time unit ("pixel", "", nonsense)."""
    import pint

    try:
        value = float(value)
        text = str(unit or "").strip().replace("\\u00B5", "µ")  # ImageJ writes the micro sign escaped
        if not (value > 0 and np.isfinite(value)) or not text or text.lower() in ("pixel", "pixels", "px"):
            return None
        registry = pint.get_application_registry()
        aliases = {"micron": "micrometer", "microns": "micrometer"}
        try:
            return float(registry.Quantity(value, aliases.get(text, text)).to(target).magnitude)
        except (pint.errors.PintError, ValueError, TypeError, AttributeError):
            # "Micron", "Min", "Sec", "NM" as some writers capitalise them (pint's names are case-sensitive)
            lower = text.lower()
            if lower == text:
                raise
            return float(registry.Quantity(value, aliases.get(lower, lower)).to(target).magnitude)
    except (pint.errors.PintError, ValueError, TypeError, AttributeError):
        return None


def _calibration(pixel_size: float | None, frame_interval: float | None, pixel_size_y: float | None = None,
                 name: str = "", z_step: float | None = None) -> dict:
    """``{"pixel_size_um", "frame_interval_min", "z_step_um"}`` of the values given (``z_step``: micrometres
    between focal planes); a Y size that differs from X (non-square pixels) is kept as ``pixel_size_y_um``
    (written back, napari's Y scale, and the Y part of track lengths in micrometres) and warned about:
    areas and shapes are measured in pixels."""
    found = {"pixel_size_um": pixel_size, "frame_interval_min": frame_interval, "z_step_um": z_step}
    if pixel_size is not None and pixel_size_y is not None and abs(pixel_size_y - pixel_size) > 1e-6 * pixel_size:
        found["pixel_size_y_um"] = pixel_size_y
        warnings.warn(MicrosegWarning(
            f"{name}: the pixels are not square ({pixel_size:g} um in X, {pixel_size_y:g} um in Y): lengths in um "
            "scale each axis by its own size; areas and shapes (objects.csv) are in pixels"), stacklevel=3)
    return {k: v for k, v in found.items() if v is not None}


def _tiff_calibration(tif: Any) -> dict:
    """Pixel size and Z step (micrometres) and frame interval (minutes) a TIFF states: OME-XML
    ``PhysicalSizeX`` / ``PhysicalSizeZ`` / ``TimeIncrement``, or ImageJ's resolution + ``unit``,
    ``spacing`` and ``finterval``. Empty when it states none."""
    if tif.ome_metadata:
        import xml.etree.ElementTree as ET

        try:
            pixels = next(el for el in ET.fromstring(tif.ome_metadata).iter() if el.tag.endswith("Pixels"))
        except (ET.ParseError, StopIteration):
            return {}
        return _calibration(in_unit(pixels.get("PhysicalSizeX"), pixels.get("PhysicalSizeXUnit", "µm"), "micrometer"),
                            in_unit(pixels.get("TimeIncrement"), pixels.get("TimeIncrementUnit", "s"), "minute"),
                            # a Y size without its unit: X's (a writer that named one unit meant it for both)
                            in_unit(pixels.get("PhysicalSizeY"),
                                    pixels.get("PhysicalSizeYUnit", pixels.get("PhysicalSizeXUnit", "µm")), "micrometer"),
                            Path(tif.filename).name,
                            in_unit(pixels.get("PhysicalSizeZ"), pixels.get("PhysicalSizeZUnit", "µm"), "micrometer"))
    shaped = (tif.shaped_metadata or ({},))[0] if not tif.imagej_metadata else {}
    if isinstance(shaped, dict) and isinstance(shaped.get(SHAPED_CALIBRATION_KEY), dict):  # one frame of a stack
        return _valid_calibration(shaped[SHAPED_CALIBRATION_KEY])
    ij = tif.imagej_metadata or {}
    for key, target in (("unit", "micrometer"), ("tunit", "minute")):  # a unit given but not understood: said
        if ij.get(key) and str(ij[key]).strip().lower() not in ("pixel", "pixels", "px") \
                and in_unit(1.0, ij[key], target) is None:
            warnings.warn(MicrosegWarning(
                f"{Path(tif.filename).name}: ImageJ {'length' if key == 'unit' else 'time'} unit {ij[key]!r} not "
                f"understood: {'pixel sizes' if key == 'unit' else 'the frame interval'} left out (lengths in px, "
                "times in frames); give them with --pixel-size / --frame-interval where the command takes them"),
                stacklevel=2)
    sizes = {}
    for axis in "XY":
        resolution = tif.pages[0].tags.get(f"{axis}Resolution")
        if ij.get("unit") and resolution is not None:
            numerator, denominator = resolution.value
            if numerator:  # pixels per unit
                sizes[axis] = in_unit(denominator / numerator, ij["unit"], "micrometer")
    frame_interval = in_unit(ij.get("finterval"), ij.get("tunit", "s"), "minute") if ij.get("finterval") else None
    # ImageJ's "spacing" is the Z step in the XY unit, of a hyperstack's slices; a plain stack (time-lapses
    # too) carries the pixel width there after Set Scale (as is_z_stack, it is not known to be Z)
    z_step = (in_unit(ij.get("spacing"), ij.get("unit"), "micrometer")
              if ij.get("spacing") and ij.get("hyperstack") and int(ij.get("slices") or 0) > 1 else None)
    return _calibration(sizes.get("X"), frame_interval, sizes.get("Y"), Path(tif.filename).name, z_step)


def _zarr_calibration(multiscales: Any, name: str = "") -> dict:
    """Pixel size and Z step (micrometres) and frame interval (minutes) of OME-Zarr's first dataset:
    its scale transformation, times the multiscales' own (NGFF applies that after the dataset's), and the
    axes' units. Empty when absent."""
    try:
        axes = multiscales[0]["axes"]
        transforms = (multiscales[0]["datasets"][0].get("coordinateTransformations", [])
                      + multiscales[0].get("coordinateTransformations", []))
        if not any(t.get("type") == "scale" for t in transforms):
            return {}
        scale = _scale_product(transforms, len(axes))
    except (TypeError, KeyError, IndexError, AttributeError, ValueError):
        return {}
    if scale is None:
        return {}
    scale = scale.tolist()
    named = {str(a.get("name", "")).lower(): (value, a.get("unit")) for a, value in zip(axes, scale) if isinstance(a, dict)}
    x, y, t, z = named.get("x"), named.get("y"), named.get("t"), named.get("z")
    return _calibration(in_unit(*x, "micrometer") if x else None, in_unit(*t, "minute") if t else None,
                        in_unit(*y, "micrometer") if y else None, name, in_unit(*z, "micrometer") if z else None)


def _scale_product(transforms: list, n_axes: int) -> np.ndarray | None:
    """The product of the ``scale`` transformations among OME-Zarr ``transforms`` (ones when there are none);
    None when one does not give a number per axis."""
    product = np.ones(n_axes)
    for t in transforms:
        if t.get("type") == "scale":
            if not isinstance(t.get("scale"), list) or len(t["scale"]) != n_axes:
                return None
            product = product * np.asarray(t["scale"], float)
    return product


def _zarr_origin(multiscales: Any) -> dict:
    """Where OME-Zarr's full resolution starts, per axis letter: its ``translation`` transformations (the first
    dataset's and the multiscales' own, added) in micrometres (X, Y, Z) or minutes (T); axes whose unit is not a
    length or a time are left out. Empty when there is none."""
    try:
        axes = multiscales[0]["axes"]
        own = multiscales[0]["datasets"][0].get("coordinateTransformations", [])
        outer = multiscales[0].get("coordinateTransformations", [])
        # NGFF: the multiscales' transformations follow the dataset's, so its scale stretches the dataset's
        # translation too: origin = outer scale x dataset translation + outer translation
        stretch = _scale_product(outer, len(axes))
        stretch = np.ones(len(axes)) if stretch is None else stretch
        moves = ([list(np.asarray(t["translation"], float) * stretch) for t in own if t.get("type") == "translation"
                  and isinstance(t.get("translation"), list) and len(t["translation"]) == len(axes)]
                 + [t.get("translation") for t in outer if t.get("type") == "translation"])
    except (TypeError, KeyError, IndexError, AttributeError, ValueError):
        return {}
    origin: dict = {}
    for move in moves:
        if not isinstance(move, list) or len(move) != len(axes):
            continue
        for axis, value in zip(axes, move):
            if not isinstance(axis, dict) or not value:
                continue
            letter = str(axis.get("name", ""))[:1].upper()
            target = {"X": "micrometer", "Y": "micrometer", "Z": "micrometer", "T": "minute"}.get(letter)
            size = in_unit(abs(float(value)), axis.get("unit"), target) if target else None
            if size is not None:
                origin[letter] = origin.get(letter, 0.0) + float(np.copysign(size, float(value)))
    return origin


def _fits_image_hdu(hdu: Any) -> bool:
    """Whether a FITS HDU holds an image of at least 2 axes, told from its header (its data are not
    read: a file of 16 amplifiers' HDUs is not loaded whole to pick one)."""
    if not getattr(hdu, "is_image", False):
        return False
    header = hdu.header
    naxis = int(header.get("ZNAXIS", header.get("NAXIS", 0)) or 0)
    prefix = "ZNAXIS" if "ZNAXIS" in header else "NAXIS"
    return naxis >= 2 and all(int(header.get(f"{prefix}{i}", 0) or 0) > 0 for i in range(1, naxis + 1))


def fits_image_hdus(path: str | os.PathLike) -> list[tuple[int, str]]:
    """``(index, name)`` of the HDUs of a FITS file that hold an image, told from their headers (no data
    read); the primary HDU is named PRIMARY, an unnamed extension "". Empty for an unreadable file."""
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as hdul:
            return [(i, "PRIMARY" if i == 0 else str(h.name or "").strip()) for i, h in enumerate(hdul)
                    if _fits_image_hdu(h)]
    except (OSError, gzip.BadGzipFile, ValueError, TypeError):
        return []


def _read_fits(path: Path, hdu: int | None) -> ImageData:
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as hdul:
            if hdu is not None:
                if not 0 <= hdu < len(hdul):
                    raise InputError(f"{path.name}: HDU {hdu} does not exist (file has {len(hdul)} HDUs)")
                chosen = hdul[hdu]
                if chosen.data is None or getattr(chosen.data, "ndim", 0) < 2:
                    raise InputError(f"{path.name}: HDU {hdu} holds no image data")
                index = hdu
            else:
                images = [i for i, h in enumerate(hdul) if _fits_image_hdu(h)]  # from headers: no data read
                if not images:
                    raise InputError(f"{path.name}: FITS file has no HDU with image data")
                index, others = images[0], images[1:]
                chosen = hdul[index]
                if others:  # e.g. one HDU per amplifier: the others would be left out without a word
                    def called(i: int) -> str:  # "HDU 2 (AMP2)"; an unnamed extension by its number alone
                        name = "PRIMARY" if i == 0 else str(hdul[i].name or "").strip()
                        return f"HDU {i}" + (f" ({name})" if name else "")

                    warnings.warn(MicrosegWarning(
                        f"FITS file with {len(others) + 1} image HDUs: read {called(index)}; the others "
                        f"({', '.join(called(i) for i in others[:4])}{' ...' if len(others) > 4 else ''}) are left out: "
                        "--hdu N reads another"), stacklevel=2)
            data = np.asarray(chosen.data)
            _warn_of_fits_blank(chosen, data, path.name)
            header = {}
            for key, value in chosen.header.items():
                if not key or not isinstance(value, (int, float, str, bool)):
                    continue
                if key in ("COMMENT", "HISTORY") and key in header:  # repeated cards: every line kept, in order
                    header[key] = f"{header[key]}\n{value}"
                else:
                    header[key] = value
    except InputError:
        raise
    except (OSError, gzip.BadGzipFile, ValueError, TypeError) as err:
        raise InputError(f"{path.name}: not a readable FITS file ({err})") from err
    # FITS data are big-endian; napari/torch want native byte order
    if data.dtype.byteorder not in ("=", "|"):
        data = data.astype(data.dtype.newbyteorder("="))
    header["HDU_INDEX"] = index
    image = ImageData(data, "fits", header)
    _drop_size_one_axes_named(image, "")  # NAXIS3 = NAXIS4 = 1 (radio and some CCD pipelines): one frame
    return image


def _warn_of_fits_blank(hdu: Any, data: np.ndarray, name: str) -> None:
    """Warn when an integer FITS image holds ``BLANK`` pixels (undefined: a masked column, a dead amplifier):
    astropy leaves them at their physical value in unsigned data (0 ADC in a uint16 frame written with BZERO
    32768), which reads as charge like any other. They are kept (a frame with a masked column is still
    segmented and auto-labelled; a pedestal-normalised model is given no value below its range), and said."""
    blank = hdu.header.get("BLANK")
    if data.dtype.kind not in "iu" or not isinstance(blank, int) or isinstance(blank, bool):
        return
    zero = getattr(hdu, "_orig_bzero", hdu.header.get("BZERO", 0)) or 0
    scale = getattr(hdu, "_orig_bscale", hdu.header.get("BSCALE", 1)) or 1
    value = blank * scale + zero  # the physical value astropy gave the raw BLANK
    count = int(np.count_nonzero(data == value))
    if count:
        warnings.warn(MicrosegWarning(
            f"{name}: {count} pixel(s) are BLANK (undefined, e.g. a masked column) and read as {value:g}: classes, "
            "clusters and charges on them mean nothing"), stacklevel=3)


def _unzip_advice(path: Path) -> str:
    """What to do with a zipped Zarr store ``path``: a command that works (``unzip x.zarr -d x.zarr`` failed,
    the folder's name being the file's) and the folder to give then (the store inside, when the zip holds
    it in a folder of its own)."""
    import zipfile

    base = path.name
    for suffix in (".zip", ".zarr"):
        base = base[: -len(suffix)] if base.lower().endswith(suffix) else base
    folder = f"{base or 'store'}_unzipped"
    inside = ""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n and not n.startswith("__MACOSX/")
                     and not any(part.startswith("._") for part in n.split("/"))]
    except (OSError, zipfile.BadZipFile):
        names = []
    # the store: the shallowest folder holding Zarr metadata (.zgroup / .zarray / zarr.json), wherever it lies
    markers = sorted((n.rsplit("/", 1)[0] if "/" in n else "" for n in names
                      if n.rsplit("/", 1)[-1] in (".zgroup", ".zarray", "zarr.json")),
                     key=lambda d: (d != "") + d.count("/"))  # the top level before a folder of the first level
    if markers:
        inside = markers[0]
    store = f"{folder}/{inside}" if inside else folder
    return f"{path.name} is a zipped Zarr store: unzip it (unzip {path.name} -d {folder}) and give the folder {store}"


def _read_zarr(path: Path) -> ImageData:
    import dask.array as da
    import zarr

    levels: list = []
    if path.is_file():
        import zipfile

        if zipfile.is_zipfile(path):  # ("No group found in store StorePath(LocalStore ...)")
            raise InputError(_unzip_advice(path))
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as err:
        raise InputError(f"{path.name}: not a readable Zarr store ({err})") from err
    attrs = dict(node.attrs) if hasattr(node, "attrs") else {}
    if isinstance(node, zarr.Array):
        arr = node
    else:
        layout = "bioformats2raw.layout" in attrs or "bioformats2raw.layout" in (attrs.get("ome") or {})  # NGFF 0.4 / 0.5
        if layout and "0" in node:  # bioformats2raw: the first image series
            node = node["0"]
            attrs = {**attrs, **dict(node.attrs)}
        # OME-Zarr: multiscale levels (the first is the full resolution); plain group: first array
        arr = None
        multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
        if multiscales:
            paths = _multiscale_paths(multiscales, node, path.name)
            arr = node[paths[0]]
            levels = [da.from_zarr(node[p]) for p in paths] if len(paths) > 1 else []
            _note_label_images(node, path)
        else:
            arr = _first_image_array(node, path.name, _listed_label_images(node))
    data = levels[0] if levels else da.from_zarr(arr)
    if data.dtype.byteorder not in ("=", "|"):  # napari (its labels), torch and numba want native byte order
        data = data.astype(data.dtype.newbyteorder("="))
        levels = [level.astype(level.dtype.newbyteorder("=")) for level in levels]
    multiscales = multiscales if not isinstance(node, zarr.Array) else None
    axes = _ome_axes(multiscales, data.ndim)
    image = ImageData(data, "zarr", {}, levels)
    axes = _drop_size_one_axes_named(image, axes)  # OME-Zarr: axis names kept, so channels stay known
    image.metadata = {**attrs, "axes": axes} if axes else dict(attrs)
    calibration = _zarr_calibration(multiscales, path.name) if multiscales else zarr_calibration(node.attrs)
    if calibration:
        image.metadata["calibration"] = calibration
        # OME-Zarr's translation: where the image lies (a tile of a plate, a crop of a larger field); labels
        # written here from such an image carry it as an attribute (set_zarr_calibration)
        origin = _zarr_origin(multiscales) if multiscales else zarr_origin(node.attrs)
        if origin:
            image.metadata["origin"] = origin
    return image


def _multiscale_paths(multiscales: Any, group: Any, name: str) -> list[str]:
    """The arrays' paths of an OME-Zarr group's first multiscale image, full resolution first; InputError
    naming the store when its ``multiscales`` metadata is damaged (not a list of images, no datasets, a
    path with no array): a KeyError / IndexError traceback before."""
    try:
        paths = [str(dataset["path"]) for dataset in multiscales[0]["datasets"]]
    except (KeyError, IndexError, TypeError) as err:
        raise InputError(f"{name}: damaged OME-Zarr metadata: 'multiscales' is not a list of images with "
                         f"'datasets' ({type(err).__name__}: {err})") from None
    missing = [p for p in paths if p not in group]
    if not paths or missing:
        raise InputError(f"{name}: damaged OME-Zarr metadata: its 'multiscales' lists "
                         + (f"array {missing[0]!r}, which the store does not hold" if paths else "no array"))
    return paths


def _listed_label_images(group: Any) -> list[str]:
    """The label images an OME-Zarr ``labels`` group lists (its ``labels`` attribute; NGFF 0.4 or 0.5), []."""
    attrs = dict(getattr(group, "attrs", {}) or {})
    listed = attrs.get("labels", (attrs.get("ome") or {}).get("labels"))
    return [str(name) for name in listed] if isinstance(listed, list) else []


def _note_label_images(image_group: Any, path: Path) -> None:
    """Warn that an OME-Zarr image's ``labels`` group holds label images, opened by their own path (the image
    opened alone, and nothing said they were there)."""
    try:
        names = _listed_label_images(image_group["labels"]) if "labels" in image_group else []
    except Exception:  # noqa: BLE001 - a damaged labels group: the image opens as before
        names = []
    if names:
        shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
        warnings.warn(MicrosegWarning(f"{path.name} also holds label images ({shown}): open "
                                      f"{path.name}/labels/{names[0]} to see them"), stacklevel=4)


def _first_image_array(group: Any, name: str, label_images: list[str] | None = None) -> Any:
    """The first (by name) array of at least 2 axes in a plain Zarr group (not OME-Zarr), with a warning
    naming the arrays left out; InputError when it holds none (naming the label images an OME-Zarr
    ``labels`` group lists: ``label_images``)."""
    arrays = sorted(group.arrays(), key=lambda item: item[0])
    images = [(key, arr) for key, arr in arrays if arr.ndim >= 2]
    if not images:
        if label_images:
            raise InputError(f"{name}: an OME-Zarr labels group; its label images are {', '.join(label_images)}: "
                             f"open {name}/{label_images[0]}")
        raise InputError(f"{name}: Zarr group holds no image array (of at least 2 axes)"
                         + (f"; it holds {', '.join(key for key, _ in arrays)}" if arrays else ""))
    others = [key for key, _ in arrays if key != images[0][0]]
    if others:
        warnings.warn(MicrosegWarning(
            f"{name}: Zarr group of {len(arrays)} arrays; read '{images[0][0]}' {tuple(images[0][1].shape)}, the "
            f"others ({', '.join(others[:5])}{' ...' if len(others) > 5 else ''}) are left out: give the array's "
            f"path ({name}/{others[0]}) to read another"), stacklevel=4)
    return images[0][1]


#: what a calibration holds: micrometres per pixel (X; Y where pixels are not square), minutes per
#: frame, micrometres per focal plane
CALIBRATION_KEYS = ("pixel_size_um", "pixel_size_y_um", "frame_interval_min", "z_step_um")
#: attribute of a bare Zarr array (labels this package wrote) that holds its image's calibration
ZARR_CALIBRATION_ATTR = "calibration"
#: attribute holding where the labels' image lies (micrometres per axis letter), beside the calibration
ZARR_ORIGIN_ATTR = "origin_um"


def set_zarr_calibration(arr: Any, calibration: dict | None, origin: dict | None = None) -> None:
    """Record ``calibration`` (see :data:`CALIBRATION_KEYS`) on a Zarr array's attributes, so labels written
    as Zarr keep their image's pixel size, Z step and frame interval (read back by :func:`read_image`;
    a bare array has no OME-Zarr multiscales to hold them), and ``origin`` (``{"Y": um, "X": um, "Z": um}``,
    where the image lies: an OME-Zarr's translation) beside it. Nothing when it states none."""
    found = _valid_calibration(calibration)
    if found:
        arr.attrs[ZARR_CALIBRATION_ATTR] = found
        if _valid_origin(origin):
            arr.attrs[ZARR_ORIGIN_ATTR] = _valid_origin(origin)


def zarr_origin(attrs: Any) -> dict:
    """The origin :func:`set_zarr_calibration` recorded on a Zarr array ({} when none or not valid)."""
    stated = dict(attrs or {}).get(ZARR_ORIGIN_ATTR)
    return _valid_origin(stated) if isinstance(stated, dict) else {}


def zarr_calibration(attrs: Any) -> dict:
    """The calibration :func:`set_zarr_calibration` recorded on a Zarr array ({} when none or not valid)."""
    stated = dict(attrs or {}).get(ZARR_CALIBRATION_ATTR)
    return _valid_calibration(stated) if isinstance(stated, dict) else {}


def _valid_calibration(calibration: dict | None) -> dict:
    """The entries of ``calibration`` that are :data:`CALIBRATION_KEYS` with a finite positive number, as floats."""
    return {key: float(value) for key, value in (calibration or {}).items()
            if key in CALIBRATION_KEYS and isinstance(value, (int, float)) and _positive(value)}


def _ome_axes(multiscales: Any, ndim: int) -> str:
    """Axis letters (e.g. ``"TCZYX"``) from OME-Zarr multiscales metadata; "" when absent or unclear."""
    try:
        names = multiscales[0]["axes"]
        letters = "".join(str(a["name"] if isinstance(a, dict) else a)[0].upper() for a in names)
    except (TypeError, KeyError, IndexError):
        return ""
    return letters if len(letters) == ndim else ""


def drop_size_one_axes(data: Any) -> Any:
    """Drop size-1 axes before (Y, X) of an array with more than 3 axes (OME-Zarr's
    T, C, Z, Y, X with C = Z = 1 -> (T, Y, X); all of them 1 -> a (Y, X) image). A 3-D
    (1, Y, X) array stays a stack of one frame, as the same stack read from a TIFF does."""
    image = ImageData(data, "")
    _drop_size_one_axes_named(image, "")
    return image.data


def time_stack(data: Any, what: str = "labels", lazy: bool = False) -> np.ndarray:
    """A (T, Y, X) array in memory from what a reader returned: size-1 axes before (Y, X) dropped
    (:func:`drop_size_one_axes`; a (1, 1, Y, X) file is one frame), InputError for anything else.
    With ``lazy`` a dask array (Zarr, a big TIFF) stays lazy."""
    from ..errors import InputError

    arr = drop_size_one_axes(data)
    if not (lazy and hasattr(arr, "compute")):
        arr = np.asarray(arr)
    if arr.ndim == 2 and data.ndim > 2:  # (1, 1, Y, X) and the like: one frame
        arr = arr[None]
    if arr.ndim != 3:
        raise InputError(f"{what} must be a (T, Y, X) stack, got shape {arr.shape}")
    return arr


def _drop_size_one_axes_named(image: ImageData, axes: str) -> str:
    """:func:`drop_size_one_axes` on ``image`` (its data and pyramid levels, in place); returns ``axes``
    without the dropped axes' letters ("" if unnamed)."""
    data = image.data
    if data.ndim <= 3:
        return axes
    keep = [i for i in range(data.ndim) if i >= data.ndim - 2 or data.shape[i] != 1]
    image.index(tuple(slice(None) if i in keep else 0 for i in range(data.ndim)))
    return "".join(axes[i] for i in keep) if axes else ""


#: the TIFF Software tag of labels napari's Save writes with this plugin (a Labels layer): its reader
#: opens such a file as a Labels layer whatever its name
#: the TIFF Software tag of the images this package's napari writers save (their plane positions are
#: where the layer lay, read back as such; see :func:`_tiff_origin`)
MICROSEG_SOFTWARE = "napari-microseg"
LABELS_SOFTWARE = "napari-microseg labels"


def write_tiff(path: str | os.PathLike, data: np.ndarray, overwrite: bool = False, calibration: dict | None = None,
               origin: dict | None = None, **kwargs: Any) -> Path:
    """Write ``data`` (any shape, e.g. (Y, X) or (T, Y, X)) to a TIFF file atomically.

    Refuses to replace an existing file unless ``overwrite`` is true. Large
    arrays (> 2 GB) are written as BigTIFF; ``kwargs`` go to ``tifffile.imwrite``.
    Grey images and stacks are tagged as such (:func:`tiff_axes_kwargs`). A lazy (dask)
    (T, Y, X) stack is computed and written one frame at a time, never held whole.
    ``calibration``: ``{"pixel_size_um": um per pixel, "frame_interval_min": minutes}`` (either
    may be missing), as :func:`read_image` reports it in ``metadata["calibration"]``: written as
    OME-XML (``PhysicalSizeX/Y``, ``TimeIncrement``), so labels made from a calibrated movie
    carry its units on to ``microseg track`` and napari. ``origin``: where the image lies, ``{"Y": um,
    "X": um, "Z": um}`` (any of them; napari's translate of a calibrated layer), written with a calibration
    as every OME plane's ``PositionY/X/Z`` (read back as ``metadata["origin"]``).
    """
    import tifffile

    target = Path(path)
    if target.exists() and not overwrite:
        raise InputError(f"{target}: exists already (choose another name or allow overwriting)")
    if hasattr(data, "compute") and getattr(data, "ndim", 0) == 3:  # a lazy (dask) stack: frame by frame
        shape, dtype = tuple(int(v) for v in data.shape), np.dtype(data.dtype)
        contents = {"data": (np.asarray(data[t], dtype=dtype) for t in range(shape[0])), "shape": shape, "dtype": dtype}
    else:
        arr = np.asarray(data)
        shape, dtype = arr.shape, arr.dtype
        contents = {"data": arr}
    for key, value in tiff_axes_kwargs(data, calibration).items():
        kwargs.setdefault(key, value)
    colour = kwargs.get("photometric") == "rgb"  # colour samples last (YXS, TYXS): calibrated as the grey axes
    ome = _ome_calibration(calibration or {}, (np.ndim(data) if not hasattr(data, "compute") else data.ndim) - colour)
    one_plane = len(shape) in (3, 4) and shape[0] == 1 and "imagej" not in kwargs
    ome_name = target.name.lower().endswith((".ome.tif", ".ome.tiff"))  # tifffile writes OME-XML for such a name
    if one_plane and (ome or ome_name):
        kwargs.setdefault("ome", False)  # (its name alone made tifffile write OME-XML: the frame axis and calibration lost)
    if ome and one_plane:
        # one frame (or plane) of a stack: OME-TIFF readers drop a size-1 axis ((1, Y, X) read back as (Y, X),
        # which `track` and `evaluate tracks` refuse); tifffile's own JSON description keeps the shape, and
        # the calibration goes in it (read back by read_image)
        kwargs["metadata"] = {**(kwargs.get("metadata") or {}), SHAPED_CALIBRATION_KEY: _valid_calibration(calibration),
                              **({SHAPED_ORIGIN_KEY: _valid_origin(origin)} if _valid_origin(origin) else {})}
        if "PhysicalSizeX" in ome:  # the pixel size in the TIFF's own tags too, for other programs (per cm)
            kwargs.setdefault("resolution", (1e4 / ome["PhysicalSizeX"], 1e4 / ome["PhysicalSizeY"]))
            kwargs.setdefault("resolutionunit", "CENTIMETER")
    elif ome and "imagej" not in kwargs:
        kwargs["ome"] = True
        grey_shape = shape[:-1] if colour else shape  # colour samples: one plane
        kwargs["metadata"] = {**(kwargs.get("metadata") or {}), **ome, **_ome_planes(origin, grey_shape)}
    writes_ome = kwargs.get("ome") is True or (ome_name and kwargs.get("ome") is None and "imagej" not in kwargs)
    if writes_ome:
        if dtype.name in OME_UNSUPPORTED:  # OME-XML has no such pixel type: a type that holds every value
            wider = _ome_dtype(data if "shape" in contents else contents["data"], dtype, target.name)
            if "shape" in contents:  # frame by frame, read again
                contents["data"] = (np.asarray(data[t]).astype(wider) for t in range(shape[0]))
                contents["dtype"] = wider
            else:
                contents["data"] = contents["data"].astype(wider)
            dtype = wider
    kwargs.setdefault("bigtiff", int(np.prod(shape)) * dtype.itemsize > 2**31 - 2**25)
    kwargs.setdefault("compression", "zlib" if dtype.kind in "iub" else None)
    with atomic_path(target) as tmp:
        tifffile.imwrite(tmp, **contents, **kwargs)
    return target


#: key of the calibration in the JSON description of a TIFF :func:`write_tiff` wrote without OME-XML
SHAPED_CALIBRATION_KEY = "microseg_calibration"

#: key of the origin (um per axis letter) beside it
SHAPED_ORIGIN_KEY = "microseg_origin"


def _valid_origin(origin: dict | None) -> dict:
    """The finite, non-zero entries of an origin ``{"Y": um, "X": um, "Z": um}``, as floats."""
    return {letter: float(value) for letter, value in (origin or {}).items()
            if letter in ("Y", "X", "Z") and isinstance(value, (int, float)) and np.isfinite(value) and value != 0}


def _ome_planes(origin: dict | None, shape: tuple) -> dict:
    """tifffile's OME ``Plane`` metadata putting every plane of a grey array of ``shape`` at ``origin``
    (``PositionY/X/Z`` in um); {} without one."""
    origin = _valid_origin(origin)
    if not origin:
        return {}
    planes = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    attributes: dict = {}
    for letter, value in origin.items():
        attributes[f"Position{letter}"] = [value] * planes
        attributes[f"Position{letter}Unit"] = ["µm"] * planes
    return {"Plane": attributes}


def _tiff_origin(tif: Any) -> dict:
    """Where a TIFF this package wrote says its image lies, ``{"Y": um, "X": um, "Z": um}`` (the ones it
    states, non-zero): its first OME plane's ``PositionY/X/Z``, or what :func:`write_tiff` put beside a
    one-frame stack's calibration; {} otherwise. A microscope's OME-TIFF holds the stage position
    there, which its labels and tables from the command line do not carry: read as a place, it would
    open the movie thousands of um away from them."""
    found: dict = {}
    software = str(tif.pages[0].software or "") if len(tif.pages) else ""
    if not software.startswith(MICROSEG_SOFTWARE):
        return {}
    if tif.ome_metadata:
        import xml.etree.ElementTree as ET

        try:
            plane = next((el for el in ET.fromstring(tif.ome_metadata).iter() if el.tag.endswith("}Plane")
                          or el.tag == "Plane"), None)
        except ET.ParseError:
            return {}
        if plane is None:
            return {}
        for letter in ("Y", "X", "Z"):
            value = plane.get(f"Position{letter}")
            if value is None:
                continue
            size = in_unit(1.0, plane.get(f"Position{letter}Unit"), "micrometer")  # no unit: not known
            try:
                found[letter] = float(value) * size if size is not None else None
            except ValueError:
                continue
        return _valid_origin({k: v for k, v in found.items() if v is not None})
    shaped = (tif.shaped_metadata or ({},))[0] if not tif.imagej_metadata else {}
    if isinstance(shaped, dict) and isinstance(shaped.get(SHAPED_ORIGIN_KEY), dict):
        return _valid_origin(shaped[SHAPED_ORIGIN_KEY])
    return {}

#: pixel types OME-XML cannot name (a calibrated TIFF is written as OME-TIFF)
OME_UNSUPPORTED = ("int64", "uint64", "float16", "bool")


def _ome_dtype(data: Any, dtype: np.dtype, name: str) -> np.dtype:
    """The OME pixel type that holds every value of ``data`` (written with a calibration):
    float16 -> float32, bool -> uint8, int64 / uint64 -> the smallest of uint8 ... int32 / uint32 that
    holds their range (a lazy stack's range read frame by frame); InputError when none does."""
    if dtype.name == "float16":
        return np.dtype(np.float32)
    if dtype.name == "bool":
        return np.dtype(np.uint8)
    lo = hi = 0
    frames = (data[t] for t in range(data.shape[0])) if hasattr(data, "compute") else (data,)
    for frame in frames:
        frame = np.asarray(frame)
        if frame.size:
            lo, hi = min(lo, int(frame.min())), max(hi, int(frame.max()))
    for candidate in (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32):
        info = np.iinfo(candidate)
        if info.min <= lo and hi <= info.max:
            return np.dtype(candidate)
    raise InputError(f"{name}: values from {lo} to {hi} do not fit the 32-bit integers a calibrated (OME) TIFF "
                     "holds: convert the layer to float (or remove its units) first")


def calibration_from_layer(scale: Any, units: Any) -> dict:
    """``{"pixel_size_um", "frame_interval_min", "z_step_um"}`` of a napari layer's ``scale`` and
    ``units`` ((Y, X), (T, Y, X), (Z, Y, X) or (T, Z, Y, X) order), each only where the units are a
    length or a time, not napari's "pixel" (non-square pixels add ``pixel_size_y_um``); the axis before
    Y is focal planes when its unit is a length, time when it is a time. The form :func:`read_image`
    reports and :func:`write_tiff` takes."""
    found: dict = {}
    if scale is None or units is None or len(scale) < 2 or len(units) != len(scale):
        return found
    y, x = (in_unit(scale[i], units[i], "micrometer") for i in (-2, -1))
    if y is not None and x is not None:
        found["pixel_size_um"] = x
        if abs(y - x) > 1e-6 * x:  # non-square pixels keep their Y size
            found["pixel_size_y_um"] = y
    if len(scale) >= 3:
        z_step = in_unit(scale[-3], units[-3], "micrometer")
        if z_step is not None:  # (Z, Y, X) or (T, Z, Y, X)
            found["z_step_um"] = z_step
            if len(scale) >= 4 and (interval := in_unit(scale[-4], units[-4], "minute")) is not None:
                found["frame_interval_min"] = interval
        elif (interval := in_unit(scale[-3], units[-3], "minute")) is not None:
            found["frame_interval_min"] = interval
        elif len(scale) >= 4 and (interval := in_unit(scale[-4], units[-4], "minute")) is not None:
            found["frame_interval_min"] = interval  # (T, Z, Y, X) of no stated Z step: the time kept
    return found


def origin_from_layer(translate: Any, units: Any) -> dict:
    """``{"Y": um, "X": um, "Z": um}`` of a napari layer's ``translate`` on the axes whose ``units`` are a
    length (Y, X last; Z before them), non-zero ones only: where :func:`write_tiff` puts the image
    (``origin``). {} for a layer at 0 or in pixels."""
    if translate is None or units is None or len(translate) < 2 or len(units) != len(translate):
        return {}
    letters = {-1: "X", -2: "Y", -3: "Z"}
    found: dict = {}
    for i, letter in letters.items():
        if -i > len(translate):
            break
        per_unit = in_unit(1.0, units[i], "micrometer")
        if per_unit is None:
            continue
        found[letter] = float(translate[i]) * per_unit
    return _valid_origin(found)


def _positive(value: Any) -> bool:
    return value is not None and np.isfinite(value) and value > 0


def _ome_calibration(calibration: dict, ndim: int) -> dict:
    """tifffile's OME metadata keys for ``calibration`` (see :func:`write_tiff`); empty for
    other than (Y, X), (T|Z, Y, X) or (T, Z, Y, X) data, or without a finite positive value."""
    if ndim not in (2, 3, 4):
        return {}
    out: dict = {}
    size, interval, z_step = (calibration.get(key) for key in ("pixel_size_um", "frame_interval_min", "z_step_um"))
    if _positive(size):
        size_y = calibration.get("pixel_size_y_um", size)  # non-square pixels keep their Y size
        out.update(PhysicalSizeX=float(size), PhysicalSizeY=float(size_y), PhysicalSizeXUnit="µm", PhysicalSizeYUnit="µm")
    axes = tiff_axes(ndim, calibration)
    if "Z" in axes and _positive(z_step):
        out.update(PhysicalSizeZ=float(z_step), PhysicalSizeZUnit="µm")
    if "T" in axes and _positive(interval):
        out.update(TimeIncrement=float(interval), TimeIncrementUnit="min")
    return out


def tiff_axes(ndim: int, calibration: dict | None = None) -> str:
    """The axis letters a grey array of ``ndim`` axes is written with: (Y, X); (T, Y, X), or (Z, Y, X)
    when ``calibration`` states a Z step (or ``z_planes``: a Z stack of unknown step) and no frame
    interval; (T, Z, Y, X). "" for other ``ndim``."""
    calibration = calibration or {}
    z_stack = ((_positive(calibration.get("z_step_um")) or calibration.get("z_planes") is True)
               and not _positive(calibration.get("frame_interval_min")))
    return {2: "YX", 3: "ZYX" if z_stack else "TYX", 4: "TZYX"}.get(int(ndim), "")


def tiff_axes_kwargs(arr: Any, calibration: dict | None = None) -> dict:
    """``tifffile.imwrite`` options that say what a grey (Y, X) image, (T, Y, X) or (Z, Y, X) stack or
    (T, Z, Y, X) movie is (``arr``: anything with ``ndim``, numpy or dask; ``calibration``: see
    :func:`tiff_axes`).

    Without them tifffile takes a stack of 3 or 4 frames (or a movie of 3 or 4 planes) for RGB(A)
    colour (planar samples), and an ``.ome.tif`` time-lapse for channels; with them the file reads
    back (here and in Fiji / OME tools) as the frames it holds. Other shapes: no options.
    """
    if np.ndim(arr) == 4 and arr.shape[-1] in (3, 4):  # a colour movie (T, Y, X, RGB): tifffile's colour
        return {}
    axes = tiff_axes(np.ndim(arr), calibration)
    return {"photometric": "minisblack", "metadata": {"axes": axes}} if axes else {}


def write_fits(path: str | os.PathLike, data: np.ndarray, header: dict | None = None, overwrite: bool = False) -> Path:
    """Write an array (any number of axes; FITS stores them last axis first: a (T, Y, X) stack as NAXIS1 = X)
    to a FITS file (primary HDU) atomically, with optional header cards."""
    from astropy.io import fits

    target = Path(path)
    if target.exists() and not overwrite:
        raise InputError(f"{target}: exists already (choose another name or allow overwriting)")
    data = np.asarray(data)
    if data.dtype.kind == "b":  # FITS has no boolean images: a mask is written as 0 / 1 bytes
        data = data.astype(np.uint8)
    if data.dtype.kind not in "uif":
        raise InputError(f"FITS images hold numbers; cannot write an array of dtype {data.dtype}")
    hdu = fits.PrimaryHDU(data)
    for key, value in (header or {}).items():
        card = str(key)[:8].upper()
        if card in ("COMMENT", "HISTORY"):  # read_image joins repeated cards with newlines: one card a line
            for line in str(value).split("\n"):
                hdu.header.add_comment(line) if card == "COMMENT" else hdu.header.add_history(line)
        else:
            hdu.header[card] = value
    with atomic_path(target) as tmp:
        hdu.writeto(tmp, overwrite=True)
    return target


def write_zarr(path: str | os.PathLike, data: Any, chunks: tuple[int, ...] | None = None, overwrite: bool = False) -> Path:
    """Write a numpy or dask array to a Zarr array folder.

    Written to a temporary sibling folder first, then renamed, so an
    interrupted write never leaves a half-written store at ``path``.
    """
    import shutil
    import tempfile

    import dask.array as da

    target = Path(path)
    guard_target(target)
    if target.exists() and not overwrite:
        raise InputError(f"{target}: exists already (choose another name or allow overwriting)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target.name), dir=target.parent))
    try:
        arr = data if isinstance(data, da.Array) else da.from_array(np.asarray(data), chunks=chunks or "auto")
        if chunks:
            arr = arr.rechunk(chunks)
        da.to_zarr(arr, str(tmp / "store"), overwrite=True)
        replace_tree(tmp / "store", target)  # the old store whole until the new one is in place
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def check_complete(image: "ImageData", name: str) -> None:
    """InputError for a label store that ``microseg batch segment`` is still writing or was interrupted
    writing (its ``microseg_batch`` record says not complete): its frames after the last one written are
    empty, and tracks ending there came out "disappeared" without a word. A store whose run finished with
    frames that failed is warned about, naming them."""
    record = image.metadata.get("microseg_batch")
    if not (isinstance(record, dict) and record.get("complete") is False):
        return
    failed = record.get("failed_frames")
    if isinstance(failed, list):  # the run finished; these frames failed (its failures.csv says why)
        shown = ", ".join(str(t) for t in failed[:10]) + (" ..." if len(failed) > 10 else "")
        warnings.warn(MicrosegWarning(f"{name}: {len(failed)} frame(s) failed in the 'microseg batch segment' run that "
                                      f"wrote it (see its failures.csv) and hold no objects: frame(s) {shown}"),
                      stacklevel=2)
        return
    raise InputError(f"{name} is a label store that a 'microseg batch segment' run has not finished (it was "
                     "interrupted, or is running): run that command again to finish it, then track")


def frame_name(file_name: str, t: int) -> str:
    """Name of frame ``t`` of a stack file, for training and scoring lists: ``<file>[t]``."""
    return f"{file_name}[{int(t)}]"


def sequence_of(name: str) -> str | None:
    """The stack file a :func:`frame_name` comes from (None for a name of an image of its own)."""
    stem, bracket, rest = str(name).rpartition("[")
    return stem if bracket and rest.endswith("]") and rest[:-1].isdigit() else None


def check_image_array(image: Any, name: str = "image", ndims: tuple[int, ...] = (2, 3)) -> None:
    """Raise InputError for arrays that cannot be processed as images.

    Checks dimensionality, empty axes, NaN/inf (numpy inputs only) and all-constant images.
    """
    shape = tuple(getattr(image, "shape", ()))
    if len(shape) not in ndims:
        raise InputError(f"{name}: expected a {' or '.join(f'{d}-D' for d in ndims)} array, got shape {shape}")
    if 0 in shape:
        raise InputError(f"{name}: empty array of shape {shape}")
    if isinstance(image, np.ndarray):
        if image.dtype.kind == "f" and not np.isfinite(image).all():
            raise InputError(f"{name}: contains NaN or infinite values")
        if image.size and image.min() == image.max():
            raise InputError(f"{name}: all pixels have the same value ({image.flat[0]}); nothing to see")


def parse_fits_section(section: str) -> tuple[slice, slice]:
    """Parse a FITS section string ``"[x1:x2,y1:y2]"`` (1-based, inclusive) into numpy (row, column) slices."""
    text = section.strip().strip("[]")
    try:
        xpart, ypart = text.split(",")
        x1, x2 = (int(v) for v in xpart.split(":"))
        y1, y2 = (int(v) for v in ypart.split(":"))
    except ValueError as err:
        raise InputError(f"cannot parse FITS section {section!r} (expected '[x1:x2,y1:y2]')") from err
    if min(x1, x2, y1, y2) < 1:
        raise InputError(f"FITS section {section!r} starts below 1 (sections count pixels from 1)")
    return slice(min(y1, y2) - 1, max(y1, y2)), slice(min(x1, x2) - 1, max(x1, x2))


def crop_data_section(image: np.ndarray, header: dict, keys: tuple[str, ...] = ("TRIMSEC", "DATASEC")) -> tuple[np.ndarray, tuple[slice, slice] | None]:
    """Crop a CCD frame to its light-sensitive area, removing overscan/prescan.

    Uses the first of ``keys`` found in the FITS ``header`` (standard
    ``TRIMSEC``/``DATASEC`` cards, ``"[x1:x2,y1:y2]"``). Returns the cropped
    (Y, X) view and the (row, column) slices used, or the image unchanged and
    None when the header names no section (crop by hand then, e.g.
    ``image[:, 8:-8]``).
    """
    for key in keys:
        if key in header and isinstance(header[key], str):
            rows, cols = parse_fits_section(header[key])
            if rows.stop > image.shape[-2] or cols.stop > image.shape[-1]:
                raise InputError(f"{key} = {header[key]} reaches outside the {image.shape[-1]} x {image.shape[-2]} "
                                 "(columns x rows) frame")
            cropped = image[..., rows, cols]
            return cropped, (rows, cols)
    return image, None
