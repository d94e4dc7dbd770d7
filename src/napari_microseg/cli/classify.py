"""``microseg classify``: classify whole images, objects or thickness profiles, or train a classifier.

  classify images    --model M --input DIR|FILES --out DIR   -> flags.csv (index,file,probability_bad,verdict,threshold)
                     (+ metrics.json, confusion.csv, confusion_normalized.csv, roc.csv, subclass_accuracy.csv
                     for a simulated folder)
  classify objects   --model M --image IMG --labels LBL --out DIR (or --input a simulated liposome folder)
                     -> objects.csv (t,label,y,x,area,class,probability,prob_*) + counts.csv (t,count,count_<class>...)
  classify profiles  --model M --input profiles.tif|.npy|DIR --out DIR -> profiles.csv + population.csv
  classify train {images,objects,profiles} --simulated N --out model.pt [--folds K]
                     -> model file, <model file>.last.pt checkpoint (nuclei.pt -> nuclei.pt.last.pt), <model>.history.csv next to the model
                        (--folds: also <model>.cv_folds.csv and <model>.cv_predictions.csv)

Each run also writes classify_run.json (model, device, settings, counts, seconds); where the
input folder's classes.csv holds the true classes (simulated folders do), objects and profiles
runs also write metrics.json (accuracy, balanced accuracy, macro F1, per class, the confusion matrix
raw and row-normalised), confusion.csv and confusion_normalized.csv (rows: true class, columns:
predicted; normalised: each true class's row sums to 1).
Existing outputs are never replaced without --overwrite.

Image inputs for ``images``: a folder written by ``microseg simulate response`` (classes.csv
with crop boxes; its labels are used to also write metrics.json), a folder of TIFFs, or
TIFF files. The integration area comes from ``--box`` (one box for all), the crop_*
columns of classes.csv, or ``integration/`` masks beside ``images/``; otherwise the
images must already have the model's crop size (39 x 42).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import InputError
from ..io.atomic import make_output_folder
from ._help import HelpFormatter

if TYPE_CHECKING:  # (annotations only: --help needs no pandas)
    import pandas as pd

HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_accuracy", "lr", "seconds", "phase"]


#: classifier architectures by input (names of models.classifiers / models.profile; kept here so --help needs no torch)
IMAGE_ARCHITECTURES = ("small_cnn", "vgg16_like", "lipnet")
PROFILE_ARCHITECTURES = ("profile_cnn",)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("classify", help="classify images / objects / profiles, or train a classifier",
                       description=__doc__, formatter_class=HelpFormatter)
    csub = p.add_subparsers(dest="what", metavar="WHAT")
    csub.required = True

    q = csub.add_parser("images", help="good/bad verdict per response image (flags.csv)")
    q.add_argument("--model", required=True, help="classifier model file (task images)")
    q.add_argument("--input", required=True, nargs="+", help="simulated response folder, folder of TIFFs, or TIFF files")
    q.add_argument("--out", required=True, type=Path, help="output folder")
    q.add_argument("--box", type=int, nargs=4, metavar=("Y0", "X0", "Y1", "X1"), help="integration area / crop box for every image")
    q.add_argument("--hdu", type=int, default=None,
                   help="FITS files given by name: HDU index to read (default: first with image data)")
    q.add_argument("--threshold", type=threshold_arg, default=None,
                   help="flag as bad when probability_bad >= this; or 'flag' (few bad passed as good) / 'discard' "
                        "(few good thrown away): the thresholds chosen on the validation images in training "
                        "(default: the model's, 0.5)")
    q.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (default cpu)")
    q.add_argument("--overwrite", action="store_true", help="replace existing outputs in --out")
    q.set_defaults(func=run)

    q = csub.add_parser("objects", help="class per labelled object (objects.csv)")
    q.add_argument("--model", required=True, help="classifier model file (task objects)")
    q.add_argument("--image", help="image file (Y,X or T,Y,X)")
    q.add_argument("--labels", help="label image file of the same shape")
    q.add_argument("--input", type=Path, help="instead of --image/--labels: a folder with images/ and labels/ (same names)")
    q.add_argument("--hdu", type=int, default=None,
                   help="FITS --image / --labels: HDU index to read (default: first with image data)")
    q.add_argument("--out", required=True, type=Path, help="output folder")
    q.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (default cpu)")
    q.add_argument("--overwrite", action="store_true", help="replace existing outputs in --out")
    q.set_defaults(func=run)

    q = csub.add_parser("profiles", help="class per particle from thickness profiles (profiles.csv, population.csv)")
    q.add_argument("--model", required=True, help="classifier model file (task profiles)")
    q.add_argument("--input", required=True, type=Path, help="profiles.tif / .npy of shape (N, views, points), or a simulated folder")
    q.add_argument("--out", required=True, type=Path, help="output folder")
    q.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (default cpu)")
    q.add_argument("--overwrite", action="store_true", help="replace existing outputs in --out")
    q.set_defaults(func=run)

    t = csub.add_parser("train", help="train a classifier on simulated (and optionally real) data")
    tsub = t.add_subparsers(dest="train_task", metavar="TASK")
    tsub.required = True

    def common(r: argparse.ArgumentParser, epochs: int, batch: int, lr: float | None, arch: str) -> None:
        r.add_argument("--out", required=True, type=Path, help="model file to write (.pt)")
        r.add_argument("--simulated", type=int, default=0, action=_Given,
                       help="number of simulated samples to train on: response images (at least 4, unless --strategy "
                            "real), TEM images (at least 1) or STEM particles (at least 4) (default: 0, none; objects "
                            "and profiles with --resume: the resumed run's own)")
        r.add_argument("--epochs", type=int, default=epochs, help=f"training epochs (default {epochs})")
        r.add_argument("--batch-size", type=int, default=batch, action=_Given,
                       help=f"samples per step (default {batch}; with --resume, the resumed run's own)")
        r.add_argument("--lr", type=float, default=lr, action=_Given,
                       help=(f"learning rate (default {lr:g}" if lr is not None else
                             "learning rate (default: 1 with the adadelta optimiser, 0.001 with the others")
                       + "; with --resume, the resumed run's own)")
        r.add_argument("--arch", default=arch, choices=PROFILE_ARCHITECTURES if arch == "profile_cnn" else IMAGE_ARCHITECTURES,
                       action=_Given, help=f"architecture (default {arch}; with --init-model / --resume, that model's)")
        r.add_argument("--patience", type=int, default=30, action=_Given,
                       help="early-stopping patience in epochs (0: off; default 30; with --resume, the resumed run's own)")
        r.add_argument("--val-fraction", type=float, default=0.2, action=_Given,
                       help="share of samples held out for validation (default 0.2; with --resume, the resumed run's own)")
        r.add_argument("--seed", type=int, default=None,
                       help="random seed (default 0; with --resume, the resumed run's own: its samples and split)")
        r.add_argument("--device", default="auto", help="auto (GPU when there is one), cpu, cuda, cuda:N or mps (default auto)")
        r.add_argument("--threads", type=int, default=None, help="torch CPU threads")
        r.add_argument("--history", type=Path, help="history CSV (default: <model>.history.csv next to --out)")
        r.add_argument("--overwrite", action="store_true", help="replace an existing model file (and its history)")
        r.add_argument("--init-model", help="fine-tune from this classifier model file")
        r.add_argument("--freeze", action="store_true", help="with --init-model: keep the conv base fixed")
        r.add_argument("--resume", help="continue from a checkpoint (the model file plus .last.pt, e.g. response.pt.last.pt, or the model next to one)")
        r.add_argument("--folds", type=int, default=0,
                       help="first run K-fold cross-validation (grouped when the data have groups, else stratified) "
                            "and write <model>.cv_folds.csv / <model>.cv_predictions.csv next to --out; then train the final model")
        r.set_defaults(func=run)

    r = tsub.add_parser("images", help="[R] good/bad whole-image classifier")
    # the study: up to 300 epochs, patience 30, batch 70-128, lr 1e-4..3e-4. Batch 64 here: on 2000 simulated
    # images it reached accuracy 0.89 / AUC 0.958 on 400 others, batch 96 0.835 / 0.931 (fewer steps per epoch;
    # early stopping came at epoch 59 instead of 94)
    common(r, 300, 64, 3e-4, "small_cnn")
    r.add_argument("--input", type=Path, help="real annotated images: a folder like `microseg simulate response` writes "
                                              "(classes.csv with image, label or is_good, optional crop_* and group columns)")
    r.add_argument("--strategy", choices=("real", "simulated", "pretrain_finetune", "pretrain_freeze"), default=None,
                   help="default: simulated without --input, pretrain_finetune with it")
    r.add_argument("--keep-16bit", action=_GivenFlag,
                   help="keep the 16-bit scale (x / 65535) instead of per-image min-max (with --init-model / --resume: "
                        "that model's)")
    r.add_argument("--box", type=int, nargs=4, metavar=("Y0", "X0", "Y1", "X1"), help="crop box for real images without crop columns")

    r = tsub.add_parser("objects", help="[T] per-object classifier (LipNet) on simulated liposomes")
    common(r, 30, 32, 1e-3, "lipnet")
    r.add_argument("--task", choices=("lamellarity", "encapsulation"), default="lamellarity", action=_Given,
                   help="what to classify (default lamellarity; with --resume, the resumed run's own)")
    r.add_argument("--mode", choices=("margin", "tight", "masked"), default="masked", action=_Given,
                   help="crop: bounding box grown by --margin px, the bounding box, or the box with the background zeroed "
                        "(with --init-model / --resume: that model's)")
    r.add_argument("--size", type=int, default=None, action=_Given,
                   help="crop side in pixels (default: 28; 32 with --depth 6, as [T]; with --init-model / --resume: "
                        "that model's)")
    r.add_argument("--margin", type=int, default=50, action=_Given,
                   help="px added on every side of the box in --mode margin (with --init-model / --resume: that model's)")
    r.add_argument("--depth", type=int, choices=(1, 2, 4, 6), default=4, action=_Given,
                   help="LipNet-k conv layers (default 4; with --init-model / --resume, that model's)")
    r.add_argument("--all-conv", action="store_true", help="LipNet-kc (stride-2 convs, 1x1 conv head)")
    r.add_argument("--particles", type=int, default=30, action=_Given,
                   help="particles per simulated image (default 30; with --resume, the resumed run's own)")
    r.add_argument("--no-oversample", action="store_true", help="do not oversample the rarer classes each epoch")
    r.add_argument("--undersample", type=float, default=0.2, help="share of the majority left out per epoch")
    r.add_argument("--class-weights", action="store_true", help="weight the loss inversely to class frequency "
                                                                    "(objects: with --no-oversample; oversampling balances the classes already)")
    r.add_argument("--label-smoothing", type=float, default=0.1, help="share of each target spread over the other classes")
    r.add_argument("--no-augment", action="store_true", help="switch augmentation (rotation, shear, shift, zoom, flips) off")

    r = tsub.add_parser("profiles", help="[P] 1D CNN on thickness profiles (single or multi-view)")
    common(r, 200, 128, None, "profile_cnn")  # the study: Adadelta, up to 200 epochs, early stopping
    r.add_argument("--task", choices=("hole", "chirality"), default="hole", action=_Given,
                   help="what to classify (default hole; with --resume, the resumed run's own)")
    r.add_argument("--views", type=int, default=1, action=_Given,
                   help="projections per particle (>1: shared-weight multi-view network; chirality needs 2 or more); "
                        "default 1; with --resume, the resumed run's own")
    r.add_argument("--view-angle", type=float, default=90.0, action=_Given,
                   help="degrees between views (default 90; with --resume, the resumed run's own)")
    r.add_argument("--points", type=int, default=32, action=_Given,
                   help="samples per thickness profile (default 32; with --resume, the resumed run's own)")
    r.add_argument("--no-pooling", action="store_true", help="drop the two max-pool layers")
    r.add_argument("--hole-radius", type=float, default=0.1, action=_Given,
                   help="simulated hole radius, hole task (the study: 0.1 and 0.05; with --resume, the resumed run's own)")
    r.add_argument("--offset-sd", type=float, default=0.3, action=_Given,
                   help="sd of the simulated particles' offset from the rotation centre (0: centred, the study's "
                        "chirality set-up; default 0.3; with --resume, the resumed run's own)")
    r.add_argument("--view-angle-jitter", type=float, default=0.0, action=_Given,
                   help="sd of a random jitter of each view's angle, degrees (with --resume, the resumed run's own)")
    r.add_argument("--optimizer", default="adadelta", choices=("adam", "adamw", "sgd", "adadelta"),
                   help="optimiser (Adadelta, as in the study, takes --lr 1)")


# ------------------------------------------------------------------ helpers


def threshold_arg(text: str) -> float | str:
    """``--threshold``: a probability in [0, 1], ``flag`` or ``discard``."""
    if text in ("flag", "discard"):
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability, 'flag' or 'discard', got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a probability between 0 and 1, got {text}")
    return value


def _write_csv(path: Path, table) -> None:
    from ..io.tables import write_csv

    write_csv(path, table)


def _write_json(path: Path, data: dict) -> None:
    from ..io.atomic import atomic_write_text
    from ..simulate._common import jsonable

    # NaN (an undefined score, e.g. AUC of one class) as null: strict JSON readers refuse NaN
    atomic_write_text(path, json.dumps(jsonable(data), indent=2, allow_nan=False))


def _truth_table(path: Path, needed: tuple[str, ...]) -> "pd.DataFrame | None":
    """The true classes a simulated folder's ``classes.csv`` holds, or None (with a warning when the file
    exists but cannot be used): scoring is an extra, it never stops a classification."""
    import pandas as pd

    if not path.is_file():
        return None
    try:
        table = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        print(f"warning: {path} is not a readable table ({type(err).__name__}); results are not scored", file=sys.stderr)
        return None
    missing = [c for c in needed if c not in table.columns]
    if missing:
        print(f"warning: {path} lacks column(s) {', '.join(missing)}; results are not scored", file=sys.stderr)
        return None
    return table


#: what each classify run writes: always, and only when the input knows the true classes
OUTPUTS = {"images": ("flags.csv", "classify_run.json"), "objects": ("objects.csv", "counts.csv", "classify_run.json"),
           "profiles": ("profiles.csv", "population.csv", "classify_run.json")}
SCORED_OUTPUTS = {"images": ("metrics.json", "confusion.csv", "confusion_normalized.csv", "roc.csv", "subclass_accuracy.csv"),
                  "objects": ("metrics.json", "confusion.csv", "confusion_normalized.csv"),
                  "profiles": ("metrics.json", "confusion.csv", "confusion_normalized.csv")}


def _write_confusion(out: Path, report: dict, class_names: list) -> None:
    """``confusion.csv`` (counts) and ``confusion_normalized.csv`` (row-normalised: each true class's row sums
    to 1, an empty row stays 0): rows the true class, columns the predicted one."""
    import pandas as pd

    for name, key in (("confusion.csv", "confusion"), ("confusion_normalized.csv", "confusion_normalized")):
        table = pd.DataFrame(np.asarray(report[key]), columns=[f"predicted {c}" for c in class_names])
        table.insert(0, "true class", list(class_names))
        _write_csv(out / name, table)


def _prepare_outputs(args) -> None:
    """Before any work: refuse to replace this run's outputs without --overwrite, and another command's run's
    (a segmentation's objects.csv and counts.csv in its --out) even with it."""
    from ._staging import refuse_another_runs_outputs

    out = Path(args.out)
    names = OUTPUTS[args.what] + SCORED_OUTPUTS[args.what]
    refuse_another_runs_outputs(out, [n for n in names if (out / n).exists()], "classify_run.json", "classify")
    _refuse_existing(args, *(out / n for n in names))


def _remove_stale(out: Path, what: str) -> None:
    """Remove the scored outputs of an earlier run (``--overwrite``): they are written again when this
    run's input knows the true classes, so a folder never mixes two runs' results. Only where an earlier
    run's ``classify_run.json`` says one wrote here (files of those names of the user's own are left)."""
    from ._staging import earlier_run_record

    if earlier_run_record(out, "classify_run.json") is None:
        return
    for name in SCORED_OUTPUTS[what]:
        (out / name).unlink(missing_ok=True)


def _score_against_truth(out: Path, truth: "pd.Series", predicted: "pd.Series", class_names: list) -> dict | None:
    """Where the input carries the true classes (a simulated folder's classes.csv): ``metrics.json``
    (accuracy, balanced accuracy, macro F1, per-class precision/recall/F1, the confusion matrix raw and
    row-normalised), ``confusion.csv`` and ``confusion_normalized.csv`` (rows: true class, columns: predicted).
    Returns the summary, or None without usable truth."""
    from ..classify.evaluate import classification_report

    known = truth.notna() & truth.isin(class_names)
    if not known.any():
        stated = sorted(set(truth.dropna().astype(str)))
        if stated:  # a model of another task (a hole model on a chirality folder): its classes mean nothing here
            print(f"warning: the input's true classes ({', '.join(stated[:6])}) are none of this model's "
                  f"({', '.join(map(str, class_names))}): not scored. Is the model meant for this task?", file=sys.stderr)
        return None
    unknown = sorted(set(truth[truth.notna() & ~known].astype(str)))
    if unknown:
        print(f"warning: true classes the model does not know ({', '.join(unknown[:6])}) left out of the scores",
              file=sys.stderr)
    index = {name: i for i, name in enumerate(class_names)}
    y_true = truth[known].map(index).to_numpy(int)
    y_pred = predicted[known].map(index).to_numpy(int)
    report = classification_report(y_true, y_pred, class_names)
    _write_confusion(out, report, class_names)
    per_class = report["per_class"].to_dict(orient="records")
    _write_json(out / "metrics.json", {"n": int(known.sum()), **report["summary"], "per_class": per_class,
                                        "confusion": report["confusion"].tolist(),
                                        "confusion_normalized": report["confusion_normalized"].tolist(),
                                        "class_names": class_names})
    return report["summary"]


def _score_objects(out: Path, objects: "pd.DataFrame", truth: "pd.DataFrame", class_names: list) -> dict | None:
    """Scores of classified ``objects`` (with ``image, label, class``) against a folder's ``classes.csv``:
    its column holding most of the model's class names (any case) is the truth; objects it does not name,
    or names with another class, are said and left out. None (with a warning) when there is nothing to score."""
    by_lower = {str(name).lower(): name for name in class_names}
    named = {c: truth[c].astype(str).str.lower().map(by_lower) for c in truth.columns if c not in ("image", "label")}
    column = max(named, key=lambda c: int(named[c].notna().sum()), default=None)
    if column is None or not named[column].notna().any():
        print(f"warning: classes.csv names none of this model's classes ({', '.join(map(str, class_names))}) in any "
              "column: not scored. Is the model meant for this task?", file=sys.stderr)
        return None
    table = truth[["image", "label"]].assign(true_class=named[column].where(named[column].notna(), truth[column]))
    merged = objects.merge(table, on=["image", "label"], how="left")
    if merged["true_class"].isna().all():
        print("warning: classes.csv's rows match none of the objects by image and label (its image column names "
              "files as images/NAME.tif): not scored", file=sys.stderr)
        return None
    if merged["true_class"].isna().any():
        print(f"warning: {int(merged['true_class'].isna().sum())} object(s) have no row in classes.csv: left out "
              "of the scores", file=sys.stderr)
    return _score_against_truth(out, merged["true_class"], merged["class"], class_names)


def _warn_if_training_samples(lm, folder: Path) -> None:
    """Warn when ``folder`` was simulated as the model's training data (its scores would be training scores)."""
    from ..classify.data import training_samples_note

    note = training_samples_note(lm.config, folder)
    if note:
        print(f"warning: {note}", file=sys.stderr)


def _write_run(out: Path, args, lm, started: float, **results) -> None:
    """``classify_run.json``: what was run, on which device, with what result (to repeat or cite a run)."""
    from .. import __version__
    from ..pretrained import model_digest

    # the model's digest and the package's version: a model fine-tuned in place keeps its name
    record = {"command": f"classify {args.what}", "model": str(args.model), "model_file": lm.path,
              "model_sha256": model_digest(args.model), "microseg_version": __version__,
              "input": [str(p) for p in args.input] if isinstance(args.input, list) else (str(args.input) if args.input else None),
              "device": lm.device, "seconds": round(time.perf_counter() - started, 3), **results}
    _write_json(out / "classify_run.json", record)


def write_history_csv(path: Path, history: list[dict]) -> Path:
    """Per-epoch history as CSV (atomically)."""
    from ..io.tables import write_history_csv as write

    return write(path, history, HISTORY_COLUMNS)


def _history_rows(path: Path, before_epoch: int | None = None) -> list[dict]:
    """The rows of a history CSV written before (of epochs before ``before_epoch``); [] when there is none."""
    import pandas as pd

    try:
        table = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.EmptyDataError, pd.errors.ParserError):
        return []
    if "epoch" not in table.columns:
        return []
    if before_epoch is not None:
        table = table[table["epoch"] < before_epoch]
    if "phase" in table.columns:
        table["phase"] = table["phase"].fillna("")
    return table.to_dict(orient="records")


