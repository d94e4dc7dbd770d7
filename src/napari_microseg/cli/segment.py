"""``microseg segment``: segment images with a trained model; write labels, objects.csv and counts.csv.

Input is one image (TIFF, FITS, Zarr, or a PNG / JPEG / BMP export), a folder of images, or a glob
pattern. For each input ``<stem>`` the labels go to ``OUT/labels/<stem>.tif``
(Zarr inputs and images above ``--zarr-above`` pixels: ``OUT/labels/<stem>.zarr``,
written frame by frame). All objects go to ``OUT/objects.csv`` and the
per-frame counts to ``OUT/counts.csv`` (both with an ``image`` column last);
the settings and device go to ``OUT/segment_run.json``. Existing outputs are
never replaced without ``--overwrite``. Of several inputs, one that cannot be
segmented is skipped (named on the terminal and under ``failures`` in
``segment_run.json``) and the run exits 1 after writing the others' results.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..defaults import DEFAULT_MIN_SIZE, DEFAULT_TILE
from ..errors import InputError
from ..io.atomic import guard_target, make_output_folder, refuse_folders_in_the_way, replace_tree, temp_prefix
from ._help import HelpFormatter
from ._staging import earlier_run_record, refuse_another_runs_outputs

IMAGE_SUFFIXES = (".tif", ".tiff", ".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz", ".fits.fz", ".fit.fz",
                  ".fts.fz", ".fz", ".zarr")


def add_ccd_rule_options(p: Any, repeats: bool = True) -> None:
    """``--shape-rules`` and ``--max-cluster-size`` (CCD class models' [C] shape rules) on a parser or group;
    with ``repeats`` also ``--hot-repeats`` (it compares the inputs with each other, so not for ``batch``,
    which segments each file on its own)."""
    p.add_argument("--shape-rules", action="store_true",
                   help="CCD class models: hot pixels must be straight lines (compact hot blobs become cluster)")
    p.add_argument("--max-cluster-size", type=int, default=None,
                   help="CCD class models: cluster components larger than this many px become background "
                        "(tracks; default and 0: no limit)")
    if not repeats:  # said plainly instead of argparse's "unrecognized arguments"
        p.add_argument("--hot-repeats", action="store_true", dest="hot_repeats_unavailable", help=argparse.SUPPRESS)
        return
    p.add_argument("--hot-repeats", action="store_true",
                   help="CCD class models: the frames are exposures of one sensor (a stack, or single frames of one "
                        "shape given together): hot pixels that do not repeat become cluster, clusters that do become hot. "
                        "Two passes, one exposure in memory; a stopped run resumes when run again")


def ccd_rule_options(args: argparse.Namespace) -> dict:
    """``postprocess_options`` for :func:`~napari_microseg.inference.segment.segment` from
    :func:`add_ccd_rule_options`' flags; a one-line error for a negative size."""
    rules = {"shape_rules": True} if args.shape_rules else {}
    if getattr(args, "hot_repeats", False):
        rules["hot_repeats"] = True
    if args.max_cluster_size is not None:
        if args.max_cluster_size < 0:
            raise InputError(f"--max-cluster-size must be >= 0 px (0 = no limit), got {args.max_cluster_size}")
        if args.max_cluster_size > 0:
            rules["max_cluster_size"] = args.max_cluster_size
    return rules


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment images with a trained model", description=__doc__,
                       formatter_class=HelpFormatter)
    p.add_argument("--model", required=True, help="model file (.pt) from 'microseg train', or a shipped model name (e.g. nuclei_fluorescence, nuclei_fluorescence_fast, ccd_classes)")
    p.add_argument("--input", required=True, help="image file, folder of images, glob pattern ('data/*.tif') or .zarr")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--tile", type=int, default=None, help="largest tile side in px; tiles shrink to cover each frame evenly (default 512, or the model's patch size if larger)")
    p.add_argument("--channel", type=int, default=None,
                   help="channel to segment in multi-channel TIFFs, or colour of an RGB image (0-based; default: "
                        "multi-channel files are refused, RGB images segmented as the mean of their colours)")
    p.add_argument("--overlap", type=float, default=None,
                   help="tile overlap: px, or fraction of the tile if < 1 (default 32 px, at most half the tile)")
    p.add_argument("--batch-size", type=int, default=4, help="pixels per network call, in 256 x 256 tiles (default 4: one 512 x 512 tile)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--threshold", type=float, default=None,
                   help="foreground probability threshold (default: the value tuned for the model, else 0.5)")
    p.add_argument("--min-size", type=int, default=DEFAULT_MIN_SIZE,
                   help=f"drop objects smaller than this many px (default {DEFAULT_MIN_SIZE})")
    p.add_argument("--diameter", default=None,
                   help="typical nucleus width in px, or 'auto' to estimate it per image (from the first frame of a "
                        "stack); tiles are resized when it lies outside the widths the model was trained on "
                        "(default: segment as trained)")
    p.add_argument("--tta", action="store_true", help="test-time augmentation: average over 4 flips (4x slower)")
    p.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="network arithmetic: auto = bfloat16 on GPUs and on CPUs that compute it natively (AMX, AVX512-BF16), else float32")
    p.add_argument("--max-size", type=int, default=None, help="drop objects larger than this many px (default: none)")
    p.add_argument("--remove-border", action="store_true", help="drop objects touching the image border")
    add_ccd_rule_options(p)
    p.add_argument("--no-fill-holes", action="store_true", help="do not fill holes inside objects")
    p.add_argument("--save-probabilities", action="store_true", help="also write OUT/probabilities/<stem>.tif (float32, K channels)")
    p.add_argument("--zarr-above", type=int, default=8192 * 8192,
                   help="write labels as Zarr for images with more pixels than this (default 8192*8192)")
    p.add_argument("--hdu", type=int, default=None, help="FITS only: HDU index to read (default: first with image data)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def find_inputs(spec: str) -> list[Path]:
    """Resolve ``--input``: a file, a .zarr folder, a folder of images, or a glob pattern; sorted paths.
    A pattern leaves out images in earlier runs' output folders below its fixed part."""
    from ..io.images import FITS_SUFFIXES, PLAIN_SUFFIXES, TIFF_SUFFIXES, ZARR_SUFFIXES, drop_previews, glob_fixed_part, image_kind, run_output

    p = Path(spec)
    if p.exists() and (p.is_file() or image_kind(p) == "zarr"):
        return [p]
    if p.is_dir():
        entries = [q for q in p.iterdir() if not q.name.startswith(".")]
        found, previews = drop_previews(sorted(q for q in entries if image_kind(q) is not None))
        if not found:
            folders = [q for q in entries if q.is_dir()]
            hint = (f"; its {len(folders)} sub-folder(s) are not searched: 'microseg batch segment' searches them, "
                    f"or give a pattern such as '{p}/**/*.tif'" if folders else "")
            raise InputError(f"{p}: folder holds no images ({', '.join(TIFF_SUFFIXES + FITS_SUFFIXES + ZARR_SUFFIXES[:1] + PLAIN_SUFFIXES)}){hint}")
        _say_what_is_left_out(p, [q for q in entries if image_kind(q) is None] + previews)
        return found
    if any(ch in spec for ch in "*?["):
        fixed = glob_fixed_part(spec)
        matches = sorted(Path(q) for q in glob.glob(spec, recursive=True) if image_kind(q) is not None)
        records: dict = {}
        earlier = [q for q in matches if run_output(q, fixed, records=records)]  # an earlier run's labels: results
        dropped = set(earlier)
        found, previews = drop_previews([q for q in matches if q not in dropped])
        if earlier:
            print(f"note: {len(earlier)} image(s) in earlier runs' output folders left out "
                  f"({', '.join(str(q) for q in earlier[:2])}{' ...' if len(earlier) > 2 else ''})", file=sys.stderr)
        if not found:
            raise InputError(f"no images match {spec!r}" + (f" ({len(earlier)} in earlier runs' output folders left out)"
                                                           if earlier else ""))
        if previews:
            print(f"note: {len(previews)} PNG / JPEG file(s) matched beside the TIFF / FITS / Zarr images were left out "
                  f"as previews ({', '.join(q.name for q in previews[:3])}{' ...' if len(previews) > 3 else ''}); "
                  "name them on their own to segment them", file=sys.stderr)
        return found
    raise InputError(f"{spec}: no such file or folder")


def _say_what_is_left_out(folder: Path, others: list[Path]) -> None:
    """One stderr line naming what a folder --input holds besides images: files of other types and
    sub-folders (not searched: ``microseg batch segment`` searches them)."""
    files = sorted(q.name for q in others if q.is_file())
    folders = sorted(q.name for q in others if q.is_dir())
    parts = []
    if files:
        parts.append(f"{len(files)} file(s) of other types ({', '.join(files[:3])}{' ...' if len(files) > 3 else ''})")
    if folders:
        parts.append(f"{len(folders)} sub-folder(s) ({', '.join(folders[:3])}{' ...' if len(folders) > 3 else ''}; "
                     "'microseg batch segment' searches sub-folders)")
    if parts:
        print(f"note: {folder} also holds {' and '.join(parts)}: not segmented", file=sys.stderr)


def _stem(path: Path) -> str:
    name = path.name.rstrip("/")
    for suffix in sorted(IMAGE_SUFFIXES + (".ome.zarr",), key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _probe_shape(path: Path, axes_found: list | None = None) -> tuple | None:
    """Shape of the image ``read_image`` will give, without reading pixels (TIFF, Zarr).

    A channel axis is left out (``--channel`` picks one; without it the real read names
    the channels), as is a trailing RGB colour axis. None when unknown. ``axes_found``, when
    given, receives the axis letters of a TIFF whose series names them.
    """
    from ..io.images import image_kind, read_image

    kind = image_kind(path)
    try:
        if kind == "zarr":
            image = read_image(path, channel="all")
            shape = list(image.data.shape)
            if "channel_axis" in image.metadata:
                del shape[image.metadata["channel_axis"]]
            return tuple(shape)
        if kind == "tiff":
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape, axes = tuple(tif.series[0].shape), str(tif.series[0].axes)
            if len(axes) != len(shape):
                return shape
            last = len(axes) - 1
            kept = [(n, a) for i, (n, a) in enumerate(zip(shape, axes)) if a != "C" and not (a == "S" and i == last)]
            if axes_found is not None:
                axes_found.append("".join(a for _, a in kept))
            return tuple(n for n, _ in kept)
    except Exception:  # noqa: BLE001 - the real read reports problems
        return None
    return None


def _label_target(out: Path, path: Path, shape: tuple | None, zarr_above: int) -> list[Path]:
    """Labels output path; both candidates (.tif, .zarr) when the shape is unknown yet."""
    from ..io.images import image_kind

    base = out / "labels" / _stem(path)
    if image_kind(path) == "zarr" or (shape is not None and shape[-2] * shape[-1] > zarr_above):
        return [base.with_name(base.name + ".zarr")]
    if shape is None:
        return [base.with_name(base.name + ".tif"), base.with_name(base.name + ".zarr")]
    return [base.with_name(base.name + ".tif")]


def _open_zarr_labels(tmp_dir: Path, shape: tuple, dtype: str, calibration: dict | None = None,
                      origin: dict | None = None):
    """A new Zarr label array at ``tmp_dir``, one frame per chunk row, carrying the image's ``calibration``
    and ``origin`` (where it lies, micrometres per axis letter)."""
    import zarr

    from ..io.images import set_zarr_calibration

    chunks = tuple([1] * (len(shape) - 2)) + (min(shape[-2], 1024), min(shape[-1], 1024))
    arr = zarr.open_array(str(tmp_dir), mode="w", shape=shape, chunks=chunks, dtype=dtype)
    set_zarr_calibration(arr, calibration, origin)  # the movie's pixel size, frame interval and place go with its labels
    return arr


def check_segment_settings(args: argparse.Namespace) -> None:
    """One-line errors for segmentation settings before any work (``segment`` and ``batch``)."""
    tile, overlap = getattr(args, "tile", None), getattr(args, "overlap", None)
    batch_size, threshold = getattr(args, "batch_size", None), getattr(args, "threshold", None)
    min_size, max_size = getattr(args, "min_size", None), getattr(args, "max_size", None)
    if tile is not None and tile < 16:
        raise InputError(f"--tile must be at least 16 px, got {tile}")
    if overlap is not None and not overlap >= 0:  # NaN fails this too
        raise InputError(f"--overlap must be >= 0, got {overlap}")
    channel = getattr(args, "channel", None)
    if channel is not None and channel < 0:
        raise InputError(f"--channel must be >= 0 (0-based), got {channel}")
    if batch_size is not None and batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {batch_size}")
    if threshold is not None and not 0 < threshold < 1:
        raise InputError(f"--threshold must be a probability between 0 and 1, got {threshold}")
    if min_size is not None and min_size < 0:
        raise InputError(f"--min-size must be >= 0 px, got {min_size}")
    if max_size is not None and max_size < max(min_size or 0, 1):
        raise InputError(f"--max-size must be >= 1 px and >= --min-size, got {max_size}")
    for option in ("threads", "torch_threads"):
        value = getattr(args, option, None)
        if value is not None and value < 1:
            raise InputError(f"--{option.replace('_', '-')} must be >= 1, got {value}")
    if overlap is not None and 0.5 < overlap < 1:  # a fraction of the tile: at most half of it, as in px
        raise InputError(f"--overlap as a fraction of the tile must be at most 0.5, got {overlap}")
    if tile is None and overlap is not None and overlap >= 1 and overlap > DEFAULT_TILE // 2:  # it was clipped unsaid
        raise InputError(f"--overlap must be at most half the tile ({DEFAULT_TILE // 2} px for the default --tile "
                         f"{DEFAULT_TILE}; give a larger --tile for more), got {overlap}")
    if tile is not None and overlap is not None and overlap >= 1 and overlap > tile // 2:
        raise InputError(f"--overlap must be at most half the tile ({tile // 2} px for --tile {tile}), got {overlap}")


def probabilities_metadata(ndim: int, calibration: dict | None, z_planes: bool = False,
                           channel_names: list[str] | None = None) -> dict:
    """tifffile's OME metadata for a probability map of ``ndim`` axes: (C, Y, X), or (T|Z, C, Y, X) (``z_planes``:
    a Z stack's planes, not frames), with the input's pixel size, frame interval or Z step (``calibration`` as
    ``read_image`` reports it) and the channels' names, so that the map opens over the image and its labels
    (it opened at 1 px per unit, Z tagged as time)."""
    from ..io.images import _positive

    calibration = calibration or {}
    axes = "CYX" if ndim == 3 else ("ZCYX" if z_planes else "TCYX")
    metadata: dict = {"axes": axes}
    size = calibration.get("pixel_size_um")
    if _positive(size):
        metadata.update(PhysicalSizeX=float(size), PhysicalSizeY=float(calibration.get("pixel_size_y_um", size)),
                        PhysicalSizeXUnit="µm", PhysicalSizeYUnit="µm")
    if axes[0] == "T" and _positive(calibration.get("frame_interval_min")):
        metadata.update(TimeIncrement=float(calibration["frame_interval_min"]), TimeIncrementUnit="min")
    if axes[0] == "Z" and _positive(calibration.get("z_step_um")):
        metadata.update(PhysicalSizeZ=float(calibration["z_step_um"]), PhysicalSizeZUnit="µm")
    if channel_names:
        metadata["Channel"] = {"Name": [str(name) for name in channel_names]}
    return metadata


def _probability_names(loaded: Any, probabilities: Any) -> list[str] | None:
    """The names of a model's output channels (its classes; ``probabilities``: (K, Y, X) or (T, K, Y, X)), or
    None where the model file states no name for each of the K channels."""
    names = [str(name) for name in (getattr(loaded, "class_names", None) or [])]
    return names if names and len(names) == int(probabilities.shape[-3]) else None


def _read_input(args: argparse.Namespace, path: Path, lazy: bool = True, warn: bool = True):
    """Read one input as ``segment`` does: ``--hdu``, ``--channel`` (a channel, or a colour of an RGB
    image), RGB to grey. Returns ``(image, data)``: the :class:`~napari_microseg.io.images.ImageData`
    and its pixels, numpy or (``lazy``: Zarr, a TIFF over LAZY_TIFF_BYTES) dask."""
    from ..io import images as image_io
    from ..io.images import read_image

    image = read_image(path, hdu=args.hdu, channel=args.channel,
                       lazy_above_bytes=image_io.LAZY_TIFF_BYTES if lazy else None)
    return image, image_io.channel_or_grey(image, args.channel, path.name, warn=warn)


def _segment_options(args: argparse.Namespace, ccd_rules: dict, diameter) -> dict:
    """The keyword arguments of :func:`~napari_microseg.inference.segment.segment_image` that come from the
    command line (tiling, thresholds, sizes, test-time augmentation, precision, CCD rules, diameter)."""
    from ..inference.segment import DEFAULT_OVERLAP

    overlap = DEFAULT_OVERLAP if args.overlap is None else args.overlap
    return dict(tile=args.tile, overlap=overlap, batch_size=args.batch_size, threshold=args.threshold,
                min_size=args.min_size, max_size=args.max_size, fill_holes=not args.no_fill_holes,
                remove_border=args.remove_border, test_time_augmentation=args.tta, precision=args.precision,
                postprocess_options=ccd_rules, diameter=diameter)


def _segment_one(args: argparse.Namespace, loaded, path: Path, i: int, n_inputs: int, out: Path, diameter,
                 ccd_rules: dict, stage: Path | None = None):
    """Segment one input file and write its labels; returns ``(result, objects, counts, clusters, record)``.

    ``clusters`` is the charge-cluster table of a class model with a "cluster" class, else None. With
    ``stage`` (a staging folder in ``out``) the files are written there, at their paths relative to ``out``,
    and moved into place when the run ends (:func:`_publish_staged`); the record names their final place.
    """
    import numpy as np

    from ..inference.segment import segment_image
    from ..io.images import LABELS_SOFTWARE, is_z_stack, not_2d_or_stack, unnamed_planes, write_tiff
    from ..progress import run_with_text_progress

    image, data = _read_input(args, path)
    if data.ndim not in (2, 3):
        raise InputError(not_2d_or_stack(path.name, data.shape, str(image.metadata.get("axes", ""))))
    axes = str(image.metadata.get("axes", "")).upper()
    # (said with --quiet too: it hides the progress bar, not how the file was read)
    if data.ndim == 3 and is_z_stack(image):
        print(f"note: {path.name} is a Z stack (axes ZYX): its planes are segmented one by one, as frames "
              "(t in the tables is the plane)", file=sys.stderr)
    elif data.ndim == 3 and unnamed_planes(axes, data.shape):
        # a plain TIFF stack of a few planes says nothing of what they are: channels as likely as frames
        print(f"note: {path.name} does not say what its {data.shape[0]} planes are (axes {axes}): taken as time "
              "frames; if they are channels, save one per file (or an OME / ImageJ TIFF and --channel)",
              file=sys.stderr)
    if isinstance(data, np.ndarray) and data.size and data.min() == data.max():
        print(f"warning: {path.name} is constant (every pixel {data.flat[0]}): nothing to segment", file=sys.stderr)
    final_target = _label_target(out, path, tuple(data.shape), args.zarr_above)[0]
    root = stage if stage is not None else out  # where this image's files are written now
    target = root / final_target.relative_to(out)
    zarr_out = target.suffix == ".zarr"
    tmp_dir = None
    out_arr = None
    if zarr_out:
        from ..io.atomic import make_output_folder

        make_output_folder(target.parent)  # (recorded: a run that fails leaves no empty labels/ behind)
        tmp_dir = Path(tempfile.mkdtemp(prefix=temp_prefix(target.name), dir=target.parent))
        dtype = "uint8" if loaded.output_mode == "multiclass" else "uint32"
        out_arr = _open_zarr_labels(tmp_dir / "store", tuple(data.shape), dtype, image.metadata.get("calibration"),
                                    image.metadata.get("origin"))
    repeats = bool(ccd_rules.get("hot_repeats")) and data.ndim == 3
    try:
        if repeats:  # a stack of exposures: the rule in two passes, one frame in memory
            from ..inference.repeats import segment_exposures
            from ..inference.segment import _frame_pixels

            labels = out_arr if zarr_out else np.zeros(tuple(data.shape), np.uint8)
            n_frames = int(data.shape[0])
            scratch = out / f"{REPEATS_SCRATCH}-{_stem(path)}"
            key = _stamp(path) + "|" + _resume_settings(args, loaded, ccd_rules, diameter)
            gen = segment_exposures(loaded, lambda t: _frame_pixels(data, t), n_frames,
                                    write_labels=labels.__setitem__, scratch_dir=scratch,
                                    resume_keys=[f"{key}|frame {t}" for t in range(n_frames)],
                                    exposure_names=[f"{path.name} frame {t}" for t in range(n_frames)],
                                    **_segment_options(args, ccd_rules, diameter))
            gen = _say_what_is_kept(gen, scratch)
        else:
            gen = segment_image(loaded, data, out=out_arr, keep_probabilities=True if args.save_probabilities else None,
                                **_segment_options(args, ccd_rules, diameter))
        label = f"[{i + 1}/{n_inputs}] {path.name}"
        try:
            result = run_with_text_progress(gen, label=label, quiet=args.quiet)
        except InputError as err:  # say which file (a folder may hold thousands)
            raise err if str(err).startswith(path.name) else InputError(f"{path.name}: {err}") from None
        for key in ("scale_warning", "coverage_warning"):
            if result.settings.get(key):
                print(f"warning: {path.name}: {result.settings[key]}", file=sys.stderr)
        clusters = None
        if repeats:
            clusters = result.clusters.copy()
            clusters["image"] = path.name
        elif _counts_clusters(loaded):
            from ..autolabel.ccd import clusters_per_frame

            clusters = clusters_per_frame(result.labels, data, loaded.class_names)
            clusters["image"] = path.name
        if zarr_out:
            replace_tree(tmp_dir / "store", target)  # the old store whole until the new one is in place
        else:
            # the movie's pixel size and frame interval go with its labels (to microseg track, napari)
            write_tiff(target, np.asarray(labels if repeats else result.labels), overwrite=args.overwrite,
                       software=LABELS_SOFTWARE, calibration=image.metadata.get("calibration"),
                       origin=image.metadata.get("origin"))  # where it lies (an OME-Zarr's translation)
        if repeats:
            _write_defect_mask(args, root, path, result.defects, image.metadata.get("calibration"))
            shutil.rmtree(scratch, ignore_errors=True)  # the stack's outputs are written: nothing left to resume
            _report_repeat_rule(result.settings, path.name)
        if args.save_probabilities and getattr(result, "probabilities", None) is not None:
            probabilities = result.probabilities  # (K, Y, X) or (T, K, Y, X): K classes, not focal planes
            try:
                one_frame = np.ndim(probabilities) == 4 and np.shape(probabilities)[0] == 1
                # OME-XML drops a one-frame stack's T axis (read back (K, Y, X) beside (1, Y, X) labels): such a map
                # keeps its shape in tifffile's own description, uncalibrated, as before
                ome = ({"metadata": {"axes": "TCYX"}} if one_frame else
                       {"ome": True, "metadata": probabilities_metadata(
                           np.ndim(probabilities), image.metadata.get("calibration"),
                           z_planes=data.ndim == 3 and is_z_stack(image),
                           channel_names=_probability_names(loaded, probabilities))})
                write_tiff(root / "probabilities" / f"{_stem(path)}.tif", probabilities, overwrite=args.overwrite,
                           photometric="minisblack", **ome)
            except BaseException:  # (a full disk): the image is not done, so its labels go too (they were left
                if not zarr_out:  # beside tables without it, and refused a rerun without --overwrite)
                    Path(target).unlink(missing_ok=True)
                raise
    finally:
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    objects = result.objects.copy()
    objects["image"] = path.name
    counts = result.counts.copy()
    counts["image"] = path.name
    record = {"image": str(path), "labels": str(final_target), "shape": list(data.shape),
              "objects": int(len(objects)), "diameter": result.settings.get("diameter"),
              "scale_factor": result.settings.get("scale_factor"), "image_tile": result.settings.get("image_tile"),
              **{key: result.settings.get(key) for key in TILING_PER_IMAGE},
              "scale_warning": result.settings.get("scale_warning"),
              "coverage_warning": result.settings.get("coverage_warning")}
    if repeats:  # this stack's repeat rule (the run's settings hold the last stack's)
        record.update({key: result.settings[key] for key in REPEAT_RECORD_KEYS})
    n_obj = len(objects)
    resized = result.settings.get("scale_factor", 1.0)
    note = f" (nucleus diameter {result.settings['diameter']:.1f} px, tiles resized x{resized:.2f})" if resized != 1.0 else ""
    print(f"{path.name}: {n_obj} objects in {int(data.shape[0]) if data.ndim == 3 else 1} frame(s) -> {final_target}{note}")
    return result, objects, counts, clusters, record


def _remove_own_temporaries(targets: list[Path]) -> None:
    """Remove the hidden temporaries a killed run left beside this run's outputs (``.<name>.XXXX`` files and
    Zarr stores, see ``temp_prefix``): those of these targets only, never other hidden files of the folder
    (a user's .git or a Zarr array's .zarray are theirs)."""
    for target in targets:
        if target.parent.is_dir():
            for stale in target.parent.glob(glob.escape(temp_prefix(target.name)) + "*"):
                if stale.is_dir():
                    shutil.rmtree(stale, ignore_errors=True)
                else:
                    stale.unlink(missing_ok=True)


@contextlib.contextmanager
def _tap_steps_noted(name: str, noted: list[str], each: bool = False):
    """Within it, the TapWarnings of a pedestal step away from the middle column (one per frame, naming no file:
    20 lines for the simulator's 20 frames) are noted as ``name`` in ``noted`` (once, or with ``each`` once per
    warning: single exposures segmented as one stack), said once by the run; other warnings are shown as they
    come."""
    import warnings

    from ..autolabel.ccd import TapWarning

    with warnings.catch_warnings():
        shown = warnings.showwarning

        def note_tap_steps(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, TapWarning) and "not at the middle column" in str(message):
                if each or name not in noted:
                    noted.append(name)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = note_tap_steps
        warnings.simplefilter("always", TapWarning)
        yield


def _publish_staged(stage: Path, out: Path) -> None:
    """Move every file and Zarr store of the staging folder ``stage`` to the same place under ``out`` (a store
    replaced whole, see ``replace_tree``; a file by rename). A destination folder on another file system (a
    symlinked ``labels/``) first gets a copy beside it, so that every copy is made before anything is replaced
    and the moves are renames only ("Invalid cross-device link" came after some labels were replaced)."""
    entries: list[tuple[Path, Path]] = []  # (staged file or store, its destination)
    for folder, subfolders, files in os.walk(stage):
        here = Path(folder)
        destination = out / here.relative_to(stage)
        for name in [d for d in subfolders if d.endswith(".zarr")]:
            entries.append((here / name, destination / name))
            subfolders.remove(name)
        entries += [(here / name, destination / name) for name in files]
    moves: list[tuple[Path, Path]] = []
    copies: list[Path] = []
    try:
        for source, target in entries:
            target.parent.mkdir(parents=True, exist_ok=True)
            if os.stat(target.parent).st_dev != os.stat(source.parent).st_dev:
                near = target.parent / f"{temp_prefix(target.name)}publish"
                copies.append(near)
                (shutil.copytree if source.is_dir() else shutil.copy2)(source, near)
                source = near
            moves.append((source, target))
    except BaseException:
        for near in copies:
            if near.is_dir():
                shutil.rmtree(near, ignore_errors=True)
            else:
                near.unlink(missing_ok=True)
        raise
    for source, target in moves:
        if source.is_dir():
            replace_tree(source, target)
        else:
            os.replace(source, target)


def _earlier_labels_in_other_format(out: Path, written: list[Path]) -> list[Path]:
    """The label files an earlier segment run in ``out`` wrote for the images this run wrote ``written`` for,
    in the other format (``labels/f32.zarr`` when this run wrote ``labels/f32.tif``, as ``--zarr-above``
    chose): the same image's earlier result, which the new tables do not describe (it was kept, and called
    "of other images"). Only files the earlier run's record (segment_run.json, read before this run's
    replaces it) lists: a user's own file stays."""
    earlier = earlier_run_record(out, "segment_run.json") or {}
    listed = {Path(str(record.get("labels"))).name for record in earlier.get("images") or []
              if isinstance(record, dict) and record.get("labels")}
    stale = []
    for path in written:
        stem = path.name[: -len(path.suffix)] if path.suffix in (".tif", ".zarr") else path.name
        for suffix in (".tif", ".zarr"):
            other = path.with_name(stem + suffix)
            if other.name != path.name and other.name in listed and other.exists():
                stale.append(other)
    return stale


def _note_earlier_labels(out: Path, written: set[Path]) -> None:
    """With --overwrite: name the label files in ``out/labels`` that this run did not write (an earlier
    run's, of other images). They stay, since rerunning a subset patches a run, but ``evaluate seg``
    scores every file there, so the run says so."""
    written_names = {p.name for p in written}
    others = sorted(p.name for p in (out / "labels").iterdir() if p.name not in written_names
                    and not p.name.startswith(".")) if (out / "labels").is_dir() else []
    if others:
        listed = ", ".join(others[:3]) + (" ..." if len(others) > 3 else "")
        print(f"note: {out / 'labels'}/ also holds {len(others)} label file(s) of an earlier run for other images "
              f"({listed}): kept; 'microseg evaluate seg --pred' scores every file there", file=sys.stderr)


def _single_exposures(args: argparse.Namespace, paths: list[Path], out: Path) -> tuple[list[Path] | None, list[dict]]:
    """For ``--hot-repeats``: the inputs when they are single (Y, X) frames of one shape, to be segmented
    as one stack; None when each is a (T, Y, X) stack of its own (the rule runs within each). An input
    that cannot be read is left out (returned in the failures list, ``{"image", "error"}``) when at least
    two exposures remain. Files whose shape is not in their header (FITS) are read once here.
    InputError for a mix of frames and stacks, frames of different shapes, fewer than two exposures,
    labels that would be Zarr (a Zarr input, frames over ``--zarr-above``)."""
    shapes, readable, failures = [], [], []
    for path in paths:
        shape = _probe_shape(path)
        if shape is None:
            try:
                shape = tuple(_read_input(args, path, lazy=False, warn=False)[1].shape)
            except Exception as err:  # noqa: BLE001 - one unreadable exposure leaves the others
                reason = str(err) if isinstance(err, InputError) else f"{type(err).__name__}: {err}"
                message = reason if reason.startswith(path.name) else f"{path.name}: {reason}"
                print(f"skipped {message}", file=sys.stderr)
                failures.append({"image": str(path), "error": message})
                continue
        shapes.append(tuple(shape))
        readable.append(path)
    frames = [path for path, shape in zip(readable, shapes) if len(shape) == 2]
    if readable and not frames:
        return None, failures
    if len(frames) < len(readable):
        raise InputError("--hot-repeats takes either single exposures (Y, X) or stacks (T, Y, X), not both in one run")
    if len(frames) < 2:
        found = f"{frames[0].name} is the only one" if frames else "none could be read"
        raise InputError(f"--hot-repeats needs at least 2 exposures of one sensor; {found}")
    odd = next((i for i, shape in enumerate(shapes) if shape != shapes[0]), None)
    if odd is not None:
        raise InputError(f"--hot-repeats: the exposures must share one shape; {frames[odd].name} is {shapes[odd]} "
                         f"where {frames[0].name} is {shapes[0]}")
    for path in frames:
        if _label_target(out, path, shapes[0], args.zarr_above)[0].suffix != ".tif":
            raise InputError(f"--hot-repeats on single exposures writes TIFF labels; {path.name} would need Zarr "
                             "(a Zarr input, or frames over --zarr-above pixels): segment it without --hot-repeats "
                             "or raise --zarr-above")
    return frames, failures


def _segment_exposures(args: argparse.Namespace, loaded, paths: list[Path], out: Path, diameter, ccd_rules: dict,
                       stage: Path | None = None):
    """Segment single-frame exposures of one sensor together so that the repeat rule compares them
    (:func:`~napari_microseg.inference.repeats.segment_exposures`: two passes, one exposure in memory, a
    scratch folder in ``out``); write each one's labels with its calibration. The labels are written into a
    hidden folder in ``out`` and moved into ``out/labels`` once every exposure is done, so a failed or
    interrupted run leaves none; with ``stage`` (an ``--overwrite`` run over an earlier one) into the staging
    folder instead, with the defect mask, published with the tables (:func:`_publish_staged`). Returns
    ``(result, objects, counts, clusters, records)`` with ``image`` naming each row's file and ``t`` = 0."""
    import numpy as np

    from ..inference.repeats import segment_exposures
    from ..io.images import LABELS_SOFTWARE, write_tiff
    from ..progress import run_with_text_progress

    calibration: dict[Path, object] = {}

    cameras: dict = {}  # the first exposure's FITS camera cards ("first") and name; "warned" once said

    def read(t: int) -> np.ndarray:
        image, data = _read_input(args, paths[t], lazy=False, warn=False)
        calibration[paths[t]] = image.metadata.get("calibration")
        camera = {key: image.metadata[key] for key in CAMERA_KEYS if key in image.metadata}
        if camera and not cameras:
            cameras.update(first=camera, name=paths[t].name)
        elif camera and not cameras.get("warned"):
            differ = {key for key in camera.keys() & cameras["first"].keys() if camera[key] != cameras["first"][key]}
            if differ:  # said once, as soon as seen: the user may stop the run
                cameras["warned"] = True
                print(f"warning: {cameras['name']} and {paths[t].name} are from different cameras by their FITS "
                      f"headers ({_camera_text(cameras['first'], differ)} / {_camera_text(camera, differ)}): the "
                      "repeat rule compares exposures of one sensor", file=sys.stderr)
        return np.asarray(data, dtype=np.float32)  # one type for all: ADC as read, never wrapped or cut

    shape = tuple(_probe_shape(paths[0]) or read(0).shape)
    targets = [_label_target(out, path, shape, args.zarr_above)[0] for path in paths]
    for stale in out.glob(".microseg-labels-*"):  # left by a killed run (its labels are segmented again)
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=".microseg-labels-", dir=out))

    def write(t: int, labels: np.ndarray) -> None:
        write_tiff(staging / targets[t].name, labels, overwrite=True, calibration=calibration.get(paths[t]),
                   software=LABELS_SOFTWARE)

    settings_key = _resume_settings(args, loaded, ccd_rules, diameter)
    try:
        scratch = out / REPEATS_SCRATCH
        gen = segment_exposures(loaded, read, len(paths), write_labels=write, scratch_dir=scratch,
                                resume_keys=[_stamp(path) + "|" + settings_key for path in paths],
                                exposure_names=[path.name for path in paths],
                                **_segment_options(args, ccd_rules, diameter))
        result = run_with_text_progress(_say_what_is_kept(gen, scratch), label=f"{len(paths)} exposures",
                                        quiet=args.quiet)
        root = stage if stage is not None else out  # (a stage: moved into place with the tables)
        placed = [root / target.relative_to(out) for target in targets]
        placed[0].parent.mkdir(parents=True, exist_ok=True)
        for target, place in zip(targets, placed):
            os.replace(staging / target.name, place)
        _write_defect_mask(args, root, None, result.defects, calibration.get(paths[0]))
        shutil.rmtree(scratch, ignore_errors=True)  # every output is written: nothing left to resume
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for key in ("scale_warning", "coverage_warning"):
        if result.settings.get(key):
            print(f"warning: {paths[0].name} ...: {result.settings[key]}", file=sys.stderr)
    _report_repeat_rule(result.settings, f"{len(paths)} exposures")
    tables = []
    for table in (result.objects, result.counts, result.clusters):
        table = table.copy()
        table["image"] = [paths[t].name for t in table["t"]]
        table["t"] = 0
        tables.append(table)
    records = []
    for t, (path, target) in enumerate(zip(paths, targets)):
        n_obj = int((result.objects["t"] == t).sum())
        records.append({"image": str(path), "labels": str(target), "shape": list(shape), "objects": n_obj,
                        "diameter": result.settings.get("diameter"), "scale_factor": result.settings.get("scale_factor"),
                        "image_tile": result.settings.get("image_tile"),
                        **{key: result.settings.get(key) for key in TILING_PER_IMAGE},
                        "scale_warning": result.settings.get("scale_warning"), "stacked_as_frame": t})
        print(f"{path.name}: {n_obj} objects -> {target}")
    return result, tables[0], tables[1], tables[2], records


