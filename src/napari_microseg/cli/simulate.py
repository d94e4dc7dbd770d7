"""``microseg simulate``: write simulated labelled data sets (images, labels, class/track tables, params.json).

Domains:
  nuclei         time-lapse(s): fluorescence.tif, phase.tif, labels.tif (T,Y,X), tracks.csv, events.csv;
                 or --mode images: images/*.tif + labels/*.tif for training
  response       balanced good/bad 16-bit response images: images/, integration/, artefacts/, classes.csv
  liposomes      TEM images: images/, labels/, classes.csv (image,label,lamellarity,encapsulation,...)
  nanoparticles  thickness profiles: profiles.tif (n, views, points), classes.csv, renders.tif
  ccd            CCD frames: frames/*.fits (ADC), classes/*.tif (uint8), classes.csv (class fractions),
                 clusters_truth.csv (each point charge drawn: index, y, x, energy_kev, sigma_px, charge_adc,
                 fraction_on_frame: charge_adc is the ADC it deposited on the frame, fraction_on_frame its
                 share of the whole charge E / 3.65 eV x gain, below 1 at the frame's edge; y, x in px,
                 pixel k centred at k, as in clusters.csv of autolabel ccd / segment)

Sample i of a run uses the seed SeedSequence([seed, i]), so a run with --n 2N
starts with the N samples of a run with --n N (nested data sets); a single
nuclei time-lapse (--n 1) uses --seed itself. The seed of every sample is
recorded (params.json, or a seed column in the CSV). Nanoparticles draw all
profiles from one generator seeded with --seed (a run with --n 2N still starts
with the N profiles of --n N; one profile is not made again on its own).
"""

from __future__ import annotations

import argparse
import math
import json
import re
import sys
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..simulate._common import SENSOR_SAMPLE_INDEX, sample_seed as _sample_seed
from ..io.atomic import make_output_folder
from ._help import HelpFormatter

DOMAINS = ("nuclei", "response", "liposomes", "nanoparticles", "ccd")