def _write_history_so_far(path: Path, history: list[dict], continues_out: bool) -> None:
    """Write the epochs of this session so far; a resumed run's file keeps the epochs before them."""
    rows = (_history_rows(path, before_epoch=history[0]["epoch"]) if continues_out else []) + history
    write_history_csv(path, rows)


def _history_phases(path: Path) -> dict:
    """Epoch -> phase of a history CSV written before ({} when there is none or it has no phases)."""
    return {int(row["epoch"]): str(row.get("phase", "")) for row in _history_rows(path)}


def _refuse_existing(args, *paths: Path) -> None:
    """Stop before any work when an output exists and --overwrite was not given."""
    from ..measure.tables import check_overwrite

    check_overwrite(paths, bool(getattr(args, "overwrite", False)))


def _read(path: Path, hdu: int | None = None) -> np.ndarray:
    """Pixels of an image file or a ``.npy`` array; ``hdu``: the FITS HDU to read (default: the
    first with image data; other formats ignore it)."""
    from ..io.images import read_image

    p = Path(path)
    if p.suffix.lower() == ".npy":
        if not p.is_file():
            raise InputError(f"{p}: no such file")
        try:
            return np.load(p)  # no pickles: object arrays are refused
        except (ValueError, OSError) as err:
            raise InputError(f"{p.name}: not a numeric .npy array ({str(err).splitlines()[0]})") from None
    return np.asarray(read_image(p, hdu=hdu, channel_option="").data)  # (no --channel here)


