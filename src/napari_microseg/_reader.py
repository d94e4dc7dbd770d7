"""napari reader hook: TIFF, FITS (incl. .gz) and Zarr / OME-Zarr (lazy).

TIFFs over :data:`~napari_microseg.io.images.LAZY_TIFF_BYTES` are read lazily too, and a
resolution pyramid (OME-Zarr multiscales, pyramidal TIFF) opens as a multiscale layer."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import InputError
from .io.images import FITS_SUFFIXES, LAZY_TIFF_BYTES, fits_image_hdus, image_kind, read_image, tiff_axes
from .training.data import LABEL_FOLDERS


def get_reader(path: str | list[str]) -> Callable[[Any], list] | None:
    """Return a reader function for ``path`` if its type is ours, else None."""
    if isinstance(path, list):
        if not path:
            return None
        path = path[0]
    if str(path).lower().endswith(".csv"):  # a tracks.csv this plugin (or the Tracking dock) wrote
        return read_tracks_layer if _is_tracks_csv(path) else None
    if image_kind(path) in (None, "plain"):  # PNG / JPEG: napari's own reader
        return None
    if not Path(str(path)).exists():  # a URL (https://, s3://) or a missing file: not ours to read
        return None
    return read_layers


#: the calibration entry that scales each axis letter (micrometres; T: minutes)
AXIS_CALIBRATION = {"Y": "pixel_size_um", "X": "pixel_size_um", "Z": "z_step_um", "T": "frame_interval_min"}


def layer_calibration(image) -> dict:
    """napari ``scale`` and ``units`` of an image (per layer axis, the channel axis left out) from the
    pixel size, Z step and frame interval its file states (``metadata["calibration"]``): Y, X and Z
    in micrometres, T in minutes, other axes 1 pixel; and ``translate`` (same units) where the file
    says where it lies (OME-Zarr's translation, ``metadata["origin"]``). Empty when the file states none."""
    calibration = image.metadata.get("calibration") or {}
    if not calibration:
        return {}
    axes = str(image.metadata.get("axes", ""))
    ndim = image.data.ndim
    if len(axes) != ndim:  # unnamed: (Y, X), (T, Y, X) (Z, Y, X with a Z step only) as everywhere in the package
        axes = tiff_axes(ndim, calibration)
    if not axes:
        return {}
    channel = image.metadata.get("channel_axis")
    origin = image.metadata.get("origin") or {}
    scale, units, translate = [], [], []
    for i, letter in enumerate(axes):
        # napari takes a last axis of 3 or 4 samples for RGB(A) colour, with no scale; planar samples
        # (S, Y, X) stay a layer axis, of 1 pixel
        if i == channel or (letter == "S" and i == ndim - 1 and image.data.shape[i] in (3, 4)):
            continue
        key = AXIS_CALIBRATION.get(letter)
        if key in calibration:  # non-square pixels: Y has its own size; the translation is in the axis' unit
            scale.append(float(calibration.get("pixel_size_y_um", calibration[key]) if letter == "Y" else calibration[key]))
            units.append("minute" if letter == "T" else "micrometer")
            translate.append(float(origin.get(letter, 0.0)))
        else:
            scale.append(1.0)
            units.append("pixel")
            translate.append(0.0)
    placed = {"translate": tuple(translate)} if any(translate) else {}
    if calibration.get("z_planes") is True and "Z" in axes and "T" not in axes and "z_step_um" not in calibration:
        # a Z stack of no stated step: its planes are not frames (the writers read it back; saved, it was TYX)
        placed["axis_labels"] = tuple("z" if letter == "Z" else letter.lower() for i, letter in enumerate(axes)
                                      if i != channel and not (letter == "S" and i == ndim - 1))
    return {"scale": tuple(scale), "units": tuple(units), **placed}


def _is_tracks_csv(path: Any) -> bool:
    """True for a ``tracks.csv`` (its header names ``track_id, t, y, x``; ``z`` too for 3-D tracks)."""
    found = _csv_header(path)
    return found is not None and {"track_id", "t", "y", "x"} <= set(found[0])


def _csv_header(path: Any) -> tuple[list[str], str] | None:
    """The column names of a table's first line, and its separator: ``","``, or ``";"`` where the line holds
    semicolons and no comma (a European Excel's "CSV", whose numbers have decimal commas); None when the file
    cannot be read."""
    try:
        with open(path, "rb") as table:  # the header only: a non-UTF-8 character further down (an Excel "CSV"
            first = table.readline(65536)  # save) made the whole table "not ours", and napari found no reader
    except OSError:
        return None
    line = first.decode("utf-8-sig", "replace")
    separator = ";" if ";" in line and "," not in line else ","
    return [name.strip().strip('"').strip() for name in line.split(separator)], separator  # R's write.csv quotes names


def read_tracks_layer(path: str | list[str]) -> list[tuple]:
    """``tracks.csv`` files as napari Tracks layers (``(track_id, t, [z,] y, x)`` with the division graph and
    the other columns as properties): what the plugin's tracks writer saved opens again. A table of
    several movies (``microseg batch track``'s, with an ``image`` column; ids restart per movie) gives
    one layer per movie."""
    import pandas as pd

    from .batch.runner import split_image_suffix
    from .errors import InputError
    from .io.tables import read_csv_table
    from .tracking.export import tracks_result_from_table

    layers = []
    for p in path if isinstance(path, list) else [path]:
        found = _csv_header(p)
        # "track_id; t; y; x" with decimal commas (a European Excel's save) is read as such
        style = {"sep": ";", "decimal": ","} if found is not None and found[1] == ";" else {}
        style["skipinitialspace"] = True
        try:  # a ragged or damaged table: one line naming it (pandas' ParserError before)
            table = read_csv_table(p, **style)
        except InputError:
            table = read_csv_table(p, encoding="cp1252", **style)  # an Excel "CSV" save: Windows-1252 text
        # "track_id, t, y, x" (spaces after the commas) names the columns the reader looks for
        table.columns = [str(name).strip() for name in table.columns]
        if table.empty:
            raise InputError(f"{Path(p).name} holds no tracks (a movie without objects?): nothing to show")
        movies = table.groupby("image", sort=False) if "image" in table.columns else [(None, table)]
        for movie, rows in movies:
            result = _compact_track_ids(tracks_result_from_table(rows.drop(columns="image", errors="ignore"),
                                                                 Path(p).name), Path(p).name)
            data, kwargs = result.napari_tracks()
            if "z" in result.table.columns and np.isfinite(pd.to_numeric(result.table["z"], errors="coerce")).all():
                # 3-D tracks, as the writer saves them: (track_id, t, z, y, x)
                data = result.table[["track_id", "t", "z", "y", "x"]].to_numpy(dtype=np.float64)
                kwargs["properties"].pop("z", None)
            # a movie's name without its suffix: napari's Save dialog offers the layer's name, and ".tif" there
            # chose no tracks writer
            name = Path(p).stem if movie is None else f"{Path(p).stem} {split_image_suffix(str(movie))[0]}"
            ndim = data.shape[1] - 1
            placement = (_saved_placement(Path(p), ndim) or _track_run_calibration(Path(p), ndim)
                         or (_batch_movie_calibration(Path(p), movie, ndim) if movie is not None else {}))
            layers.append((data, {**kwargs, "name": name, **placement}, "tracks"))
    return layers


#: track ids above this are renumbered 1..N when a tracks table is opened: napari's Tracks layer keeps lookup
#: arrays as long as the largest id (about 7.5 bytes per unit: 22 GiB for an id of 3e9, a killed session)
READER_LARGEST_TRACK_ID = 10**6


def _compact_track_ids(result: Any, name: str) -> Any:
    """``result`` (a TrackResult read from a table) with its track ids renumbered 1..N in their order, parents
    following, where the largest id is above :data:`READER_LARGEST_TRACK_ID`; the ids read are kept as the
    ``track_id_original`` property, and a warning says so. As it is otherwise."""
    import warnings

    from .errors import MicrosegWarning
    from .tracking.track import finalize

    table = result.table
    if not len(table) or int(table["track_id"].max()) <= READER_LARGEST_TRACK_ID:
        return result
    ids = np.unique(table["track_id"].to_numpy())
    mapping = dict(zip(ids.tolist(), range(1, len(ids) + 1)))
    table = table.assign(track_id_original=table["track_id"],
                         track_id=table["track_id"].map(mapping),
                         parent_track_id=table["parent_track_id"].map(lambda p: mapping.get(int(p), 0)))
    warnings.warn(MicrosegWarning(f"{name}: track ids up to {int(ids[-1])} are shown as 1..{len(ids)} (napari needs "
                                  "memory for every id up to the largest); the ids of the file are the "
                                  "'track_id_original' property, and a save with this plugin writes them back"),
                  stacklevel=3)
    return finalize(table, n_frames=result.n_frames, config=result.config, info=result.info)


def _saved_placement(tracks_csv: Path, ndim: int) -> dict:
    """``scale``, ``translate`` and ``units`` that napari's Save with this plugin wrote beside a Tracks
    layer's table (``x.placement.json``, see ``_writer.write_tracks_csv``); {} when there is none, it
    does not fit the layer's axes, or it was written for another table (the table was written again
    since, e.g. by ``microseg track --overwrite``: warned, as its placement is not this table's)."""
    import json
    import warnings

    from ._writer import placement_digest
    from .errors import MicrosegWarning

    sidecar = tracks_csv.with_name(tracks_csv.stem + ".placement.json")
    try:
        saved = json.loads(sidecar.read_text())
        placement = {key: tuple(saved[key]) for key in ("scale", "translate", "units")}
        scale = tuple(float(v) for v in placement["scale"])
        written_for = saved.get("table_sha256")
        if written_for is not None and written_for != placement_digest(tracks_csv):
            warnings.warn(MicrosegWarning(f"{sidecar.name} was saved with an earlier {tracks_csv.name} (or run), "
                                          "written again since: its scale and position are left out"), stacklevel=2)
            return {}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}
    if len(scale) != ndim or any(len(placement[key]) != ndim for key in ("translate", "units")):
        return {}
    return {"scale": scale, "translate": tuple(float(v) for v in placement["translate"]),
            "units": tuple(str(u) for u in placement["units"])}