#: the tiling ``segment`` fits to each image (tile sides, tiles per network call, overlap): recorded per image in
#: ``segment_run.json`` (the run's record of several images held the last one's alone)
TILING_PER_IMAGE = ("tiles_yx", "tiles_per_call", "overlap")


#: the repeat rule's scratch folder in --out (``-<stem>`` for a stack): kept by a failed or interrupted run to resume
REPEATS_SCRATCH = ".microseg-repeats"
#: FITS header cards naming the camera / sensor of an exposure (--hot-repeats warns when they differ)
CAMERA_KEYS = ("INSTRUME", "DETECTOR", "CCDNAME", "CAM_ID", "CAM_SN")


def _camera_text(camera: dict, keys: set) -> str:
    return ", ".join(f"{key} {camera[key]}" for key in CAMERA_KEYS if key in keys)


#: the defect mask of the single exposures of a --hot-repeats run (a stack's is named after it)
ALL_EXPOSURES = "all_exposures"


def _defect_mask_path(out: Path, stack: Path | None) -> Path:
    """``OUT/defect_masks/<stack stem>.tif``, or ``all_exposures.tif`` for single exposures (``stack`` None)."""
    return out / "defect_masks" / f"{_stem(stack) if stack is not None else ALL_EXPOSURES}.tif"


