"""Train the models shipped in ``src/napari_microseg/pretrained/`` with the project's own trainer.

Each model gets a model card (``<name>.md``) with its data, preset, epochs and
metrics on held-out data. Usage::

    .venv/bin/python scripts/train_pretrained.py nuclei_fluorescence [--epochs 40] [--out DIR]
    .venv/bin/python scripts/train_pretrained.py ccd_classes --simulated 60 --epochs 25 --patches 256
    .venv/bin/python scripts/train_pretrained.py ccd_classes --input-range-only  # peak levels for scale warnings
    .venv/bin/python scripts/train_pretrained.py response_good_bad --simulated 2000 --epochs 60
    .venv/bin/python scripts/train_pretrained.py response_good_bad --use-thresholds-only  # flag / discard thresholds

DSB2018 split (stated in the cards): the 412 images of ``../shared/data/dsb2018``
sorted by file name; index % 5 == 0 is the held-out test set (83 images), the
rest (329) is for training, of which the trainer holds out 10 % for validation.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DSB = ROOT.parent / "shared" / "data" / "dsb2018"
OUT = ROOT / "src" / "napari_microseg" / "pretrained"
#: the DSB2018 nuclei models: the same data and recipe; ``_fast`` is the 16-filter network (~4x less arithmetic)
NUCLEI_MODELS = ("nuclei_fluorescence", "nuclei_fluorescence_fast")


def dsb_split() -> tuple[list[Path], list[Path]]:
    """(train, test) image paths of DSB2018: sorted by name, index % 5 == 0 is test."""
    files = sorted((DSB / "images").glob("*.tif"))
    if not files:
        sys.exit(f"DSB2018 images not found under {DSB}")
    test = [f for i, f in enumerate(files) if i % 5 == 0]
    train = [f for i, f in enumerate(files) if i % 5 != 0]
    return train, test


def read_pair(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import tifffile

    return tifffile.imread(path), tifffile.imread(DSB / "labels" / path.name)


def evaluate_on_dsb(model_path: Path, files: list[Path]) -> dict:
    """Pooled instance scores (AP = TP/(TP+FP+FN)) of a model on DSB2018 images."""
    from napari_microseg.evaluation.metrics import evaluate_dataset
    from napari_microseg.inference.segment import segment
    from napari_microseg.io.models import load_model

    loaded = load_model(model_path)

    def pairs():
        for f in files:
            image, gt = read_pair(f)
            pred = segment(loaded, image, measure=False).labels
            yield f.stem, gt, np.asarray(pred)

    per_image, pooled = evaluate_dataset(pairs())
    return pooled


def card_from_model_file(name: str, task: str, model_path: Path, held_out: dict) -> dict:
    """A model card from the training metadata stored in the model file itself."""
    from napari_microseg.io.models import load_model

    cfg = load_model(model_path).config
    meta = cfg.get("training", {})
    history = meta.get("history") or []
    return {"name": name, "task": task, "preset": cfg.get("model", {}).get("preset", "?"),
            "epochs_run": meta.get("epochs_run"), "best_epoch": meta.get("best_epoch"),
            "stop_reason": meta.get("stop_reason", "completed"),
            "training_minutes_cpu": round(sum(h.get("seconds", 0) for h in history) / 60, 1),
            "config": {**meta.get("config", {}), "data_description": meta.get("data", "")},
            "postprocess": cfg.get("postprocess"), "object_size": cfg.get("object_size"), "held_out": held_out}


NUCLEI_TASK = "instance segmentation of nuclei in fluorescence images (three-class: background / interior / boundary, watershed split)"


def evaluate_nuclei_fluorescence(args: argparse.Namespace) -> None:
    """Held-out DSB2018 metrics for an existing nuclei model file, written into its card."""
    _, test_files = dsb_split()
    out = Path(args.out) / f"{args.model}.pt"
    pooled = evaluate_on_dsb(out, test_files)
    held = {"data": f"DSB2018 {len(test_files)} test images (sorted index % 5 == 0), never seen in training",
            **{k: round(float(v), 4) for k, v in pooled.items()
               if isinstance(v, (int, float, np.floating, np.integer)) and v == v  # NaN: no interval for one image
               and not k.startswith(("tp@", "fp@", "fn@"))}}  # the ratios above say it; counts stay in the tables
    write_card(out, card_from_model_file(args.model, NUCLEI_TASK, out, held))


def tune_nuclei_fluorescence(args: argparse.Namespace) -> None:
    """Tune the watershed settings on DSB2018 training images (sorted index % 5 == 1) and store them in the model."""
    from napari_microseg.inference.tune import store_postprocess, tune_postprocess
    from napari_microseg.io.models import load_model
    from napari_microseg.progress import run_with_text_progress

    files = sorted((DSB / "images").glob("*.tif"))
    tune_files = [f for i, f in enumerate(files) if i % 5 == 1][: 10 if args.quick else None]
    pairs = [read_pair(f) for f in tune_files]
    out = Path(args.out) / f"{args.model}.pt"
    grid = [{"seed_method": ("distance",), "threshold": (0.5, 0.6), "seed_threshold": (0.7, 0.8), "distance_sigma": (1.0, 1.5),
             "seed_dynamics": (0.5, 1.0), "min_mean_interior": (0.0, 0.4)}]
    if load_model(out).config.get("distance_head"):  # seeds from the network's distance map (0..1 units)
        grid.append({"seed_method": ("network",), "threshold": (0.5, 0.6), "distance_sigma": (0.0, 1.0),
                     "seed_dynamics": (0.05, 0.1, 0.2), "min_mean_interior": (0.0, 0.4),
                     "grow_small_below": (0, 40)})  # 40 px: best on the trainer's validation images
    result = run_with_text_progress(tune_postprocess(out, [p[0] for p in pairs], [p[1] for p in pairs], grid=grid),
                                    label="tune")
    print(result.table.sort_values("ap", ascending=False).head(5).to_string(index=False))
    store_postprocess(out, {**result.best, "tuned_on": f"DSB2018 {len(tune_files)} training images (sorted index % 5 == 1)",
                            "tuned_ap@0.50": round(result.best_ap, 4)})


def train_nuclei_fluorescence(args: argparse.Namespace) -> None:
    from napari_microseg.progress import run_with_text_progress
    from napari_microseg.simulate.nuclei import simulate_nuclei_image
    from napari_microseg.training.trainer import train

    train_files, test_files = dsb_split()
    if args.quick:
        train_files, test_files = train_files[:20], test_files[:10]
    images, labels, names = [], [], []  # names: the model's record lists its validation images by them
    for f in train_files:
        im, lab = read_pair(f)
        images.append(im)
        labels.append(lab)
        names.append(f.name)
    n_sim = args.simulated
    for s in range(n_sim):
        im, lab = simulate_nuclei_image(shape=(256, 256), n_nuclei=int(np.random.default_rng(s).integers(10, 80)), seed=10_000 + s)
        images.append(im)
        labels.append(lab)
        names.append(f"simulated seed {10_000 + s}")
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse

    n_movies = 0 if args.quick else args.movies
    for m in range(n_movies):  # frames of simulated time-lapses (crowding, touching daughters), seeds unlike the demo's
        movie = simulate_nuclei_timelapse(n_frames=30, shape=(256, 256), n_nuclei=int(30 + 5 * m), seed=5_000 + m)
        for t in range(0, 30, 6):
            images.append(movie.fluorescence[t])
            labels.append(movie.labels[t])
            names.append(f"simulated time-lapse seed {5_000 + m} frame {t}")
    cfg = {
        "preset": args.preset, "output_mode": "three_class", "patch_size": args.patch, "patches_per_epoch": args.patches,
        "batch_size": 8, "epochs": args.epochs, "lr": args.lr, "seed": args.seed, "split_seed": 0,
        "num_threads": args.threads, "val_fraction": 0.1, "early_stopping_patience": args.patience or None,
        "reduce_lr_patience": 5, "reduce_lr_factor": 0.3,
        "lr_schedule": args.lr_schedule, "monitor": "val_loss",
        "distance_head": bool(args.distance_head), "distance_weight": 4.0, "image_sampling": args.image_sampling,
        "touching_weight": args.touching_weight,
        "data_description": f"DSB2018 stage1_train (CC0) {len(train_files)} images (sorted index % 5 != 0) + {n_sim} simulated nuclei images 256x256 + {5 * n_movies} frames of {n_movies} simulated time-lapses (seeds 5000+)",
    }
    out = Path(args.out) / f"{args.model}.pt"
    resume = str(out) if args.resume else None
    if args.init_model:
        cfg["data_description"] += f"; fine-tuned from {Path(args.init_model).name} (lr {args.lr:g}, {args.epochs} epochs)"
    run_with_text_progress(train(cfg, {"images": images, "labels": labels, "names": names}, out_path=out, resume=resume,
                                 init_model=args.init_model), label=args.model)
    tune_nuclei_fluorescence(args)
    evaluate_nuclei_fluorescence(args)


ISL = ROOT.parent / "shared" / "data" / "isl_phase_dapi"


def isl_phase_pairs() -> tuple[np.ndarray, np.ndarray]:
    """ISL phase contrast (focal plane z6) and nuclei auto-labelled from the registered DAPI stain."""
    from skimage.io import imread

    from napari_microseg.autolabel.fluorescence import autolabel_fluorescence

    phase = imread(ISL / "phase_z6.png").astype(np.float32)
    dapi = imread(ISL / "dapi.png").astype(np.float32)
    labels = autolabel_fluorescence(dapi, clear_border=False, diameter_range=(8, 80))
    return phase, labels


def train_nuclei_phase(args: argparse.Namespace) -> None:
    """Nuclei in phase contrast: simulated phase frames + ISL phase auto-labelled from DAPI (left 3/4 only)."""
    from napari_microseg.evaluation.metrics import instance_scores
    from napari_microseg.inference.segment import segment
    from napari_microseg.progress import run_with_text_progress
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse
    from napari_microseg.training.trainer import train

    phase, dapi_labels = isl_phase_pairs()
    w = phase.shape[1]
    split = 3 * w // 4
    images, labels = [phase[:, :split]], [dapi_labels[:, :split]]
    n_movies = 2 if args.quick else args.movies
    for m in range(n_movies):
        movie = simulate_nuclei_timelapse(n_frames=30, shape=(256, 256), n_nuclei=int(25 + 5 * m), seed=7_000 + m)
        for t in range(0, 30, 5):
            images.append(movie.phase[t])
            labels.append(movie.labels[t])
    cfg = {
        "preset": args.preset, "output_mode": "three_class", "patch_size": args.patch, "patches_per_epoch": args.patches,
        "batch_size": 8, "epochs": args.epochs, "lr": 2e-3, "seed": 0, "num_threads": args.threads, "val_fraction": 0.1,
        "early_stopping_patience": args.patience or None, "reduce_lr_patience": 5, "reduce_lr_factor": 0.3,
        "lr_schedule": args.lr_schedule, "monitor": "val_loss",
        "data_description": f"ISL phase_z6 left 3/4 ({phase.shape[0]}x{split}) labelled by the DAPI auto-labeller + "
                            f"{6 * n_movies} frames of {n_movies} simulated phase-contrast time-lapses (seeds 7000+)",
    }
    out = Path(args.out) / "nuclei_phase.pt"
    run_with_text_progress(train(cfg, (images, labels), out_path=out), label="nuclei_phase")
    isl_pred = np.asarray(segment(str(out), phase).labels)[:, split:]
    isl = instance_scores(dapi_labels[:, split:], isl_pred, thresholds=[0.5]).iloc[0]
    sim = simulate_nuclei_timelapse(n_frames=10, shape=(256, 256), n_nuclei=35, seed=99_000)
    sim_scores = [instance_scores(sim.labels[t], np.asarray(segment(str(out), sim.phase[t]).labels), thresholds=[0.5]).iloc[0]
                  for t in range(10)]
    held = {"data": "ISL right 1/4 (never trained on) vs DAPI auto-labels; 10 simulated phase frames (seed 99000) vs truth",
            "isl_f1@0.50": round(float(isl.f1), 4), "isl_precision@0.50": round(float(isl.precision), 4),
            "isl_recall@0.50": round(float(isl.recall), 4), "isl_true_nuclei": int(isl.n_gt),
            "simulated_f1@0.50": round(float(np.mean([r.f1 for r in sim_scores])), 4)}
    write_card(out, card_from_model_file("nuclei_phase", "instance segmentation of nuclei in phase-contrast images "
                                         "(three-class U-Net, watershed split)", out, held))


CCD_CLASSES = ["background", "glowing", "hot pixel", "cluster"]


def store_ccd_input_range(args: argparse.Namespace) -> None:
    """Record the peak levels of ``ccd_classes``' training inputs (normalised as it normalises) in the
    shipped model, so that a frame on another intensity scale (e.g. rescaled to 8 bits) gets a warning."""
    from napari_microseg.io.models import read_model_file, update_model_config
    from napari_microseg.simulate.ccd import simulate_ccd_frame
    from napari_microseg.training.normalize import input_range, normalize

    out = Path(args.out) / "ccd_classes.pt"
    spec = read_model_file(out)["config"]["normalization"]
    frames = [simulate_ccd_frame(shape=(256, 256), seed=20_000 + s, balanced=bool(s % 2),
                                 cluster_threshold=args.cluster_threshold).image for s in range(40)]
    levels = input_range(normalize(f, spec) for f in frames)
    update_model_config(out, input_range=levels, input_spread=None)
    print(f"{out.name}: input_range {levels} (40 training-like frames, seeds 20000+)")


def ccd_frames_with_tracks(n_frames: int, fraction: float) -> set[int]:
    """Indices (0..n_frames-1) of the simulated training frames that get muon and electron tracks:
    those with ``index % 10 < round(10 * fraction)`` (both layouts, spread over the set)."""
    if not 0 <= fraction <= 1 or abs(10 * fraction - round(10 * fraction)) > 1e-9:
        sys.exit(f"--tracks-fraction must be a multiple of 0.1 in [0, 1] (one in ten frames per 0.1), got {fraction}")
    return {s for s in range(n_frames) if s % 10 < round(10 * fraction)}


def train_ccd_classes(args: argparse.Namespace) -> None:
    """[C] four-class CCD model on simulated frames (half balanced layout), pedestal-normalised raw ADC."""
    from napari_microseg.autolabel.ccd import class_agreement
    from napari_microseg.inference.segment import segment
    from napari_microseg.progress import run_with_text_progress
    from napari_microseg.simulate.ccd import simulate_ccd_frame
    from napari_microseg.training.normalize import CCD_NORMALIZATION
    from napari_microseg.training.trainer import train

    n = 8 if args.quick else args.simulated
    thr = args.cluster_threshold
    with_tracks = ccd_frames_with_tracks(n, args.tracks_fraction)
    frames = [simulate_ccd_frame(shape=(256, 256), seed=20_000 + s, balanced=bool(s % 2), cluster_threshold=thr,
                                 muons=s in with_tracks, electrons=s in with_tracks) for s in range(n)]
    tracks_text = (f"; {len(with_tracks)} of them with muon and electron tracks (class cluster; frames with s % 10 < "
                   f"{round(10 * args.tracks_fraction)})" if with_tracks else "")
    cfg = {
        "preset": args.preset, "model": {"base_filters": args.base_filters} if args.base_filters else {},
        "output_mode": "multiclass", "n_classes": 4, "class_names": CCD_CLASSES,
        "normalization": dict(CCD_NORMALIZATION), "loss": "weighted_ce", "class_weights": args.class_weights,
        "patch_size": args.patch, "patches_per_epoch": args.patches, "batch_size": 8, "epochs": args.epochs, "lr": args.lr,
        "seed": 0, "num_threads": args.threads, "val_fraction": 0.1, "early_stopping_patience": 10,
        "reduce_lr_patience": 4, "reduce_lr_factor": 0.3, "monitor": "val_loss",
        "augmentation": {"intensity": False},
        "data_description": f"{n} simulated CCD frames 256x256 (seeds 20000+; odd seeds balanced layout, its glowing "
                            "band in 60 % of them (the shipped model's balanced frames all had one); "
                            f"cluster pixels from {thr:g} ADC of charge){tracks_text}, raw ADC minus the frame pedestal "
                            "(histogram mode) / 200",
    }
    out = Path(args.out) / "ccd_classes.pt"
    start = time.perf_counter()
    if args.init_model:
        cfg["data_description"] += f"; fine-tuned from {Path(args.init_model).name} (lr {args.lr:g}, {args.epochs} epochs)"
    result = run_with_text_progress(train(cfg, ([f.image for f in frames], [f.classes for f in frames]), out_path=out,
                                          init_model=args.init_model), label="ccd_classes")
    minutes = (time.perf_counter() - start) / 60
    test = [simulate_ccd_frame(shape=(256, 256), seed=90_000 + s, balanced=bool(s % 2), cluster_threshold=thr)
            for s in range(4 if args.quick else 16)]
    true = np.stack([f.classes for f in test])
    pred = np.stack([np.asarray(segment(str(out), f.image, measure=False).labels) for f in test])
    agreement = class_agreement(true, pred)
    held = {"data": f"{len(test)} held-out simulated frames 256x256 (seeds 90000+, half balanced)",
            "pixel_accuracy": round(float((true == pred).mean()), 4)}
    for rec in agreement.itertuples():
        for metric in ("precision", "recall", "f1"):
            held[f"{rec.name}_{metric}"] = round(float(getattr(rec, metric)), 4)
    card = {"name": "ccd_classes", "task": "[C] per-pixel classes of CCD frames: background, glowing, hot pixel, cluster",
            "preset": args.preset, "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
            "stop_reason": result.stop_reason, "training_minutes_cpu": round(minutes, 1), "config": cfg, "held_out": held}
    write_card(out, card)


def train_response_good_bad(args: argparse.Namespace) -> None:
    """[R] small net on simulated response images (simulated-only strategy)."""
    from napari_microseg.classify.data import simulated_response_data
    from napari_microseg.classify.trainer import train_with_strategy
    from napari_microseg.progress import run_with_text_progress

    n = 200 if args.quick else args.simulated
    train_data = simulated_response_data(n, seed=0)
    test = simulated_response_data(100 if args.quick else 600, seed=777)
    cfg = {"task": "images", "model": {"architecture": "small_cnn"}, "epochs": args.epochs, "batch_size": 64, "lr": 3e-4,
           "num_threads": args.threads, "early_stopping_patience": 15,
           "data_description": f"{n} simulated response images (balanced good/bad, seed 0), 39x42 crops, per-image min-max"}
    out = Path(args.out) / "response_good_bad.pt"
    start = time.perf_counter()
    result = run_with_text_progress(train_with_strategy("simulated", cfg, simulated=train_data, out_path=out), label="response_good_bad")
    minutes = (time.perf_counter() - start) / 60
    held, p_bad = _response_held_out(out, test)
    card = {"name": "response_good_bad", "task": "[R] whole-image good/bad classification of 16-bit response images",
            "preset": "small_cnn (352 k parameters)", "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
            "stop_reason": result.stop_reason, "training_minutes_cpu": round(minutes, 1), "config": cfg, "held_out": held}
    card["held_out"].update(_use_threshold_rates(out, test, p_bad))
    write_card(out, card)


def _response_held_out(model: Path, test) -> tuple[dict, np.ndarray]:
    """The card's held-out scores of a good/bad model at p = 0.5 (accuracy, AUC ...) and its P(bad) per image."""
    from napari_microseg.classify.evaluate import classification_report
    from napari_microseg.classify.predict import predict_proba

    prob = predict_proba(str(model), test.x)
    p_bad = prob[:, -1] if prob.ndim == 2 else prob
    report = classification_report(test.y, (p_bad >= 0.5).astype(int), ["good", "bad"], prob=p_bad)
    held = {"data": f"{len(test.y)} held-out simulated response images (seed 777)",
            **{k: round(float(v), 4) for k, v in report["summary"].items() if isinstance(v, (int, float, np.floating))}}
    return held, p_bad