def _shape(values) -> tuple[int, int]:
    return int(values[0]), int(values[1])


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="write simulated labelled data (nuclei, response, liposomes, nanoparticles, ccd)",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    dsub = p.add_subparsers(dest="domain", metavar="DOMAIN")
    dsub.required = True

    def common(q: argparse.ArgumentParser, n_default: int, n_help: str) -> None:
        q.add_argument("--out", required=True, type=Path, help="output folder (created; must be empty unless --overwrite)")
        q.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        q.add_argument("--n", type=int, default=n_default, help=n_help)
        q.add_argument("--overwrite", action="store_true",
                       help="write into a folder that holds files (same-named files are replaced); an earlier simulation "
                            "there is removed first: its samples (<domain>_00000 ... up to its count, in images/, "
                            "labels/, frames/ ...) and its tables (labels.tif, tracks.csv, classes.csv ...); other files stay")
        q.set_defaults(func=run)

    q = dsub.add_parser("nuclei", help="nuclei time-lapse(s) or single training images", description="Nuclei: fluorescence + phase time-lapse with labels (= track ids) and tracks.csv, or varied single training images.")
    common(q, 1, "number of time-lapses (mode timelapse) or images (mode images); default 1")
    q.add_argument("--mode", choices=("timelapse", "images"), default="timelapse",
                   help="timelapse: tracked nuclei over --frames; images: independent varied training images (default timelapse)")
    q.add_argument("--frames", type=int, default=20, help="frames per time-lapse (default 20)")
    q.add_argument("--shape", type=int, nargs=2, default=(256, 256), metavar=("Y", "X"), help="image size in px (default 256 256)")
    q.add_argument("--nuclei", type=int, default=None, help="nuclei per field, counted by their centres (default 30 for timelapse; nuclei cut by the border are "
                        "labelled too, so frames hold more objects, ~10 %% more at 256 px; images: drawn per image, "
                        "2-150 per 256x256, at least 1)")
    q.add_argument("--diameter", type=float, nargs=2, default=None, metavar=("MIN", "MAX"), help="nucleus diameter range in px (default 8 20; images: drawn per image)")
    q.add_argument("--division-rate", type=float, default=0.02, help="probability per nucleus per frame of dividing, at the target density (default 0.02)")
    q.add_argument("--death-rate", type=float, default=0.012, help="probability per nucleus per frame of dying, at the target density (default 0.012)")
    q.add_argument("--motion-sd", type=float, default=1.0, help="Brownian step sd, px/frame (default 1)")
    q.add_argument("--drift", type=float, nargs=2, default=(0.0, 0.0), metavar=("DY", "DX"), help="common drift, px/frame (default 0 0)")
    q.add_argument("--stage-shift-sd", type=float, default=0.0, help="sd of each frame's stage offset from frame 0 (a "
                   "global jump), px; jumps between two frames are ~1.4x this (default 0: none)")
    q.add_argument("--no-touching", action="store_true", help="keep a gap between nuclei")
    q.add_argument("--no-enter-leave", action="store_true", help="keep nuclei inside the field of the stage (--stage-shift-sd moves the field itself: nuclei may still cross its edge then; not with --drift, which would pile them against one edge)")
    q.add_argument("--dtype", choices=("float32", "uint16"), default="float32", help="fluorescence dtype of time-lapses (default float32; uint16: rounded photon counts)")

    q = dsub.add_parser("response", help="balanced good/bad response images", description="Response images (16-bit): balanced 50/50 good/bad, bad types equal; or one --kind.")
    common(q, 100, "number of images (default 100)")
    q.add_argument("--shape", type=int, nargs=2, default=(96, 64), metavar=("Y", "X"), help="image size in px (default 96 64)")
    q.add_argument("--column-width", type=int, default=29, choices=(29, 31),
                   help="column width in px: 29 (CD type '200') or 31 ('1000') (default 29)")
    q.add_argument("--kind", default=None, help="only this kind (good_signal, good_empty, spike, fiber, line, dark_spot, stop, saturated)")

    q = dsub.add_parser("liposomes", help="TEM liposome images with per-particle classes", description="TEM liposome images, one label per particle, classes.csv with lamellarity and encapsulation.")
    common(q, 1, "number of images (default 1)")
    q.add_argument("--shape", type=int, nargs=2, default=(512, 512), metavar=("Y", "X"), help="image size in px (default 512 512)")
    q.add_argument("--particles", type=int, default=30, help="particles per image (default 30)")
    q.add_argument("--study-weights", action="store_true", help="use the study's class frequencies (87/12/0.6 %%, 97/0.65/2 %%) instead of the default mix")

    q = dsub.add_parser("nanoparticles", help="STEM thickness profiles (holes, chirality)", description="1D thickness profiles of 2D particles, single or multi-view.")
    common(q, 1000, "number of particles (default 1000; classes alternate, balanced)")
    q.add_argument("--task", choices=("hole", "chirality"), default="hole", help="solid particles vs particles with a hole, or clockwise vs anticlockwise spirals")
    q.add_argument("--views", type=int, default=1, help="views per particle (default 1)")
    q.add_argument("--view-angle", type=float, default=90.0, help="degrees between views (default 90)")
    q.add_argument("--points", type=int, default=32, help="samples per profile (default 32)")
    q.add_argument("--hole-radius", type=float, default=0.1, help="hole radius, hole task (default 0.1; the study also used 0.05)")
    q.add_argument("--offset-sd", type=float, default=0.3,
                   help="sd of the particle's offset from the rotation centre (default 0.3; 0: centred, the study's chirality set-up)")
    q.add_argument("--view-angle-jitter", type=float, default=0.0, help="sd of a random jitter of each view's angle, degrees (default 0)")
    q.add_argument("--noiseless", action="store_true", help="raw thickness, no noise or normalisation")
    q.add_argument("--renders", type=int, default=16, help="how many particles to rasterise into renders.tif (default 16)")

    q = dsub.add_parser("ccd", help="CCD frames (FITS, ADC) with class maps", description="CCD frames in ADC with exact class maps (0 bg, 1 glowing, 2 hot pixel, 3 cluster).")
    common(q, 1, "number of frames (default 1)")
    q.add_argument("--shape", type=int, nargs=2, default=(256, 256), metavar=("Y", "X"), help="frame size in px (default 256 256)")
    q.add_argument("--balanced", action="store_true", help="class fractions near 41/25/21/13 %% in a frame with a glowing band (those without one: 66 %% background); the band stays in --glow-probability of the frames")
    q.add_argument("--muons", action="store_true", help="add straight muon tracks (class 3, cluster)")
    q.add_argument("--electrons", action="store_true", help="add worm-like electron tracks (class 3, cluster)")
    q.add_argument("--pedestal", type=float, default=8800.0, help="bias level, ADC (default 8800)")
    q.add_argument("--noise", type=float, default=60.0, help="read-noise sd, ADC (default 60)")
    q.add_argument("--glow-probability", type=float, default=0.6, help="probability that a frame has a glowing band (default 0.6)")
    q.add_argument("--gain", type=float, default=1.0, help="ADC per electron (default 1)")
    q.add_argument("--one-sensor", action="store_true",
                   help="the frames are exposures of one CCD: the same hot pixels/lines and glowing band in each "
                        "(for segment --hot-repeats); charge and noise drawn per frame")