def _write_defect_mask(args: argparse.Namespace, out: Path, stack: Path | None, defects, calibration) -> Path:
    """Write the repeat rule's persistent pixels as a uint8 (Y, X) TIFF (1: a defect of the sensor)."""
    import numpy as np

    from ..io.images import write_tiff

    return write_tiff(_defect_mask_path(out, stack), np.asarray(defects, np.uint8), overwrite=args.overwrite,
                      calibration=calibration)


#: the repeat rule's figures kept per stack in segment_run.json (the run's top level holds the last stack's)
REPEAT_RECORD_KEYS = ("exposures", "exposures_resumed", "persistent_pixels", "persistent_frames_needed",
                      "chance_defect_pixels", "repeat_warning", "scratch_bytes")
#: the first-pass record format (part of the resume key: records of another format are not reused)
REPEATS_RECORD_FORMAT = 1


def _stamp(path: Path) -> str:
    """Path, size and modification time of a file; for a folder (Zarr) the largest modification time and
    the total size of the files in it (a chunk rewritten inside changes it)."""
    path = Path(path).resolve()
    info = path.stat()
    if not path.is_dir():
        return f"{path}:{info.st_size}:{info.st_mtime_ns}"
    newest, size = info.st_mtime_ns, 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            item = os.stat(os.path.join(folder, name))
            newest, size = max(newest, item.st_mtime_ns), size + item.st_size
    return f"{path}:{size}:{newest}"