def _use_threshold_rates(model: Path, test, p_bad) -> dict:
    """Held-out error rates at the model's stored 'flag' / 'discard' thresholds ([R] use cases)."""
    from napari_microseg.classify.evaluate import confusion_at_threshold
    from napari_microseg.io.models import read_model_file

    stored = read_model_file(model)["config"].get("use_thresholds") or {}
    rates = {}
    for mode in ("flag", "discard"):
        if mode in stored:
            c = confusion_at_threshold(test.y, p_bad, stored[mode])
            rates[f"{mode}_threshold"] = stored[mode]
            rates[f"{mode}_bad_passed_rate"] = round(float(c["bad_passed_rate"]), 4)
            rates[f"{mode}_good_discarded_rate"] = round(float(c["good_discarded_rate"]), 4)
    return rates


def store_response_use_thresholds(args: argparse.Namespace) -> None:
    """Choose the shipped good/bad model's 'flag' / 'discard' thresholds on fresh simulated validation images.

    Seed 555 (training used seed 0, the held-out test seed 777); the card gets the test rates at them.
    """
    from napari_microseg.classify.data import simulated_response_data
    from napari_microseg.classify.trainer import _store_use_thresholds

    out = Path(args.out) / "response_good_bad.pt"
    val = simulated_response_data(600, seed=555)
    stored = _store_use_thresholds(out, val, "600 simulated response images (seed 555)")
    test = simulated_response_data(600, seed=777)
    card = json.loads(out.with_suffix(".json").read_text())
    card["use_thresholds"] = stored
    held, p_bad = _response_held_out(out, test)  # the simulator may have changed since training: scored again
    card["held_out"] = {**held, **_use_threshold_rates(out, test, p_bad)}
    write_card(out, card)


