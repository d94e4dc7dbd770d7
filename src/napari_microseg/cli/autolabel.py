"""``microseg autolabel``: labels without a network.

``microseg autolabel fluorescence --stain FILE [--target FILE] --out DIR [--tile 512 --qc]``
    auto-labels nuclei in a nuclear-stain image ([N]: CLAHE, local Otsu, fill
    holes, watershed split, size filter, border clearing) and writes
    ``OUT/labels.tif``. With ``--target`` (phase contrast / bright field of the
    same field) it checks the registration, cuts (target, labels) tiles at
    identical positions into ``OUT/tiles/images/`` and ``OUT/tiles/labels/`` (same
    file names: ``microseg train --images OUT/tiles/images --labels OUT/tiles/labels``
    trains on them) and lists them in ``OUT/tiles.csv``;
    ``--qc`` applies the [N] data-set filter (drop the 25 % of tiles with the
    fewest nucleus pixels and tiles with > 50 % foreground) and writes
    ``OUT/qc.csv``; dropped tiles are not written unless ``--keep-dropped``
    (``--qc`` without ``--target`` tiles the stain itself with its labels).
    Stacks (T, Y, X) are labelled and tiled frame by frame.

``microseg autolabel ccd --input FITS --out DIR``
    per-pixel class map of a CCD frame in ADC ([C]: 0 background, 1 glowing,
    2 hot pixel, 3 cluster) by robust thresholds and shape rules; writes
    ``OUT/classes.tif``, ``OUT/clusters.csv`` (label, y, x, size_px, charge_adc,
    peak_adc, charge_core_adc, at_edge), ``OUT/objects.csv`` and ``OUT/counts.csv`` (the tables ``segment``
    writes for a class model: ``count_<class>`` and ``fraction_<class>``, 0-1) and
    ``OUT/params.json``.

Images: TIFF, FITS, Zarr (and PNG / JPEG via scikit-image). Existing outputs
are never replaced without ``--overwrite``. No randomness is involved, so there is
no ``--seed``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..io.atomic import make_output_folder
from ._help import HelpFormatter, PairAction
from ._staging import earlier_run_record, make_staging_folder, remove_stale_staging



def _taps(text: str):
    if text == "auto":
        return "auto"
    try:
        r, c = (int(v) for v in text.lower().replace("x", ",").split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--taps: 'auto' or 'RxC' (e.g. 2x2), got {text!r}") from err
    return (r, c)


def _columns(text: str) -> list[int]:
    cols: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part[1:]:
                a, b = part.split("-", 1) if not part.startswith("-") else (part, part)
                if int(b) < int(a):
                    raise ValueError(f"range {part} runs backwards")
                cols.extend(range(int(a), int(b) + 1))
            else:
                cols.append(int(part))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--exclude-columns: comma-separated indices or ranges like 0-3, got {text!r}") from err
    if any(c < 0 for c in cols):
        raise argparse.ArgumentTypeError(f"--exclude-columns: column indices start at 0, got {text!r}")
    return cols


_PARTS = __doc__.split("\n\n")  # title, fluorescence, ccd, notes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("autolabel", help="auto-label nuclei from a stain, or classify CCD pixels by thresholds",
                       description=__doc__, formatter_class=HelpFormatter)
    kinds = p.add_subparsers(dest="kind", metavar="KIND")
    kinds.required = True

    f = kinds.add_parser("fluorescence", help="nuclei labels from a nuclear stain (+ training tile pairs)",
                         description=f"{_PARTS[1]}\n\n{_PARTS[3]}", formatter_class=HelpFormatter)
    f.add_argument("--stain", required=True, help="nuclear-stain image (Y, X) or stack (T, Y, X)")
    f.add_argument("--target", default=None, help="phase / bright-field image of the same field (same shape): write tile pairs")
    f.add_argument("--channel", type=int, default=None,
                   help="channel of a multi-channel --stain TIFF, or colour of an RGB one, to use (0-based; default: refuse multi-channel files, average RGB)")
    f.add_argument("--target-channel", type=int, default=None,
                   help="channel of a multi-channel --target TIFF, or colour of an RGB one, to use (0-based)")
    f.add_argument("--out", required=True, help="output folder")
    f.add_argument("--tile", type=int, default=512, help="tile size in px (default 512, clipped to the image); tiles lie side by side from the top left, and where the image is not a whole number of tiles the last row and column are moved back to end at its edge, overlapping their neighbours")
    f.add_argument("--qc", action="store_true", help="apply the [N] QC filter to the tiles and write qc.csv")
    f.add_argument("--qc-drop-lowest", type=float, default=0.25, help="QC: share of tiles with fewest nucleus pixels dropped (default 0.25)")
    f.add_argument("--qc-max-foreground", type=float, default=0.5, help="QC: drop tiles with a larger foreground fraction (default 0.5)")
    f.add_argument("--qc-drop-empty", action="store_true",
                   help="QC: also drop every tile without a labelled nucleus (by default empty tiles go only as part of "
                        "the --qc-drop-lowest share, as in [N]: they are background examples)")
    f.add_argument("--keep-dropped", action="store_true", help="QC: still write the dropped tiles")
    f.add_argument("--correct-shift", action="store_true",
                   help="shift the labels onto the target when the estimated shift exceeds --max-shift (shorter "
                        "estimates are within their scatter across modalities, about 3 px, and left alone)")
    f.add_argument("--max-shift", type=float, default=5.0,
                   help="px, default 5: a longer estimated shift is warned about, and corrected with --correct-shift")
    f.add_argument("--clahe-kernel", type=int, default=127, help="CLAHE block size in px; 0 disables CLAHE (default 127)")
    f.add_argument("--clahe-clip", type=float, default=3.0 / 256, help="CLAHE clip limit, in (0, 1]: higher gives stronger local contrast (default 3/256)")
    f.add_argument("--smooth-sigma", type=float, default=1.0, help="Gaussian sigma in px (default 1)")
    f.add_argument("--otsu-window", type=int, default=51, help="local Otsu window in px; 0 = global Otsu (default 51)")
    f.add_argument("--threshold-bounds", action=PairAction, default=(0.05, 1.0), metavar="LOW,HIGH",
                   help="clip of the local threshold, 'LOW,HIGH' or 'LOW HIGH' (default 0.05,1.0)")
    f.add_argument("--diameter-range", action=PairAction, default=(5.0, 30.0), metavar="MIN,MAX",
                   help="kept equivalent diameters in px, 'MIN,MAX' or 'MIN MAX' (default 5,30)")
    f.add_argument("--no-fill-holes", action="store_true", help="do not fill holes")
    f.add_argument("--no-split", action="store_true", help="do not split clumps by watershed")
    f.add_argument("--keep-border", action="store_true", help="keep objects touching the image border")
    f.add_argument("--overwrite", action="store_true", help="replace existing output files")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.set_defaults(func=run_fluorescence)

    c = kinds.add_parser("ccd", help="per-pixel class map (bg/glow/hot/cluster) and cluster table of a CCD frame",
                         description=f"{_PARTS[2]}\n\n{_PARTS[3]}", formatter_class=HelpFormatter)
    c.add_argument("--input", required=True, help="CCD frame in ADC (FITS, TIFF or Zarr; 2-D)")
    c.add_argument("--hdu", type=int, default=None, help="FITS HDU index (default: first with image data)")
    c.add_argument("--out", required=True, help="output folder")
    c.add_argument("--taps", type=_taps, default="auto", help="readout taps: 'auto' or 'RxC' grid, e.g. 2x2 (default auto)")
    c.add_argument("--exclude-columns", type=_columns, default=None, help="columns left out (prescan/overscan), e.g. '0-7,2144-2151'")
    c.add_argument("--seed-sigma", type=float, default=5.0, help="signal seed threshold in noise sd (default 5)")
    c.add_argument("--grow-sigma", type=float, default=2.5, help="signal growth threshold in noise sd (default 2.5)")
    c.add_argument("--glow-sigma", type=float, default=10.0, help="glowing column threshold in noise sd (default 10)")
    c.add_argument("--hot-pixel-adc", type=float, default=2000.0, help="isolated pixels above this (ADC over baseline) are hot (default 2000; <0 disables)")
    c.add_argument("--hot-min-length", type=int, default=4, help="1-px-wide straight runs at least this long are hot (default 4)")
    c.add_argument("--cluster-max-size", type=int, default=200, help="clusters.csv keeps clusters up to this many px (default 200)")
    c.add_argument("--overwrite", action="store_true", help="replace existing output files")
    c.set_defaults(func=run_ccd)


def read_any(path: str, hdu: int | None = None, channel: int | None = None,
             option: str = "--channel", frames: bool = True) -> tuple[np.ndarray, dict]:
    """Read an image as a numpy array (TIFF, FITS, Zarr, PNG, JPEG: ``read_image``) and its calibration
    (``metadata["calibration"]``: pixel size in um, frame interval in min; {} when it states none).

    RGB(A) images ``(Y, X, 3|4)`` become grey (the mean of R, G, B); ``channel`` picks
    one channel of a multi-channel TIFF (see :func:`napari_microseg.io.images.read_image`),
    or one colour of an RGB image (the stain's blue, say). ``option``: the command line option that
    picks the channel of this file (``--target-channel`` for the target), as the messages name it.
    ``frames``: the command labels a stack's planes as frames (the note said of a Z stack; False for a
    command that takes one frame and refuses a stack).
    """
    from ..io.images import channel_or_grey, image_kind, is_z_stack, read_image

    p = Path(path)
    if p.is_dir() and image_kind(p) is None:
        raise InputError(f"{p} is a folder: give one image file here (`microseg batch autolabel` labels a folder of stains)")
    # the target's channel is picked by its own option: the messages name it, not the stain's --channel
    image = read_image(p, hdu=hdu, channel=channel, channel_option=None if option == "--channel" else option)
    if frames and is_z_stack(image):  # as segment and track say it
        print(f"note: {p.name} is a Z stack (axes ZYX): its planes are labelled as frames", file=sys.stderr)
    return (np.asarray(channel_or_grey(image, channel, p.name, option=option)),
            dict(image.metadata.get("calibration") or {}))


def _prepare_out(out: Path, names: list[str], overwrite: bool) -> Path:
    """Make the output folder and take its lock (returned: release it with
    :func:`~napari_microseg.batch.runner.release_out_lock` when the run ends); refuse files of ``names``
    there without ``overwrite``, and (before anything is written or removed) any of them, or an earlier
    run's tiles, that is an input. Two runs into one folder are refused, as ``segment`` and ``train`` refuse
    them: both checked the folder before either wrote, and the last to finish mixed its files with the
    other's (one run's labels beside the other's tiles)."""
    from ..batch.runner import acquire_out_lock, release_out_lock
    from ..io.atomic import guard_target

    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    for path in [out / n for n in names] + sorted(out.glob("tiles/*/tile_*.tif")):
        if path.exists():
            guard_target(path)  # an earlier run's tile given as this run's stain or target: never removed
    make_output_folder(out)
    lock = acquire_out_lock(out)
    if not overwrite:
        clash = [n for n in names if (out / n).exists()]
        if clash:
            release_out_lock(lock)
            raise InputError(f"{out / clash[0]}: exists already (use --overwrite or another --out)")
    return lock