def _track_run_calibration(tracks_csv: Path, ndim: int) -> dict:
    """napari ``scale`` and ``units`` of tracks that ``microseg track`` (or the Tracking dock's export)
    wrote (frames and pixels in the table), from the run's config beside it (``tracks.csv`` ->
    ``track_config.json``, ``tracks_2.csv`` -> ``track_config_2.json``: minutes per frame, micrometres
    per pixel, along Y its own where the pixels are not square; a Z stack linked plane by plane: micrometres per plane on the first axis), so they lie over
    the calibrated movie the reader opens; empty when there is no such config or it states none."""
    import json

    stem = tracks_csv.stem
    if not stem.startswith("tracks"):
        return {}
    try:
        config = json.loads((tracks_csv.parent / f"track_config{stem[len('tracks'):]}.json").read_text())
        units = config.get("units") or {}
        pixel, interval, plane, pixel_y = (units.get(key) for key in ("pixel_size_um", "frame_interval_min",
                                                                        "z_step_um", "pixel_size_y_um"))
        pixel = float(pixel) if pixel is not None else None
        pixel_y = float(pixel_y) if pixel_y is not None else None
        interval = float(interval) if interval is not None else None
        plane = float(plane) if plane is not None else None
        origin = units.get("origin_um") if isinstance(units.get("origin_um"), dict) else {}
        shift_y, shift_x = float(origin.get("Y", 0.0)), float(origin.get("X", 0.0))
    except (OSError, ValueError, TypeError, AttributeError):  # none, or not one this package wrote
        return {}
    placed = _tracks_scale(pixel, pixel_y, interval, plane, ndim)
    if placed and pixel is not None and (shift_y or shift_x):  # where the movie lies (OME-Zarr's translation)
        placed["translate"] = (0.0,) * (ndim - 2) + (shift_y, shift_x)
    return placed


