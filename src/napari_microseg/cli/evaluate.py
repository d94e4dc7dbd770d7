"""``microseg evaluate``: score results against ground truth.

``microseg evaluate tracks --gt DIR --pred DIR [--out tracking_metrics.csv]`` gives the Cell
Tracking Challenge scores (TRA, DET, LNK, AOGM error counts) and division precision / recall /
F1 of tracks in ``microseg track`` / ``microseg simulate nuclei`` / CTC folders.

``microseg evaluate classes --gt DIR --pred DIR [--out class_metrics.csv]`` scores class maps
(e.g. CCD classes) pixel by pixel: per-class precision, recall, F1, IoU and the pooled
confusion matrix.

``microseg evaluate seg --gt DIR --pred DIR [--out metrics.csv]`` matches label
images by file name (exact name first, then the name without its image
suffix, ignoring a ``_labels``/``_mask``/``_pred`` ending), and writes one row
per image plus a pooled ``ALL`` row to ``--out`` and the pooled scores per IoU
threshold to ``<out>_thresholds.csv``. ``--compare DIR`` scores a second set
of predictions (e.g. before a fine-tune) and says whether the two differ
beyond what the choice of images explains. Scores: pixel precision/recall/
accuracy/Dice/IoU; the METHODS [N] any-overlap object scores; IoU-matched
(one-to-one, Hungarian) TP/FP/FN, precision, recall, F1 and AP = TP/(TP+FP+FN)
at IoU 0.50..0.90, panoptic quality. Images holding only two values (masks)
are split into connected components first. (T,Y,X) stacks are scored frame by
frame.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import InputError
from ._help import HelpFormatter

_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".fits.gz", ".fit.gz", ".fts.gz", ".fits.fz", ".fit.fz", ".fts.fz",
             ".fits", ".fit", ".fts", ".fz", ".png", ".npy", ".ome.zarr", ".zarr")
# every form read_image takes, each before its shorter ending (a.ome.zarr was keyed "a.ome" and paired with nothing)
_ENDINGS = ("_cp_masks", "_labels", "_label", "_masks", "_mask", "_pred", "_prediction", "_gt", "_seg")  # (Cellpose:
# _cp_masks and _seg)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score segmentations, class maps or tracks against ground truth", description=__doc__,
                       formatter_class=HelpFormatter)
    kinds = p.add_subparsers(dest="kind", metavar="KIND")
    kinds.required = True
    s = kinds.add_parser("seg", help="instance/pixel segmentation scores (label images)", description=__doc__,
                         formatter_class=HelpFormatter)
    s.add_argument("--gt", required=True, help="folder (or single file) of ground-truth label images; pixels -1 are "
                                               "'not annotated' (as autolabel's tiles mark nuclei above its size "
                                               "range or cut by the image edge) and left out, with the predicted "
                                               "objects lying on them")
    s.add_argument("--pred", required=True, help="folder (or single file) of predicted label images")
    s.add_argument("--out", default="metrics.csv", help="CSV to write (default metrics.csv)")
    s.add_argument("--thresholds", default="0.5:0.9:0.05",
                   help="IoU thresholds, 'start:stop:step' or comma list; F1, PQ and the bootstrap interval are given at "
                        "the first (default 0.5:0.9:0.05)")
    s.add_argument("--compare", metavar="DIR",
                   help="another folder (or file) of predictions of the same ground truth, e.g. before a fine-tune: "
                        "prints both APs at the first threshold and the 95 %% interval of their difference (--pred "
                        "minus --compare) over the images both hold (a paired bootstrap); per image to <out>_compare.csv")
    s.add_argument("--seed", type=int, default=0, help="random seed of the bootstrap intervals (default 0)")
    s.add_argument("--overwrite", action="store_true", help="replace existing output files")
    s.set_defaults(func=run_seg)
    c = kinds.add_parser("classes", help="per-class pixel scores of class maps (CCD classes)", formatter_class=HelpFormatter,
                         description="microseg evaluate classes: pool the pixel confusion matrix of predicted class\n"
                                     "maps (e.g. 'microseg segment --model ccd_classes' labels) against true ones\n"
                                     "(e.g. 'microseg simulate ccd' classes/), matched by file name, and write\n"
                                     "per-class precision, recall, F1 and IoU plus the confusion matrix.")
    c.add_argument("--gt", required=True, help="folder (or single file) of true class maps (class index per pixel)")
    c.add_argument("--pred", required=True, help="folder (or single file) of predicted class maps")
    c.add_argument("--out", default="class_metrics.csv", help="CSV to write (default class_metrics.csv; the confusion "
                                                              "matrix goes to <out>_confusion.csv)")
    c.add_argument("--class-names", default=None,
                   help="comma-separated names (default: a params.json beside --gt, else the class index)")
    c.add_argument("--ignore", type=int, default=None, metavar="VALUE",
                   help="a value of the true maps that marks pixels not to score (e.g. 255, the 'void' of many "
                        "uint8 class maps); without it every value is a class")
    c.add_argument("--overwrite", action="store_true", help="replace existing output files")
    c.set_defaults(func=run_classes)
    t = kinds.add_parser("tracks", help="Cell Tracking Challenge tracking scores (TRA, DET, LNK, divisions)",
                         formatter_class=HelpFormatter,
                         description="microseg evaluate tracks: score predicted tracks against true ones with the Cell\n"
                                     "Tracking Challenge measures (traccuracy): TRA, DET, LNK, the AOGM error counts,\n"
                                     "and division precision / recall / F1 (TRA, DET, LNK match objects as the\n"
                                     "CTC does, by majority overlap; the division scores one to one by IoU >= 0.5).\n"
                                     "Each folder is a 'microseg track' result (tracks.csv + tracks_labels.tif), a\n"
                                     "'microseg simulate nuclei' folder (tracks.csv + labels.tif), or a CTC folder.")
    t.add_argument("--gt", required=True, help="folder of the true tracks (e.g. a 'microseg simulate nuclei' folder)")
    t.add_argument("--pred", required=True, help="folder of the predicted tracks (e.g. a 'microseg track' --out folder)")
    t.add_argument("--out", default="tracking_metrics.csv", help="CSV to write: one row of scores")
    t.add_argument("--division-frames", type=int, default=1,
                   help="a division found up to this many frames early or late still counts")
    t.add_argument("--overwrite", action="store_true", help="replace existing output files")
    t.set_defaults(func=run_tracks)


def run_tracks(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..measure.tables import check_overwrite, write_table_csv
    from ..tracking.export import read_tracks_folder
    from ..tracking.metrics import ctc_scores

    from ..io.atomic import guard_target, protect_more_inputs

    # the tables of the two tracks folders are inputs too (a folder input protects its images only)
    protect_more_inputs(Path(folder) / name for folder in (args.gt, args.pred)
                        for name in ("tracks.csv", "res_track.txt", "man_track.txt"))
    out = csv_output(args.out, "tracking_metrics.csv")
    guard_target(out)  # before the scoring
    check_overwrite([out], args.overwrite)
    if args.division_frames < 0:
        raise InputError(f"--division-frames must be >= 0, got {args.division_frames}")
    truth, predicted = read_tracks_folder(args.gt), read_tracks_folder(args.pred)
    frames = [getattr(r, "n_frames", None) for r in (truth, predicted)]
    if None not in frames and frames[0] != frames[1]:
        raise InputError(f"the true tracks span {frames[0]} frames, the predicted ones {frames[1]}")
    shapes = [tuple(getattr(r, "config", {}).get("image_shape") or ()) for r in (truth, predicted)]
    if all(shapes) and shapes[0] != shapes[1]:
        raise InputError(f"the true tracks are on images of shape {shapes[0]}, the predicted ones {shapes[1]}: "
                         "score tracks of the same movie")
    try:
        scores = ctc_scores(truth, predicted, division_frame_buffer=args.division_frames)
    except ValueError as err:  # a CTC folder's masks of another size or length (traccuracy's check)
        if "shape" not in str(err).lower():
            raise
        raise InputError(f"the true and predicted tracks are on images of different sizes ({err}): score tracks "
                         "of the same movie") from None
    row = {"gt": str(args.gt), "pred": str(args.pred), **scores}
    write_table_csv(pd.DataFrame([row]), out)
    print(f"TRA {scores['TRA']:.4f}  DET {scores['DET']:.4f}  LNK {scores['LNK']:.4f}")
    print(f"divisions: {scores['true_divisions']} true, {scores['found_divisions']} found; precision "
          f"{scores['division_precision']:.3f}  recall {scores['division_recall']:.3f}  F1 {scores['division_f1']:.3f}")
    print(f"wrote {out}")
    return 0


def csv_output(text: str, default_name: str) -> Path:
    """The CSV file an ``--out`` names: a folder (existing, or written with a trailing slash) gets
    ``default_name`` inside it, so that no file is written under the folder's own name."""
    if text.endswith(("/", os.sep)) or Path(text).is_dir():
        return Path(text) / default_name
    if Path(text).suffix.lower() != ".csv":  # `--out old/x.tif --overwrite` turned a label image into CSV text
        raise InputError(f"--out {text}: the scores are a CSV table: give a .csv file name (or a folder)")
    return Path(text)