def _resume_settings(args: argparse.Namespace, loaded, ccd_rules: dict, diameter) -> str:
    """The part of an exposure's resume key that is the run's (its input's :func:`_stamp` is the rest): the
    model file (a shipped name stands for its file in the package) and every setting that changes a class
    map (not --batch-size, nor the instance-object options a class model ignores)."""
    from ..pretrained import resolve_model

    options = _segment_options(args, ccd_rules, diameter)
    for ignored in ("batch_size", "threshold", "min_size", "max_size", "fill_holes", "remove_border"):
        options.pop(ignored, None)
    settings = {**options, "hdu": args.hdu, "channel": args.channel, "device": str(loaded.device),
                "model": _stamp(resolve_model(str(args.model))), "record_format": REPEATS_RECORD_FORMAT}
    return json.dumps(settings, sort_keys=True, default=str)


def _report_repeat_rule(settings: dict, what: str) -> None:
    """Say on stderr what the repeat rule did that a user must know: exposures taken from an interrupted
    run, and why its defects may be wrong."""
    if settings.get("exposures_resumed"):
        print(f"{what}: {settings['exposures_resumed']} of {settings['exposures']} exposures were taken from the "
              "interrupted run's scratch folder, not segmented again", file=sys.stderr)
    if settings.get("repeat_warning"):
        print(f"warning: {what}: {settings['repeat_warning']}", file=sys.stderr)