def _write_tiff(path: Path, data: np.ndarray, labels: bool = False) -> None:
    from ..io.images import write_tiff

    from ..io.images import LABELS_SOFTWARE

    # the overwrite check is the command's; labels are tagged as such (napari opens them as Labels)
    write_tiff(path, data, overwrite=True, compression=None, **({"software": LABELS_SOFTWARE} if labels else {}))


def _write_csv(path: Path, table) -> None:
    from ..io.atomic import atomic_path

    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def _write_json(path: Path, obj) -> None:
    from ..io.atomic import atomic_write_text
    from ..simulate._common import jsonable

    atomic_write_text(path, json.dumps(jsonable(obj), indent=2))


def _prepare_out(out: Path, overwrite: bool) -> Path:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    if (out / "params.json").exists() and not overwrite:
        raise InputError(f"{out} already holds a simulation (params.json); use another --out or --overwrite")
    from ..batch.runner import LOCK_NAME

    if out.is_dir() and any(f.name != LOCK_NAME for f in out.iterdir()) and not overwrite:  # (this run's lock aside)
        raise InputError(f"{out} is not empty (its files could be replaced); use another --out or --overwrite")
    earlier = _earlier_simulation(out)
    if earlier:
        _remove_earlier_simulation(out, earlier)
    make_output_folder(out)
    return out


#: the files each domain's simulation writes at the top of --out (a nuclei time-lapse: in each movie_NNN/
#: of several); an --overwrite removes those of the earlier run's domain only (a user's labels.tif beside
#: CCD frames went too)
_SIMULATION_FILES = {
    "nuclei": ("fluorescence.tif", "phase.tif", "labels.tif", "tracks.csv", "events.csv", "movie_params.json",
               "images.csv"),
    "response": ("classes.csv",), "liposomes": ("classes.csv",), "ccd": ("classes.csv", "clusters_truth.csv"),
    "nanoparticles": ("profiles.tif", "classes.csv", "renders.tif"),
}
#: the names of its per-sample files (nuclei_00000.tif, ccd_00003.fits ...): no other file is removed
_SAMPLE_NAME = re.compile(r"(nuclei|response|liposomes|ccd)_(\d{5})\.(?:tif|fits)")
#: the folders of per-sample images it writes
_SIMULATION_FOLDERS = ("images", "labels", "classes", "frames", "integration", "artefacts")