#: the name a run gives each tile pair it writes (``tiles/images|labels/tile_00012.tif``)
RUN_TILE_NAME = re.compile(r"tile_\d{5}\.tif")


def _earlier_run_files(out: Path) -> list[Path]:
    """The files an earlier ``autolabel fluorescence`` run wrote in ``out`` beside its labels: its ``tiles.csv``,
    ``qc.csv``, ``labels_on_target.tif`` (where its record lists it) and tile pairs
    (``tiles/images|labels/tile_NNNNN.tif``); none unless its ``params.json`` says it was such a run (a
    folder of the user's own tiles is not one)."""
    import json

    try:
        record = json.loads((out / "params.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(record, dict) or record.get("command") != "autolabel fluorescence":
        return []
    wrote = ("tiles.csv", "qc.csv") + ((record["labels_on_target"],) if record.get("labels_on_target") else ())
    return [out / n for n in wrote if (out / n).is_file()] + _earlier_run_tiles(out)


def _earlier_run_tiles(out: Path) -> list[Path]:
    """The tile pairs an earlier auto-label run in ``out`` wrote: those its ``tiles.csv`` lists (a user's own
    ``tile_00050.tif`` beside them is not one of them); every ``tiles/images|labels/tile_NNNNN.tif`` when the
    table is gone or unreadable."""
    import pandas as pd

    every = [p for sub in ("images", "labels") for p in sorted((out / "tiles" / sub).glob("tile_*.tif"))
             if RUN_TILE_NAME.fullmatch(p.name)]
    try:
        table = pd.read_csv(out / "tiles.csv", usecols=["target_file", "labels_file"], dtype=str, keep_default_na=False)
    except (OSError, ValueError):
        return every
    listed = {str((out / name).resolve()) for name in [*table["target_file"], *table["labels_file"]] if name}
    return [p for p in every if str(p.resolve()) in listed]


def _stale_outputs(out: Path, names: list[str], overwrite: bool) -> list[Path]:
    """The files of an earlier auto-label run (:func:`_earlier_run_files`) that this run does not write, to
    remove with ``overwrite`` when its outputs are moved into place (left beside the new labels they would
    describe another run); refused without it. Its tiles count only when this run writes none (else
    :func:`_publish` replaces them all)."""
    # labels_on_target.tif is written only where a shift was corrected: an earlier run's is stale either way
    stale = [p for p in _earlier_run_files(out) if p.name == "labels_on_target.tif"
             or (p.name not in names and not (p.parent.parent.name == "tiles" and "tiles" in names))]
    if stale and not overwrite:
        raise InputError(f"{stale[0]}: written by an earlier auto-label run here, which this run would not replace "
                         "(use --overwrite to remove it, or another --out)")
    return stale


def _publish(stage: Path, out: Path, stale: list[Path], replaces_tiles: bool) -> None:
    """Move every file written into ``stage`` to the same place in ``out``, after removing ``stale`` files and,
    when this run writes tiles, the tiles an earlier auto-label run wrote (``tile_NNNNN.tif`` of a folder whose
    ``params.json`` is that run's, :func:`_earlier_run_files`; a user's own stay, whatever their names), with
    Ctrl-C and TERM held back: an interrupted run leaves the earlier run's outputs whole, never half of each."""
    from ..io.atomic import guard_target
    from ._signals import interrupts_deferred

    moves = [(path, out / path.relative_to(stage)) for path in sorted(stage.rglob("*")) if path.is_file()]
    # only an earlier auto-label run's (its params.json says so): tile_00050.tif files of a user's own, or of
    # another command's folder, were deleted with --overwrite though no run here wrote them
    old_tiles = [p for p in _earlier_run_files(out) if p.parent.parent.name == "tiles"] if replaces_tiles else []
    for _, target in moves:
        guard_target(target)  # an input is never replaced, even with --overwrite
    with interrupts_deferred():
        for path in dict.fromkeys(stale + old_tiles):
            path.unlink(missing_ok=True)
        for source, target in moves:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)


def _check_fluorescence_options(args: argparse.Namespace) -> None:
    """One-line errors for out-of-range auto-label settings, before any work."""
    if args.clahe_kernel < 0:
        raise InputError(f"--clahe-kernel must be >= 0 px (0 disables CLAHE), got {args.clahe_kernel}")
    if not 0 < args.clahe_clip <= 1:  # scikit-image takes 0 for "no limit": the strongest contrast, as 1
        raise InputError(f"--clahe-clip must lie in (0, 1] (higher: stronger local contrast; 1 leaves it "
                         f"unlimited; turn CLAHE off with --clahe-kernel 0), got {args.clahe_clip}")
    if not args.smooth_sigma >= 0:
        raise InputError(f"--smooth-sigma must be >= 0 px (0 disables smoothing), got {args.smooth_sigma}")
    if not args.max_shift >= 0:
        raise InputError(f"--max-shift must be >= 0 px, got {args.max_shift}")
    if args.otsu_window < 0:
        raise InputError(f"--otsu-window must be >= 0 px (0: global Otsu), got {args.otsu_window}")
    low, high = args.threshold_bounds
    if not 0 <= low <= high <= 1:
        raise InputError(f"--threshold-bounds must satisfy 0 <= LOW <= HIGH <= 1, got {low},{high}")
    small, large = args.diameter_range
    if not 0 < small <= large:
        raise InputError(f"--diameter-range must satisfy 0 < MIN <= MAX (px), got {small},{large}")
    if not 0 <= args.qc_drop_lowest < 1:  # checked here, not after the labelling a long movie took
        raise InputError(f"--qc-drop-lowest must be a share from 0 up to (not including) 1, got {args.qc_drop_lowest}")
    if not 0 < args.qc_max_foreground <= 1:
        raise InputError(f"--qc-max-foreground must be a share above 0 and at most 1, got {args.qc_max_foreground}")


def run_fluorescence(args: argparse.Namespace) -> int:
    _check_fluorescence_options(args)
    for option, needs, given in (("--keep-dropped", "--qc", args.qc), ("--qc-drop-empty", "--qc", args.qc), ("--correct-shift", "--target", args.target),
                                 ("--target-channel", "--target", args.target)):
        if getattr(args, option[2:].replace("-", "_")) and not given:  # it would change nothing: said, not ignored
            print(f"warning: {option} works with {needs}: ignored", file=sys.stderr)
    stain, calibration = read_any(args.stain, channel=args.channel)
    if stain.ndim not in (2, 3):
        raise InputError(f"{args.stain}: expected (Y, X) or (T, Y, X), got shape {stain.shape}")
    if min(stain.shape[-2:]) < 8:
        raise InputError(f"{args.stain}: {stain.shape[-2]} x {stain.shape[-1]} px is too small to label (at least 8 x 8)")
    if stain.size and stain.min() == stain.max():
        print(f"warning: {args.stain} is constant (every pixel {stain.flat[0]}): no nuclei to find", file=sys.stderr)
    target, target_calibration = None, {}
    if args.target:
        target, target_calibration = read_any(args.target, channel=args.target_channel, option="--target-channel")
        if target.shape != stain.shape:
            raise InputError(f"--target shape {target.shape} differs from --stain shape {stain.shape}")
        from ..autolabel.pairing import check_finite, constant_frames

        check_finite(target, f"--target {args.target}")  # said before the labelling, not after
        blank = constant_frames(target)
        if blank:
            first = target if target.ndim == 2 else target[blank[0]]
            print(f"warning: --target {args.target} is constant in {len(blank)} of "
                  f"{1 if target.ndim == 2 else target.shape[0]} frame(s) (every pixel {first.flat[0]}"
                  f"{'' if target.ndim == 2 else f' in frame {blank[0]}'}): its tiles there show nothing to learn "
                  "from, and no shift can be measured", file=sys.stderr)
    if target is None and args.qc:
        target, target_calibration = stain, calibration  # QC needs tiles: pair the stain with its own labels
    elif target is not None:
        stated = [key for key in ("pixel_size_um", "frame_interval_min")
                  if key in calibration and key in target_calibration
                  and abs(calibration[key] - target_calibration[key]) > 1e-6 * calibration[key]]
        if stated:
            what = {"pixel_size_um": "pixel size (um)", "frame_interval_min": "frame interval (min)"}
            print("warning: the stain and --target state different " + ", ".join(
                f"{what[k]}: {calibration[k]:g} and {target_calibration[k]:g}" for k in stated)
                + ": are they the same field? Each file's tiles keep its own calibration", file=sys.stderr)
    if args.tile < 1:
        raise InputError(f"--tile must be >= 1, got {args.tile}")
    out = Path(args.out)
    names = (["labels.tif", "params.json"] + (["tiles.csv", "tiles"] if target is not None else [])
             + (["labels_on_target.tif"] if target is not None and args.correct_shift else []) + (["qc.csv"] if args.qc else []))
    from ..batch.runner import release_out_lock

    lock = _prepare_out(out, names, args.overwrite)
    try:
        stale = _stale_outputs(out, names, args.overwrite)
        remove_stale_staging(out, "autolabel")
        stage = make_staging_folder(out, "autolabel")  # every output here first, moved into place at the end
        try:
            return _run_fluorescence_staged(args, stain, calibration, target, target_calibration, out, stage, stale)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    finally:
        release_out_lock(lock)


def _run_fluorescence_staged(args: argparse.Namespace, stain: np.ndarray, calibration: dict, target: Any,
                             target_calibration: dict, out: Path, stage: Path, stale: list[Path]) -> int:
    """The rest of :func:`run_fluorescence`: label, tile, write into ``stage`` and publish into ``out``."""
    import warnings

    import pandas as pd

    from ..autolabel.fluorescence import autolabel_fluorescence_iter, inverted_note
    from ..autolabel.pairing import RegistrationWarning, make_training_pairs
    from ..autolabel.qc import qc_filter
    from ..io.atomic import atomic_write_text
    from ..io.images import LABELS_SOFTWARE, write_tiff
    from ..io.tables import write_csv
    from ..measure.labels import label_dtype
    from ..progress import run_with_text_progress
    from ..training.data import IGNORE

    kwargs = dict(
        clahe_kernel=args.clahe_kernel or None, clahe_clip=args.clahe_clip, smooth_sigma=args.smooth_sigma or None,
        otsu_window=args.otsu_window or None, threshold_bounds=tuple(args.threshold_bounds),
        diameter_range=tuple(args.diameter_range), fill_holes=not args.no_fill_holes, split_clumps=not args.no_split,
        clear_border=not args.keep_border,
    )
    start = time.perf_counter()
    sizes: dict = {}  # objects the diameter filter removed
    # tiles are training pairs: nuclei above the max diameter are marked "not annotated" (-1) there
    # rather than background; labels.tif keeps them as background
    gen = autolabel_fluorescence_iter(stain, **kwargs, size_report=sizes,
                                      too_large_value=IGNORE if target is not None else None)
    try:
        if args.quiet:
            labels = None
            while True:
                try:
                    next(gen)
                except StopIteration as stop:
                    labels = stop.value
                    break
        else:
            labels = run_with_text_progress(gen, label="autolabel")
    except InputError as err:  # "image holds NaN ...": which image
        raise InputError(f"{Path(args.stain).name}: {err}") from None
    tile_labels = labels
    if target is not None:
        clean = np.where(labels < 0, 0, labels)
        clean = clean.astype(label_dtype(clean.max()))
        tile_labels = labels if (labels < 0).any() else clean
        labels = clean
    # the stain's pixel size and frame interval go with its labels (to `microseg track` and napari)
    write_tiff(stage / "labels.tif", labels, overwrite=True, software=LABELS_SOFTWARE, calibration=calibration)
    summary = {"n_objects_per_frame": [int(labels.max())] if labels.ndim == 2 else [int(f.max()) for f in labels]}
    if sizes.get("too_large"):
        print(f"microseg autolabel: warning: {sizes['too_large']} object(s) above the {args.diameter_range[1]:g} px "
              f"max diameter were left out (largest {sizes['largest_removed_px']:g} px): if they are nuclei, "
              "raise --diameter-range" + ("; in the tile labels they are -1 (not annotated), so training ignores "
                                          "them" if target is not None else "") + "." + inverted_note(sizes), file=sys.stderr)
    if sizes.get("no_signal"):
        print(f"microseg autolabel: warning: {sizes['no_signal']} frame(s) hold nothing brighter than their noise "
              "(pure noise or an empty field): labelled empty", file=sys.stderr)
    summary["frames_without_signal"] = int(sizes.get("no_signal", 0))
    summary["removed_by_diameter"] = {"too_small": int(sizes.get("too_small", 0)), "too_large": int(sizes.get("too_large", 0))}
    if target is not None:
        frames = ([(0, stain, target, tile_labels)] if stain.ndim == 2
                  else [(t, stain[t], target[t], tile_labels[t]) for t in range(stain.shape[0])])
        tile_rows, label_tiles, target_tiles, shifts = [], [], [], []
        for t, s, g, lab in frames:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", RegistrationWarning)
                pairs = make_training_pairs(s, g, tile=args.tile, labels=lab, correct_shift=args.correct_shift, max_shift_px=args.max_shift)
            for w in caught:  # ours (registration doubts) in a line; others (a library's) as Python shows them
                if issubclass(w.category, RegistrationWarning):
                    print(f"microseg autolabel: warning: frame {t}: {w.message}", file=sys.stderr)
                else:
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)
            shifts.append({"t": t, "dy": pairs.shift[0], "dx": pairs.shift[1], "corrected": pairs.shift_applied})
            for (y, x), gt_tile, lt in zip(pairs.positions, pairs.targets, pairs.labels):
                tile_rows.append({"tile": len(tile_rows), "t": t, "y": int(y), "x": int(x), "height": pairs.tile_shape[0], "width": pairs.tile_shape[1]})
                target_tiles.append(gt_tile)
                label_tiles.append(lt)
        if any(row["corrected"] for row in shifts):
            # labels.tif holds the stain's positions; the whole target with the tiles' shift, for training on it
            from ..autolabel.pairing import shift_labels

            # the tiles' labels (nuclei beyond the diameter range -1, not annotated, as in the tiles), moved
            moved = [shift_labels(frame, (row["dy"], row["dx"])) if row["corrected"] else frame
                     for row, frame in zip(shifts, [tile_labels] if tile_labels.ndim == 2 else list(tile_labels))]
            write_tiff(stage / "labels_on_target.tif", moved[0] if tile_labels.ndim == 2 else np.stack(moved), overwrite=True,
                       software=LABELS_SOFTWARE, calibration=target_calibration)
            summary["labels_on_target"] = "labels_on_target.tif"
            print("microseg autolabel: labels.tif keeps the stain's positions; the labels shifted onto the target: "
                  f"{out / 'labels_on_target.tif'}", file=sys.stderr)
        table = pd.DataFrame(tile_rows)
        if args.qc:
            kept, qc = qc_filter(label_tiles, drop_lowest_fraction=args.qc_drop_lowest, max_foreground_fraction=args.qc_max_foreground,
                                 drop_empty=args.qc_drop_empty)
            qc = table.merge(qc, on="tile")
            write_csv(stage / "qc.csv", qc, leading=["tile", "t", "y", "x"])
            table["kept"] = qc["kept"].to_numpy()
        else:
            table["kept"] = True
        for sub in ("images", "labels"):  # the layout `microseg train --images --labels` pairs by name
            (stage / "tiles" / sub).mkdir(parents=True, exist_ok=True)
        files_t, files_l = [], []
        for i, row in table.iterrows():
            if row["kept"] or args.keep_dropped:
                ft, fl = f"tiles/images/tile_{i:05d}.tif", f"tiles/labels/tile_{i:05d}.tif"
                write_tiff(stage / ft, target_tiles[i], overwrite=True, calibration=target_calibration)
                write_tiff(stage / fl, label_tiles[i], overwrite=True, software=LABELS_SOFTWARE, calibration=calibration)
            else:
                ft = fl = ""
            files_t.append(ft)
            files_l.append(fl)
        table["target_file"] = files_t
        table["labels_file"] = files_l
        write_csv(stage / "tiles.csv", table, leading=["tile", "t", "y", "x"])
        summary.update({"n_tiles": len(table), "n_kept": int(table["kept"].sum()), "shifts": shifts})
    params = {"command": "autolabel fluorescence", "stain": str(args.stain), "channel": args.channel,
              "target": args.target or (str(args.stain) if args.qc else None),
              "target_channel": args.target_channel if args.target else None, "tile": args.tile,
              "qc": args.qc, "qc_drop_lowest": args.qc_drop_lowest, "qc_max_foreground": args.qc_max_foreground,
              "qc_drop_empty": bool(args.qc_drop_empty),
              "keep_dropped": bool(args.keep_dropped), "correct_shift": args.correct_shift, "max_shift": args.max_shift, "autolabel": kwargs,
              "seconds": round(time.perf_counter() - start, 3), **summary}
    atomic_write_text(stage / "params.json", json.dumps(params, indent=2, default=str))
    # an earlier run's tiles (--overwrite) are not trained on: this run's replace them (a user's tile_mine.tif stays)
    _publish(stage, out, stale, replaces_tiles=target is not None)
    msg = f"autolabel: {sum(summary['n_objects_per_frame'])} nuclei -> {out / 'labels.tif'}"
    if target is not None:
        written = sum(1 for f in table["labels_file"] if f)
        kept = f"{written} of {summary['n_tiles']}" if written == summary["n_kept"] else \
            f"{written} ({summary['n_kept']} kept by QC) of {summary['n_tiles']}"
        msg += (f"; {kept} tile pairs -> {out / 'tiles'} (train on them: microseg train --images "
                f"{shlex.quote(str(out / 'tiles' / 'images'))} --labels {shlex.quote(str(out / 'tiles' / 'labels'))})")
    print(msg)
    return 0