def parse_thresholds(text: str) -> list[float]:
    """'0.5:0.9:0.05' -> [0.5, 0.55, ..., 0.9]; '0.5,0.75' -> [0.5, 0.75]."""
    import numpy as np

    try:
        if ":" in text:
            a, b, c = (float(v) for v in text.split(":"))
            vals = np.round(np.arange(a, b + c / 2, c), 4).tolist() if c > 0 and b >= a else None
        else:
            vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"cannot read thresholds {text!r} (use 'start:stop:step' or a comma list)") from None
    if vals is None:
        raise InputError(f"IoU thresholds {text!r}: 'start:stop:step' needs start <= stop and a step > 0")
    if not vals or any(not 0 < v <= 1 for v in vals):
        raise InputError(f"IoU thresholds must lie in (0, 1], got {text!r}")
    return list(dict.fromkeys(vals))  # a threshold given twice is scored once (it doubled the pooled counts)


def _key(name: str) -> str:
    low = name.lower()
    for suf in _SUFFIXES:
        if low.endswith(suf):
            name = name[: -len(suf)]
            break
    for end in _ENDINGS:
        if name.lower().endswith(end):
            return name[: -len(end)]
    return name


def _list(path: Path) -> list[Path]:
    """The label images ``path`` names: itself (a file, or a Zarr store whatever its name: an OME-Zarr's
    ``cells.ome.zarr/labels/nuclei``), else the image files in the folder."""
    from ..io.images import image_kind

    if path.is_file() or path.name.lower().endswith(".zarr") or (path.is_dir() and image_kind(path) == "zarr"):
        return [path]
    if not path.is_dir():
        raise InputError(f"{path}: no such file or folder")
    files = sorted(q for q in path.iterdir() if not q.name.startswith(".") and q.name.lower().endswith(_SUFFIXES))
    if not files:
        raise InputError(f"{path}: folder holds no label images")
    return files