def _earlier_simulation(out: Path) -> dict | None:
    """The params.json that simulate wrote in ``out`` (with its ``domain`` and ``sample_seeds``), else None."""
    try:
        record = json.loads((out / "params.json").read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "domain" in record and "sample_seeds" in record else None


def _remove_earlier_simulation(out: Path, record: dict) -> None:
    """With --overwrite: remove the samples an earlier simulation wrote in ``out`` (``record``: its
    params.json), so that a smaller or other run leaves none of them to be trained on beside its own.
    Only files of the names it wrote go: its domain's samples up to its count (:data:`_SAMPLE_NAME`;
    a file of that form beyond them, or of another domain, is not its own) and its domain's
    :data:`_SIMULATION_FILES`; folders left empty go too."""
    from ..io.atomic import guard_target

    domain, count = str(record.get("domain")), record.get("n")
    # (its movie_NNN/ folders: time-lapses only; an images run writes images/, labels/ and images.csv)
    several_movies = (domain == "nuclei" and record.get("mode") != "images"
                      and not (isinstance(count, int) and count < 2))
    movies = []
    if several_movies:  # its own movie_000 ... up to its count: a user's movie_007 or a later one is not its own
        movies = [m for m in sorted(out.glob("movie_[0-9][0-9][0-9]")) if m.is_dir()
                  and (not isinstance(count, int) or int(m.name[6:]) < count)]
    # its top-level files when it wrote them there (one movie, or another domain): beside several movies
    # a labels.tif or tracks.csv is the user's own
    folders = movies if several_movies else [out]
    files = [folder / name for folder in folders for name in _SIMULATION_FILES.get(domain, ())]

    def its_sample(name: str) -> bool:
        match = _SAMPLE_NAME.fullmatch(name)
        return bool(match) and match.group(1) == domain and (not isinstance(count, int) or int(match.group(2)) < count)

    files += [f for name in _SIMULATION_FOLDERS for f in sorted((out / name).glob("*")) if f.is_file() and its_sample(f.name)]
    files = [f for f in files if f.is_file()]
    for f in files:
        guard_target(f)  # an input of this command (say a --config beside them) is never removed
    for f in files:
        f.unlink()
    for folder in [*(out / name for name in _SIMULATION_FOLDERS), *movies]:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _drive(gen, n: int, label: str):
    """Run a progress generator with the text bar when there is more than one sample."""
    from ..progress import run_with_text_progress

    if n > 1:
        return run_with_text_progress(gen, label=label)
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        return stop.value


def _check_common(args) -> None:
    if args.n < 1:
        raise InputError(f"--n must be >= 1, got {args.n}")
    if getattr(args, "frames", 1) < 1:
        raise InputError(f"--frames must be >= 1, got {args.frames}")
    shape = getattr(args, "shape", None)
    if shape is not None and min(shape) < 8:
        raise InputError(f"--shape must be at least 8x8, got {shape[0]}x{shape[1]}")
    if args.seed < 0:
        raise InputError(f"--seed must be >= 0, got {args.seed}")
    for option in ("motion_sd", "stage_shift_sd", "noise", "pedestal", "division_rate", "death_rate", "view_angle"):
        value = getattr(args, option, None)
        if value is not None and not (value >= 0 and math.isfinite(value)):
            raise InputError(f"--{option.replace('_', '-')} must be a finite number >= 0, got {value}")
    drift = getattr(args, "drift", None)
    if drift is not None and not all(math.isfinite(v) for v in drift):
        raise InputError(f"--drift must be finite numbers (px/frame), got {drift}")
    gain = getattr(args, "gain", None)
    if gain is not None and not (gain > 0 and math.isfinite(gain)):
        raise InputError(f"--gain must be a finite number > 0, got {gain}")
    probability = getattr(args, "glow_probability", None)
    if probability is not None and not 0 <= probability <= 1:
        raise InputError(f"--glow-probability must be between 0 and 1, got {probability}")
    if getattr(args, "no_enter_leave", False) and any(getattr(args, "drift", (0.0, 0.0))):
        # each nucleus drifts and is reflected at the edges: they piled up against one edge (33 labels over 17 blobs)
        raise InputError("--drift with --no-enter-leave piles the nuclei against one edge of the field: let them "
                         "leave (drop --no-enter-leave), or move the whole field with --stage-shift-sd")
    if getattr(args, "mode", None) == "images" and getattr(args, "dtype", "float32") != "float32":
        raise InputError("--dtype uint16 applies to time-lapses (photon counts); --mode images writes float32 "
                         "intensities of about 0-1")
    if getattr(args, "renders", 0) < 0:
        raise InputError(f"--renders must be >= 0, got {args.renders}")
    if getattr(args, "one_sensor", False) and getattr(args, "balanced", False):
        raise InputError("--one-sensor and --balanced do not go together: a balanced layout adds hot lines frame by frame")
    _check_sample_memory(args)
    for option in ("nuclei", "particles"):
        if getattr(args, option, None) is not None and getattr(args, option) < 0:  # before anything is written
            raise InputError(f"--{option} must be >= 0, got {getattr(args, option)}")
        if getattr(args, option, None) == 0:  # allowed (an empty field is a test case), but said
            print(f"warning: --{option} 0: the samples hold no objects (all-background labels)", file=sys.stderr)


#: peak bytes per pixel that simulating one 2-D sample holds (tracemalloc on 256-512 px samples, rounded up;
#: nuclei time-lapses check their own, frames x pixels)
_SAMPLE_BYTES_PER_PIXEL = {"nuclei": 40, "ccd": 50, "liposomes": 55, "response": 120}


def _check_sample_memory(args) -> None:
    """Refuse, before anything is written, a sample too large for the memory available (a numpy
    MemoryError half-way, or the kernel's kill)."""
    from ..simulate._common import check_memory

    shape = getattr(args, "shape", None)
    per_pixel = _SAMPLE_BYTES_PER_PIXEL.get(args.domain)
    if shape is not None and per_pixel and not (args.domain == "nuclei" and args.mode == "timelapse"):
        check_memory(per_pixel * float(shape[0]) * float(shape[1]), f"a {args.domain} sample of {shape[0]} x {shape[1]} px",
                     "use a smaller --shape")
    if args.domain == "nanoparticles":  # profiles (n, views, points) and their working copies, float64
        check_memory(64.0 * args.n * max(args.views, 1) * max(args.points, 1),
                     f"{args.n} particles x {args.views} views x {args.points} points", "use fewer --points or particles")


def _check_domain(args) -> None:
    """The domain's own settings checked before anything in --out is removed or written (an invalid
    --shape removed the earlier simulation, then was refused): explicit checks, and a small sample made
    in memory where the simulator itself checks its geometry."""
    for option in ("division_rate", "death_rate"):  # probabilities per nucleus and frame (the simulator's check)
        value = getattr(args, option, None)
        if args.domain == "nuclei" and value is not None and not 0 <= value <= 1:
            raise InputError(f"--{option.replace('_', '-')} must be a probability in [0, 1], got {value}")
    diameter = getattr(args, "diameter", None)
    if args.domain == "nuclei" and diameter:
        low, high = (float(v) for v in diameter)
        if not (math.isfinite(low) and math.isfinite(high) and 2 <= low <= high):
            raise InputError(f"--diameter must be two numbers MIN MAX with 2 <= MIN <= MAX (px), got {diameter}")
    if args.domain == "response":
        from ..simulate.response import KINDS, simulate_response_image

        if args.kind is not None and args.kind not in KINDS:
            raise InputError(f"--kind must be one of {', '.join(KINDS)}; got {args.kind!r}")
        simulate_response_image("good_empty", shape=_shape(args.shape), column_width=args.column_width, seed=0)
    elif args.domain == "liposomes":
        from ..simulate.liposomes import simulate_liposome_image

        simulate_liposome_image(shape=_shape(args.shape), n_particles=min(args.particles, 1), seed=0)
    elif args.domain == "nanoparticles":
        from ..simulate.nanoparticles import simulate_profiles

        if args.views < 1 or args.points < 2:
            raise InputError("--views must be >= 1 and --points >= 2")
        simulate_profiles(1, task=args.task, n_views=args.views, view_angle_deg=args.view_angle, seed=0,
                          noiseless=args.noiseless, data_points=min(args.points, 64), hole_radius=args.hole_radius,
                          offset_sd=args.offset_sd, view_angle_jitter_deg=args.view_angle_jitter)


def run(args: argparse.Namespace) -> int:
    _check_common(args)
    _check_domain(args)
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise InputError(f"--out {args.out} exists and is not a folder")
    make_output_folder(Path(args.out))
    from ..batch.runner import acquire_out_lock

    # a second simulation into this folder is refused: with --overwrite it removed this one's samples as they
    # were written, and two at once mixed their samples under one record
    lock = acquire_out_lock(Path(args.out))
    try:
        return _simulate_into(args)
    finally:
        from ..batch.runner import release_out_lock

        release_out_lock(lock)


def _simulate_into(args: argparse.Namespace) -> int:
    out = _prepare_out(args.out, args.overwrite)
    # a record of this run before its samples: an interrupted run is then removed whole by the next --overwrite
    # (the earlier run's record, of fewer samples, would have left the rest)
    _write_json(out / "params.json", {"domain": args.domain, "n": args.n, "sample_seeds": "numpy SeedSequence([seed, index])",
                                      "complete": False})
    handler = {"nuclei": _run_nuclei, "response": _run_response, "liposomes": _run_liposomes, "nanoparticles": _run_nanoparticles, "ccd": _run_ccd}[args.domain]
    summary = handler(args, out)
    cli = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}
    _write_json(out / "params.json", {"domain": args.domain, "seed": args.seed, "n": args.n, "cli": cli, "sample_seeds": "numpy SeedSequence([seed, index])", **summary})
    print(f"microseg simulate {args.domain}: wrote {args.n} sample(s) to {out}")
    return 0