def _say_what_is_kept(gen, scratch: Path):
    """Pass ``gen``'s progress on; when the run fails or is interrupted, say on stderr how many exposures
    the scratch folder keeps for a rerun (which command to run is said at the end)."""
    try:
        return (yield from gen)
    except BaseException:
        kept = len(list(scratch.glob("[0-9]*.npz"))) if scratch.is_dir() else 0
        if kept:
            print(f"{kept} segmented exposure(s) are kept in {scratch}: a rerun with the same inputs and settings "
                  "takes them from there (delete that folder to start afresh)", file=sys.stderr)
        raise


def _warn_object_options_ignored(args: argparse.Namespace) -> None:
    """A class model (CCD) gives every pixel a class: the object filters of instance models do not apply."""
    given = [flag for flag, used in (("--threshold", args.threshold is not None),
                                     ("--min-size", args.min_size != DEFAULT_MIN_SIZE),
                                     ("--max-size", args.max_size is not None),
                                     ("--remove-border", args.remove_border),
                                     ("--no-fill-holes", args.no_fill_holes)) if used]
    if given:
        print(f"warning: {', '.join(given)} apply to nuclei (instance) models; a class model gives every pixel a "
              "class and ignores them (CCD clusters: --max-cluster-size, --shape-rules)", file=sys.stderr)