def match_files(gt_dir: Path, pred_dir: Path, unpredicted_as_empty: bool = False) -> list[tuple[Path, Path | None]]:
    """Pairs (gt, pred) matched by exact name, else by name without suffix/_labels-like ending.

    Files on one side only are named on stderr. A ground truth without a prediction (an image a run
    failed on) is paired with None when ``unpredicted_as_empty`` (scored as nothing found, so that
    failures do not raise the score), else left out."""
    gts, preds = _list(gt_dir), _list(pred_dir)
    if gts == [gt_dir] and preds == [pred_dir]:
        # two files named: scored together whatever their names; in two folders the names must pair (a
        # failed run's folder holding another image's labels scored img7 against img1's truth)
        if _key(gts[0].name) != _key(preds[0].name):
            print(f"warning: scoring {preds[0].name} against {gts[0].name}: the names differ (one file on each side)",
                  file=sys.stderr)
        return [(gts[0], preds[0])]
    by_name = {p.name: p for p in preds}
    by_key = {}
    for p in preds:
        by_key.setdefault(_key(p.name), p)
    pairs, unpredicted = [], []
    for g in gts:
        p = by_name.get(g.name) or by_key.get(_key(g.name))
        if p is not None:
            pairs.append((g, p))
        else:
            unpredicted.append(g)
    if not pairs:
        single = ""  # a file against a folder of one: its name may differ (segment names labels after the image)
        if gts == [gt_dir] and len(preds) == 1:
            single = f"; to score {preds[0]} against {gt_dir.name} whatever its name, give that file as --pred"
        elif preds == [pred_dir] and len(gts) == 1:
            single = f"; to score {pred_dir.name} against {gts[0]} whatever its name, give that file as --gt"
        raise InputError(f"no file names in {pred_dir} match those in {gt_dir} (names are paired without their "
                         f"suffix and a trailing {', '.join(_ENDINGS)}){single}")

    def listed(paths: list) -> str:
        return ", ".join(p.name for p in paths[:3]) + (" ..." if len(paths) > 3 else "")

    unmatched = sorted(set(preds) - {p for _, p in pairs})
    if unmatched:
        print(f"note: {len(unmatched)} file(s) in {pred_dir} match no ground truth and are not scored "
              f"({listed(unmatched)})", file=sys.stderr)
    unpredicted_as_empty = unpredicted_as_empty and pred_dir.is_dir()  # one prediction file: its image only
    if unpredicted:
        treated = "scored as nothing found" if unpredicted_as_empty else "not scored"
        print(f"warning: {len(unpredicted)} ground-truth file(s) have no prediction in {pred_dir}: {treated} "
              f"({listed(unpredicted)})", file=sys.stderr)

    truths_of: dict = {}
    for g, p in pairs:
        truths_of.setdefault(p, []).append(g.name)
    for p, names in truths_of.items():  # one prediction scored against two truths would count twice
        if len(names) > 1:
            raise InputError(f"{p.name} in {pred_dir} matches {len(names)} ground-truth files ({', '.join(names)}): "
                             "keep one truth per image in --gt")
    return pairs + [(g, None) for g in unpredicted] if unpredicted_as_empty else pairs