def run_ccd(args: argparse.Namespace) -> int:
    for option in ("seed_sigma", "grow_sigma", "glow_sigma"):
        if not getattr(args, option) > 0:
            raise InputError(f"--{option.replace('_', '-')} must be > 0 (noise sd), got {getattr(args, option)}")
    if args.hot_min_length < 1 or args.cluster_max_size < 1:
        raise InputError("--hot-min-length and --cluster-max-size must be >= 1 px")
    image, calibration = read_any(args.input, hdu=args.hdu, frames=False)
    if image.ndim == 3 and image.shape[0] == 1:  # a cube of one frame (FITS NAXIS3 = 1): that frame
        image = image[0]
    if image.ndim != 2:
        raise InputError(f"{args.input}: expected a 2-D frame, got shape {image.shape}")
    if image.size and image.min() == image.max():
        print(f"warning: {args.input} is constant (every pixel {image.flat[0]}): all background, no clusters", file=sys.stderr)
    elif image.size and image.dtype == np.uint8 or (np.isfinite(image).any() and 0 <= np.nanmin(image)
                                                    and np.nanmax(image) <= 255):  # all-NaN: refused below
        print(f"warning: {args.input} holds values within 0-255 only; the thresholds are in ADC of raw frames "
              "(pedestal, read noise, hot-pixel level), so a rescaled frame (e.g. to 8 bits) gets wrong classes: "
              "use the raw FITS frame", file=sys.stderr)
    out = Path(args.out)
    from ..batch.runner import release_out_lock

    lock = _prepare_out(out, ["classes.tif", "clusters.csv", "objects.csv", "counts.csv", "params.json"], args.overwrite)
    try:
        return _run_ccd_locked(args, image, calibration, out)
    finally:
        release_out_lock(lock)