def _tiffs(folder: Path) -> list[Path]:
    # hidden files are no images (macOS's ._name.tif beside each file broke a folder's run)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".tif", ".tiff") and not p.name.startswith("."))
    if not files:
        raise InputError(f"{folder}: no TIFF images found")
    return files


def _read_many(files: list, what: str = "reading", failures: list | None = None, hdu: int | None = None,
               stacks: bool = False) -> list:
    """Read image files; a text progress bar on stderr for more than 50 (thousands take a while).

    With a ``failures`` list, a file that cannot be read as a 2-D image (or, with ``stacks``, an
    (N, Y, X) stack of them) gives None in its place and ``{"image", "error"}`` in ``failures`` (one bad
    file among thousands does not stop a run); without one, the first bad file raises InputError.
    """
    from ..progress import iterate_with_progress, run_with_text_progress

    def read(path: Path) -> np.ndarray | None:
        if failures is None:
            return _read(path, hdu)
        try:
            image = _read(path, hdu)
            from ..io.images import is_rgb, rgb_to_grey

            if is_rgb(image):  # as segment and the Classification dock take it: the mean of the colours (said)
                image = np.asarray(rgb_to_grey(image, Path(path).name))
            if image.ndim != 2 and not (stacks and image.ndim == 3 and not is_rgb(image)):
                raise InputError(f"expected a 2-D image{' or an (N, Y, X) stack' if stacks else ''}, "
                                 f"got shape {image.shape}")
            if image.dtype.kind == "f" and not np.isfinite(image).all():  # one such file must not stop the run
                raise InputError("contains NaN or infinite values (masked or missing pixels?)")
            return image
        except (InputError, OSError, ValueError) as err:
            reason = str(err)
            failures.append({"image": str(path), "error": reason if Path(path).name in reason else f"{Path(path).name}: {reason}"})
            return None

    if len(files) <= 50:
        return [read(f) for f in files]
    return run_with_text_progress(iterate_with_progress((read(f) for f in files), len(files)), label=what)


def _keep_readable(d: dict) -> dict:
    """``d`` (a :func:`load_response_folder` result) without the images that could not be read."""
    keep = [img is not None for img in d["images"]]
    if all(keep):
        return d
    out = dict(d)
    for key, values in d.items():
        if key in ("images", "files", "boxes", "masks", "labels", "groups", "subclass") and values is not None:
            picked = [v for v, k in zip(values, keep) if k]
            out[key] = np.asarray(picked) if isinstance(values, np.ndarray) else picked
    return out


def _keep_croppable(d: dict, lm, failures: list) -> dict:
    """``d`` without the images whose crop cannot be cut (an empty integration mask, a box outside the
    image, a 3-D stack): each is listed in ``failures`` by name, the others are classified."""
    from ..classify.data import response_crops

    size = (lm.config.get("crop") or {}).get("size") or lm.config.get("patch_size") or [39, 42]
    boxes = d.get("boxes")
    if boxes is not None and len(boxes) == 4 and np.ndim(boxes[0]) == 0:
        boxes = [boxes] * len(d["images"])
    keep, reasons = [], set()
    for i, (image, name) in enumerate(zip(d["images"], d["files"])):
        try:
            mask = None if d.get("masks") is None else d["masks"][i]
            if mask is not None and np.shape(mask) != np.shape(image):
                raise InputError(f"its integration mask is {np.shape(mask)}, the image {np.shape(image)}")
            response_crops([image], None if boxes is None else [boxes[i]],
                           None if d.get("masks") is None else [d["masks"][i]], crop_size=size,
                           normalization="minmax", names=[Path(name).name])
            keep.append(True)
        except InputError as err:
            reason = str(err).replace("image 0", Path(name).name)
            reasons.add(reason.replace(Path(name).name, "the image"))
            failures.append({"image": str(name), "error": reason if Path(name).name in reason else f"{Path(name).name}: {reason}"})
            keep.append(False)
    if all(keep):
        return d
    if not any(keep) and len(reasons) == 1 and len(keep) > 1:  # one reason for all (no --box given): said once
        raise InputError(f"none of the {len(keep)} images could be classified, each for the reason of the first: "
                         f"{failures[len(failures) - len(keep)]['error']}")
    return _keep_readable({**d, "images": [img if k else None for img, k in zip(d["images"], keep)]})