def read_labels(path: Path, not_annotated: bool = False):
    """Read a label image as numpy; two-valued images (masks) become connected-component labels.

    ``not_annotated``: a ground truth may mark pixels -1, "not annotated" (as autolabel's tiles
    mark nuclei above its size range or cut by the image edge); they come back as -1, everything else >= 0."""
    import numpy as np

    from ..measure.labels import masks_to_labels

    if path.suffix.lower() == ".npy":
        arr = _load_npy(path)
    else:  # (a PNG too: grey + alpha is its grey channel, a palette PNG its indices, not colours)
        from ..io.images import read_image

        arr = read_image(path, labels=True).data
    from ..evaluation.metrics import check_label_image

    from ..measure.labels import colour_labels_as_ids

    arr = colour_labels_as_ids(np.asarray(arr), path.name)
    ignored = None
    # a float image of whole numbers holding -1 (as some tools save labels) marks "not annotated" too
    whole = arr.dtype.kind == "i" or (arr.dtype.kind == "f" and arr.size and bool(np.all(np.mod(arr, 1) == 0)))
    if not_annotated and whole and arr.size and arr.min() == -1:
        ignored = arr == -1
        arr = np.where(ignored, 0, arr)
    arr = check_label_image(arr, path.name)
    if arr.ndim not in (2, 3):
        raise InputError(f"{path.name}: expected (Y,X) or (T,Y,X) labels, got shape {arr.shape}")
    from ..measure.labels import scattered_ids

    scattered = scattered_ids(arr[0] if arr.ndim == 3 else arr)
    if scattered:  # scored as labels it gave hundreds of "objects" and AP 0 without a word
        raise InputError(f"{path.name} looks like an intensity image, not labels: its {scattered[0]} values make "
                         f"{scattered[1]} separate specks (labels have one region per object)")
    labels = masks_to_labels(arr)[0]
    if ignored is not None:
        labels = labels.astype(np.int64)
        labels[ignored] = -1
    return labels


def leave_out_not_annotated(gt, pred):
    """``(gt, pred, n_dropped)``: the ground truth's -1 pixels ("not annotated") left out of the
    scores: set to 0 in both, and predicted objects lying mostly (> half their area) on them dropped,
    so that finding a nucleus nobody annotated is neither a hit nor a false positive."""
    import numpy as np

    ignored = gt < 0
    if not ignored.any():
        return gt, pred, 0
    pred = np.array(pred, copy=True)
    ids, area = np.unique(pred[pred > 0], return_counts=True)
    on_ignored = dict(zip(*np.unique(pred[ignored & (pred > 0)], return_counts=True)))
    dropped = [i for i, a in zip(ids, area) if on_ignored.get(i, 0) > a / 2]
    if dropped:
        pred[np.isin(pred, dropped)] = 0
    pred[ignored] = 0
    return np.where(ignored, 0, gt), pred, len(dropped)


