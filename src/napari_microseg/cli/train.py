"""``microseg train``: train a segmentation U-Net on image / label files or simulated nuclei.

Writes the model file (weights + settings + normalisation + history), a resumable
``<model file>.last.pt`` checkpoint (``nuclei.pt`` -> ``nuclei.pt.last.pt``), and ``<model>.history.csv`` (epoch, train_loss,
val_loss, val_dice, lr, seconds) next to the model.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from ..errors import InputError, MicrosegError
from ._help import HelpFormatter


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a segmentation U-Net (files or simulated nuclei)",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    src = p.add_argument_group("data")
    src.add_argument("--images", help="image file, folder or glob (TIFF/FITS/Zarr; T,Y,X stacks are split into frames)")
    src.add_argument("--labels", help="label file or folder, matched to images by file name")
    src.add_argument("--simulated", type=int, metavar="N", help="train on N simulated nuclei images instead of files")
    src.add_argument("--sim-size", type=int, default=256, help="side of simulated images, pixels")
    src.add_argument("--sim-nuclei", type=int, default=30, help="nuclei per simulated image")
    src.add_argument("--max-images", type=int, help="use at most this many image files")
    src.add_argument("--hdu", type=int, default=None,
                     help="FITS only: HDU index to read of images and labels (default: first with image data)")
    src.add_argument("--val-images", help="validation images (default: split off --val-fraction)")
    src.add_argument("--val-labels", help="validation labels for --val-images")
    src.add_argument("--val-fraction", type=float, default=None,
                     help="share of images held out for validation (a strip if only one image; default 0.2, "
                          "a resumed run's own)")
    src.add_argument("--ignore-value", type=int, default=-1, help="label value meaning 'not annotated'")
    src.add_argument("--unlabelled-is-ignored", action="store_true", help="sparse painting: label 0 = not annotated")
    src.add_argument("--background-value", type=int, help="label value of painted background (with --unlabelled-is-ignored)")
    m = p.add_argument_group("model")
    m.add_argument("--preset", default=None, choices=["small", "n", "c"],
                   help="network preset (default: small; with --init-model / --resume, that model's network)")
    m.add_argument("--output-mode", default=None, choices=["binary", "three_class", "multiclass"],
                   help="binary: foreground/background; three_class: background/interior/boundary, which splits "
                        "touching nuclei (use it for nuclei); multiclass: one class per label value (CCD) "
                        "(default: the --init-model's or --resume's, else binary)")
    m.add_argument("--n-classes", type=int, help="classes for multiclass (default: max label + 1)")
    m.add_argument("--distance-head", action="store_true",
                   help="three_class: add an output that regresses each nucleus's normalised interior distance; "
                        "its map seeds the watershed (seed_method 'network') and splits touching nuclei")
    m.add_argument("--touching-weight", type=float, default=None,
                   help="three_class: extra loss weight on the seams between touching nuclei (U-Net border weights; 0: off) "
                        f"{_resumed('touching_weight')}")
    m.add_argument("--base-filters", type=int,
                   help="filters of the first U-Net level (preset's default otherwise; with --init-model / --resume, "
                        "that model's)")
    m.add_argument("--class-names", help="comma-separated class names")
    m.add_argument("--normalization", choices=["percentile", "minmax", "fixed", "pedestal", "none"],
                   help="intensity normalisation stored with the model (default: that of --init-model / --resume; "
                        "else pedestal for multiclass (raw CCD ADC: frame pedestal subtracted, / 200 ADC, the "
                        "Training widget's default), percentile otherwise)")
    m.add_argument("--p-low", type=float, default=None,
                   help="percentile normalisation (chosen by giving it): low percentile (default: 1)")
    m.add_argument("--p-high", type=float, default=None,
                   help="percentile normalisation (chosen by giving it): high percentile (default: 99.8)")
    m.add_argument("--offset", type=float, default=None,
                   help="fixed normalisation (chosen by giving it): subtract this, e.g. CCD pedestal 8800 (default: 0)")
    m.add_argument("--scale", type=float, default=None,
                   help="fixed / pedestal normalisation: then divide by this (default: fixed 1, pedestal 200 ADC)")
    m.add_argument("--pedestal-estimator", choices=["mode", "median"], default=None,
                   help="pedestal normalisation: the frame's histogram peak (default) or median")
    m.add_argument("--level-taps", action=argparse.BooleanOptionalAction, default=None,
                   help="pedestal normalisation: level CCD readout taps before predicting (stored in the model; "
                        "default: on, as the shipped CCD model)")
    t = p.add_argument_group("training")
    t.add_argument("--out", required=True, help="model file to write (.pt)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing model file")
    t.add_argument("--epochs", type=int, default=None,
                   help=f"passes over --patches-per-epoch patches, in all (a resumed run counts its own) {_resumed('epochs')}")
    t.add_argument("--patch", type=int, default=None, help=f"patch side, pixels {_resumed('patch')}")
    t.add_argument("--patches-per-epoch", type=int, default=None, help=f"random patches drawn per epoch {_resumed('patches_per_epoch')}")
    t.add_argument("--image-sampling", choices=["pixels", "objects", "mixed"], default=None,
                   help="images give patches in proportion to their annotated pixels, to the objects they hold "
                        "(crowded images of small nuclei are not outweighed by large images), or half of each (mixed) "
                        f"{_resumed('image_sampling')}")
    t.add_argument("--batch-size", type=int, default=None, help=f"patches per optimiser step {_resumed('batch_size')}")
    t.add_argument("--lr", type=float, default=None,
                   help="initial learning rate (default: 0.001, 1 with --optimizer adadelta; a resumed run goes on with its "
                        "own, as its optimiser state does)")
    # the choices of trainer.LR_SCHEDULES, written out: importing the trainer here would load torch for --help
    t.add_argument("--lr-schedule", choices=["plateau", "cosine", "constant"], default=None,
                   help="plateau: the lr falls x0.1 after 5 epochs without improvement; cosine: it falls from --lr to "
                        "1e-6 along a cosine over --epochs (long fine-tunes; combine with --patience 0); constant: --lr "
                        f"throughout (the [N] study: --lr 2e-4 --patience 250) {_resumed('lr_schedule')}")
    t.add_argument("--optimizer", default=None, choices=["adam", "adamw", "sgd", "adadelta"],
                   help=f"optimiser {_resumed('optimizer')}")
    t.add_argument("--weight-decay", type=float, default=None,
                   help="L2 penalty on the weights, added to their gradients (decoupled decay with adamw); the [C] "
                        "study's Keras l2(0.01), which adds 0.01 x w^2 to the loss, is --weight-decay 0.02 with adadelta "
                        f"{_resumed('weight_decay')}")
    t.add_argument("--loss", choices=["bce", "ce", "weighted_ce", "dice", "bce_dice", "ce_dice", "focal"],
                   help="loss (default: a resumed run's own, else bce_dice binary, ce_dice three_class, weighted_ce "
                        "multiclass)")
    t.add_argument("--patience", type=int, default=None, help=f"early-stopping patience, epochs (0: off) {_resumed('patience')}")
    t.add_argument("--no-augment", action="store_const", const=False, dest="augment", default=None,
                   help="switch augmentation off (default: on; with --resume, as the resumed run had it)")
    t.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    t.add_argument("--no-amp", action="store_true", help="no mixed precision (used on CUDA and on CPUs with native bfloat16)")
    t.add_argument("--threads", type=int, help="torch CPU threads")
    t.add_argument("--seed", type=int, default=None,
                   help="random seed (patches, augmentation, initial weights, and the validation split unless --split-seed) "
                        f"{_resumed('seed')}")
    t.add_argument("--split-seed", type=int, default=None,
                   help="seed of which images are held out for validation (default: --seed); keep it to compare runs of other seeds")
    t.add_argument("--resume", help="continue from a checkpoint (the model file plus .last.pt, e.g. nuclei.pt.last.pt, or the model next to one)")
    t.add_argument("--init-model", help="fine-tune from this model file")
    t.add_argument("--freeze-encoder", action="store_true", help="with --init-model: keep the encoder fixed")
    t.add_argument("--history", help="history CSV path (default: <model>.history.csv next to --out)")
    t.add_argument("--quiet", action="store_true", help="no progress bar (the summary lines are still printed)")
    p.set_defaults(func=run)


def _resumed(dest: str) -> str:
    """The help's default note of a :data:`RUN_SETTINGS` option."""
    return f"(default: {RUN_SETTINGS[dest][1]}; with --resume, the resumed run's own)"