def write_card(model_path: Path, card: dict) -> None:
    from napari_microseg.io.atomic import atomic_write_text

    held = card.get("held_out", {})
    lines = [f"# Model card: {card['name']}", "", card["task"], "",
             f"- preset: `{card['preset']}`; epochs run: {card['epochs_run']} (best {card['best_epoch']}, {card['stop_reason']}); "
             f"{card['training_minutes_cpu']} min on a 2-core CPU",
             f"- training data: {card['config'].get('data_description', '')}",
             f"- reproduce: `.venv/bin/python scripts/train_pretrained.py {card['name']}`",
             *([f"- watershed settings stored in the model: `{json.dumps(card['postprocess'])}`"] if card.get("postprocess") else []),
             *([f"- nucleus sizes it was trained on (`diameter` rescales others to them): `{json.dumps(card['object_size'])}`"]
               if card.get("object_size") else []), "",
             "## Held-out metrics", "", f"{held.get('data', '')}", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in held.items() if k != "data"]
    lines += ["", "## Full configuration", "", "```json", json.dumps(card["config"], indent=2), "```", ""]
    atomic_write_text(model_path.with_suffix(".md"), "\n".join(lines))
    atomic_write_text(model_path.with_suffix(".json"), json.dumps(card, indent=2, default=float))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=[*NUCLEI_MODELS, "nuclei_phase", "ccd_classes", "response_good_bad"])
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--input-range-only", action="store_true",
                        help="ccd_classes: only record the training inputs' peak levels in the shipped model")
    parser.add_argument("--use-thresholds-only", action="store_true",
                        help="response_good_bad: only choose and store the 'flag' / 'discard' thresholds of the shipped model")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--patches", type=int, default=512, help="patches per epoch")
    parser.add_argument("--image-sampling", choices=("pixels", "objects", "mixed"), default="pixels",
                        help="nuclei_fluorescence: images give patches in proportion to their pixels or to their nuclei")
    parser.add_argument("--simulated", type=int, default=150, help="simulated images added to the training set")
    parser.add_argument("--movies", type=int, default=8, help="simulated time-lapses whose frames join the training set")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0,
                        help="nuclei models: seed of patches, augmentation and new weights; the validation split stays seed 0's")
    parser.add_argument("--lr", type=float, default=2e-3, help="nuclei_fluorescence, ccd_classes: learning rate")
    parser.add_argument("--lr-schedule", choices=("plateau", "cosine"), default="plateau",
                        help="nuclei models: lr falls on plateaus, or along a cosine to 1e-6 over --epochs")
    parser.add_argument("--patience", type=int, default=15,
                        help="nuclei models: early-stopping patience in epochs (0: never stop early)")
    parser.add_argument("--base-filters", type=int, default=None, help="ccd_classes: filters of the first level (preset's default otherwise)")
    parser.add_argument("--cluster-threshold", type=float, default=60.0, help="ccd_classes: ADC of charge from which a pixel is 'cluster'")
    parser.add_argument("--tracks-fraction", type=float, default=0.0,
                        help="ccd_classes: share of simulated frames with muon and electron tracks (class cluster)")
    parser.add_argument("--class-weights", default="auto", choices=["auto", "sqrt"], help="ccd_classes: weighted-CE class weights")
    parser.add_argument("--distance-head", action="store_true",
                        help="nuclei_fluorescence: add a distance-regression output (watershed seeds from it)")
    parser.add_argument("--touching-weight", type=float, default=0.0,
                        help="nuclei_fluorescence: extra loss weight on the seams between touching nuclei (0: off)")
    parser.add_argument("--quick", action="store_true", help="tiny run to check the script")
    parser.add_argument("--resume", action="store_true", help="continue the model's last state up to --epochs")
    parser.add_argument("--init-model", default=None, help="fine-tune from this model file (new data, fresh best tracking)")
    parser.add_argument("--widen", type=float, default=None, metavar="FACTOR",
                        help="with --init-model: first widen it FACTOR times (function-preserving, models.widen) and train that")
    parser.add_argument("--evaluate-only", action="store_true", help="only (re)write the card of an existing model file")
    parser.add_argument("--tune-only", action="store_true", help="nuclei_fluorescence: only tune and store the watershed settings, then evaluate")
    args = parser.parse_args()
    if args.widen:
        if not args.init_model:
            sys.exit("--widen needs --init-model")
        from napari_microseg.models.widen import widen_model_file

        import tempfile

        # outside --out: the package's pretrained/ folder ships every .pt in it
        widened = Path(tempfile.mkdtemp(prefix="microseg-widen-")) / f"{Path(args.init_model).stem}.widened{args.widen:g}.pt"
        widen_model_file(args.init_model, widened, factor=args.widen)
        print(f"widened {args.init_model} x{args.widen} -> {widened}")
        args.init_model = str(widened)
    if args.tune_only:
        if args.model not in NUCLEI_MODELS:
            sys.exit("--tune-only is implemented for " + " and ".join(NUCLEI_MODELS))
        tune_nuclei_fluorescence(args)
        evaluate_nuclei_fluorescence(args)
        return
    if args.evaluate_only:
        if args.model not in NUCLEI_MODELS:
            sys.exit("--evaluate-only is implemented for " + " and ".join(NUCLEI_MODELS))
        evaluate_nuclei_fluorescence(args)
        return
    {"nuclei_fluorescence": train_nuclei_fluorescence, "nuclei_fluorescence_fast": train_nuclei_fluorescence,
     "nuclei_phase": train_nuclei_phase, "ccd_classes": store_ccd_input_range if args.input_range_only else train_ccd_classes,
     "response_good_bad": store_response_use_thresholds if args.use_thresholds_only else train_response_good_bad}[args.model](args)


if __name__ == "__main__":
    main()