def iter_pairs(pairs, notes: list | None = None, unpredicted: list | None = None, unannotated: list | None = None):
    """(name, truth, prediction, not annotated pixels or None) of each image or frame of ``pairs``
    (:func:`match_files`); a pair without prediction file gives an empty prediction, its frames' names
    appended to ``unpredicted``. A frame whose truth is -1 (not annotated) at every pixel, as autolabel keeps
    the tiles its QC dropped, is no image to score (empty against empty scored it perfect): its name goes to
    ``unannotated``."""
    import numpy as np

    from ..io.images import frame_name

    for g, p in pairs:
        gt = read_labels(g, not_annotated=True)
        pred = read_labels(p) if p is not None else np.zeros(gt.shape, np.int64)  # no prediction: nothing found
        if gt.shape != pred.shape:
            raise InputError(f"{g.name}: ground truth shape {gt.shape} differs from prediction {p.name} shape {pred.shape}")
        frames = [(g.name, gt, pred)] if gt.ndim == 2 else [(frame_name(g.name, t), gt[t], pred[t]) for t in range(gt.shape[0])]
        for name, gt_frame, pred_frame in frames:
            not_annotated = gt_frame < 0
            n_ignored = int(not_annotated.sum())
            if n_ignored and n_ignored == not_annotated.size:
                if unannotated is not None:
                    unannotated.append(name)
                continue
            gt_frame, pred_frame, n_dropped = leave_out_not_annotated(gt_frame, pred_frame)
            if n_ignored and notes is not None:
                notes.append((name, n_ignored, n_dropped))
            if p is None and unpredicted is not None:
                unpredicted.append(name)
            # the pixel scores leave them out too (their accuracy counted them as true negatives)
            yield name, gt_frame, pred_frame, not_annotated if n_ignored else None