#: run settings a resumed run keeps unless given again: option dest -> (TrainConfig key, default of a new run)
RUN_SETTINGS = {"patch": ("patch_size", 256), "patches_per_epoch": ("patches_per_epoch", 256), "batch_size": ("batch_size", 8),
                "image_sampling": ("image_sampling", "pixels"), "lr_schedule": ("lr_schedule", "plateau"),
                "weight_decay": ("weight_decay", 0.0), "loss": ("loss", None), "patience": ("early_stopping_patience", 20),
                "seed": ("seed", 0), "touching_weight": ("touching_weight", 0.0), "epochs": ("epochs", 50),
                "optimizer": ("optimizer", "adam"), "augment": ("augment", True)}


def _run_settings(args: argparse.Namespace) -> dict:
    """The values of :data:`RUN_SETTINGS` for this run, by option dest: as given; else, with ``--resume``, the
    resumed run's own (its patches, validation tiles and schedule go on as they were: a patch size changed on
    resume compared validation losses of other tiles); else the defaults. The patience of a run without
    early stopping (None) is 0."""
    before: dict = {}
    if args.resume:
        from ..training.trainer import read_checkpoint

        before = (read_checkpoint(args.resume)["config"].get("training") or {}).get("config") or {}
    chosen = {}
    for dest, (key, default) in RUN_SETTINGS.items():
        given = getattr(args, dest)
        if given is not None:
            chosen[dest] = given
        elif key in before:
            chosen[dest] = before[key] if not (dest == "patience" and before[key] is None) else 0
        else:
            chosen[dest] = default
    return chosen