# --- domains -----------------------------------------------------------------------


def _run_nuclei(args, out: Path) -> dict:
    import pandas as pd

    from ..progress import Progress
    from ..simulate.nuclei import simulate_nuclei_image, simulate_nuclei_timelapse

    if args.frames < 1:
        raise InputError(f"--frames must be >= 1, got {args.frames}")
    shape = _shape(args.shape)
    if args.mode == "images":
        # the time-lapse's options do nothing to single images: refused, not recorded in params.json as if used
        unused = [option for option, value, default in (
            ("--frames", args.frames, 20), ("--division-rate", args.division_rate, 0.02),
            ("--death-rate", args.death_rate, 0.012), ("--motion-sd", args.motion_sd, 1.0),
            ("--drift", tuple(args.drift), (0.0, 0.0)), ("--stage-shift-sd", args.stage_shift_sd, 0.0),
            ("--no-touching", args.no_touching, False), ("--no-enter-leave", args.no_enter_leave, False))
            if value != default]
        if unused:
            raise InputError(f"{', '.join(unused)} appl{'ies' if len(unused) == 1 else 'y'} to time-lapses: "
                             "--mode images draws independent images (their nuclei may touch)")
        n_nuclei = args.nuclei  # None: a random count per image

        def gen():
            rows = []
            for i in range(args.n):
                s = _sample_seed(args.seed, i)
                image, labels = simulate_nuclei_image(shape=shape, n_nuclei=n_nuclei, seed=s, diameter_range=args.diameter)
                name = f"nuclei_{i:05d}.tif"
                _write_tiff(out / "images" / name, image)
                _write_tiff(out / "labels" / name, labels, labels=True)
                rows.append({"image": f"images/{name}", "labels": f"labels/{name}", "seed": s, "n_nuclei": int(labels.max())})
                yield Progress(i + 1, args.n, name)
            _write_csv(out / "images.csv", pd.DataFrame(rows))
            return {"mode": "images", "n_nuclei": n_nuclei}

        return _drive(gen(), args.n, "nuclei")

    kwargs = dict(
        n_frames=args.frames,
        shape=shape,
        n_nuclei=30 if args.nuclei is None else args.nuclei,
        diameter_range=tuple(args.diameter) if args.diameter else (8.0, 20.0),
        division_rate=args.division_rate,
        death_rate=args.death_rate,
        motion_sd=args.motion_sd,
        drift=tuple(args.drift),
        stage_shift_sd=args.stage_shift_sd,
        allow_touching=not args.no_touching,
        enter_leave=not args.no_enter_leave,
        output_dtype=args.dtype,
    )

    def gen():
        movies = []
        for i in range(args.n):
            s = args.seed if args.n == 1 else _sample_seed(args.seed, i)
            sim = simulate_nuclei_timelapse(seed=s, **kwargs)
            folder = out if args.n == 1 else out / f"movie_{i:03d}"
            _write_tiff(folder / "fluorescence.tif", sim.fluorescence)
            _write_tiff(folder / "phase.tif", sim.phase)
            _write_tiff(folder / "labels.tif", sim.labels, labels=True)
            _write_csv(folder / "tracks.csv", sim.tracks)
            _write_csv(folder / "events.csv", sim.events)
            if args.n > 1:
                _write_json(folder / "movie_params.json", sim.params)
            movies.append(sim.params)
            yield Progress(i + 1, args.n, f"movie {i}")
        crowded = [m["crowding_note"] for m in movies if "crowding_note" in m]
        if crowded:  # the same field and sizes for every movie: one message says it
            print(f"warning: {crowded[0]}", file=sys.stderr)
        return {"mode": "timelapse", "simulation": movies[0] if args.n == 1 else movies}

    return _drive(gen(), args.n, "nuclei")