def run_seg(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..evaluation.metrics import evaluate_dataset, threshold_key
    from ..measure.tables import check_overwrite, write_table_csv

    thresholds = parse_thresholds(args.thresholds)
    out = csv_output(args.out, "metrics.csv")
    out_thr = out.with_name(out.stem + "_thresholds.csv")
    out_compare = out.with_name(out.stem + "_compare.csv")
    check_overwrite([out, out_thr] + ([out_compare] if args.compare else []), args.overwrite)
    pairs = match_files(Path(args.gt), Path(args.pred), unpredicted_as_empty=True)
    # the comparison pairs the images (frames) both sets predicted
    compare_pairs = match_files(Path(args.gt), Path(args.compare)) if args.compare else None
    notes: list = []
    unpredicted: list[str] = []  # frames of --gt without a --pred file, scored as nothing found
    unannotated: list[str] = []  # frames of --gt not annotated at all (-1 everywhere): not scored
    try:
        per_image, pooled = evaluate_dataset(iter_pairs(pairs, notes, unpredicted, unannotated), thresholds,
                                             seed=args.seed)
    except InputError:
        if unannotated:  # every frame left out
            raise InputError(f"no image of {args.gt} is annotated: every pixel of its {len(unannotated)} frame(s) is "
                             "-1 (not annotated)") from None
        raise
    # the second set is scored before anything is written: a bad file there leaves no half-finished run
    per_image_compare = evaluate_dataset(iter_pairs(compare_pairs), thresholds)[0] if compare_pairs else None
    pooled_row = {"name": "ALL"}
    pooled_row.update({k: v for k, v in pooled.items() if k in per_image.columns or k == "mean_image_map"})
    table = pd.concat([per_image, pd.DataFrame([pooled_row])], ignore_index=True)
    write_table_csv(table, out)
    thr_rows = []
    for t in thresholds:
        k = threshold_key(t)
        # the printed bootstrap interval (first threshold; blank with one image) and its seed, kept with the APs
        low, high = pooled.get(f"ap_low@{k}", float("nan")), pooled.get(f"ap_high@{k}", float("nan"))
        thr_rows.append({"threshold": t, "precision": pooled[f"precision@{k}"], "recall": pooled[f"recall@{k}"],
                         "f1": pooled[f"f1@{k}"], "ap": pooled[f"ap@{k}"], "ap_low_95": low, "ap_high_95": high,
                         "bootstrap_seed": args.seed if low == low else None})
    write_table_csv(pd.DataFrame(thr_rows), out_thr)
    print(f"{pooled['n_images']} image(s) scored"  # images and frames of stacks, as the unpredicted ones
          + (f", {len(unpredicted)} of them without a prediction (nothing found)" if unpredicted else ""))
    print(f"pixel:   precision {pooled['pixel_precision']:.3f}  recall {pooled['pixel_recall']:.3f}  "
          f"accuracy {pooled['pixel_accuracy']:.3f}  dice {pooled['pixel_dice']:.3f}  iou {pooled['pixel_iou']:.3f}")
    # the [N] study's object scores: a predicted object counts when it touches any true one (TP, FP: of the
    # predicted objects), a true object is missed when no predicted one touches it (FN: of the true objects),
    # so TP + FN need not be the true count; the IoU-matched scores below pair objects one to one
    print(f"objects touching any counterpart ([N] any-overlap; TP and FP of the predicted objects, FN of the true "
          f"ones): TP {pooled['object_tp']}  FP {pooled['object_fp']}  FN {pooled['object_fn']}  "
          f"precision {pooled['object_precision']:.3f}  recall {pooled['object_recall']:.3f}  dice {pooled['object_dice']:.3f}")
    print("instances (IoU-matched): " + "  ".join(f"AP@{threshold_key(t)} {pooled[f'ap@{threshold_key(t)}']:.3f}"
                                                  for t in thresholds))
    t0 = threshold_key(thresholds[0])
    print(f"  F1@{t0} {pooled[f'f1@{t0}']:.3f}  PQ {pooled['pq']:.3f}  mean AP {pooled['map']:.3f} "
          f"(per-image mean {pooled['mean_image_map']:.3f})  objects gt {pooled['n_gt']} pred {pooled['n_pred']}")
    low, high = pooled[f"ap_low@{t0}"], pooled[f"ap_high@{t0}"]
    if low == low:  # not NaN: two images or more
        print(f"  AP@{t0} {low:.3f}-{high:.3f}: 95 % interval over other image sets drawn like these (bootstrap)")
    pixels = sum(pooled[k] for k in ("pixel_tp", "pixel_fp", "pixel_fn", "pixel_tn"))
    predicted, true = pooled["pixel_tp"] + pooled["pixel_fp"], pooled["pixel_tp"] + pooled["pixel_fn"]
    if pixels and predicted > 0.8 * pixels and predicted > 2 * true:  # a model that calls everything foreground
        print(f"warning: the predictions cover {100 * predicted / pixels:.0f} % of the pixels, the ground truth "
              f"{100 * true / pixels:.0f} %: the any-overlap object scores say little then (one object over "
              "everything overlaps every nucleus); trust the IoU-matched AP", file=sys.stderr)
    if unannotated:
        print(f"not scored: {len(unannotated)} frame(s) of the ground truth are not annotated at all (-1 at every "
              f"pixel: {', '.join(unannotated[:3])}{' ...' if len(unannotated) > 3 else ''})")
    if notes:
        print(f"not annotated (-1) in the ground truth: {sum(n[1] for n in notes)} px in {len(notes)} image(s) left out, "
              f"with the {sum(n[2] for n in notes)} predicted object(s) lying on them")
    written = f"{out} and {out_thr}"
    if per_image_compare is not None:
        _compare(per_image[~per_image["name"].isin(unpredicted)], per_image_compare, thresholds, out_compare, seed=args.seed)
        written = f"{out}, {out_thr} and {out_compare}"
    print(f"wrote {written}")
    return 0


#: a comparison over fewer images (or stacks) than this prints its interval without a verdict:
#: a percentile bootstrap of a handful of images is unreliable (often of zero width)
MIN_IMAGES_FOR_VERDICT = 10


def _compare(per_image, other, thresholds, out_compare: Path, seed: int = 0) -> None:
    """Print / write how ``per_image``'s predictions differ from ``other``'s (the per-image tables of
    :func:`evaluate_dataset` for --pred and --compare) at the first IoU threshold, over the images
    (frames) both hold: both pooled APs and the paired bootstrap interval of --pred minus --compare."""
    import pandas as pd

    from ..evaluation.metrics import bootstrap_ap_difference, counts_to_scores, stack_keys, threshold_key
    from ..measure.tables import write_table_csv

    t0 = threshold_key(thresholds[0])
    keys = [f"ap@{t0}", f"tp@{t0}", f"fp@{t0}", f"fn@{t0}"]
    both = per_image[["name", *keys]].merge(other[["name", *keys]], on="name", suffixes=("_pred", "_compare"))
    if both.empty:
        raise InputError("--pred and --compare hold no image of the ground truth in common")
    both[f"ap@{t0}_pred_minus_compare"] = both[f"ap@{t0}_pred"] - both[f"ap@{t0}_compare"]  # per image too
    counts_pred = both[[f"{k}_pred" for k in keys[1:]]].to_numpy()
    counts_compare = both[[f"{k}_compare" for k in keys[1:]]].to_numpy()
    stacks = stack_keys(both["name"])
    difference, low, high = bootstrap_ap_difference(counts_compare, counts_pred, seed=seed, groups=stacks)
    ap_compare = counts_to_scores(*counts_compare.sum(axis=0))["iou"]
    ap_pred = ap_compare + difference
    summary = {"name": "ALL", **dict(zip([f"{k}_pred" for k in keys[1:]], counts_pred.sum(axis=0))),
               **dict(zip([f"{k}_compare" for k in keys[1:]], counts_compare.sum(axis=0))),
               f"ap@{t0}_pred": ap_pred, f"ap@{t0}_compare": ap_compare, f"ap@{t0}_pred_minus_compare": difference,
               f"ap@{t0}_pred_minus_compare_low": low, f"ap@{t0}_pred_minus_compare_high": high}
    write_table_csv(pd.concat([both, pd.DataFrame([summary])], ignore_index=True), out_compare)
    only_pred, only_compare = len(per_image) - len(both), len(other) - len(both)
    if only_pred or only_compare:
        print(f"compare: left out {only_pred} image(s) only --pred holds and {only_compare} only --compare holds")
    print(f"compare, AP@{t0} over the {len(both)} image(s) both hold: --pred {ap_pred:.3f}, --compare {ap_compare:.3f}; "
          f"--pred minus --compare {difference:+.3f}", end="")
    if low != low:  # NaN: one image (or one stack)
        print(" (one image or stack: no interval)")
        return
    print(f", 95 % interval {low:+.3f} to {high:+.3f} (paired bootstrap)", end="")
    n_draws = len(set(stacks))
    if n_draws < MIN_IMAGES_FOR_VERDICT:
        print(f"; {n_draws} image(s) or stack(s) are too few for the interval to be trusted")
        return
    verdict = ("the images cannot tell them apart" if low <= 0 <= high else
               "--pred is better" if low > 0 else "--compare is better")
    print(f": {verdict}")


def _load_npy(path: Path):
    """A ``.npy`` array; a pickled one (Cellpose's ``_seg.npy`` is a pickled dict) is refused in one line
    (it is never unpickled: that would run code from the file)."""
    import numpy as np

    try:
        return np.load(path)
    except (ValueError, OSError, EOFError) as err:
        if "allow_pickle" in str(err):
            raise InputError(f"{path.name} holds Python objects (a pickled .npy, such as Cellpose's _seg.npy), not "
                             "an array: save its label image (Cellpose: 'masks') as TIFF or a plain .npy") from None
        raise InputError(f"{path.name}: not a numeric .npy array ({str(err).splitlines()[0]})") from None


def _class_map(path: Path, ignore: int | None = None, predicted: bool = False):
    """A class map (Y, X) or (T, Y, X) of whole numbers >= 0 as int64; a negative ``ignore`` value (the
    truth's "void", e.g. -1) is kept where it is (refused as a negative label, --ignore -1 could not work).
    ``predicted``: a --pred map, which --ignore does not apply to (a -1 there is refused as such)."""
    import numpy as np

    from ..io.images import read_image

    from ..evaluation.metrics import check_label_image

    from ..measure.labels import colour_labels_as_ids

    arr = _load_npy(path) if path.suffix.lower() == ".npy" else np.asarray(read_image(path, labels=True).data)
    arr = colour_labels_as_ids(arr, path.name, classes=True)
    if arr.ndim not in (2, 3):
        raise InputError(f"{path.name}: expected a (Y,X) or (T,Y,X) class map, got shape {arr.shape}")
    void = arr == ignore if ignore is not None and ignore < 0 else None
    if void is not None:
        arr = np.where(void, 0, arr)
    elif ignore is None and arr.size and np.issubdtype(arr.dtype, np.number) and arr.min() == -1:
        if predicted:  # --ignore leaves the truth's void out: a prediction holds a class at every pixel
            raise InputError(f"{path.name} (--pred) holds -1: a predicted class map holds a class (0 or more) at "
                             "every pixel; --ignore applies to the truth only (was a truth map given as --pred?)")
        raise InputError(f"{path.name} holds -1 (not annotated, as autolabel marks it): give --ignore -1 to leave "
                         "those pixels out of the scores")
    checked = check_label_image(arr, path.name).astype(np.int64)  # whole numbers >= 0
    if void is not None:
        checked[void] = ignore
    return checked


def run_classes(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    from ..autolabel.ccd import class_scores
    from ..measure.tables import check_overwrite, write_table_csv
    from .train import class_names_near

    out = csv_output(args.out, "class_metrics.csv")
    out_cm = out.with_name(out.stem + "_confusion.csv")
    check_overwrite([out, out_cm], args.overwrite)
    pairs = match_files(Path(args.gt), Path(args.pred))
    def grown(matrix: np.ndarray, n: int) -> np.ndarray:  # a class first seen now adds a row and a column
        extra = max(0, n - matrix.shape[0])
        return np.pad(matrix, ((0, extra), (0, extra)))

    if args.class_names:
        names = [x.strip() for x in args.class_names.split(",")]
    else:
        names = class_names_near(Path(args.gt)) or []
    confusion = np.zeros((len(names), len(names)), np.int64)  # classes absent from every map still get a row
    # a class map holds a few class ids (uint8); instance labels or an image would make a confusion matrix
    # of (largest value)^2 cells (65536^2: 32 GiB) and scores of thousands of "classes"
    limit = max(len(names), 256)  # 255: the "void" many uint8 class maps use: a class of its own unless --ignore
    ignored = 0
    for g, p in pairs:
        truth, pred = _class_map(g, args.ignore), _class_map(p, predicted=True)
        if truth.shape != pred.shape:
            raise InputError(f"{g.name}: true map shape {truth.shape} differs from {p.name} shape {pred.shape}")
        # (the truth's --ignore value is no class: a uint16 map's void 65535 was refused as "not a class map")
        for path, values in ((g, truth if args.ignore is None else truth[truth != args.ignore]), (p, pred)):
            top = int(values.max(initial=0))
            if top >= limit:
                raise InputError(f"{path.name} holds the value {top}, but class maps here hold ids 0 to {limit - 1}: "
                                 "is it a class map, not instance labels or an image? (--class-names with as many "
                                 "names allows more classes)")
        if args.ignore is not None:  # pixels the truth leaves out ("void") are not scored
            scored = truth != args.ignore
            ignored += int(truth.size - scored.sum())
            truth, pred = truth[scored], pred[scored]
        confusion = grown(confusion, int(max(truth.max(initial=0), pred.max(initial=0))) + 1)
        n = confusion.shape[0]
        confusion += np.bincount((truth * n + pred).ravel(), minlength=n * n).reshape(n, n)
    table = class_scores(confusion, names)
    absent = (table["n_true"] == 0) & (table["n_pred"] == 0)  # in no map: no score, rather than a perfect one
    table.loc[absent, ["precision", "recall", "f1", "iou"]] = np.nan
    if args.class_names and len(names) != confusion.shape[0]:
        seen = np.flatnonzero(confusion.sum(axis=0) + confusion.sum(axis=1))
        beyond = [int(v) for v in seen if v >= len(names)]
        void = (f"; is {beyond[-1]} 'not annotated' (void)? give --ignore {beyond[-1]}"
                if beyond and beyond[-1] in (255, 65535) else "")
        print(f"warning: --class-names names {len(names)} classes; the maps also hold "
              f"{', '.join(str(v) for v in beyond[:6]) if beyond else 'none beyond them'}: named by their index{void}",
              file=sys.stderr)
    # a class neither named nor seen (ids between the classes used and a 255) is no row: 253 empty rows were
    keep = ~(absent & (table["class"] >= len(names))).to_numpy()
    table, confusion = table[keep].reset_index(drop=True), confusion[np.ix_(keep, keep)]
    total = int(confusion.sum())
    write_table_csv(table, out)
    labels = list(table["name"])
    cm = pd.DataFrame(confusion, columns=[f"predicted {n}" for n in labels])
    cm.insert(0, "true class", labels)
    write_table_csv(cm, out_cm)
    accuracy = float(np.trace(confusion) / total) if total else float("nan")
    left_out = f" ({ignored} pixels marked {args.ignore} left out)" if args.ignore is not None else ""
    print(f"{len(pairs)} class map(s), {total} pixels{left_out}; pixel accuracy {accuracy:.4f}")
    for row in table.itertuples():
        print(f"  {row.name:12s} precision {row.precision:.3f}  recall {row.recall:.3f}  F1 {row.f1:.3f}  IoU {row.iou:.3f}")
    print(f"wrote {out} and {out_cm}")
    return 0