def _batch_movie_calibration(tracks_csv: Path, movie: Any, ndim: int) -> dict:
    """napari ``scale`` and ``units`` of one movie's tracks in the table of ``microseg batch track`` (rows
    named by the ``image`` column), from the calibration of that movie's relabelled labels beside it
    (``tracks_labels/<image's stem>.tif``, written with the movie's pixel size and frame interval); {} when
    there is no such file or it states none."""
    import warnings

    import tifffile

    from .batch.runner import split_image_suffix
    from .io.images import _tiff_calibration, _tiff_origin

    labels = tracks_csv.parent / "tracks_labels" / f"{split_image_suffix(str(movie))[0]}.tif"
    try:
        with warnings.catch_warnings():  # non-square pixels: warned when the movie itself was read
            warnings.simplefilter("ignore")
            with tifffile.TiffFile(labels) as tif:
                calibration = _tiff_calibration(tif)
                origin = _tiff_origin(tif) if calibration else {}
    except Exception:  # noqa: BLE001 - none there, or not a TIFF: the table's own pixels and frames
        return {}
    placed = _tracks_scale(calibration.get("pixel_size_um"), calibration.get("pixel_size_y_um"),
                           calibration.get("frame_interval_min"), calibration.get("z_step_um"), ndim)
    if placed and calibration.get("pixel_size_um") and (origin.get("Y") or origin.get("X")):  # where the movie lies
        placed["translate"] = (0.0,) * (ndim - 2) + (float(origin.get("Y", 0.0)), float(origin.get("X", 0.0)))
    return placed