def _run_response(args, out: Path) -> dict:
    import pandas as pd

    from ..progress import Progress
    from ..simulate.response import balanced_kind, simulate_response_image

    shape = _shape(args.shape)  # (--kind and the geometry were checked by _check_domain)

    def gen():
        rows = []
        for i in range(args.n):
            kind = args.kind or balanced_kind(i)
            s = _sample_seed(args.seed, i)
            r = simulate_response_image(kind, shape=shape, column_width=args.column_width, seed=s)
            name = f"response_{i:05d}.tif"
            _write_tiff(out / "images" / name, r.image)
            _write_tiff(out / "integration" / name, r.integration_mask.astype(np.uint8))
            _write_tiff(out / "artefacts" / name, r.artefact_mask.astype(np.uint8))
            cb = r.params["crop_box"]
            rows.append({"index": i, "image": f"images/{name}", "label": r.label, "is_good": int(r.label == "good"), "subclass": r.subclass, "seed": s, "background_mean": r.params["background_mean"], "noise_sd": r.params["noise_sd"], "signal_peak": r.params.get("signal_peak") or 0.0, "crop_y0": cb[0], "crop_x0": cb[1], "crop_y1": cb[2], "crop_x1": cb[3]})
            yield Progress(i + 1, args.n, kind)
        _write_csv(out / "classes.csv", pd.DataFrame(rows))
        return {"kinds": sorted({r["subclass"] for r in rows}), "shape": shape, "column_width": args.column_width}

    return _drive(gen(), args.n, "response")


