"""``microseg batch``: run segment / track / autolabel / classify over many images on a Dask cluster, resumably.

Examples::

    microseg batch segment --model nuclei.pt --input data/ --out results/
    microseg batch segment --model nuclei.pt --input 'plate*/**/*.tif' --out results/ --workers 8
    microseg batch segment --model nuclei.pt --input movie.zarr --out results/ --scheduler tcp://head:8786
    microseg batch track --input labels/ --out tracks/            # (T,Y,X) label stacks
    microseg batch track --model nuclei.pt --input movies/ --out tracks/   # segment, then track
    microseg batch autolabel --input stains/ --out autolabels/            # no model
    microseg batch classify --model response.pt --input images/ --out flags/ --box 10 20 49 62

Without ``--scheduler`` a local Dask cluster of worker processes is started
(``--workers`` of them, one thread each by default: torch threads itself);
with ``--scheduler tcp://host:port`` the run joins an existing cluster (the
workers need napari-microseg installed and the input/output paths mounted at
the same place). ``--workers 0`` runs in this process without Dask.

One task per image file, one per frame for Zarr (T,Y,X) stacks. Outputs in
``--out``: ``labels/<name>.tif`` (Zarr input, or a TIFF over 1 GiB, read tile by tile: ``labels/<name>.zarr``),
table shards under ``shards/``, merged ``objects.csv`` and ``counts.csv``
(segment, autolabel; a CCD class model's segment also ``clusters.csv``), ``tracks.csv``, ``counts.csv``
and ``track_summary.csv`` (track; with
``--ctc`` also ``ctc_RES/<name>/`` per movie) or
``flags.csv`` (classify), each with an ``image`` column; ``manifest.jsonl`` (done items with input checksums),
``failures.csv`` (items that failed, with the reason),
``batch_config.json`` (settings) and ``batch_run.json`` (the last run's counts, seconds, tables). Run the same command again to resume: done
items whose input is unchanged are skipped. Exit status 0 when every item
succeeded, 1 when some failed (see failures.csv), 2 for bad settings or a system error
(a full disk: free space and rerun to resume), 130 after
Ctrl-C and 143 after a TERM signal (both stop cleanly: rerun to resume).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputError
from ._help import HelpFormatter, PairAction
from .classify import threshold_arg

TASK_HELP = {
    "segment": "segment images with a trained model (labels, objects.csv, counts.csv)",
    "track": "track (T,Y,X) label stacks, or image stacks segmented with --model first (tracks.csv, counts.csv, track_summary.csv)",
    "autolabel": "auto-label fluorescence nuclei images without a model (labels, objects.csv, counts.csv)",
    "classify": "classify whole images good/bad with an 'images' classifier (flags.csv)",
}


#: what --model means for each task (autolabel takes none)
MODEL_HELP = {
    "segment": "segmentation model: file from 'microseg train' or a shipped name (e.g. nuclei_fluorescence)",
    "track": "segmentation model for image stacks (file or shipped name); not needed for label stacks",
    "classify": "good/bad classifier: file from 'microseg classify train images' or a shipped name (e.g. response_good_bad)",
}


def _common(p: argparse.ArgumentParser, task: str) -> None:
    p.add_argument("--input", required=True, nargs="+",
                   help="image files, folders (searched recursively), glob patterns ('plate*/**/*.tif') or .zarr stores")
    p.add_argument("--out", required=True, help="output folder (new, empty, or an earlier run's to resume)")
    if task in MODEL_HELP:  # required for segment and classify (track segments first only when given one)
        p.add_argument("--model", default=None, required=task in ("segment", "classify"), help=MODEL_HELP[task])
    g = p.add_argument_group("Dask")
    g.add_argument("--scheduler", default=None, help="address of a running Dask scheduler (tcp://host:port); "
                                                     "default: start a local cluster")
    g.add_argument("--workers", type=int, default=None,
                   help="local worker processes (default: CPU cores / threads per worker; 0: no Dask, run here)")
    g.add_argument("--threads-per-worker", type=int, default=1, help="threads per local worker (default 1)")
    g.add_argument("--torch-threads", type=int, default=None, help="torch CPU threads per task (default 1 on Dask)")
    g.add_argument("--max-in-flight", type=int, default=None,
                   help="tasks submitted at a time (default 4 per worker thread); a kill loses at most these")
    g.add_argument("--memory-limit", default=None, help="memory limit per local worker, e.g. 4GB (default: Dask's share)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--channel", type=int, default=None,
                   help="channel to use in multi-channel TIFFs (0-based; default: such files fail with a message)")
    p.add_argument("--hdu", type=int, default=None,
                   help="FITS files: the HDU to read (0-based; default: the first with image data)")
    p.add_argument("--overwrite", action="store_true",
                   help="allow redoing all items when --out holds results made with other settings (a run "
                        "whose --input leaves out inputs done there, still in place, is refused even so)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _segment_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("segmentation")
    g.add_argument("--tile", type=int, default=None, help="largest tile side in px; tiles shrink to cover each frame evenly (default 512, or the model's patch size if larger)")
    g.add_argument("--overlap", type=float, default=None, help="tile overlap: px, or fraction of the tile if < 1 (default 32 px)")
    g.add_argument("--batch-size", type=int, default=None, help="pixels per network call, in 256 x 256 tiles (default 4: one 512 x 512 tile)")
    g.add_argument("--threshold", type=float, default=None, help="foreground probability threshold (default: the model's tuned value, else 0.5)")
    g.add_argument("--min-size", type=int, default=None, help="drop objects smaller than this many px (default 8)")
    g.add_argument("--max-size", type=int, default=None, help="drop objects larger than this many px (default: none)")
    g.add_argument("--remove-border", action="store_true", help="drop objects touching the image border")
    g.add_argument("--diameter", default=None,
                   help="typical nucleus width in px, or 'auto' (estimated per item: each image, and each frame of a "
                        "Zarr stack, so give a number for time-lapses); tiles are resized when it lies outside the "
                        "widths the model was trained on (default: as trained)")
    g.add_argument("--no-fill-holes", action="store_true", help="do not fill holes inside objects")
    g.add_argument("--tta", action="store_true", help="test-time augmentation: average over 4 flips (4x slower)")
    g.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="network arithmetic: auto = bfloat16 on GPUs and on CPUs that compute it natively (AMX, "
                        "AVX512-BF16), else float32; each item's is in the manifest, all in batch_run.json")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("batch", help="run segment/track/autolabel/classify over many images on Dask (resumable)",
                       description=__doc__, formatter_class=HelpFormatter)
    tasks = p.add_subparsers(dest="batch_task", metavar="TASK")
    tasks.required = True
    for name in ("segment", "track", "autolabel", "classify"):
        q = tasks.add_parser(name, help=TASK_HELP[name], description=f"microseg batch {name}: {TASK_HELP[name]}. "
                             "See 'microseg batch --help' for outputs and resuming.")
        _common(q, name)
        if name in ("segment", "track"):
            _segment_options(q)
        if name == "segment":
            from .segment import add_ccd_rule_options

            add_ccd_rule_options(q.add_argument_group("CCD class models (clusters.csv is written for them)"), repeats=False)
        if name == "track":
            g = q.add_argument_group("tracking")
            g.add_argument("--config", default=None, help="'cell' (divisions), 'particle' or a JSON file (default cell)")
            g.add_argument("--max-search-radius", type=float, default=None, help="largest displacement per frame, px")
            g.add_argument("--update-method", choices=["auto", "exact", "approximate"], default=None,
                           help="btrack's Bayesian update mode (default auto)")
            g.add_argument("--no-optimize", action="store_true", help="skip the global optimisation")
            g.add_argument("--stage-shift", choices=["none", "images", "objects"], default="none",
                           help="correct stage jumps (default none)")
            g.add_argument("--pixel-size", type=float, default=None,
                           help="micrometres per pixel: track_summary.csv adds um columns (default: each movie's "
                                "own metadata; given, it replaces every movie's, said in notes.csv; each movie's "
                                "units are in the manifest)")
            g.add_argument("--frame-interval", type=float, default=None,
                           help="minutes between frames: track_summary.csv adds duration and um/min speed (default: "
                                "each movie's own metadata; given, it replaces every movie's)")
            g.add_argument("--ctc", action="store_true",
                           help="also write a Cell Tracking Challenge folder per movie, ctc_RES/<name>/ "
                                "(res_track.txt + masks), which 'microseg evaluate tracks --pred' scores")
        if name == "autolabel":
            g = q.add_argument_group("auto-labelling (see 'microseg autolabel --help')")
            g.add_argument("--otsu-window", type=int, default=None, help="local Otsu window side, px (default 51)")
            g.add_argument("--diameter-range", action=PairAction, default=None, metavar="MIN,MAX",
                           help="keep objects with an equivalent diameter in this range, px, 'MIN,MAX' or 'MIN MAX' (default 5,30)")
            g.add_argument("--keep-border", action="store_true", help="keep objects touching the image border")
        if name == "classify":
            g = q.add_argument_group("classification")
            g.add_argument("--box", type=int, nargs=4, default=None, metavar=("Y0", "X0", "Y1", "X1"),
                           help="integration area for all images (default: a response folder's integration/ masks, as "
                                "'classify images' reads them; else images already have the model's crop size)")
            g.add_argument("--threshold", type=threshold_arg, default=None,
                           help="threshold on probability_bad, or 'flag' / 'discard' (see 'microseg classify images "
                                "--help'; default: the model's)")
        q.set_defaults(func=run)


def _check_class_model(model: str) -> None:
    """InputError unless ``model`` (a file or shipped name) is a CCD class model (multiclass output)."""
    from ..io.models import read_model_file

    mode = read_model_file(model)["config"].get("output_mode")
    if mode != "multiclass":
        raise InputError(f"--shape-rules / --max-cluster-size apply to CCD class models only; {model} outputs {mode}")


def _params(args: argparse.Namespace) -> dict:
    params: dict = {}
    if args.batch_task in ("segment", "track"):
        for name in ("tile", "overlap", "batch_size", "threshold", "min_size", "max_size"):
            value = getattr(args, name)
            if value is not None:
                params[name] = value
        if args.remove_border:
            params["remove_border"] = True
        from ..inference.scale import parse_diameter

        diameter = parse_diameter(args.diameter)
        if diameter is not None:
            params["diameter"] = diameter
        if args.no_fill_holes:
            params["fill_holes"] = False
        # as `segment` takes them (left out at their defaults: an earlier run's settings hash stays the same)
        if args.tta:
            params["test_time_augmentation"] = True
        if args.precision != "auto":
            params["precision"] = args.precision
    if args.batch_task == "segment":
        from .segment import ccd_rule_options

        rules = ccd_rule_options(args)
        if rules:  # refused here, once, for a model that has no CCD classes (not by every item)
            _check_class_model(args.model)
            params["postprocess_options"] = rules
    if args.batch_task == "autolabel":
        kw = {}
        # refused here, once, as `autolabel fluorescence` refuses them (every item failed, or -3 ran as 3)
        if args.otsu_window is not None and args.otsu_window < 0:
            raise InputError(f"--otsu-window must be >= 0 px (0: global Otsu), got {args.otsu_window}")
        if args.diameter_range is not None and not 0 < args.diameter_range[0] <= args.diameter_range[1]:
            raise InputError("--diameter-range must satisfy 0 < MIN <= MAX (px), got "
                             f"{args.diameter_range[0]},{args.diameter_range[1]}")
        if args.otsu_window is not None:
            kw["otsu_window"] = args.otsu_window
        if args.diameter_range is not None:
            kw["diameter_range"] = tuple(args.diameter_range)
        if args.keep_border:
            kw["clear_border"] = False
        if kw:
            params["autolabel"] = kw
    if args.batch_task == "classify":
        from .classify import check_box

        check_box(args.box)
        if args.box is not None:
            params["box"] = list(args.box)
        if args.threshold is not None:
            params["threshold"] = args.threshold
    if args.batch_task == "track":
        if args.model is None:  # segmentation settings mean nothing without a model
            params = {}
        if args.max_search_radius is not None and not args.max_search_radius > 0:  # (every item failed)
            raise InputError(f"--max-search-radius must be > 0 px, got {args.max_search_radius}")
        for name in ("config", "max_search_radius", "update_method", "pixel_size", "frame_interval"):
            value = getattr(args, name)
            if value is not None:
                params[name] = value
        from ..tracking.export import check_units

        check_units(args.pixel_size, args.frame_interval)  # once, not by every item
        if args.config is not None:  # refused here, once, not by every item
            from ..tracking.track import check_config

            check_config(args.config)
        if args.no_optimize:
            params["optimize"] = False
        if args.stage_shift != "none":
            params["stage_shift"] = args.stage_shift
        if args.ctc:
            params["ctc"] = True
    if args.channel is not None:
        if args.channel < 0:
            raise InputError(f"--channel must be >= 0, got {args.channel}")
        params["channel"] = args.channel
    if args.hdu is not None:
        if args.hdu < 0:
            raise InputError(f"--hdu must be >= 0, got {args.hdu}")
        params["hdu"] = args.hdu
    return params


def _response_images(spec: str) -> list[str]:
    """A response folder (``images/`` with ``integration/`` masks beside it, as ``simulate response``
    writes and ``classify images`` reads) as its ``images/`` folder, and a folder holding such folders
    (a plate each) as theirs; any other input unchanged. Each image's integration mask is found beside it
    (``batch.tasks.classify_item``). (A folder of plates was walked whole: its masks and artefact images
    classified as response images, 48 rows for 16 images.)"""
    import os

    folder = Path(spec)
    if not folder.is_dir():
        return [spec]
    if (folder / "images").is_dir() and (folder / "integration").is_dir():
        return [str(folder / "images")]
    found = []
    for here, subfolders, _ in os.walk(folder):
        if "images" in subfolders and "integration" in subfolders:
            found.append(str(Path(here) / "images"))
            subfolders[:] = []  # its own folders are its images, masks and artefacts
    return sorted(found) or [spec]


def _check_crop_size(args: argparse.Namespace) -> None:
    """Without --box every image must have the classifier's crop size: checked on the first image
    whose size can be read cheaply, so that a missing --box is one line, not a failure per item."""
    from ..batch.runner import find_batch_inputs, simulation_inputs
    from ..classify.predict import load_classifier
    from .segment import _probe_shape

    try:
        config = load_classifier(args.model).config
        if config.get("task") != "images":  # a liposome (objects) or profile model: the run refuses it as that,
            return  # not for its crop size
        size = tuple((config.get("crop") or {}).get("size") or ())
        inputs = find_batch_inputs(args.input, exclude=args.out, skip_label_folders=True,  # as the run finds them
                                   simulation_inputs=simulation_inputs("classify", False))
    except InputError:
        return  # the run itself names what is wrong
    for path, rel in inputs[:20]:
        shape = _probe_shape(path)
        if shape is not None and len(shape) == 2:
            if size and tuple(shape) != size:
                raise InputError(f"{rel} is {shape[0]}x{shape[1]} px but the model classifies {size[0]}x{size[1]} "
                                 "crops: give the integration area with --box Y0 X0 Y1 X1")
            return


def run(args: argparse.Namespace) -> int:
    from ..batch.runner import run_batch
    from ..progress import run_with_text_progress

    if args.batch_task in ("segment", "classify") and not args.model:
        raise InputError(f"batch {args.batch_task} needs --model")
    from .segment import check_segment_settings

    if getattr(args, "hot_repeats_unavailable", False):
        raise InputError("--hot-repeats compares the exposures with each other, and batch segments each file on its "
                         "own: use 'microseg segment --hot-repeats' (two passes, bounded memory, resumes when stopped)")
    if args.batch_task in ("segment", "track"):
        check_segment_settings(args)  # one line now, not a failure per item later
    if args.scheduler is None and getattr(args, "model", None):  # workers on this machine: its devices
        from ..device import resolve_device

        resolve_device(args.device)  # a GPU this machine lacks: one line now, not a failure per item
    if args.batch_task == "classify" and args.threshold is not None:
        from ..classify.predict import resolve_threshold

        try:  # 'flag' / 'discard' need a model that stored them: one line now, not a failure per item
            resolve_threshold(args.model, args.threshold)
        except InputError as err:
            raise InputError(f"--threshold: {err}") from None
    if args.batch_task == "classify":
        args.input = [found for spec in args.input for found in _response_images(spec)]
    if args.batch_task == "classify" and args.box is None and not any(
            Path(spec).name == "images" and (Path(spec).parent / "integration").is_dir() for spec in args.input):
        _check_crop_size(args)
    if args.scheduler is not None:  # options of the local cluster: the scheduler's workers are as they were started
        unused = [name for name, given in (("--workers", args.workers is not None),
                                           ("--threads-per-worker", args.threads_per_worker != 1),
                                           ("--memory-limit", args.memory_limit is not None)) if given]
        if unused:
            print(f"note: {', '.join(unused)} not used: with --scheduler the cluster's own workers run the items "
                  "(set their threads and memory where they are started: dask worker --nthreads --memory-limit)",
                  file=sys.stderr)
    gen = run_batch(args.batch_task, args.input, args.out, model=getattr(args, "model", None), scheduler=args.scheduler,
                    workers=args.workers, threads_per_worker=args.threads_per_worker,
                    torch_threads=args.torch_threads, memory_limit=args.memory_limit, device=args.device,
                    overwrite=args.overwrite, max_in_flight=args.max_in_flight, **_params(args))
    from ._signals import terminate_as_interrupt

    # a TERM signal (job schedulers, kill) stops like Ctrl-C: tasks cancelled, local cluster shut down
    with terminate_as_interrupt():  # kept until the generator is closed: a TERM during the shutdown is handled too
        try:
            summary = run_with_text_progress(gen, label=f"batch {args.batch_task}", quiet=args.quiet)
        except KeyboardInterrupt:
            # the command ends here: the Dask client's event loop, stopped mid-callback, may log a traceback of
            # its own (tornado's "Exception in callback") after "interrupted"; the run's state is saved
            import logging

            for name in ("tornado.application", "distributed", "asyncio"):
                logging.getLogger(name).setLevel(logging.CRITICAL)
            print(f"microseg batch {args.batch_task}: the items done are kept in {args.out}; run the same command "
                  "again to resume (done items are skipped, the merged tables are written when all are done)",
                  file=sys.stderr)
            raise
        finally:
            gen.close()
    if summary.ignored:  # a PNG among the TIFFs: said, not silently skipped
        print(f"note: {summary.left_out_note()}", file=sys.stderr)
    if summary.notes:  # e.g. images far brighter or dimmer than the model's training data: results may be empty
        print(f"warning: {summary.notes_note()}", file=sys.stderr)
    tables = ", ".join(str(p) for p in summary.tables.values()) or "no tables"
    print(f"batch {summary.task}: {summary.processed} processed, {summary.skipped} skipped (done before), "
          f"{summary.failed} failed of {summary.total} items in {summary.seconds:.1f} s -> {tables}")
    if summary.failed:
        first = summary.failures[0]
        print(f"{summary.failed} item(s) failed, reasons in {summary.failures_csv}; first: {first['key']}: {first['reason']}",
              file=sys.stderr)
        return 1
    return 0