def _simulated(n: int, size: int, n_nuclei: int, seed: int):
    from ..simulate.nuclei import simulate_nuclei_image

    images, labels = [], []
    for i in range(n):
        im, lb = simulate_nuclei_image((size, size), n_nuclei, seed=seed * 100003 + i)
        images.append(im), labels.append(lb)
    return images, labels


def _simulated_description(labels: list, size: int, asked: int, seed: int) -> str:
    """The training record's line for ``--simulated``: the nuclei the simulator placed (it places fewer
    than asked where they do not fit), not the number asked for."""
    import numpy as np

    placed = [int(np.count_nonzero(np.unique(lb))) for lb in labels]
    spread = f"{min(placed)}" if min(placed) == max(placed) else f"{min(placed)}-{max(placed)}"
    return (f"{len(labels)} simulated nuclei images {size}x{size}, {spread} nuclei each ({sum(placed)} in all; "
            f"{asked} asked for per image), seed {seed}")


def _resolve_output_mode(args: argparse.Namespace) -> None:
    """``args.output_mode`` when not given: the output mode of the model fine-tuned (``--init-model``)
    or continued (``--resume``), else binary. Fine-tuning the shipped three-class nuclei model as a
    binary one rebuilt its head from scratch without a word (val Dice 0.17 against 0.92). A network
    setting (``--preset``, ``--base-filters``) other than that model's is refused."""
    source = args.resume or args.init_model
    given = args.output_mode
    found = None
    if args.preset is None and not source:
        args.preset = "small"
    if source:
        try:
            if args.resume:
                from ..training.trainer import read_checkpoint

                source_config = read_checkpoint(args.resume)["config"]
            else:
                from ..io.models import read_model_file

                source_config = read_model_file(args.init_model)["config"]
        except MicrosegError:
            source_config = None  # not a readable model: the trainer says why, with its own message
        if source_config is not None:
            found = source_config.get("output_mode")
            _check_architecture_kept(args, source_config, Path(str(source)).name)
    if given is None:
        args.output_mode = found or "binary"
        if found:
            print(f"output mode {found}, as {Path(str(source)).name} has it", file=sys.stderr)
        args.binary_by_default = not found and not source  # said once the settings are checked (see run)
    elif found and given != found and args.init_model:
        print(f"warning: --output-mode {given} differs from {Path(str(source)).name}'s ({found}): its output "
              "layer is trained afresh for the new outputs (the rest of the network is kept)", file=sys.stderr)


def _check_architecture_kept(args: argparse.Namespace, source_config: dict, source_name: str) -> None:
    """Refuse ``--preset`` / ``--base-filters`` that differ from the network of the model fine-tuned or
    resumed: its weights fix the architecture, and the settings given were dropped without a word."""
    network = source_config.get("model") or {}
    for option, key in (("preset", "preset"), ("base_filters", "base_filters")):
        given, kept = getattr(args, option), network.get(key)
        if given is not None and kept is not None and given != kept:
            flag = "--" + option.replace("_", "-")
            raise InputError(f"{flag} {given}: {source_name}'s network has {flag} {kept}, and "
                             f"{'fine-tuning' if args.init_model else 'resuming'} keeps its network; drop {flag}, "
                             "or train a new model without --init-model / --resume")


def _folder_class_names(args: argparse.Namespace) -> list[str] | None:
    """Multi-class training on a simulated folder without --class-names: the names its params.json
    records (``microseg simulate ccd`` writes them), so that e.g. the "cluster" class keeps its name."""
    if args.output_mode != "multiclass" or not args.labels:
        return None
    return class_names_near(Path(args.labels))