def _run_ccd_locked(args: argparse.Namespace, image: np.ndarray, calibration: dict, out: Path) -> int:
    """The rest of :func:`run_ccd`, with the output folder locked: label, find clusters, write the tables."""
    from ..autolabel.ccd import CLASS_NAMES, autolabel_ccd_details, find_clusters, object_label_offset
    from ..inference.segment import class_map_tables
    from ..io.atomic import atomic_write_text
    from ..io.images import LABELS_SOFTWARE, write_tiff
    from ..io.tables import write_csv

    earlier = earlier_run_record(out, "params.json") or {}
    if (out / "class_fractions.csv").is_file() and args.overwrite and earlier.get("command") == "autolabel ccd":
        (out / "class_fractions.csv").unlink()  # an earlier version's table, now in counts.csv: not left stale
    start = time.perf_counter()
    res = autolabel_ccd_details(
        image, taps=args.taps, exclude_columns=args.exclude_columns, seed_sigma=args.seed_sigma, grow_sigma=args.grow_sigma,
        glow_sigma=args.glow_sigma, hot_pixel_adc=None if args.hot_pixel_adc < 0 else args.hot_pixel_adc,
        hot_min_length=args.hot_min_length,
    )
    clusters = find_clusters(res.classes, image, max_size=args.cluster_max_size, tap_pedestal=res.baseline.pedestal,  # local baselines: hot columns left out
                             first_label=1 + object_label_offset(res.classes),  # labels as in objects.csv
                             exclude_columns=args.exclude_columns)
    objects, counts = class_map_tables(res.classes, image, list(CLASS_NAMES))  # the tables `segment` writes
    fractions = np.bincount(res.classes.ravel(), minlength=4)[:4] / max(res.classes.size, 1)
    params = {"command": "autolabel ccd", "input": str(args.input), "hdu": args.hdu, "shape": list(image.shape),
              "settings": res.params, "taps": res.baseline.taps, "glow_columns": res.glow_columns.tolist(),
              "n_clusters": int(len(clusters)), "class_names": list(CLASS_NAMES),
              "class_fractions": dict(zip(CLASS_NAMES, fractions.round(6).tolist())),
              "seconds": round(time.perf_counter() - start, 3)}
    from ._signals import interrupts_deferred

    with interrupts_deferred():  # all five or none: a Ctrl-C between them mixed this run's with an earlier one's
        write_tiff(out / "classes.tif", res.classes, overwrite=True, software=LABELS_SOFTWARE, calibration=calibration)
        write_csv(out / "clusters.csv", clusters)
        write_csv(out / "objects.csv", objects)
        write_csv(out / "counts.csv", counts)
        atomic_write_text(out / "params.json", json.dumps(params, indent=2, default=str))
    pct = ", ".join(f"{n} {100 * f:.3f} %" for n, f in zip(CLASS_NAMES, fractions))
    pieces = int(counts["count_cluster"].iloc[0]) if "count_cluster" in counts.columns and len(counts) else len(clusters)
    left_out = (f" ({pieces - len(clusters)} of the {pieces} cluster pieces of counts.csv larger than "
                f"--cluster-max-size {args.cluster_max_size} px left out of clusters.csv)" if pieces > len(clusters) else "")
    print(f"autolabel ccd: {len(clusters)} clusters{left_out}; {pct} -> {out}")
    return 0