def _tracks_scale(pixel: float | None, pixel_y: float | None, interval: float | None, plane: float | None,
                  ndim: int) -> dict:
    """napari ``scale`` and ``units`` of a Tracks layer of ``ndim`` axes (T, [Z,] Y, X) whose table holds
    frames and pixels, from micrometres per pixel (X; ``pixel_y`` along Y where the pixels are not square),
    minutes per frame, or micrometres per plane (a Z stack linked plane by plane, when there is no frame
    interval), each None where unknown; {} when none is known."""
    import math

    pixel = pixel if pixel is not None and math.isfinite(pixel) and pixel > 0 else None
    interval = interval if interval is not None and math.isfinite(interval) and interval > 0 else None
    plane = plane if plane is not None and math.isfinite(plane) and plane > 0 and interval is None else None
    if pixel is None and interval is None and plane is None:
        return {}
    pixel_y = pixel_y if pixel is not None and pixel_y is not None and math.isfinite(pixel_y) and pixel_y > 0 else pixel
    scale = [interval or plane or 1.0] + [1.0] * (ndim - 3) + [pixel_y or 1.0, pixel or 1.0]
    first = "minute" if interval else "micrometer" if plane else "pixel"
    names = [first] + ["pixel"] * (ndim - 3) + ["micrometer" if pixel else "pixel"] * 2
    return {"scale": tuple(scale), "units": tuple(names)}