def class_names_near(path: Path) -> list[str] | None:
    """Class names recorded in a ``params.json`` in ``path`` (a folder) or the folder above it;
    for a file or a glob pattern, its folder and the one above."""
    import glob

    if not path.is_dir():
        path = path.parent
        while glob.has_magic(str(path)) and path != path.parent:
            path = path.parent
    for folder in (path, path.parent):
        params = folder / "params.json" if folder.is_dir() else None
        if params is not None and params.is_file():
            try:
                names = json.loads(params.read_text()).get("class_names")
            except (ValueError, OSError):
                return None
            if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
                print(f"class names from {params}: {', '.join(names)}")
                return names
    return None


def check_history_path(history_path: Path, out: Path, *model_files: str | os.PathLike | None) -> None:
    """Refuse a ``--history`` CSV path that is a model file of the run: the model ``out`` it writes or its
    ``.last.pt`` checkpoint (the CSV was written over the trained model after training), or a model it
    starts from (``model_files``: ``--init-model``, ``--resume``); or a folder (found only after the run)."""
    from ..training.trainer import last_checkpoint_path

    models = {out, last_checkpoint_path(out), *(Path(path) for path in model_files if path)}
    if history_path.resolve() in {path.resolve() for path in models}:
        raise InputError(f"--history {history_path} is a model file this run writes or starts from: give the "
                         "history another name (default: <model>.history.csv)")
    if history_path.is_dir():
        raise InputError(f"--history {history_path} is a folder: give the name of a CSV file to write "
                         f"(e.g. {history_path / (out.stem + '.history.csv')})")


def _autolabel_tiles_table(images: str):
    """The rows of ``OUT/tiles.csv`` of the tiles ``autolabel fluorescence --target`` wrote (``images``:
    ``OUT/tiles/images``) whose files exist, as ``{file name: (t, y, x, height, width)}`` (px; a table
    without the tile size gives -1); {} for other folders or a table not autolabel's."""
    import pandas as pd

    folder = Path(images)
    table_path = folder.parent.parent / "tiles.csv"
    if not folder.is_dir() or folder.name != "images" or folder.parent.name != "tiles" or not table_path.is_file():
        return {}
    try:
        table = pd.read_csv(table_path)
        table = table[table["target_file"].notna()]
        size = {key: table[key] if key in table else pd.Series(-1, index=table.index) for key in ("height", "width")}
        return {Path(str(row.target_file)).name: (int(row.t), int(row.y), int(row.x), int(size["height"][row.Index]),
                                                  int(size["width"][row.Index]))
                for row in table.itertuples()}
    except (OSError, ValueError, KeyError, AttributeError, pd.errors.ParserError):
        return {}  # not autolabel's table: the split by file, as before


def _autolabel_tile_places(images: str, names: list[str]) -> dict[str, str]:
    """For tiles written by ``autolabel fluorescence --target`` (``OUT/tiles/images`` beside ``OUT/tiles.csv``)
    of two or more frames: each tile file's name -> its place in the frames (``"tiles at y 0, x 512"``), as the
    sequence it is a frame of. The split then holds out the last frames at every place, as for a time-lapse: a
    random choice put the same place of frame t +/- 1 (labels IoU 0.65-0.94) in training beside each validation
    tile. {} for other folders, or tiles of one frame."""
    places = _autolabel_tiles_table(images)
    if len({t for t, *_ in places.values()}) < 2:
        return {}
    # (the files are named in frame order, tile_00000 ..., so each place's tiles come in time order)
    return {name: f"tiles at y {places[name][1]}, x {places[name][2]}" for name in names if name in places}