def _counts_clusters(loaded) -> bool:
    """True for class models (CCD) with a "cluster" class: ``segment`` then writes clusters.csv."""
    from ..measure.counts import class_index

    return loaded.output_mode == "multiclass" and class_index(loaded.class_names, "cluster") is not None


def run(args: argparse.Namespace) -> int:
    """``microseg segment``; a TERM signal stops it as Ctrl-C does (finished images kept, exit 143)."""
    from ._signals import terminate_as_interrupt

    with terminate_as_interrupt(), contextlib.ExitStack() as cleanup:
        return _run(args, cleanup)


def _run(args: argparse.Namespace, cleanup: contextlib.ExitStack) -> int:
    """``microseg segment``'s work; ``cleanup`` releases the output folder's lock when the run ends."""
    import pandas as pd

    from ..io.images import image_kind, not_2d_or_stack
    from ..io.models import load_model
    from ..measure.tables import check_overwrite, write_objects_csv, write_table_csv

    check_segment_settings(args)
    from ..inference.scale import parse_diameter

    diameter = parse_diameter(args.diameter)
    if args.threads:
        import torch

        torch.set_num_threads(int(args.threads))
    from ..io.images import refuse_undecodable_names

    if args.zarr_above < 0:  # (-5 wrote every image as Zarr)
        raise InputError(f"--zarr-above must be a number of pixels >= 0, got {args.zarr_above}")
    inputs = find_inputs(args.input)
    refuse_undecodable_names(inputs)
    if args.hdu is not None and not any(image_kind(p) == "fits" for p in inputs):
        print("warning: --hdu applies to FITS files only; the inputs hold none", file=sys.stderr)
    stems = [_stem(p) for p in inputs]
    dupes = {s for s in stems if stems.count(s) > 1}
    if dupes:
        raise InputError(f"several inputs share the name {sorted(dupes)[0]!r}; put them in separate runs")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    try:
        loaded = load_model(args.model, device=args.device, segmentation=True)
    except ValueError as err:  # device errors
        raise InputError(str(err)) from None

    if loaded.output_mode == "multiclass":
        _warn_object_options_ignored(args)
    if getattr(args, "hot_repeats", False):  # before any file is read
        from ..inference.postprocess import ccd_class_indices

        if loaded.output_mode != "multiclass":
            raise InputError("--hot-repeats applies to CCD class models only")
        ccd_class_indices(loaded.class_names)
        if args.save_probabilities:  # the rule runs in two passes and keeps no probabilities
            raise InputError("--save-probabilities is not available with --hot-repeats")
    # refuse to replace anything before doing any work
    targets = [out / "objects.csv", out / "counts.csv", out / "segment_run.json"]
    if _counts_clusters(loaded):
        targets.append(out / "clusters.csv")
    if getattr(args, "hot_repeats", False):  # the sensor's defects: of the single exposures, or of each stack
        targets.append(_defect_mask_path(out, None))
        targets.extend(_defect_mask_path(out, path) for path in inputs)
    failures: list[dict] = []  # inputs skipped, with the reason
    usable = []
    for path in inputs:
        axes: list = []
        shape = _probe_shape(path, axes)
        if shape is not None and len(shape) not in (2, 3):
            message = not_2d_or_stack(path.name, shape, axes[0] if axes else "")
            if len(inputs) == 1:
                raise InputError(message)
            print(f"skipped {message}", file=sys.stderr)
            failures.append({"image": str(path), "error": message})
            continue
        usable.append(path)
        targets.extend(_label_target(out, path, shape, args.zarr_above))
        if args.save_probabilities:
            targets.append(out / "probabilities" / f"{_stem(path)}.tif")
    # another command's run's outputs (a track run's counts.csv, a simulation's truth labels) are never replaced,
    # not even with --overwrite (refused before "use --overwrite" is said): an earlier segment run's only
    refuse_another_runs_outputs(out, [str(t.relative_to(out)) for t in targets if t.exists()], "segment_run.json",
                                "segment")
    check_overwrite(targets, args.overwrite)
    refuse_folders_in_the_way(targets)
    for target in targets:  # labels and tables never replace an input, even with --overwrite
        guard_target(target)
    make_output_folder(out)
    from ..batch.runner import acquire_out_lock, release_out_lock

    lock = acquire_out_lock(out)  # another run into this folder would replace this one's tables
    cleanup.callback(release_out_lock, lock)
    from ._staging import make_staging_folder, remove_stale_staging

    remove_stale_staging(out, "segment")  # what killed runs left (the earlier results stayed whole)
    _remove_own_temporaries(targets)
    # --overwrite over an earlier run: this run's files are written into a staging folder and moved into place
    # with the tables at the end; stopped (Ctrl-C, TERM) or killed, the earlier run's labels and tables stay as
    # they were. (The labels were replaced one by one: 5 of 12 images of the new model beside the old run's
    # tables, or the tables cut to those 5 images.)
    stage = None
    if args.overwrite and any(target.exists() for target in targets):
        stage = make_staging_folder(out, "segment")
        cleanup.callback(shutil.rmtree, stage, ignore_errors=True)

    all_objects, all_counts, all_clusters, per_image = [], [], [], []
    t0 = time.perf_counter()
    ccd_rules = ccd_rule_options(args)  # CCD class models' [C] shape rules
    exposures = None
    if ccd_rules.get("hot_repeats"):
        exposures, unreadable = _single_exposures(args, usable, out)
        failures.extend(unreadable)
    result = None
    not_done: list[str] = []  # images left when Ctrl-C interrupted the run
    stopped: KeyboardInterrupt | None = None  # Ctrl-C, or Terminated (a TERM signal: exit 143, not 130)
    off_centre_steps: list[str] = []  # images whose pedestal steps away from the middle column: said once
    n_images = len(usable)
    if exposures is not None:  # single frames of one sensor: one stack, so that the repeat rule sees them all
        with _tap_steps_noted("an exposure of the stack", off_centre_steps, each=True):
            result, objects, counts, clusters, per_image = _segment_exposures(args, loaded, exposures, out, diameter,
                                                                              ccd_rules, stage)
        all_objects, all_counts, all_clusters = [objects], [counts], [clusters] if clusters is not None else []
        usable = []
    for i, path in enumerate(usable):
        try:
            with _tap_steps_noted(path.name, off_centre_steps):
                done = _segment_one(args, loaded, path, i, len(usable), out, diameter, ccd_rules, stage)
        except KeyboardInterrupt as stop:
            not_done, stopped = [str(p) for p in usable[i:]], stop
            break
        except Exception as err:  # noqa: BLE001 - one image's failure (bad data, out of memory) keeps the others
            if len(inputs) == 1:
                raise
            from ..errors import disk_full_hint

            reason = str(err) if isinstance(err, InputError) else f"{type(err).__name__}: {err}{disk_full_hint(err)}"
            message = reason if reason.startswith(path.name) else f"{path.name}: {reason}"
            print(f"skipped {message}", file=sys.stderr)
            failures.append({"image": str(path), "error": message})
            continue
        result, objects, counts, clusters, record = done
        if clusters is not None:
            all_clusters.append(clusters)
        all_objects.append(objects)
        all_counts.append(counts)
        per_image.append(record)
    if off_centre_steps:
        print(f"warning: {len(off_centre_steps)} of {n_images} image(s) have a pedestal step away from the middle "
              f"column (first: {off_centre_steps[0]}): taken for glow, not levelled as a readout tap (a glowing band "
              "reaching the frame's edge, as in simulated frames; a crop of a multi-tap frame must be cut at its tap "
              "boundary, or labelled with 'autolabel ccd --taps RxC')", file=sys.stderr)
    if stopped is not None and stage is not None:  # nothing of this run replaces the earlier one's results
        print(f"microseg segment: interrupted: the earlier run's labels and tables in {out} are as they were "
              f"(--overwrite replaces them when a run finishes); the {len(per_image)} image(s) this run had "
              "segmented were not kept", file=sys.stderr)
        raise stopped
    if result is None:
        if stopped is not None:
            raise stopped
        raise InputError(f"none of the {len(failures)} images could be segmented; first: {failures[0]['error']}")

    objects = pd.concat([o for o in all_objects if len(o)] or all_objects[:1], ignore_index=True)
    counts = pd.concat(all_counts, ignore_index=True)
    from ._signals import interrupts_deferred

    # the tables and the run record are written all or none: a second Ctrl-C while they were written left
    # objects.csv of this run beside counts.csv and segment_run.json of the earlier one
    with interrupts_deferred():
        # over an earlier run (a stage), the tables are written into the stage too and everything is then moved
        # into place by renames only: a failure while writing (a full disk) leaves the earlier run whole, not new
        # labels beside its tables
        root = stage if stage is not None else out
        write_objects_csv(objects, root / "objects.csv")
        write_table_csv(counts, root / "counts.csv")
        written = f"{out / 'objects.csv'} ({len(objects)} objects), {out / 'counts.csv'}"
        masks = []
        if ccd_rules.get("hot_repeats"):  # this run's: of the single exposures, or of each stack segmented
            masks = [_defect_mask_path(out, None)] if exposures is not None else [
                _defect_mask_path(out, Path(record["image"])) for record in per_image]
        if masks:
            written += f", {out / 'defect_masks'} ({len(masks)} defect mask(s))"
        stale = []  # an earlier run's files this run has no counterpart of, removed once this run's are in place
        if args.overwrite:  # an earlier run's defect masks of these inputs must not pass for this run's
            stale += sorted({_defect_mask_path(out, None), *(_defect_mask_path(out, path) for path in inputs)} - set(masks))
        if all_clusters:
            clusters = pd.concat(all_clusters, ignore_index=True)
            write_table_csv(clusters, root / "clusters.csv")
            written += f", {out / 'clusters.csv'} ({len(clusters)} clusters)"
        elif args.overwrite and earlier_run_record(out, "segment_run.json") is not None:
            # an earlier class-model run's clusters must not pass for this run's (a user's own file is no run's)
            stale.append(out / "clusters.csv")
        if args.overwrite:  # an earlier run's labels of these images in the other format (f32.zarr beside f32.tif)
            stale += _earlier_labels_in_other_format(out, [Path(record["labels"]) for record in per_image])
        settings = dict(result.settings)
        for per_image_key in ("image_tile", "scale_warning", "coverage_warning"):  # per image below, with its diameter and resize factor
            settings.pop(per_image_key, None)
        if len(per_image) > 1:  # tiles fitted to each image: the last image's said nothing of the others'
            for per_image_key in TILING_PER_IMAGE:
                settings.pop(per_image_key, None)
        settings.update(diameter=diameter, scale_factor=None if len(per_image) > 1 else settings.get("scale_factor"))
        from .. import __version__
        from ..pretrained import model_digest

        # the model's digest and the package's version: a model fine-tuned in place (train --init-model X.pt
        # --out X.pt --overwrite) keeps its name, and the record could not tell the two apart
        settings.update(model=str(args.model), model_sha256=model_digest(args.model), microseg_version=__version__,
                        input=str(args.input), channel=getattr(args, "channel", None),
                        hdu=getattr(args, "hdu", None), device=loaded.device,
                        seconds=round(time.perf_counter() - t0, 3), images=per_image, failures=failures)
        if not_done:
            settings.update(interrupted=True, not_done=not_done)
        from ..io.atomic import atomic_write_text

        atomic_write_text(root / "segment_run.json", json.dumps(settings, indent=2, default=str))
        if stage is not None:  # this run's labels, probabilities, defect masks and tables into place together
            _publish_staged(stage, out)
        for path in stale:
            if path.is_dir() and path.suffix == ".zarr":  # (an earlier run's Zarr labels: a folder)
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        if args.overwrite:
            _note_earlier_labels(out, {Path(record["labels"]) for record in per_image})
    print(f"wrote {written}, {out / 'segment_run.json'}")
    if not_done:  # the finished images' tables are kept; the rest is listed for a rerun
        if ccd_rules.get("hot_repeats"):  # the stopped stack's exposures are kept in --out for the same command
            advice = ("run the same command with --overwrite to go on (the stopped stack's segmented exposures are "
                      "kept; the finished stacks are segmented again)")
        else:
            advice = ("segment those into another --out, or use 'microseg batch segment', which resumes where it "
                      "stopped")
        print(f"microseg segment: interrupted: {len(per_image)} image(s) segmented and written, {len(not_done)} not "
              f"(listed in segment_run.json as not_done): {advice}", file=sys.stderr)
        raise stopped
    if failures:
        print(f"microseg segment: {len(failures)} of {len(inputs)} image(s) skipped (listed in segment_run.json); "
              f"first: {failures[0]['error']}", file=sys.stderr)
        return 1
    return 0