def read_layers(path: str | list[str]) -> list[tuple]:
    """Read a file into napari layer data tuples ``(data, kwargs, "image" | "labels")`` (one per
    channel; several files, as napari hands them over for Open Files as Stack: one layer of them, see
    :func:`_stacked`): integer images named as labels (``*_mask.tif``, a ``labels/`` folder) or saved
    from a Labels layer by this plugin open as Labels layers.

    FITS data stay in their raw units (ADC); the header is kept in ``metadata``. Zarr and TIFFs
    over :data:`LAZY_TIFF_BYTES` stay on disk (dask arrays); a pyramid gives a multiscale layer
    (a list of arrays, full resolution first). Errors surface as one-line :class:`InputError`
    messages naming the file.
    """
    paths = path if isinstance(path, list) else [path]
    if len(paths) == 1 and str(paths[0]).lower().endswith(FITS_SUFFIXES):
        hdus = fits_image_hdus(paths[0])
        if len(hdus) > 1:  # one amplifier per HDU: every one a layer (the GUI has no --hdu to choose another)
            return [_fits_hdu_layer(paths[0], index, hdu_name) for index, hdu_name in hdus]
    layers = []
    for p in paths:
        image = read_image(p, channel="all", lazy_above_bytes=LAZY_TIFF_BYTES)
        if np.dtype(image.data.dtype).kind not in "biuf":  # complex (FFT output), text: napari fails with no message
            raise InputError(f"{Path(str(p)).name}: values of type {image.data.dtype} are not intensities (give the "
                             "magnitude of a complex image, np.abs, as a real-valued TIFF)")
        name = _layer_name(p)
        _warn_if_unfinished(image, Path(str(p).rstrip("/")).name)
        kwargs: dict = {"name": name, "metadata": {"source_kind": image.kind, "header": image.metadata}}
        if "channel_axis" in image.metadata:  # one layer per channel, named after the file
            kwargs["channel_axis"] = image.metadata["channel_axis"]
            kwargs["name"] = [f"{name} [channel {c}]" for c in range(image.data.shape[kwargs["channel_axis"]])]
        kwargs.update(layer_calibration(image))
        data = image.data
        if str(image.metadata.get("axes", "")).endswith("S") and data.shape[-1] in (3, 4):
            kwargs["rgb"] = True  # napari's own guess takes a small colour image (4 x 4 px) for a stack
        if len(image.levels) > 1:
            data, kwargs["multiscale"] = image.levels, True
        kind = _layer_kind(p, data, kwargs)
        if image.kind == "fits" and kind == "image":
            kwargs.update(_fits_contrast(data))
        if (kind == "labels" and not kwargs.get("multiscale") and hasattr(data, "dtype")
                and int(np.prod(data.shape)) <= READER_FEATURES_PIXELS):
            from .measure.tables import ids_features  # a Labels layer carries its ids (DESIGN: features, label)

            kwargs["features"] = ids_features(np.asarray(data))  # (a small lazy one, Zarr, read for it: 64 MB at most)
        if kind == "labels" and len(paths) == 1:  # the per-object table a save with this plugin kept beside it
            saved = _saved_features(Path(str(p)), kwargs.get("features"))
            if saved is not None:
                kwargs["features"] = saved
        if kind == "labels" and Path(str(p).rstrip("/")).parent.name.lower() in LABEL_FOLDERS \
                and isinstance(kwargs["name"], str) and "label" not in kwargs["name"].lower():
            kwargs["name"] += " labels"  # images/x.tif and labels/x.tif: "x" and "x labels", not "x [1]"
        layers.append((data, kwargs, kind))
    if len(layers) > 1:  # napari hands a list of files over only for File > Open Files as Stack
        return [_stacked(layers, paths)]
    return layers


def _saved_features(labels: Path, features: Any) -> Any:
    """``features`` (the reader's ``label, pixels, index`` of a labels file, or None) joined by label with the
    columns that napari's Save with this plugin kept beside it (``x.tif.features.csv``, see
    ``_writer.write_labels_tiff``): the saved rows of labels the file does not hold (a class table's) kept too.
    None when there is no such table, or it was saved with other labels (the file was written again since:
    warned, its table is not these labels')."""
    import warnings

    import pandas as pd

    from ._writer import FEATURES_DIGEST_COLUMN, READER_FEATURE_COLUMNS, features_path
    from .batch.manifest import sha256_file
    from .errors import MicrosegWarning
    from .io.tables import read_csv_table
    from .measure.tables import label_features

    sidecar = features_path(labels)
    if not sidecar.is_file() or not labels.is_file():
        return None
    try:  # a class named "NA" or "None" stays a name
        table = read_csv_table(sidecar, keep_default_na=False, na_values=[""])
    except (InputError, OSError):
        return None
    if FEATURES_DIGEST_COLUMN not in table.columns or "label" not in table.columns:
        return None  # not a table this plugin saved: the user's own
    written_for = {str(v) for v in table[FEATURES_DIGEST_COLUMN].dropna().unique()}
    label = pd.to_numeric(table["label"], errors="coerce")
    stale = written_for != {sha256_file(labels)}
    if stale or label.isna().any() or (label != label.round()).any() or label.duplicated().any():
        said = (f"was saved with an earlier {labels.name} (written again since)" if stale
                else "does not name each object once by a whole number in its label column")
        warnings.warn(MicrosegWarning(f"{sidecar.name} {said}: its features are left out"), stacklevel=3)
        return None
    table = table.drop(columns=[c for c in table.columns if c in READER_FEATURE_COLUMNS or c == FEATURES_DIGEST_COLUMN])
    table.insert(0, "label", label.astype(np.int64).to_numpy())
    if features is not None:
        own = pd.DataFrame(features)[["label", "pixels"]]
        table = own.merge(table, on="label", how="outer", sort=True)
        table["pixels"] = table["pixels"].fillna(0).astype(np.int64)  # a saved row of no pixels here (a class's)
    return label_features(table)