def _autolabel_tile_groups(images: str, names: list[str]) -> dict[str, str]:
    """For tiles written by ``autolabel fluorescence --target``: each tile file's name -> the tiles of its
    frame it overlaps, joined (``"frame 0, tiles overlapping from y 448, x 0"``: the last row / column of
    tiles is moved back to fit the field, over the one before it), as the group the split keeps on one
    side; tiles that overlap no other are left out. {} for other folders (or a table without tile sizes)."""
    tiles = {name: place for name, place in _autolabel_tiles_table(images).items() if name in set(names)}
    if any(h < 1 or w < 1 for *_, h, w in tiles.values()):
        return {}
    order = sorted(tiles)
    parent = {name: name for name in order}

    def root(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    by_frame: dict[int, list[str]] = {}
    for name in order:
        by_frame.setdefault(tiles[name][0], []).append(name)
    for frame in by_frame.values():
        for i, a in enumerate(frame):
            _, ya, xa, ha, wa = tiles[a]
            for b in frame[i + 1:]:
                _, yb, xb, hb, wb = tiles[b]
                if ya < yb + hb and yb < ya + ha and xa < xb + wb and xb < xa + wa:  # they share pixels
                    parent[root(b)] = root(a)
    members: dict[str, list[str]] = {}
    for name in order:
        members.setdefault(root(name), []).append(name)
    groups = {}
    for group in members.values():
        if len(group) > 1:
            t = tiles[group[0]][0]
            key = (f"frame {t}, tiles overlapping from y {min(tiles[n][1] for n in group)}, "
                   f"x {min(tiles[n][2] for n in group)}")
            groups.update({name: key for name in group})
    return groups


def _is_training_history(path: Path) -> bool:
    """True when ``path`` is a file whose first line is a training history's header (``epoch,train_loss,...``)."""
    from ..io.tables import TRAIN_HISTORY_COLUMNS

    try:
        with open(path, "rb") as handle:
            first = handle.readline(200).decode("utf-8", "replace").strip().lstrip("\ufeff")
    except OSError:
        return False
    return first.split(",")[:2] == TRAIN_HISTORY_COLUMNS[:2]


def write_history_csv(path: str | Path, history: list[dict]) -> Path:
    """Write the per-epoch history as CSV (atomically)."""
    from ..io.tables import TRAIN_HISTORY_COLUMNS, write_history_csv as write

    return write(path, history, TRAIN_HISTORY_COLUMNS)


def run(args: argparse.Namespace) -> int:
    from ..batch.runner import acquire_out_lock
    from ..io.atomic import make_output_folder

    out = Path(args.out)
    if not out.parent.is_dir():
        make_output_folder(out.parent)  # (removed again if the run fails before writing anything)
    # a second `microseg train` into this model file is refused: two at once left one run's weights under the
    # other's training record, or silently replaced the first run's model
    lock = acquire_out_lock(out.parent, f".{out.name}.lock", what=out)
    try:
        return _train_into(args)
    finally:
        from ..batch.runner import release_out_lock

        release_out_lock(lock)


def _note_unfinished_simulation(images: str) -> None:
    """Warn when ``images`` (a folder, or a file in one) belongs to a `microseg simulate` run that stopped
    before its end (its params.json says ``complete: false``): fewer samples than it was asked for."""
    import json

    folder = Path(images) if Path(images).is_dir() else Path(images).parent
    for record_path in (folder / "params.json", folder.parent / "params.json"):
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("complete") is False and "sample_seeds" in record:
            print(f"warning: {record_path.parent} holds a simulation that stopped before its end (params.json: "
                  f"complete false, {record.get('n')} samples asked): it trains on the samples written so far; "
                  "run the simulation again to complete it", file=sys.stderr)
        return


def _train_into(args: argparse.Namespace) -> int:
    from ..io.tables import TRAIN_HISTORY_COLUMNS, model_sidecar
    from ..progress import run_with_text_progress
    from ..training.data import load_training_pairs
    from ..training.normalize import make_normalization_spec
    from ..training.trainer import TrainConfig, train

    out = Path(args.out)
    if out.suffix == "":
        raise InputError(f"--out {out} needs a file name with an extension such as .pt")
    from ..io.atomic import guard_target, unwritable_reason, write_protected_reason
    from ..training.trainer import last_checkpoint_path

    history_path = Path(args.history) if args.history else model_sidecar(out, "history.csv")
    check_history_path(history_path, out, args.init_model, args.resume)
    # --resume continues --out's own run (its model or checkpoint); resuming another run writes a new file
    continues_out = bool(args.resume) and Path(args.resume).resolve() in (out.resolve(), last_checkpoint_path(out).resolve())
    for target in (out, history_path, last_checkpoint_path(out)):
        # a resumed run rewrites its own history, never another file given as --history (a model was replaced)
        continued = continues_out and (target != history_path or _is_training_history(history_path))
        if target.exists() and not (args.overwrite or continued):
            if args.resume and target == history_path and continues_out:
                raise InputError(f"--history {history_path} exists and is no training history (a history CSV "
                                 f"starts with {','.join(TRAIN_HISTORY_COLUMNS[:2])},...): give another path, or "
                                 "pass --overwrite to replace it")
            if args.resume:
                raise InputError(f"{target} exists and belongs to another run than --resume {args.resume}: "
                                 "continue that run into a new --out, or pass --overwrite to replace it")
            raise InputError(f"{target} exists; pass --overwrite to replace it or --resume to continue it")
        guard_target(target)  # never an input, checked before any training
        # a write-protected (0444) file, or a folder that takes none, is refused now: found after the first epoch,
        # the run failed there (and its record said "diverged")
        unwritable = write_protected_reason(target) or unwritable_reason(target)
        if unwritable:
            raise InputError(unwritable)
    _resolve_output_mode(args)
    settings = _run_settings(args)  # (resumed runs keep their own)
    if args.background_value is not None and args.background_value == args.ignore_value:
        raise InputError(f"--background-value and --ignore-value are both {args.ignore_value}: painted background "
                         "and 'not annotated' must be told apart")
    for option, low in (("base_filters", 1), ("max_images", 1), ("patience", 0), ("n_classes", 2), ("hdu", 0)):
        value = getattr(args, option, None)
        if value is not None and value < low:
            raise InputError(f"--{option.replace('_', '-')} must be >= {low}, got {value}")
    if args.simulated is not None:
        if args.simulated < 1:
            raise InputError("--simulated needs N >= 1")
        if args.images or args.labels:  # it would train on the simulated images alone, unlike what was asked
            raise InputError("--simulated N trains on simulated images only: drop --images / --labels, or add "
                             "simulated images and labels to your folders (microseg simulate nuclei --mode images)")
        images, labels = _simulated(args.simulated, args.sim_size, args.sim_nuclei, settings["seed"])
        names = None
        description = _simulated_description(labels, args.sim_size, args.sim_nuclei, settings["seed"])
    else:
        if not args.images or not args.labels:
            raise InputError("give --images and --labels, or --simulated N")
        _note_unfinished_simulation(args.images)
        images, labels, names = load_training_pairs(args.images, args.labels, max_images=args.max_images, hdu=args.hdu)
        description = f"{len(images)} image(s) from {args.images} with labels from {args.labels}" + (
            f" (FITS HDU {args.hdu})" if args.hdu is not None else "")
    from ..training.normalize import CCD_NORMALIZATION

    if args.output_mode == "multiclass" and labels is not None:
        import numpy as np

        from ..training.data import object_ids_note

        note = next((f"{name}: {note}" for name, lb in zip(names or [f"image {i}" for i in range(len(labels))], labels)
                     if (note := object_ids_note(np.asarray(lb)))), None)
        if note:  # one class per object id: a model of dozens of "classes" that means nothing
            print(f"warning: {note}", file=sys.stderr)
    kind = args.normalization
    percentiles_given = args.p_low is not None or args.p_high is not None
    if kind is None and percentiles_given:  # they name their normalisation (it was dropped without a word)
        kind = "percentile"
    elif kind is None and args.offset is not None:
        kind = "fixed"
    for option, value, applies in (("--p-low / --p-high", percentiles_given, ("percentile",)),
                                   ("--offset", args.offset is not None, ("fixed",)),
                                   ("--scale", args.scale is not None, ("fixed", "pedestal")),
                                   ("--pedestal-estimator / --level-taps",
                                    args.pedestal_estimator is not None or args.level_taps is not None, ("pedestal",))):
        pedestal_by_default = kind is None and args.output_mode == "multiclass" and not (args.init_model or args.resume)
        if value and kind not in applies and not (pedestal_by_default and "pedestal" in applies):
            raise InputError(f"{option} set the {' or '.join(applies)} normalisation, not {kind or 'the default'}: "
                             f"drop them, or choose --normalization {applies[0]}")
    if kind is None and args.output_mode == "multiclass" and not (args.init_model or args.resume):
        # [C]: classes told apart by their level in ADC; a per-tile stretch gives one class different
        # values from tile to tile (as the Training widget, multiclass trains on raw ADC by default)
        kind = "pedestal"
        scale = args.scale if args.scale is not None else CCD_NORMALIZATION.get("scale", 200.0)
        print(f"multiclass: intensities as raw CCD ADC (frame pedestal subtracted, / {scale:g} ADC); "
              "--normalization percentile stretches each image instead", file=sys.stderr)
    if kind is None:
        spec = None
    elif kind == "percentile":
        spec = make_normalization_spec("percentile", p_low=1.0 if args.p_low is None else args.p_low,
                                       p_high=99.8 if args.p_high is None else args.p_high)
    elif kind == "fixed":
        spec = make_normalization_spec("fixed", offset=args.offset or 0.0, scale=1.0 if args.scale is None else args.scale)
    elif kind == "pedestal":  # the shipped CCD model's settings unless given (written or chosen by default alike)
        chosen = {"scale": args.scale, "estimator": args.pedestal_estimator, "level_taps": args.level_taps}
        spec = make_normalization_spec({**CCD_NORMALIZATION, **{k: v for k, v in chosen.items() if v is not None}})
    else:
        spec = make_normalization_spec(kind)
    import numpy as np

    from ..training.trainer import fitted_patch_size

    patch = fitted_patch_size(settings["patch"], [np.shape(im)[-2:] for im in images])
    if patch != settings["patch"]:
        print(f"--patch {settings['patch']} is larger than every training image (the largest side is "
              f"{max(max(np.shape(im)[-2:]) for im in images)} px): training on {patch} px patches", file=sys.stderr)
    folder_names = None if args.class_names else _folder_class_names(args)
    if getattr(args, "binary_by_default", False):  # (the help says three_class for nuclei; the Training dock's)
        print("note: output mode binary (the default): touching objects come out as one; --output-mode "
              "three_class splits touching nuclei, multiclass learns classes (CCD)", file=sys.stderr)
    cfg = TrainConfig(
        preset=args.preset or "small", output_mode=args.output_mode,
        n_classes=args.n_classes or (len(folder_names) if folder_names else None),
        model={"base_filters": args.base_filters} if args.base_filters else {},
        distance_head=args.distance_head, touching_weight=settings["touching_weight"],
        class_names=[s.strip() for s in args.class_names.split(",")] if args.class_names else folder_names,
        normalization=spec,
        patch_size=settings["patch"], patches_per_epoch=settings["patches_per_epoch"], batch_size=settings["batch_size"],
        image_sampling=settings["image_sampling"], epochs=settings["epochs"], lr_schedule=settings["lr_schedule"],
        # the optimiser's own scale (Adadelta at Adam's 0.001 barely moves)
        lr=args.lr if args.lr is not None else 1.0 if settings["optimizer"] == "adadelta" else 1e-3,
        optimizer=settings["optimizer"], weight_decay=settings["weight_decay"], loss=settings["loss"],
        early_stopping_patience=settings["patience"] or None, device=args.device, amp=not args.no_amp,
        seed=settings["seed"], split_seed=args.split_seed, num_threads=args.threads, freeze_encoder=args.freeze_encoder,
        val_fraction=_val_fraction(args), augment=settings["augment"], ignore_value=args.ignore_value,
        unlabelled_is_ignored=args.unlabelled_is_ignored, background_value=args.background_value,
        data_description=description,
    )
    if args.simulated is None:  # frames of one stack file: validation holds out a block of them, not neighbours
        from ..io.images import sequence_of

        sequences = [sequence_of(n) for n in names]
        tile_places = _autolabel_tile_places(args.images, names)
        if tile_places:  # tiles of a time-lapse: held out as the last frames at each place, not as neighbours
            sequences = [tile_places.get(n, seq) for n, seq in zip(names, sequences)]
        # overlapping tiles of a field (autolabel's last row / column moved back): on one side of the split
        groups = _autolabel_tile_groups(args.images, names)
        train_data = {"images": images, "labels": labels, "sequences": sequences, "names": names,
                      **({"groups": [groups.get(n) for n in names]} if groups else {})}
    else:
        train_data = (images, labels)
    val_data = None
    if args.val_images or args.val_labels:
        if not (args.val_images and args.val_labels):
            raise InputError("give both --val-images and --val-labels")
        vi, vl, val_names = load_training_pairs(args.val_images, args.val_labels, hdu=args.hdu)
        val_data = {"images": vi, "labels": vl, "names": val_names}  # named in the model's record, as trained ones
        if args.simulated is None:
            from ..training.data import find_image_label_pairs

            trained_pairs = find_image_label_pairs(args.images, args.labels, warn=False)[: args.max_images or None]
            trained = {p.resolve() for p, _ in trained_pairs}  # (as load_training_pairs took them)
            val_files = find_image_label_pairs(args.val_images, args.val_labels, warn=False)
            shared = [p.name for p, _ in val_files if p.resolve() in trained]
            if shared:  # scores on images the network trains on say nothing about new images
                print(f"warning: {len(shared)} of the {len(val_files)} validation image file(s) are training images too "
                      f"({', '.join(shared[:3])}{' ...' if len(shared) > 3 else ''}): validation will look better than "
                      "the model is", file=sys.stderr)
    if args.resume and args.lr is not None:  # (its help says so; a run that took it and dropped it said nothing)
        print(f"note: --lr {args.lr:g} is not used: a resumed run goes on with its optimiser's own learning rate "
              "(to train at another, fine-tune from the model with --init-model)", file=sys.stderr)
    gen = train(cfg, train_data, val_data, out_path=out, resume=args.resume, init_model=args.init_model)
    from ..training.trainer import last_checkpoint_path

    # files already there and not continued by this run (an --overwrite run's predecessor): as they are now
    before = {} if continues_out else {p: _file_state(p) for p in (out, last_checkpoint_path(out))}
    from ._signals import terminate_as_interrupt

    def history_each_epoch(events):
        """The events, with history.csv written again after each epoch from the checkpoint just saved: a
        kill -9 left no history (or an earlier run's, under --overwrite) beside the model it kept."""
        while True:
            try:
                event = next(events)
            except StopIteration as done:
                return done.value
            yield event
            if getattr(event, "kind", "") == "epoch":
                # best effort: a checkpoint not readable (yet) or a full disk leave it to the run's end
                with contextlib.suppress(MicrosegError, OSError, KeyError):
                    history = read_model_file(last_checkpoint_path(out))["config"]["training"].get("history")
                    if history:
                        write_history_csv(history_path, history)

    from ..io.models import read_model_file

    try:
        with terminate_as_interrupt():  # a TERM (a job scheduler's stop) ends it as Ctrl-C does: best model kept
            result = run_with_text_progress(history_each_epoch(gen), label="train", quiet=args.quiet)  # --quiet: the summary lines still come
    except KeyboardInterrupt:
        gen.close()  # keeps the best model; write what history there is
        # a fine-tune goes on from its checkpoint, which holds the initial model's weights: --init-model
        # given again beside --resume is refused ("not both")
        _write_history_from_file(out, history_path, before,
                                 " and without --init-model (the checkpoint holds the fine-tune)" if args.init_model else "")
        raise
    write_history_csv(history_path, result.history)
    best = next((r for r in result.history if r["epoch"] == result.best_epoch), None)
    summary = f"{result.stop_reason} after {result.epochs_run} epoch(s) on {result.device}; best epoch {result.best_epoch}"
    if best and best.get("val_dice") is not None:
        summary += f" (val_loss {best['val_loss']:.4f}, val_dice {best['val_dice']:.3f})"
    print(summary)
    print(f"model: {result.model_path}")
    print(f"history: {history_path}")
    return 0


def _val_fraction(args: argparse.Namespace) -> float:
    """--val-fraction, else a resumed run's own share (its best epoch stays chosen on the same
    validation images), else 0.2."""
    if args.val_fraction is not None:
        return float(args.val_fraction)
    if args.resume:
        from ..training.trainer import resume_settings

        return float(resume_settings(args.resume).get("val_fraction", 0.2))
    return 0.2


def _file_state(path: Path) -> tuple | None:
    """A file's size and modification time (ns), None when missing: to tell whether a run wrote it
    (the same clock as the file's server, unlike the machine's time)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def _write_history_from_file(model_path: Path, history_path: Path, before: dict, resume_options: str = "") -> None:
    """After an interruption: the history of this run from its checkpoint or model file, and what
    was kept. A file still as it was before the run (``before``: :func:`_file_state` of each, empty
    for a run that continues its own files) is an earlier run's: its history is not this run's."""
    from ..io.models import read_model_file
    from ..training.trainer import last_checkpoint_path

    for p in (last_checkpoint_path(model_path), model_path):
        try:
            if p in before and _file_state(p) == before[p]:
                continue
            training = read_model_file(p)["config"]["training"]
        except Exception:  # noqa: BLE001 - best effort on interrupt
            continue
        if not training.get("history"):
            break
        write_history_csv(history_path, training["history"])
        say_interrupted(model_path, len(training["history"]), history_path, resume_options=resume_options)
        return
    say_interrupted(model_path, 0, history_path)


def say_interrupted(model_path: Path, n_epochs: int, history_path: Path, staged: str = "",
                    resume_options: str = "") -> None:
    """Tell, after Ctrl-C or TERM, what a training run kept: ``n_epochs`` finished epochs (the best model
    kept at ``model_path``, ``staged`` saying where else; how to go on, with ``resume_options`` added to the
    command), or none (the file there, if any, an earlier run's)."""
    if n_epochs:
        from ..training.trainer import last_checkpoint_path

        last = last_checkpoint_path(model_path)
        resume = (f"; to go on, run the same command with --resume {last}{resume_options}" if last.is_file() else "")
        print(f"interrupted after {n_epochs} epoch(s): the best model so far is kept in {model_path}{staged}; "
              f"history: {history_path}{resume}", file=sys.stderr)
    else:
        kept = f"{model_path} is an earlier run's model, unchanged" if model_path.is_file() else "no model was written"
        print(f"interrupted before the first epoch finished: {kept}", file=sys.stderr)