def _shown_name(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` where it lies inside it, else as given (an absolute path in classes.csv)."""
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return str(path)


def _check_classes_table(df, table: Path) -> None:
    """InputError naming the first row of a ``classes.csv`` that cannot be read as documented: no rows, an
    empty ``image`` cell, an ``is_good`` other than 0 / 1, a crop box cell that is not a number (each gave a
    traceback: IndexError, ValueError, IntCastingNaNError; an ``is_good`` of 2 became class -1)."""
    import numpy as np
    import pandas as pd

    if "image" not in df.columns:
        raise InputError(f"{table}: needs an 'image' column")
    if len(df) == 0:
        raise InputError(f"{table}: no rows (one per image: image[, label or is_good, crop_y0, crop_x0, crop_y1, crop_x1])")

    def row_of(index) -> str:
        return f"{table}: row {int(index) + 2}"  # as a spreadsheet numbers it (the header is row 1)

    names = df["image"]
    blank = names.isna() | (names.astype(str).str.strip() == "")
    if blank.any():
        raise InputError(f"{row_of(blank.idxmax())}: no image file name")
    if "is_good" in df.columns and not ("label" in df.columns
                                       and df["label"].astype(str).str.strip().str.lower().isin(["good", "bad"]).all()):
        values = pd.to_numeric(df["is_good"], errors="coerce")
        wrong = ~values.isin([0, 1])
        if wrong.any():
            given = df["is_good"].iloc[int(np.flatnonzero(wrong.to_numpy())[0])]
            raise InputError(f"{row_of(wrong.idxmax())}: is_good must be 1 (good) or 0 (bad), got "
                             + ("an empty cell" if pd.isna(given) else repr(str(given))))
    crop = [c for c in ("crop_y0", "crop_x0", "crop_y1", "crop_x1") if c in df.columns]
    if len(crop) == 4:
        values = df[crop].apply(pd.to_numeric, errors="coerce")
        wrong = ~np.isfinite(values.to_numpy(float)).all(axis=1)
        if wrong.any():
            raise InputError(f"{row_of(int(np.flatnonzero(wrong)[0]))}: crop_y0, crop_x0, crop_y1, crop_x1 must be "
                             "numbers (px) in every row")


def load_response_folder(folder: Path, box=None, failures: list | None = None) -> dict:
    """Read response images with boxes / masks / labels from a folder (see module docstring).

    With a ``failures`` list, unreadable images are left out (with everything that belongs to
    them) and listed there (see :func:`_read_many`)."""
    folder = Path(folder)
    table = folder / "classes.csv"
    if table.is_file():
        from ..io.tables import read_csv_table

        df = read_csv_table(table)
        _check_classes_table(df, table)
        files = [folder / f for f in df["image"]]
        images = _read_many(files, "reading images", failures)
        boxes = None
        if box is not None:
            boxes = [list(box)] * len(images)
        elif {"crop_y0", "crop_x0", "crop_y1", "crop_x1"} <= set(df.columns):
            boxes = df[["crop_y0", "crop_x0", "crop_y1", "crop_x1"]].to_numpy().tolist()
        masks = None
        if boxes is None and (folder / "integration").is_dir():
            readable = [f for f, img in zip(files, images) if img is not None]
            read = iter(_read_many([folder / "integration" / f.name for f in readable], "reading masks"))
            masks = [None if img is None else next(read) > 0 for img in images]
        labels = label_problem = None
        said = df["label"].astype(str).str.strip().str.lower() if "label" in df.columns else None
        if said is not None and said.isin(["good", "bad"]).all():
            labels = (said == "bad").astype(int).to_numpy()
        elif "is_good" in df.columns:
            labels = 1 - df["is_good"].astype(float).astype(int).to_numpy()  # 0 / 1 (checked above)
        elif said is not None:
            other = sorted(set(df["label"].astype(str)[~said.isin(["good", "bad"])]))
            label_problem = (f"{folder / 'classes.csv'}: its 'label' column must say good or bad for every image; "
                             f"it also holds {', '.join(repr(v) for v in other[:6])}{' ...' if len(other) > 6 else ''} "
                             "(kinds of artefact go in a 'subclass' column, with label bad)")
        groups = df["group"].to_numpy() if "group" in df.columns else None
        sub = df["subclass"].astype(str).to_numpy() if "subclass" in df.columns else None
        return _keep_readable({"images": images, "files": [_shown_name(f, folder) for f in files], "boxes": boxes,
                               "masks": masks, "labels": labels, "groups": groups, "subclass": sub,
                               "label_problem": label_problem})
    img_dir = folder / "images" if (folder / "images").is_dir() else folder
    files = _tiffs(img_dir)
    read_files = _read_many(files, "reading images", failures, stacks=True)
    masks = None
    # the masks in <folder>/integration, or beside the images folder given itself (<folder>/../integration)
    beside = [img_dir.parent / "integration"] if img_dir.name == "images" else []  # the layout simulate response writes
    mask_dir = next((d for d in (folder / "integration", *beside) if d.is_dir() and d.resolve() != img_dir.resolve()), None)
    if box is None and mask_dir is not None:
        readable = [f for f, img in zip(files, read_files) if img is not None]
        mask_failures: list[dict] | None = [] if failures is not None else None
        read = iter(_read_many([mask_dir / f.name for f in readable], "reading masks", mask_failures, stacks=True))
        masks = [None if img is None else next(read) for img in read_files]
        for i, (f, image, mask) in enumerate(zip(files, read_files, masks)):
            if image is not None and mask is None:  # its mask unreadable or missing: the image is skipped, named
                failures.append({"image": str(f), "error": f"{f.name}: no readable integration mask "
                                                          f"{mask_dir.name}/{f.name}"})
                read_files[i] = None
        masks = [None if mask is None else mask > 0 for mask in masks]
    # a stack (the Simulation dock's images, saved as one file) is its images, named file[i] as given by name
    images, names, frame_masks = [], [], []
    for i, (f, image) in enumerate(zip(files, read_files)):
        mask = masks[i] if masks is not None else None
        if image is not None and image.ndim == 3:
            images += list(image)
            names += [f"{f.name}[{k}]" for k in range(len(image))]
            frame_masks += [mask[k] if mask is not None and mask.ndim == 3 and len(mask) == len(image) else mask
                            for k in range(len(image))]
        else:
            images.append(image), names.append(f.name), frame_masks.append(mask)
    return _keep_readable({"images": images, "files": names,
                           "boxes": None if box is None else [list(box)] * len(images),
                           "masks": None if masks is None else frame_masks, "labels": None,
                           "groups": None, "subclass": None})


# ------------------------------------------------------------------ run


def check_box(box) -> None:
    """``--box Y0 X0 Y1 X1`` (px): a one-line error unless 0 <= Y0 < Y1 and 0 <= X0 < X1."""
    if box is None:
        return
    y0, x0, y1, x1 = (int(v) for v in box)
    if min(y0, x0) < 0 or y1 <= y0 or x1 <= x0:
        raise InputError(f"--box Y0 X0 Y1 X1 needs 0 <= Y0 < Y1 and 0 <= X0 < X1 (px), got {y0} {x0} {y1} {x1}")


def run(args: argparse.Namespace) -> int:
    check_box(getattr(args, "box", None))
    if getattr(args, "hdu", None) is not None and args.hdu < 0:
        raise InputError(f"--hdu must be >= 0, got {args.hdu}")
    from ..batch.runner import acquire_out_lock, release_out_lock
    # a second run into the same output is refused (as `microseg train` / `segment` refuse it): two trainings
    # into one model file left one run's network under the other's record, two classify runs replaced each
    # other's tables unasked
    out = Path(args.out)
    if args.what == "train":
        make_output_folder(out.parent)
        lock = acquire_out_lock(out.parent, f".{out.name}.lock", what=out)  # (as `microseg train` names it)
    else:
        lock = acquire_out_lock(make_output_folder(out))
    try:
        if args.what == "train":
            return _run_train(args)
        return {"images": _run_images, "objects": _run_objects, "profiles": _run_profiles}[args.what](args)
    finally:
        release_out_lock(lock)


def _check_model_task(args, lm, task: str) -> None:
    """One clear error (exit 2), right after the model is loaded and before any input is read, when ``--model``
    classifies another task: `classify objects` with a profiles model read every image and said 'skipped ...'
    of each before it failed."""
    from ..classify.predict import _check_task

    try:
        _check_task(lm, task)
    except InputError as err:
        theirs = lm.config.get("task")
        raise InputError(f"--model {args.model}: {err}: use it with 'microseg classify {theirs}', or give a model "
                         f"of {task}") from None


def _run_images(args) -> int:
    from ..classify.evaluate import classification_report, roc_curve_auc
    from ..classify.predict import classify_images, load_classifier, resolve_threshold

    started = time.perf_counter()
    _prepare_outputs(args)
    lm = load_classifier(args.model, device=args.device)
    _check_model_task(args, lm, "images")  # before the crops: an objects model was said to need "its 28x28 crop" of each image
    try:
        threshold = resolve_threshold(lm, args.threshold)
    except InputError as err:
        raise InputError(f"--threshold: {err}") from None
    unique: dict = {}
    for given in args.input:  # a file named twice (f, ./f) is one image: it was classified (and counted) twice
        unique.setdefault(Path(given).resolve(), Path(given))
    inputs = list(unique.values())
    failures: list[dict] = []  # images that could not be read: skipped, listed in classify_run.json
    if len(inputs) == 1 and inputs[0].is_dir():
        if args.hdu is not None:
            print("warning: --hdu applies to FITS files given by name; a folder's TIFFs are read as they are",
                  file=sys.stderr)
        d = load_response_folder(inputs[0], args.box, failures)
        _warn_if_training_samples(lm, inputs[0])
    else:
        if len({p.parent for p in inputs}) == 1:  # files of one simulated folder's images/, given by name
            _warn_if_training_samples(lm, inputs[0].parent)
        for p in inputs:
            if not p.is_file():
                raise InputError(f"{p}: no such file")
        images, names = [], []
        for path, image in zip(inputs, _read_many(inputs, "reading images", failures, args.hdu, stacks=True)):
            if image is not None and image.ndim == 3:  # a stack (the Simulation dock's, saved): each image, [i]
                images += list(image)
                names += [f"{path}[{i}]" for i in range(len(image))]
            else:
                images.append(image)
                names.append(str(path))
        d = _keep_readable({"images": images, "files": names,
                            "boxes": None if args.box is None else [list(args.box)] * len(images),
                            "masks": None if args.box is not None else _named_files_masks(inputs, images),
                            "labels": None})
    d = _keep_croppable(d, lm, failures)
    if d.get("label_problem"):  # classified all the same; only the scores need the labels
        print(f"warning: {d['label_problem']}: results are not scored", file=sys.stderr)
    for failure in failures:
        print(f"skipped {failure['error']}", file=sys.stderr)
    if not d["images"]:
        raise InputError(f"none of the {len(failures)} images could be read or classified; first: {failures[0]['error']}")
    blank = [Path(f).name for f, img in zip(d["files"], d["images"]) if img.size and img.min() == img.max()]
    if blank:
        print(f"warning: {len(blank)} image(s) are constant, so their verdicts mean nothing: {', '.join(blank[:3])}"
              f"{' ...' if len(blank) > 3 else ''}", file=sys.stderr)
    _warn_of_signed_images(d["files"], d["images"])
    from ..classify.predict import dim_for_16_bit_scale

    norm = lm.config.get("normalization") or {}
    dim = [Path(d["files"][i]).name for i in dim_for_16_bit_scale(lm.config, d["images"])]
    if dim:  # each such image, also among 16-bit ones: its verdict is that of a black image
        print(f"warning: this model keeps the 16-bit scale (x / {norm.get('scale'):g}) but {len(dim)} of "
              f"{len(d['images'])} image(s) hold values within 0-255 only ({', '.join(dim[:3])}"
              f"{' ...' if len(dim) > 3 else ''}): 8-bit images look almost black to it; use 16-bit originals "
              "or a min-max model", file=sys.stderr)
    df = classify_images(lm, d["images"], boxes=d["boxes"], masks=d["masks"], threshold=args.threshold, names=d["files"])  # "discard" may be stored above 1
    out = Path(args.out)
    make_output_folder(out)
    _remove_stale(out, "images")
    _write_csv(out / "flags.csv", df)
    n_bad = int((df["verdict"] == (lm.class_names[1] if len(lm.class_names) == 2 else "bad")).sum())
    if d.get("labels") is not None:
        y = d["labels"]
        p = df["probability_bad"].to_numpy()
        pred = (p >= df["threshold"].iloc[0]).astype(int)
        rep = classification_report(y, pred, ["good", "bad"], prob=p)
        roc = roc_curve_auc(y, p)
        _write_json(out / "metrics.json", {"n": len(y), **rep["summary"], "confusion": rep["confusion"].tolist(),
                                            "confusion_normalized": rep["confusion_normalized"].tolist(),
                                            "class_names": ["good", "bad"], "threshold": float(df["threshold"].iloc[0]),
                                            "auc": roc["auc"]})
        import pandas as pd

        _write_confusion(out, rep, ["good", "bad"])  # as objects and profiles write them

        # the curve's start (nothing flagged) has no threshold: sklearn's "inf" was text to a spreadsheet; blank
        thresholds = np.where(np.isfinite(roc["thresholds"]), roc["thresholds"], np.nan)
        _write_csv(out / "roc.csv", pd.DataFrame({"threshold": thresholds, "false_positive_rate": roc["fpr"],
                                                  "true_positive_rate": roc["tpr"]}))
        if d.get("subclass") is not None:  # [R] accuracy per artefact type
            from ..classify.evaluate import per_subclass_accuracy

            _write_csv(out / "subclass_accuracy.csv", per_subclass_accuracy(y, pred, d["subclass"]))
    _write_run(out, args, lm, started, threshold=threshold, threshold_setting=args.threshold, box=args.box,
               images=len(df), flagged_bad=n_bad, failures=failures)
    print(f"microseg classify images: {len(df)} image(s), {n_bad} flagged bad -> {out / 'flags.csv'}")
    if failures:
        print(f"microseg classify images: {len(failures)} image(s) skipped (listed in classify_run.json); "
              f"first: {failures[0]['error']}", file=sys.stderr)
        return 1
    return 0


def _run_objects(args) -> int:
    import pandas as pd

    from ..classify.predict import classify_objects, load_classifier
    from ..evaluation.metrics import check_label_image
    from ..measure.labels import colour_labels_as_ids, masks_to_labels

    started = time.perf_counter()
    if args.input is not None and (args.image or args.labels):
        raise InputError("give --input (a simulated liposome folder) or --image and --labels, not both")
    if args.input is None and not (args.image and args.labels):
        raise InputError("give --image and --labels, or --input with images/ and labels/")
    _prepare_outputs(args)
    lm = load_classifier(args.model, device=args.device)
    _check_model_task(args, lm, "objects")  # before any image is read (each was read, then 'skipped' for this reason)
    pairs = []
    truth = None  # (image, label) -> true class, where the folder's classes.csv has the model's classes
    if args.input is not None:
        truth = _truth_table(Path(args.input) / "classes.csv", ("image", "label"))
        _warn_if_training_samples(lm, Path(args.input))
    if args.input is not None:
        if not (args.input / "images").is_dir() or not (args.input / "labels").is_dir():
            raise InputError(f"{args.input}: needs images/ and labels/ folders")
        for f in _tiffs(args.input / "images"):
            lab = args.input / "labels" / f.name
            if not lab.is_file():
                raise InputError(f"{lab}: label image missing")
            pairs.append((f"images/{f.name}", _read(f), f"labels/{f.name}", _read(lab)))
    else:
        image_folder = Path(args.image).parent  # one image of a simulated folder: warned as the folder is
        _warn_if_training_samples(lm, image_folder.parent if image_folder.name == "images" else image_folder)
        pairs.append((str(args.image), _read(Path(args.image), args.hdu), str(args.labels), _read(Path(args.labels), args.hdu)))
    from ..io.images import is_rgb, rgb_to_grey

    tables = []
    failures: list[dict] = []  # a folder's images that could not be classified: skipped, listed in classify_run.json
    for i, (name, img, lab_name, lab) in enumerate(pairs):
        lab = colour_labels_as_ids(lab, lab_name)  # a mask saved in colour
        pairs[i] = (name, img, lab_name, lab)
        if is_rgb(img) and img.shape[:-1] == lab.shape:  # as the Classification dock takes it: the mean colour
            img = rgb_to_grey(img, name)
            pairs[i] = (name, img, lab_name, lab)
        if img.shape != lab.shape:
            raise InputError(f"{lab_name}: labels shape {lab.shape} differs from image shape {img.shape} ({name})")
        if not np.any(lab):
            if len(pairs) == 1:
                raise InputError(f"{lab_name}: the label image is empty (no objects to classify)")
            print(f"warning: {lab_name}: no objects (counted as 0)", file=sys.stderr)
            continue
        if img.size and img.min() == img.max():
            print(f"warning: {name} is constant (every pixel {img.flat[0]}): its objects' classes mean nothing",
                  file=sys.stderr)
        lab = check_label_image(lab, lab_name)  # whole numbers >= 0
        pieces, was_mask = masks_to_labels(lab)  # a 0/1 mask of several objects: its connected objects
        if was_mask and any(int(frame.max(initial=0)) > 1 for frame in (pieces[None] if pieces.ndim == 2 else pieces)):
            print(f"note: {lab_name} is a 0/1 mask, not labels: classified its connected objects (8-connected)",
                  file=sys.stderr)
            lab = pieces
        try:
            t = classify_objects(lm, img, lab)
        except InputError as err:
            if len(pairs) == 1:
                raise
            # one damaged image (a NaN pixel) no longer ends a folder's run, unnamed; as `classify images` does
            failures.append({"image": name, "error": f"{name}: {err}"})
            print(f"skipped {name}: {err}", file=sys.stderr)
            continue
        if len(pairs) > 1 or args.input is not None:  # a folder's tables name the image, one or many (README)
            t["image"] = name  # last, as in 'microseg segment': objects.csv starts t,label,y,x,area
        tables.append(t)
    if not tables:
        if failures:
            raise InputError(f"none of the {len(pairs)} images could be classified; first: {failures[0]['error']}")
        raise InputError(f"{args.input}: no labels file holds objects")
    failed = {failure["image"] for failure in failures}
    pairs = [pair for pair in pairs if pair[0] not in failed]  # no counts of 0 for what was not classified
    df = pd.concat(tables, ignore_index=True)
    out = Path(args.out)
    make_output_folder(out)
    _remove_stale(out, "objects")
    _write_csv(out / "objects.csv", df)
    # one row per frame of every image, in the images' order: frames (and images) without objects count 0
    frames = pd.DataFrame([{"image": name, "t": t} for name, _image, _labels_name, lab in pairs
                           for t in range(lab.shape[0] if lab.ndim == 3 else 1)])
    keyed = df if "image" in df.columns else df.assign(image=pairs[0][0])
    per_class = (keyed.groupby(["image", "t"])["class"].value_counts().unstack(fill_value=0)
                 .reindex(columns=lm.class_names, fill_value=0))
    per_class.insert(0, "count", per_class.sum(1))
    counts = frames.merge(per_class.reset_index(), on=["image", "t"], how="left")
    numbers = [c for c in counts.columns if c != "image"]
    counts[numbers] = counts[numbers].fillna(0).astype(int)
    from ..measure.counts import column_name

    counts.columns = [c if c in ("t", "count", "image") else f"count_{column_name(c)}" for c in counts.columns]
    # counts.csv starts t,count; the image goes last, where objects.csv has it
    counts = counts[[c for c in counts.columns if c != "image"] + (["image"] if "image" in df.columns else [])]
    _write_csv(out / "counts.csv", counts)
    scores = None
    if truth is not None:
        scores = _score_objects(out, df if "image" in df.columns else df.assign(image=pairs[0][0]), truth,
                                list(lm.class_names))
    _write_run(out, args, lm, started, scores=scores, image=str(args.image) if args.image else None,
               labels=str(args.labels) if args.labels else None, images=len(pairs), objects=len(df),
               per_class={str(k): int(v) for k, v in df["class"].value_counts().items()}, failures=failures)
    print(f"microseg classify objects: {len(df)} object(s) -> {out / 'objects.csv'}")
    if failures:
        print(f"microseg classify objects: {len(failures)} image(s) skipped (listed in classify_run.json); "
              f"first: {failures[0]['error']}", file=sys.stderr)
        return 1
    return 0


def _run_profiles(args) -> int:
    from ..classify.predict import classify_profiles, load_classifier, population_summary

    started = time.perf_counter()
    _prepare_outputs(args)
    lm = load_classifier(args.model, device=args.device)
    _check_model_task(args, lm, "profiles")  # before the profiles are read
    src = Path(args.input)
    if src.is_dir():
        src = src / "profiles.tif"
    _warn_if_training_samples(lm, src.parent)
    profiles = _read(src) if src.suffix.lower() == ".npy" else _read_profiles_tiff(src)
    if profiles.dtype.kind not in "iuf":  # bool or complex: said in one line, before any arithmetic on them
        raise InputError(f"{src.name}: profiles of dtype {profiles.dtype} are not thickness values (give real numbers)")
    if profiles.ndim < 2 or profiles.shape[0] == 0:
        raise InputError(f"{src.name}: no profiles to classify (shape {profiles.shape}, expected (N, views, points))")
    flat = int(np.sum(np.ptp(profiles.reshape(profiles.shape[0], -1), axis=1) == 0))
    if flat:
        print(f"warning: {flat} of {profiles.shape[0]} profile(s) are flat (no particle seen): their classes mean nothing",
              file=sys.stderr)
    df = classify_profiles(lm, profiles)
    out = Path(args.out)
    make_output_folder(out)
    _remove_stale(out, "profiles")
    _write_csv(out / "profiles.csv", df)
    pop = population_summary(df, lm.class_names)
    _write_csv(out / "population.csv", pop)
    summary = ", ".join(f"{r['class']} {r['percent']:.1f} %" for _, r in pop.iterrows())
    scores = None
    table = Path(args.input) / "classes.csv" if Path(args.input).is_dir() else None
    truth = _truth_table(table, ("class",)) if table is not None else None
    if truth is not None:
        if len(truth) == len(df):
            scores = _score_against_truth(out, truth["class"].astype(str), df["class"].astype(str), list(lm.class_names))
        else:  # said, as images and objects say it: no metrics.json without a word
            print(f"warning: {table} holds {len(truth)} true classes for {len(df)} particles: results are not scored",
                  file=sys.stderr)
    _write_run(out, args, lm, started, scores=scores, particles=len(df), population=pop.to_dict(orient="records"))
    print(f"microseg classify profiles: {len(df)} particle(s): {summary} -> {out / 'profiles.csv'}")
    return 0


def _read_profiles_tiff(path: Path) -> np.ndarray:
    import tifffile

    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix.lower() not in (".tif", ".tiff"):
        raise InputError(f"{path.name}: profiles are read from a .tif/.tiff or .npy file (N, views, points)")
    try:
        return np.asarray(tifffile.imread(path))
    except Exception as err:  # noqa: BLE001
        raise InputError(f"{path.name}: cannot read ({type(err).__name__})") from None


class _Given(argparse.Action):
    """Stores the value and notes the option as given (``namespace.given``): a resumed run keeps its own
    value of an option not given again."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        namespace.given = {*getattr(namespace, "given", set()), self.dest}


def _named_files_masks(inputs: Sequence[Path], images: list) -> list | None:
    """Integration masks of response images given by name, as a folder's are found: ``integration/<name>``
    beside each file, or beside its ``images/`` folder (the layout ``simulate response`` writes); None unless
    every image is a 2-D one of its file with a mask of its shape (then ``--box`` or a folder is needed)."""
    from ..io.images import read_image

    if len(inputs) != len(images) or any(image is None or np.ndim(image) != 2 for image in images):
        return None
    masks = []
    for path, image in zip(inputs, images):
        folders = [path.parent / "integration"] + ([path.parent.parent / "integration"]
                                                   if path.parent.name == "images" else [])
        found = next((folder / path.name for folder in folders if (folder / path.name).is_file()), None)
        if found is None:
            return None
        try:
            mask = np.asarray(read_image(found).data) > 0
        except InputError:
            return None
        if mask.shape != np.shape(image):
            return None
        masks.append(mask)
    return masks


def _warn_of_signed_images(files: Sequence[Any], images: Sequence[np.ndarray]) -> None:
    """Warn of [R] response images of a signed integer type holding negative values: 16-bit images saved as
    int16 wrap their bright half below 0 (a bad image read as good), and an instrument's counts are never
    negative."""
    wrapped = [Path(str(f)).name for f, img in zip(files, images)
               if np.asarray(img).dtype.kind == "i" and np.size(img) and int(np.min(img)) < 0]
    if wrapped:
        print(f"warning: {len(wrapped)} image(s) are signed integers holding negative values ({', '.join(wrapped[:3])}"
              f"{' ...' if len(wrapped) > 3 else ''}): 16-bit counts saved as int16? Their bright pixels read as "
              "negative, and their verdicts are wrong: save them as uint16", file=sys.stderr)


class _GivenFlag(argparse.Action):
    """A flag (``store_true``) noted as given, as :class:`_Given` notes options."""

    def __init__(self, option_strings: Any, dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, True)
        namespace.given = {*getattr(namespace, "given", set()), self.dest}


def _source_preparation(args: argparse.Namespace) -> None:
    """With ``--resume`` or ``--init-model``: the inputs prepared as that model's were, where not given again
    (``--keep-16bit`` for [R] images; ``--mode``, ``--margin``, ``--size`` for [T] objects). A resumed run
    given another preparation is refused (its best epoch would be chosen among losses on two input scales); a
    fine-tune given one is told. They were the parser's defaults: a resumed 16-bit run trained on min-max
    crops, a fine-tuned margin model on masked crops, without a word (AUC 0.665 -> 0.404 at lr 1e-12)."""
    from ..io.models import read_model_config
    from ..pretrained import resolve_model
    from ..training.trainer import last_checkpoint_path

    source = args.resume or args.init_model
    if not source or args.train_task == "profiles":
        return
    path = Path(source) if args.resume else resolve_model(str(source))
    for candidate in (path, last_checkpoint_path(path)):
        if candidate.is_file():
            config = read_model_config(candidate)
            break
    else:
        return  # none there: the trainer says so
    given = getattr(args, "given", set())
    if args.train_task == "images":
        kind = (config.get("normalization") or {}).get("kind")
        theirs = {"keep_16bit": kind == "fixed"} if kind in ("fixed", "minmax") else {}
        shown = {True: "the 16-bit scale (x / 65535, --keep-16bit)", False: "per-image min-max"}
    else:
        crop = config.get("crop") or {}
        size = crop.get("size")
        theirs = {key: value for key, value in (("mode", crop.get("mode")), ("margin", crop.get("margin")),
                                                ("size", int(size[0]) if isinstance(size, list) and size else None))
                  if value is not None}
        shown = None
    option = {"keep_16bit": "--keep-16bit", "mode": "--mode", "margin": "--margin", "size": "--size"}
    flag = "--resume" if args.resume else "--init-model"
    for key, value in theirs.items():
        if key == "margin" and theirs.get("mode", getattr(args, "mode", None)) != "margin":
            continue  # (a margin only crops in --mode margin)
        if key not in given:
            setattr(args, key, value)
            continue
        if getattr(args, key) == value:
            continue
        said = (shown[value] if shown else f"{option[key]} {value}")
        if args.resume:
            raise InputError(f"{option[key]}: {source} was trained on inputs prepared with {said}, and a resumed run "
                             f"goes on with them: leave {option[key]} out (or train a new network)")
        print(f"note: {flag} {source} was trained on inputs prepared with {said}; this run trains it with "
              f"{option[key]} {getattr(args, key) if key != 'keep_16bit' else ''}".rstrip(), file=sys.stderr)


#: ``classify train`` options a resumed run keeps from its checkpoint unless given again -> its config key
RESUMED_OPTIONS = {"batch_size": "batch_size", "lr": "lr", "patience": "early_stopping_patience",
                   "val_fraction": "val_fraction"}


def _resumed_options(args: argparse.Namespace) -> None:
    """With ``--resume``: the run's own batch size, learning rate, patience and validation share where they are
    not given again (it ran on with the parser's defaults, its optimiser state keeping the old lr, and
    recorded those: epochs 3-4 differed from an uninterrupted run's)."""
    from ..io.models import read_model_config
    from ..training.trainer import last_checkpoint_path

    given = getattr(args, "given", set())
    for candidate in (Path(args.resume), last_checkpoint_path(Path(args.resume))):
        if candidate.is_file():
            before = (read_model_config(candidate).get("training") or {}).get("config") or {}
            for option, key in RESUMED_OPTIONS.items():
                if option not in given and key in before:
                    value = before[key]
                    setattr(args, option, 0 if option == "patience" and value is None else value)
            return


#: ``classify train objects|profiles`` sample options a resumed run keeps from its checkpoint's simulation record
#: unless given again (refused, before anything is simulated, when given otherwise) -> its ``settings`` key
RESUMED_SAMPLE_OPTIONS = {
    "objects": {"particles": "n_particles"},
    "profiles": {"task": "task", "views": "n_views", "view_angle": "view_angle_deg", "points": "data_points",
                 "hole_radius": "hole_radius", "offset_sd": "offset_sd", "view_angle_jitter": "view_angle_jitter_deg"},
}


def _resume_config(resume: str) -> dict | None:
    """The config of a ``--resume`` file (a model or its ``.last.pt``); None when neither is there."""
    from ..io.models import read_model_config
    from ..training.trainer import last_checkpoint_path

    for candidate in (Path(resume), last_checkpoint_path(Path(resume))):
        if candidate.is_file():
            return read_model_config(candidate)
    return None


def _resumed_samples(args: argparse.Namespace) -> None:
    """With ``--resume`` (objects, profiles): the resumed run's own samples where their options are not given
    again (``--simulated``, ``--seed``; objects ``--task``, ``--particles``; profiles ``--task``, ``--views``,
    ``--view-angle``, ``--points``, ``--hole-radius``, ``--offset-sd``, ``--view-angle-jitter``), from its
    checkpoint's record; one given otherwise, or a checkpoint of another task, is refused here, before anything
    is simulated (they were asked for again, and a mismatch refused only after all the data was simulated)."""
    import re

    config = _resume_config(args.resume)
    if config is None:  # before any simulation too (the trainer said it only after it)
        raise InputError(f"cannot resume from {args.resume}: no such model file, nor a .last.pt checkpoint beside it")
    kind = config.get("task")
    if kind != args.train_task:
        what = f"a classifier of {kind}" if kind else "not a classifier (a segmentation model?)"
        raise InputError(f"--resume {args.resume}: {what}; this run trains a classifier of {args.train_task}")
    if args.train_task not in RESUMED_SAMPLE_OPTIONS:
        return
    training = config.get("training") or {}
    before = training.get("config") or {}
    record = training.get("simulation") or {}
    given = getattr(args, "given", set())
    theirs: dict[str, Any] = {}
    if before.get("seed") is not None:
        theirs["seed"] = int(before["seed"])
    if record:  # trained on simulated samples: their number and settings
        settings = record.get("settings") or {}
        for option, key in RESUMED_SAMPLE_OPTIONS[args.train_task].items():
            if key in settings:
                theirs[option] = settings[key]
        if args.train_task == "profiles" and training.get("n_samples") is not None:
            theirs["simulated"] = int(training["n_samples"])  # one sample per particle
        elif args.train_task == "objects":
            found = re.search(r"from (\d+) simulated liposome images", str(training.get("data") or ""))
            if found:
                theirs["simulated"] = int(found.group(1))
    if args.train_task == "objects":  # the classes name the question: lamellarity or encapsulation
        from ..classify.crops import LIPOSOME_CLASSES

        names = [str(c) for c in config.get("class_names") or []]
        for question, classes in LIPOSOME_CLASSES.items():
            if list(classes) == names:
                theirs["task"] = question
    for option, value in theirs.items():
        now = getattr(args, option)
        if (now is None) if option == "seed" else (option not in given):
            setattr(args, option, value)
            continue
        same = float(now) == float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
            else str(now) == str(value)
        if not same:
            flag = "--" + option.replace("_", "-")

            def shown(v: Any) -> str:
                return f"{v:g}" if isinstance(v, float) else str(v)

            other = ("; to start from its network on another task, give it as --init-model (its output layer "
                     "starts afresh)") if option == "task" else " (or train a new network)"
            raise InputError(f"{flag} {shown(now)}: the run of --resume {args.resume} trained on samples simulated "
                             f"with {flag} {shown(value)}, and a resumed run goes on on its own samples: leave {flag} "
                             f"out{other}")


def _check_network_options(args: argparse.Namespace) -> None:
    """``--arch`` / ``--depth`` given with ``--init-model`` or ``--resume`` that differ from that model's network:
    refused (the network is the model's own; they were dropped without a word, and recorded as if used)."""
    source = args.init_model or args.resume
    given = getattr(args, "given", set()) & {"arch", "depth"}
    if not source or not given:
        return
    from ..io.models import read_model_config
    from ..training.trainer import last_checkpoint_path

    for candidate in (Path(source), last_checkpoint_path(Path(source))):
        if candidate.is_file():
            network = read_model_config(candidate).get("model") or {}
            break
    else:
        return  # none there: the trainer says so
    built = str(network.get("architecture", "")).lower()
    if "arch" in given and built and str(args.arch).lower() != built:
        raise InputError(f"--arch {args.arch}: {source} is a {built} network, which training goes on with: leave "
                         "--arch out, or train a new network without --init-model / --resume")
    if "depth" in given and built == "lipnet" and network.get("n_conv") is not None \
            and int(network["n_conv"]) != int(args.depth):
        raise InputError(f"--depth {args.depth}: {source} is LipNet-{network['n_conv']}, which training goes on "
                         "with: leave --depth out, or train a new network without --init-model / --resume")


def _resumed_seed(resume: str) -> int:
    """The seed of the run a ``--resume`` file (a model or its ``.last.pt``) records; 0 when it records none."""
    from ..io.models import read_model_config
    from ..training.trainer import last_checkpoint_path

    for candidate in (Path(resume), last_checkpoint_path(Path(resume))):
        if candidate.is_file():
            seed = ((read_model_config(candidate).get("training") or {}).get("config") or {}).get("seed")
            return int(seed) if seed is not None else 0
    return 0  # none there: the trainer says so


def _run_train(args) -> int:
    from ..classify.trainer import ClassifierTrainConfig, train_classifier, train_with_strategy
    from ..io.tables import model_sidecar
    from ..progress import run_with_text_progress

    task = args.train_task
    if args.resume:  # its own samples (and task), or a refusal before anything is simulated
        _resumed_samples(args)
    if args.seed is None:  # a resumed run goes on with its own seed: its simulated samples and validation split
        args.seed = _resumed_seed(args.resume) if args.resume else 0
    if args.resume:
        _resumed_options(args)
    _check_network_options(args)
    _source_preparation(args)
    if getattr(args, "depth", None) is not None and args.size is None:  # LipNet-6 took 28 px crops, not [T]'s 32
        args.size = 32 if args.depth == 6 else 28
    if args.lr is None:  # the optimiser's own scale: Adam kept Adadelta's 1 and trained nothing (loss 2e5)
        args.lr = 1.0 if getattr(args, "optimizer", "adadelta") == "adadelta" else 1e-3
    if args.epochs < 1 or args.batch_size < 1:
        raise InputError("--epochs and --batch-size must be >= 1")
    if args.patience < 0:  # as train refuses it (it meant "off" unsaid)
        raise InputError(f"--patience must be >= 0 (0: off), got {args.patience}")
    base = dict(task=task, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device,
                num_threads=args.threads, val_fraction=args.val_fraction,
                early_stopping_patience=args.patience if args.patience > 0 else None)
    if not (np.isfinite(args.lr) and args.lr > 0):
        raise InputError(f"--lr must be a number > 0, got {args.lr}")
    out = Path(args.out)
    if out.is_dir() or out.suffix == "":
        raise InputError(f"--out {out} must be a model file name such as model.pt, not a folder")
    from ..io.atomic import unwritable_reason

    unwritable = unwritable_reason(out)  # before any training (a read-only folder failed after the first epoch)
    if unwritable:
        raise InputError(unwritable)
    history_path = Path(args.history) if args.history else model_sidecar(out, "history.csv")
    from ..training.trainer import last_checkpoint_path
    from .train import check_history_path

    check_history_path(history_path, out, args.init_model, args.resume,
                       out.with_name(out.stem + ".pretrained.pt"))

    continues_out = bool(args.resume) and Path(args.resume).resolve() in (out.resolve(), last_checkpoint_path(out).resolve())
    if not continues_out:  # a run resumed into another file must not replace one there unasked
        # nor the checkpoints beside it (a run one could still resume; a pre-training stage's model)
        pretrained = out.with_name(out.stem + ".pretrained.pt")
        _refuse_existing(args, out, history_path, last_checkpoint_path(out), pretrained, last_checkpoint_path(pretrained))
    if getattr(args, "folds", None):  # the cross-validation tables beside the model: another run's are kept too
        _refuse_existing(args, model_sidecar(out, "cv_folds.csv"), model_sidecar(out, "cv_predictions.csv"))
    if args.freeze and not args.init_model:  # before any data is simulated or read
        raise InputError("--freeze needs --init-model")
    real = simulated = None
    strategy = None
    if task == "images":
        from ..classify.data import ClassificationData, RESPONSE_CLASS_NAMES, response_crops, simulated_response_data

        norm = {"kind": "fixed", "offset": 0.0, "scale": 65535.0} if args.keep_16bit else {"kind": "minmax"}
        if (args.init_model or args.resume) and args.strategy not in (None, "real", "simulated"):
            raise InputError(f"--strategy {args.strategy} trains in two stages from scratch; --init-model and --resume "
                             "continue one network on one data set: use --strategy real (your images) or simulated")
        strategy = args.strategy or ("pretrain_finetune" if args.input else "simulated")
        if args.init_model or args.resume:  # one stage, on the real images when given
            strategy = args.strategy or ("real" if args.input else "simulated")
        if strategy != "real" and args.simulated < 4:
            raise InputError(f"strategy {strategy!r} needs --simulated N (N >= 4)")
        if strategy != "simulated" and args.input is None:
            raise InputError(f"strategy {strategy!r} needs real annotated images (--input)")
        if strategy == "simulated" and args.input is not None and not args.folds:  # (--folds says its own)
            # the folder was read and never used: the thresholds were chosen on 4 simulated images, unsaid
            raise InputError("--strategy simulated trains on simulated images only, and --input would go unused: "
                             "leave --input out (then score the model on your images with 'classify images'), or "
                             "train on them: --strategy real, pretrain_finetune or pretrain_freeze")
        if args.simulated:
            simulated = run_with_text_progress(simulated_response_data(args.simulated, seed=args.seed, normalization=norm, progress=True), label="simulate")
        if args.input is not None:
            d = load_response_folder(args.input, args.box)
            if d["labels"] is None:  # training needs them; classifying a folder does not
                raise InputError(d.get("label_problem")
                                 or f"{args.input}: classes.csv needs a 'label' (good/bad) or 'is_good' column")
            _warn_of_signed_images(d["files"], d["images"])
            if args.keep_16bit:
                from ..classify.predict import dim_for_16_bit_scale

                dim = dim_for_16_bit_scale({"normalization": norm}, d["images"])
                if dim:  # (as classify images says it of a 16-bit model given them)
                    print(f"warning: --keep-16bit trains on x / 65535, but {len(dim)} of {len(d['images'])} image(s) "
                          f"hold values within 0-255 only ({', '.join(Path(d['files'][i]).name for i in dim[:3])}"
                          f"{' ...' if len(dim) > 3 else ''}): 8-bit images look almost black; use the 16-bit "
                          "originals, or leave --keep-16bit out", file=sys.stderr)
            x = response_crops(d["images"], d["boxes"], d["masks"], normalization=norm)
            real = ClassificationData(x, d["labels"], list(RESPONSE_CLASS_NAMES), d["groups"], d["subclass"],
                                      f"{len(x)} annotated images from {args.input}")
        cfg = ClassifierTrainConfig(model={"architecture": args.arch}, normalization=norm, augment="hflip",
                                    crop={"kind": "integration", "size": [39, 42]}, **base)
    elif task == "objects":
        from ..classify.data import simulated_liposome_data

        for name, value, low, high in (("--undersample", args.undersample, 0.0, 1.0),
                                       ("--label-smoothing", args.label_smoothing, 0.0, 1.0)):
            if not low <= value < high:
                raise InputError(f"{name} must be >= {low:g} and < {high:g}, got {value:g}")
        if args.margin < 0 or args.size < 8 or args.particles < 1:
            raise InputError(f"need --margin >= 0, --size >= 8 and --particles >= 1 "
                             f"(got {args.margin}, {args.size}, {args.particles})")

        if args.simulated < 1:
            raise InputError("--simulated N (number of simulated TEM images) must be >= 1")
        simulated = run_with_text_progress(simulated_liposome_data(args.simulated, task=args.task, mode=args.mode, size=(args.size, args.size),
                                                                   margin=args.margin, seed=args.seed, progress=True, n_particles=args.particles), label="simulate")
        model = {"architecture": args.arch}
        if args.arch == "lipnet":
            model.update(n_conv=args.depth, all_conv=bool(args.all_conv))
        if args.class_weights and not args.no_oversample:
            raise InputError("--class-weights and oversampling (on by default) both balance the classes, so rare classes "
                             "would count twice: add --no-oversample to weight the loss instead, or leave --class-weights out")
        cfg = ClassifierTrainConfig(model=model, normalization=None, augment="none" if args.no_augment else "affine",
                                    crop={"kind": "object", "mode": args.mode, "margin": args.margin, "size": [args.size, args.size]},
                                    oversample=not args.no_oversample, undersample_fraction=args.undersample,
                                    class_weights="auto" if args.class_weights else None, label_smoothing=args.label_smoothing, **base)
    else:
        from ..classify.data import one_view_chirality_note, simulated_profile_data

        if args.simulated < 4:
            raise InputError("--simulated N (number of particles) must be >= 4")
        note = one_view_chirality_note(args.task, args.views)
        if note:  # it trained without a word, to chance accuracy
            print(f"warning: {note}: give --views 2 or more", file=sys.stderr)
        simulated = simulated_profile_data(args.simulated, task=args.task, n_views=args.views, seed=args.seed,
                                           view_angle_deg=args.view_angle, data_points=args.points,
                                           hole_radius=args.hole_radius, offset_sd=args.offset_sd,
                                           view_angle_jitter_deg=args.view_angle_jitter)
        model = {"architecture": args.arch}
        if args.arch == "profile_cnn":
            model["pooling"] = not args.no_pooling
        from ..classify.data import PROFILE_NORMALIZATION

        cfg = ClassifierTrainConfig(model=model, normalization=dict(PROFILE_NORMALIZATION), augment="none", optimizer=args.optimizer,
                                    crop={"kind": "profile", "views": args.views, "points": args.points, "view_angle": args.view_angle}, **base)
    pretrained = None  # [R] two-stage strategies: pre-trained once, cross-validated and trained from it
    if args.folds:
        from dataclasses import replace

        from ..classify.trainer import cross_validate

        cv_data, cv_cfg = (real if real is not None else simulated), cfg
        if task == "images" and strategy == "simulated" and real is not None:
            raise InputError("--folds cross-validates training on your images; --strategy simulated trains on "
                             "simulated images only: score its model on your images with 'classify images' instead")
        if task == "images" and str(strategy).startswith("pretrain") and not (args.init_model or args.resume):
            pretrained = out.with_name(out.stem + ".pretrained.pt")
            pre = run_with_text_progress(train_classifier(cfg, simulated, None, pretrained), label="pre-train on simulated")
            if pre.model_path is None:
                raise InputError("pre-training on the simulated images stopped before its first epoch: nothing to "
                                 "cross-validate")
            cv_cfg = replace(cfg, freeze_features=strategy == "pretrain_freeze")  # each fold as the final model trains
        cv = run_with_text_progress(cross_validate(cv_cfg, cv_data, k=args.folds, seed=args.seed, init_model=pretrained),
                                    label=f"{args.folds}-fold CV ({strategy})" if task == "images" else f"{args.folds}-fold CV")
        _write_csv(model_sidecar(out, "cv_folds.csv"), cv["folds"])
        _write_csv(model_sidecar(out, "cv_predictions.csv"), cv["predictions"])
        n_folds = len(cv["folds"])
        scored = {k: int(cv["folds"][k].notna().sum()) for k in cv["summary"]}  # an AUC needs both classes in a fold
        print(f"microseg classify train {task}: {args.folds}-fold CV " + ", ".join(
            f"{k} {v:.3f}" + (f" (mean of the {scored[k]} fold(s) that have one)" if scored[k] < n_folds else "")
            for k, v in cv["summary"].items())
              + f" -> {model_sidecar(out, 'cv_folds.csv')}")
    if args.init_model or args.resume:
        from dataclasses import replace

        cfg = replace(cfg, freeze_features=bool(args.freeze))
        data = real if real is not None else simulated
        gen = train_classifier(cfg, data, None, out, resume=args.resume, init_model=args.init_model)
    elif task == "images":
        gen = train_with_strategy(strategy, cfg, real=real, simulated=simulated, out_path=out, pretrained=pretrained)
    else:
        gen = train_classifier(cfg, simulated, None, out)
    history: list[dict] = []

    def track():
        try:
            while True:
                e = next(gen)
                if getattr(e, "kind", "") == "epoch":
                    history.append({"epoch": e.epoch, "train_loss": e.train_loss, "val_loss": e.val_loss,
                                    "val_accuracy": e.val_accuracy, "lr": e.lr, "seconds": e.seconds, "phase": getattr(e, "phase", "")})
                    if getattr(e, "phase", "") != "pretrain":  # --out is written from the first epoch on: its
                        # history with it (a kill -9 left the new model beside an earlier run's history.csv)
                        _write_history_so_far(history_path, history, continues_out)
                yield e
        except StopIteration as stop:
            return stop.value

    from ._signals import terminate_as_interrupt

    try:
        with terminate_as_interrupt():  # a TERM (a job scheduler's stop) ends it as Ctrl-C does: best model kept
            result = run_with_text_progress(track(), label=f"train {task}")
    except KeyboardInterrupt:
        gen.close()
        from .train import say_interrupted

        final_stage = [row for row in history if row.get("phase") != "pretrain"]  # the epochs --out was written by
        if final_stage:  # before the first, an earlier run's history stays as it was (pre-training rows too)
            _write_history_so_far(history_path, history, continues_out)
        if history and not final_stage:  # stopped while pre-training: --out was not written
            pretrained_file = out.with_name(out.stem + ".pretrained.pt")
            kept = f"{out} is an earlier run's model, unchanged" if out.is_file() else f"no {out.name} was written"
            print(f"interrupted while pre-training on the simulated images ({len(history)} epoch(s), kept in "
                  f"{pretrained_file}): {kept}; run the command again to train afresh", file=sys.stderr)
        else:
            two_stages = str(strategy).startswith("pretrain")
            staged = " (a pre-training stage's in its own .pretrained.pt)" if two_stages else ""
            # a resumed run is one stage on the real images (--strategy pretrain_* is refused with --resume)
            say_interrupted(out, len(final_stage), history_path, staged,
                            " --strategy real (its fine-tuning on your images goes on)" if two_stages else "")
        raise
    # a resumed run's file holds the epochs before it too (this session's events only the new ones), each
    # with its phase: the earlier epochs' from the history file, this session's from its events
    if continues_out and result.history:
        phases = _history_phases(history_path)
        phases.update({row["epoch"]: row["phase"] for row in history if row["phase"]})
        resumed = "train" if any(phases.values()) else ""  # a resumed run is one stage: "train" where phases are kept
        history = [{**row, "phase": row.get("phase") or phases.get(row["epoch"]) or resumed} for row in result.history]
    write_history_csv(history_path, history)
    if args.init_model:
        started_afresh = result.config.get("training", {}).get("reinitialised") or []
        if started_afresh:
            print(f"note: --init-model {args.init_model}: its features were reused; {', '.join(started_afresh)} started "
                  "afresh (its classes or sizes differ from this run's)", file=sys.stderr)
    stages = "" if len(history) <= result.epochs_run else f" of the last stage ({len(history)} in all stages)"
    print(f"microseg classify train {task}: {result.stop_reason} after {result.epochs_run} epoch(s){stages}; best epoch "
          f"{result.best_epoch} -> {result.model_path}; history -> {history_path}")
    return 0