#: labels files up to this many pixels (Zarr ones too) open with a ``features`` table of their ids (label, pixels):
#: about 0.3 s for 16 x 1024 x 1024; larger and multiscale ones open without one, as fast as before
READER_FEATURES_PIXELS = 16 * 1024 * 1024


def _warn_if_unfinished(image: Any, name: str) -> None:
    """Warn (a napari notification) when ``image`` is a label store a ``microseg batch segment`` run has not
    finished: it opens as it is, its frames after the last one written empty (the command line refuses it;
    opened without a word, its tracks "disappeared" there). Frames that failed in a finished run are warned
    about as the command line does."""
    import warnings

    from .errors import MicrosegWarning
    from .io.images import check_complete

    try:
        check_complete(image, name)
    except InputError as err:
        warnings.warn(MicrosegWarning(f"{err}; opened as it is: its frames after the last one written hold no "
                                      "objects"), stacklevel=2)


def _layer_name(path: Any) -> str:
    """A file's layer name: its name without the image suffixes (FRAME.FITS.GZ as FRAME)."""
    name = Path(str(path).rstrip("/")).name
    for suffix in (".gz", ".fz", ".zarr", ".tiff", ".tif", ".fits", ".fit", ".fts", ".ome"):
        if name.lower().endswith(suffix):  # FRAME.FITS as frame.fits
            name = name[: -len(suffix)]
    return name


def _fits_hdu_layer(path: Any, index: int, hdu_name: str) -> tuple:
    """HDU ``index`` of a FITS file of several image HDUs as an image layer named after it, raw ADC,
    its header in ``metadata``."""
    image = read_image(path, hdu=index)
    label = f"HDU {index}" + (f" {hdu_name}" if hdu_name else "")
    kwargs = {"name": f"{_layer_name(path)} [{label}]", "metadata": {"source_kind": image.kind, "header": image.metadata},
              **layer_calibration(image), **_fits_contrast(image.data)}
    return image.data, kwargs, "image"


#: the percentiles of a FITS frame's pixels its layer's contrast spans (as the Fe-55 sample's)
FITS_CONTRAST_PERCENTILES = (0.5, 99.9)


