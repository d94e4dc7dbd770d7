"""``microseg track``: link segmented objects over time and export tracks.

Writes into ``--out``: ``tracks.csv``, ``counts.csv``, ``track_summary.csv`` (one row per
track: span, fate, displacement, speed; in um and minutes with ``--pixel-size`` /
``--frame-interval``), ``tracks_labels.tif``
(label stack where each object carries its track id), ``track_config.json``
(everything needed to repeat the run) and, with ``--ctc``, a Cell Tracking
Challenge folder ``ctc_RES/`` (``res_track.txt`` + ``maskNNN.tif``).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
from pathlib import Path

from ._help import HelpFormatter
from ._staging import make_staging_folder, remove_stale_staging

#: the outputs of a run, written into its staging folder and moved into --out together (last: --ctc only)
OUTPUT_NAMES = ["tracks.csv", "counts.csv", "track_summary.csv", "tracks_labels.tif", "track_config.json", "ctc_RES"]  # last: --ctc only


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("track", help="track labelled objects through a time-lapse (btrack)", description=__doc__,
                       formatter_class=HelpFormatter)
    p.add_argument("--labels", required=True, help="label stack (T,Y,X): TIFF, FITS or Zarr (e.g. labels written by 'microseg segment'); one integer label per object per frame")
    p.add_argument("--image", help="optional intensity stack (T,Y,X), TIFF, FITS or Zarr, same shape (adds mean_intensity)")
    p.add_argument("--hdu", type=int, default=None,
                   help="FITS files: the HDU to read (0-based; default: the first with image data)")
    p.add_argument("--channel", type=int, default=None,
                   help="--image of several channels (OME / ImageJ): the channel to measure (0-based)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--config", default="cell", help="'cell' (divisions), 'particle' (no divisions) or a JSON file (default: cell)")
    p.add_argument("--max-search-radius", type=float, default=None, help="largest frame-to-frame displacement in pixels: the motion model links steps up to it (default: from config, cell 15, particle 10); a larger radius tells near objects apart less surely in crowded fields")
    p.add_argument("--update-method", choices=["auto", "exact", "approximate"], default=None,
                   help="Bayesian update mode (default: auto, or what a track_config.json given as --config recorded)")
    p.add_argument("--no-optimize", dest="optimize", action="store_const", const=False, default=None,
                   help="skip the global optimisation (no gap closing, no divisions; default: optimise, or what a "
                        "track_config.json given as --config recorded)")
    p.add_argument("--stage-shift", choices=["none", "images", "objects"], default=None,
                   help="correct stage jumps by phase correlation of the images or of the object masks (default: none, "
                        "or what a track_config.json given as --config recorded)")
    p.add_argument("--max-stage-shift", type=float, default=None, metavar="PX",
                   help="with --stage-shift: the longest jump between two frames taken as the stage's, pixels "
                        "(default: a quarter of the smaller image side; longer estimates are left out and said)")
    p.add_argument("--ctc", action="store_true", help="also write a Cell Tracking Challenge folder out/ctc_RES")
    p.add_argument("--pixel-size", type=float, default=None,
                   help="micrometres per pixel: track_summary.csv adds displacement and path length in um "
                        "(default: what the --labels file states, OME or ImageJ metadata, else the --image file; "
                        "a difference between the two is warned about)")
    p.add_argument("--frame-interval", type=float, default=None,
                   help="minutes between frames: track_summary.csv adds duration (and speed in um/min) "
                        "(default: what the --labels file states, else the --image file)")
    p.add_argument("--seed", type=int, default=0, help="random seed (tracking is deterministic; recorded in the config)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run)


def _max_stage_shift(args: argparse.Namespace) -> float | None:
    """--max-stage-shift, refused without a stage-shift correction (it would do nothing, unsaid)."""
    if args.max_stage_shift is not None and args.stage_shift in (None, "none"):
        from ..errors import InputError

        raise InputError("--max-stage-shift needs --stage-shift images or objects (without them no jump is measured)")
    return args.max_stage_shift


def _run_settings_from_config(args: argparse.Namespace, config: dict) -> None:
    """Fill the run's settings not given on the command line (``--update-method``, ``--no-optimize``,
    ``--stage-shift``) from what a ``track_config.json`` given as ``--config`` recorded (it holds
    everything needed to repeat its run), else from the defaults (auto, optimise, none)."""
    asked = config.get("requested") if isinstance(config.get("requested"), dict) else config  # older files: what ran
    method = str(asked.get("update_method") or "").lower()
    recorded = {"update_method": method if method in ("auto", "exact", "approximate") else None,
                "optimize": asked.get("optimize") if isinstance(asked.get("optimize"), bool) else None,
                "stage_shift": config.get("stage_shift") if config.get("stage_shift") in ("images", "objects") else
                "none" if "stage_shift" in config else None}
    defaults = {"update_method": "auto", "optimize": True, "stage_shift": "none"}
    taken = []
    for key, default in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, recorded[key] if recorded[key] is not None else default)
            if recorded[key] is not None and recorded[key] != default:
                taken.append(f"{key.replace('_', ' ')} {recorded[key]}")
    recorded_jump = config.get("max_stage_shift")
    if args.max_stage_shift is None and isinstance(recorded_jump, (int, float)) and recorded_jump > 0 \
            and args.stage_shift in ("images", "objects"):  # (with the correction only)
        args.max_stage_shift = float(recorded_jump)
        taken.append(f"max stage shift {recorded_jump:g} px")
    if taken:
        print(f"from the config file: {', '.join(taken)}", file=sys.stderr)


def _read_stack(path: str, what: str, hdu: int | None = None, channel: int | None = None):
    """A (T, Y, X) stack from a TIFF, FITS or Zarr file (``channel`` of a file of several) and the
    calibration the file states (``pixel_size_um`` / ``frame_interval_min``, see ``io.images``; may be
    empty). Zarr and TIFFs over ``LAZY_TIFF_BYTES`` stay on disk and are tracked frame by frame. A
    Z stack (OME / ImageJ axes ZYX) is tracked plane by plane, with a note."""
    from ..errors import InputError
    from ..io.images import LAZY_TIFF_BYTES, channel_or_grey, check_complete, is_z_stack, read_image, time_stack

    if not Path(path).exists():
        raise InputError(f"{what} file not found: {path}")
    image = read_image(path, hdu=hdu, lazy_above_bytes=LAZY_TIFF_BYTES, channel=channel)
    check_complete(image, Path(path).name)
    if what == "image":  # as segment reads it: --channel picks a colour of an RGB movie, which else is grey
        data = channel_or_grey(image, channel, Path(path).name)
    else:
        data = image.data
        if channel is not None and "channel" not in image.metadata:
            print(f"warning: {Path(path).name} has no channels: --channel {channel} ignored", file=sys.stderr)
    if is_z_stack(image):
        print(f"note: {Path(path).name} is a Z stack (axes ZYX): its planes are linked as frames (t in the tables "
              "is the plane)", file=sys.stderr)
    calibration = dict(image.metadata.get("calibration") or {})
    if image.metadata.get("origin") and calibration:  # where it lies (OME-Zarr's translation), micrometres
        calibration["origin"] = dict(image.metadata["origin"])
    return time_stack(data, what, lazy=True), calibration


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..errors import InputError
    from ..io.atomic import guard_target, make_output_folder, refuse_folders_in_the_way
    from ..io.images import LABELS_SOFTWARE, write_tiff
    from ..progress import run_with_text_progress
    from ..tracking.export import (check_units, write_config_json, write_counts_csv, write_ctc, write_track_summary_csv,
                                   write_tracks_csv)
    from ..tracking.track import MASK_NOTE, check_config, track, track_warnings

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    targets = OUTPUT_NAMES if args.ctc else OUTPUT_NAMES[:-1]
    existing = [n for n in targets if (out / n).exists()]
    _refuse_another_runs_tables(out, existing)  # (not "use --overwrite": it would replace another run's truth)
    if existing and not args.overwrite:
        raise InputError(f"{out} already holds {', '.join(existing)} (use --overwrite to replace)")
    if args.seed < 0:
        raise InputError(f"--seed must be >= 0, got {args.seed}")
    if args.max_stage_shift is not None and not (math.isfinite(args.max_stage_shift) and args.max_stage_shift > 0):
        raise InputError(f"--max-stage-shift must be a length in pixels > 0, got {args.max_stage_shift}")
    for name in targets:
        guard_target(out / name)
    refuse_folders_in_the_way(out / name for name in OUTPUT_NAMES[:-1])  # (ctc_RES is a folder)
    for path in _ctc_files_replaced(out, args.ctc, args.overwrite):
        guard_target(path)  # e.g. the --labels stack kept in ctc_RES: never removed, refused before any work
    from ..measure.tables import check_overwrite

    # a write-protected (0444) output is not replaced (nor an earlier CTC mask removed): refused before any work,
    # as atomic_path refuses it (the outputs are moved into place by rename, which the folder's mode lets through)
    check_overwrite([out / name for name in targets] + _ctc_files_replaced(out, args.ctc, args.overwrite),
                    args.overwrite)
    recorded = check_config(args.config)  # a bad config is refused before the stacks are read
    _run_settings_from_config(args, recorded)
    check_units(args.pixel_size, args.frame_interval)  # before any frame is read
    make_output_folder(out)
    from ..batch.runner import acquire_out_lock

    lock = acquire_out_lock(out)  # a second run into this folder is refused, not mixed or silently replacing
    try:
        existing = [n for n in targets if (out / n).exists()]  # again: a run may have finished meanwhile
        if existing and not args.overwrite:
            raise InputError(f"{out} already holds {', '.join(existing)} (use --overwrite to replace)")
        if args.hdu is not None and args.hdu < 0:
            raise InputError(f"--hdu must be >= 0, got {args.hdu}")
        if args.channel is not None and (args.channel < 0 or not args.image):
            raise InputError("--channel picks a channel (0-based, >= 0) of --image" if args.image
                             else "--channel picks a channel of --image: give --image")
        labels, calibration = _read_stack(args.labels, "labels", args.hdu)
        image, image_calibration = _read_stack(args.image, "image", args.hdu, args.channel) if args.image else (None, {})
        from ..tracking.units import merged_calibration, option_overrides

        calibration = merged_calibration(calibration, image_calibration, Path(args.labels).name,
                                         Path(args.image).name if args.image else "",
                                         {"pixel_size_um": args.pixel_size, "frame_interval_min": args.frame_interval})
        for note in option_overrides(calibration, args.pixel_size, args.frame_interval):
            print(f"note: {note}", file=sys.stderr)
        pixel_size = args.pixel_size if args.pixel_size is not None else calibration.get("pixel_size_um")
        frame_interval = args.frame_interval if args.frame_interval is not None else calibration.get("frame_interval_min")
        from_file = [text for text, value, given in ((f"{pixel_size} um per pixel", pixel_size, args.pixel_size),
                                                     (f"{frame_interval} min per frame", frame_interval, args.frame_interval))
                     if value is not None and given is None]
        if from_file:  # only what the metadata gave: a value typed on the command line is not the file's
            print(f"calibration from the file's metadata: {', '.join(from_file)} (--pixel-size / --frame-interval "
                  "override it)", file=sys.stderr)
        units = (recorded or {}).get("units") if isinstance((recorded or {}).get("units"), dict) else {}
        from_config = []  # a track_config.json given as --config: its run's units where neither says any
        if pixel_size is None and isinstance(units.get("pixel_size_um"), (int, float)):
            pixel_size = float(units["pixel_size_um"])
            from_config.append(f"{pixel_size} um per pixel")
        if frame_interval is None and isinstance(units.get("frame_interval_min"), (int, float)):
            frame_interval = float(units["frame_interval_min"])
            from_config.append(f"{frame_interval} min per frame")
        if from_config:
            check_units(pixel_size, frame_interval)
            print(f"calibration from the config file: {', '.join(from_config)}", file=sys.stderr)
        if image is not None and image.shape != labels.shape:
            raise InputError(f"image shape {image.shape} does not match labels shape {labels.shape}")
        np.random.seed(args.seed)
        gen = track(
            labels,
            image,
            config=args.config,
            max_search_radius=args.max_search_radius,
            update_method=args.update_method,
            optimize=args.optimize,
            stage_shift=None if args.stage_shift == "none" else args.stage_shift,
            max_shift=_max_stage_shift(args),
        )
        result = run_with_text_progress(gen, label="track")
        if result.info.get("mask_converted"):
            print(f"{Path(args.labels).name}: {MASK_NOTE}", file=sys.stderr)
        for note in track_warnings(result):
            print(f"warning: {Path(args.labels).name}: {note}", file=sys.stderr)
        result.config["seed"] = args.seed
        result.config["units"] = {"pixel_size_um": pixel_size, "frame_interval_min": frame_interval}
        # the file's own Y size (non-square pixels), unless --pixel-size says otherwise: the summary's lengths
        # and the reopened tracks.csv's scale use it
        pixel_size_y = calibration.get("pixel_size_y_um") if args.pixel_size is None else None
        if pixel_size_y is not None:
            result.config["units"]["pixel_size_y_um"] = pixel_size_y
        # where the movie lies (an OME-Zarr's translation, um): tracks_labels.tif and tracks.csv reopen over it
        # (in micrometres: kept with a --pixel-size too, which scales the pixels, not where the movie lies)
        origin = calibration.get("origin") if pixel_size is not None else None
        if origin:
            result.config["units"]["origin_um"] = origin
        # a Z stack linked plane by plane: its "frames" are focal planes, its step a length (no frame interval)
        z_step = calibration.get("z_step_um") if frame_interval is None else None
        if z_step is not None:
            result.config["units"]["z_step_um"] = z_step
        result.config["inputs"] = {"labels": str(args.labels), "image": str(args.image) if args.image else None,
                                   "channel": args.channel, "hdu": args.hdu}
        remove_stale_staging(out, "track")
        # everything is written into a staging folder first, then moved into place with Ctrl-C held back:
        # an interrupted run leaves the earlier results whole, never half of each
        staging = make_staging_folder(out, "track")
        try:
            write_tracks_csv(result, staging / "tracks.csv")
            write_counts_csv(result, staging / "counts.csv")
            write_track_summary_csv(result, staging / "track_summary.csv", pixel_size=pixel_size,
                                    frame_interval=frame_interval, pixel_size_y=pixel_size_y)
            write_tiff(staging / "tracks_labels.tif", result.relabelled, overwrite=True, software=LABELS_SOFTWARE,  # uint16 (uint32 above 65535 tracks)
                       origin=origin,  # where the movie lies: the outputs reopen over it
                       calibration={"pixel_size_um": pixel_size, "frame_interval_min": frame_interval, "z_step_um": z_step,
                                    **({"pixel_size_y_um": pixel_size_y} if pixel_size_y is not None else {}),
                                    # a Z stack of no stated step stays a Z stack (not written as a time-lapse)
                                    **({"z_planes": True} if calibration.get("z_planes") and frame_interval is None else {})})
            write_config_json(result, staging / "track_config.json")
            ctc_refused = None
            if args.ctc:
                try:
                    write_ctc(result, staging / OUTPUT_NAMES[-1])
                except InputError as err:  # (more tracks than CTC's 16-bit masks hold): the rest is still written,
                    ctc_refused = err  # not the whole finished run thrown away
                    shutil.rmtree(staging / OUTPUT_NAMES[-1], ignore_errors=True)
            _publish(staging, out, ctc=args.ctc and ctc_refused is None, replace_earlier_ctc=args.overwrite)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        print(f"{result.n_tracks} tracks, {len(result.graph)} daughter tracks, {len(result.table)} objects in {result.n_frames} frames -> {out}")
        if ctc_refused is not None:
            print(f"microseg track: error: no CTC export ({ctc_refused}); the other outputs are written "
                  "(tracks_labels.tif holds every track)", file=sys.stderr)
            return 1
        return 0
    finally:
        from ..batch.runner import release_out_lock

        release_out_lock(lock)


def _ctc_files_replaced(out: Path, ctc: bool, replace_earlier_ctc: bool, new_names: set | None = None) -> list[Path]:
    """The earlier run's CTC files in ``out/ctc_RES`` this run removes: with ``--ctc``, the masks it
    does not write again (``new_names``; None: all, as the count of frames is not known yet); without,
    with ``--overwrite``, the whole export (``res_track.txt`` and ``maskNNN.tif``) of an earlier run (its
    ``track_config.json`` in ``out``), so that it cannot be scored as this run's. A user's other files there
    are left."""
    from ..tracking.export import ctc_mask_files

    folder = out / OUTPUT_NAMES[-1]
    if not folder.is_dir():
        return []
    if ctc:
        return [p for p in ctc_mask_files(folder) if new_names is None or p.name not in new_names]
    from ._staging import earlier_run_record

    if replace_earlier_ctc and (folder / "res_track.txt").is_file() and earlier_run_record(out, "track_config.json") is not None:
        return [folder / "res_track.txt", *ctc_mask_files(folder)]
    return []


def _refuse_another_runs_tables(out: Path, existing: list[str]) -> None:
    """InputError when ``--overwrite`` would replace tables another command's run wrote in ``out``: a
    simulation's tracks.csv is the truth ``evaluate tracks`` scores against (replaced, a run scored itself),
    a segmentation's counts.csv its counts. An earlier track run's own files (``track_config.json``) are
    replaced as asked, unless another command's run wrote there after it (its record is the newer: e.g.
    ``segment --overwrite`` after a track run, whose counts.csv is now the segmentation's)."""
    from ._staging import refuse_another_runs_outputs

    refuse_another_runs_outputs(out, existing, "track_config.json", "track")