def _run_liposomes(args, out: Path) -> dict:
    import pandas as pd

    from ..progress import Progress
    from ..simulate.liposomes import STUDY_CLASS_WEIGHTS, simulate_liposome_image

    weights = STUDY_CLASS_WEIGHTS if args.study_weights else None

    def gen():
        tables = []
        first = None
        fewest, placed = args.particles, 0
        for i in range(args.n):
            s = _sample_seed(args.seed, i)
            r = simulate_liposome_image(shape=_shape(args.shape), n_particles=args.particles, class_weights=weights, seed=s)
            fewest, placed = min(fewest, len(r.classes)), placed + len(r.classes)
            first = first or r.params
            name = f"liposomes_{i:05d}.tif"
            _write_tiff(out / "images" / name, r.image)
            _write_tiff(out / "labels" / name, r.labels, labels=True)
            table = r.classes.copy()
            table.insert(0, "image", f"images/{name}")
            tables.append(table)
            yield Progress(i + 1, args.n, name)
        _write_csv(out / "classes.csv", pd.concat(tables, ignore_index=True))
        if placed < 0.9 * args.particles * args.n:  # a crowded field: the placement gave up on overlapping ones (a
            # particle or two of 30 at the defaults is normal, 4 in some image now and then: classes.csv lists the ones placed)
            print(f"warning: {placed / args.n:.1f} of {args.particles} particles per image fitted on average (fewest "
                  f"{fewest}) in the {args.shape[0]} x {args.shape[1]} px images without overlapping: give a larger "
                  "--shape or fewer --particles", file=sys.stderr)
        return {"simulation": first}

    return _drive(gen(), args.n, "liposomes")


def _run_nanoparticles(args, out: Path) -> dict:
    import pandas as pd

    from ..simulate.nanoparticles import render_particle, simulate_profiles

    gen = simulate_profiles(args.n, task=args.task, n_views=args.views, view_angle_deg=args.view_angle, seed=args.seed, noiseless=args.noiseless, data_points=args.points, hole_radius=args.hole_radius,
                            offset_sd=args.offset_sd, view_angle_jitter_deg=args.view_angle_jitter, progress=True)
    ps = _drive(gen, args.n, "nanoparticles")
    _write_tiff(out / "profiles.tif", ps.profiles)
    _write_csv(out / "classes.csv", pd.DataFrame({"index": np.arange(len(ps.labels)), "label": ps.labels, "class": [ps.class_names[k] for k in ps.labels]}))
    k = min(args.renders, len(ps.polygons))
    if k:
        _write_tiff(out / "renders.tif", np.stack([render_particle(p, 128, extent=None) for p in ps.polygons[:k]]))
    # one random stream for all particles (not a seed per sample): particle i is remade by simulating i + 1
    return {"simulation": ps.params, "sample_seeds": "numpy default_rng(seed), one stream: particle i follows "
                                                     "those before it (a larger --n starts with a smaller one's)"}