def _fits_contrast(data: Any) -> dict:
    """``contrast_limits`` of a FITS image layer: percentiles of its finite pixels (a CCD frame's few hot pixels
    and cosmic rays set napari's min-max limits, 3427-9810 ADC where 99 % of the frame lay below 3815: an
    almost black frame); {} for lazy data or a frame of one value."""
    if not isinstance(data, np.ndarray) or not data.size:
        return {}
    sample = data if data.size <= 4_000_000 else data.reshape(-1)[:: data.size // 4_000_000 + 1]
    finite = sample[np.isfinite(sample)] if sample.dtype.kind == "f" else sample
    if not finite.size:
        return {}
    low, high = (float(v) for v in np.percentile(finite, FITS_CONTRAST_PERCENTILES))
    return {"contrast_limits": (low, high)} if high > low else {}


def _stacked(layers: list[tuple], paths: list) -> tuple:
    """The files of ``layers`` (one each, read by :func:`read_layers`) as one layer with a new first axis,
    in the order given (lazily when any is on disk); named, calibrated and typed as the first. Files of
    other shapes, several channels or pyramids cannot stack: InputError naming the first that differs."""
    first_data, first_kwargs, kind = layers[0]
    for (data, kwargs, _), p in zip(layers, paths):
        if "channel_axis" in kwargs or kwargs.get("multiscale"):
            raise InputError(f"{Path(str(p)).name}: files of several channels or resolutions cannot be opened as a stack")
        if tuple(data.shape) != tuple(first_data.shape):
            raise InputError(f"{Path(str(p)).name} has shape {tuple(data.shape)}, {Path(str(paths[0])).name} "
                             f"{tuple(first_data.shape)}: only files of one shape open as a stack")
    def placement(kwargs: dict) -> tuple:
        return (tuple(float(v) for v in kwargs.get("scale", ())), tuple(str(u) for u in kwargs.get("units", ())))

    differing = [Path(str(p)).name for (_, kw, _), p in zip(layers[1:], paths[1:]) if placement(kw) != placement(first_kwargs)]
    if differing:  # one layer has one scale: the first file's, said (0.325 and 0.65 um stacked without a word)
        import warnings

        from .errors import MicrosegWarning

        scale, units = placement(first_kwargs)
        said = ", ".join(f"{v:g} {u}" for v, u in zip(scale, units)) if units else (
            ", ".join(f"{v:g}" for v in scale) or "uncalibrated")
        warnings.warn(MicrosegWarning(
            f"{', '.join(differing[:3])}{' ...' if len(differing) > 3 else ''}: calibrated otherwise than "
            f"{Path(str(paths[0])).name} ({said}), whose calibration the stack takes: are they one series?"),
            stacklevel=2)
    arrays = [data for data, _, _ in layers]
    if any(not isinstance(a, np.ndarray) for a in arrays):
        import dask.array as da

        stack = da.stack([da.asarray(a) for a in arrays])
    else:
        stack = np.stack(arrays)
    kwargs = dict(first_kwargs)
    for key in ("scale", "translate"):
        if key in kwargs:  # the new axis: one step per file
            kwargs[key] = (1.0 if key == "scale" else 0.0, *kwargs[key])
    if "units" in kwargs:
        kwargs["units"] = ("pixel", *kwargs["units"])
    kinds = {k for _, _, k in layers}
    stacked_kind = kind if len(kinds) == 1 else "image"
    kwargs.pop("features", None)  # the first file's ids only (an image layer takes none)
    if stacked_kind == "labels" and isinstance(stack, np.ndarray) and stack.size <= READER_FEATURES_PIXELS:
        from .measure.tables import ids_features

        kwargs["features"] = ids_features(stack)
    return stack, kwargs, stacked_kind


def _layer_kind(path: Any, data: Any, kwargs: dict) -> str:
    """``"labels"`` for a single-channel integer image whose name or folder says it holds labels
    (``*_mask.tif``, ``labels/x.tif``, see :func:`~napari_microseg.training.data.named_as_labels`)
    or that this plugin saved from a Labels layer (TIFF Software tag ``LABELS_SOFTWARE``), so it can
    be painted and trained on at once; ``"image"`` otherwise."""
    from .training.data import named_as_labels

    from .io.images import LABELS_SOFTWARE

    full = data[0] if isinstance(data, list) else data
    dtype = getattr(full, "dtype", None)
    header = (kwargs.get("metadata") or {}).get("header", {})
    saved_as_labels = header.get("software") == LABELS_SOFTWARE  # written by this plugin from a Labels layer
    if "channel_axis" in kwargs or dtype is None or dtype.kind not in "biu" or not (saved_as_labels or named_as_labels(path)):
        return "image"
    axes = str(header.get("axes", ""))
    # colour samples last (YXS); a planar SYX file, as tifffile tags any 3-frame stack, is read as frames
    if axes.endswith("S") or (full.ndim == 3 and full.shape[-1] in (3, 4) and len(kwargs.get("scale", ())) != 3):
        return "image"  # colour (an RGB mask export): no labels to paint, and its samples are no frames
    return "labels"