def _publish(staging: Path, out: Path, ctc: bool, replace_earlier_ctc: bool) -> None:
    """Move the outputs written into ``staging`` to ``out`` and remove the earlier CTC files they
    replace, with Ctrl-C and TERM held back until all is done (renames: a fraction of a second)."""
    from ..io.atomic import guard_target
    from ._signals import interrupts_deferred

    ctc_folder = out / OUTPUT_NAMES[-1]
    moves = [(staging / name, out / name) for name in OUTPUT_NAMES[:-1]]
    new_ctc = sorted((staging / OUTPUT_NAMES[-1]).iterdir()) if ctc else []
    moves += [(path, ctc_folder / path.name) for path in new_ctc]
    removals = _ctc_files_replaced(out, ctc, replace_earlier_ctc, {path.name for path in new_ctc})
    for path in [target for _, target in moves] + removals:
        guard_target(path)  # an input is never replaced nor removed, even with --overwrite
    with interrupts_deferred():
        if ctc:
            ctc_folder.mkdir(exist_ok=True)
        for source, target in moves:
            os.replace(source, target)
        for path in removals:
            path.unlink()
        if removals and not ctc and not any(ctc_folder.iterdir()):
            ctc_folder.rmdir()
    if removals and not ctc:
        print(f"removed the earlier run's CTC folder {ctc_folder} (this run has no --ctc)", file=sys.stderr)