def _run_ccd(args, out: Path) -> dict:
    import pandas as pd

    from scipy import ndimage as ndi

    from ..measure.counts import column_name
    from ..progress import Progress
    from ..simulate.ccd import (CLASS_NAMES, charge_on_frame, simulate_ccd_exposure, simulate_ccd_frame,
                                simulate_ccd_sensor, write_ccd_fits)

    sensor = None
    if args.one_sensor:  # the sensor's defects from their own seed, the same for every frame
        sensor = simulate_ccd_sensor(shape=_shape(args.shape), seed=_sample_seed(args.seed, SENSOR_SAMPLE_INDEX),
                                     glow_probability=args.glow_probability)

    def gen():
        rows, deposits = [], []
        first = None
        for i in range(args.n):
            s = _sample_seed(args.seed, i)
            if sensor is not None:
                f = simulate_ccd_exposure(sensor, seed=s, pedestal=args.pedestal, noise_sd=args.noise, muons=args.muons,
                                          electrons=args.electrons, gain=args.gain)
            else:
                f = simulate_ccd_frame(shape=_shape(args.shape), seed=s, pedestal=args.pedestal, noise_sd=args.noise, glow_probability=args.glow_probability, balanced=args.balanced, muons=args.muons, electrons=args.electrons, gain=args.gain)
            first = first or f.params
            name = f"ccd_{i:05d}"
            write_ccd_fits(out / "frames" / f"{name}.fits", f, overwrite=True)  # the folder check guards the user's files
            _write_tiff(out / "classes" / f"{name}.tif", f.classes, labels=True)
            # clusters drawn (point charges; many overlap or fall below the labelling threshold) and the
            # 8-connected cluster pieces of the class map written, what a segmentation can find
            pieces = int(ndi.label(f.classes == CLASS_NAMES.index("cluster"), structure=np.ones((3, 3), bool))[1])
            row = {"index": i, "image": f"frames/{name}.fits", "classes": f"classes/{name}.tif", "seed": s,
                   "n_clusters": f.params["n_clusters_drawn"], "n_cluster_pieces": pieces}
            row.update({f"fraction_{column_name(c)}": float(v) for c, v in zip(CLASS_NAMES, f.class_fractions)})
            rows.append(row)
            # each point charge drawn, for checking a cluster measurement against the truth (clusters.csv): the
            # charge it deposited on the frame (a charge at the edge was listed whole, the part off the frame
            # too, which no measurement of the frame can find) and the share of its whole charge that is
            drawn = pd.DataFrame(np.asarray(f.clusters, np.float64).reshape(-1, 5),
                                 columns=["y", "x", "energy_kev", "sigma_px", "charge_adc"])
            on_frame = charge_on_frame(f.image.shape, f.clusters)
            drawn["fraction_on_frame"] = np.divide(on_frame, drawn["charge_adc"].to_numpy(),
                                                   out=np.zeros(len(drawn)), where=drawn["charge_adc"].to_numpy() > 0)
            drawn["charge_adc"] = on_frame
            drawn.insert(0, "index", i)
            deposits.append(drawn)
            yield Progress(i + 1, args.n, name)
        _write_csv(out / "classes.csv", pd.DataFrame(rows))
        _write_csv(out / "clusters_truth.csv", pd.concat(deposits, ignore_index=True) if deposits else
                   pd.DataFrame(columns=["index", "y", "x", "energy_kev", "sigma_px", "charge_adc", "fraction_on_frame"]))
        return {"simulation": first, "class_names": list(CLASS_NAMES)}

    return _drive(gen(), args.n, "ccd")
