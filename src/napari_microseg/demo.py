"""The main job on an embedded default: simulate a nuclei time-lapse, train briefly
(fine-tune the shipped model on a second simulated time-lapse), segment the first with the
trained model, track it, export tables and a summary picture, and score against the truth.

Qt-free; ``microseg demo`` calls :func:`run_demo`, and ``--gui`` opens the
result in napari afterwards (``napari_microseg.widgets.demo_viewer``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generator

import numpy as np

from .io.atomic import atomic_path, atomic_write_text
from .progress import Progress, drain

DEFAULT_MODEL = "nuclei_fluorescence"
#: the demo's starting model where the network runs in float32 on a CPU (3x less arithmetic)
FAST_MODEL = "nuclei_fluorescence_fast"


def default_demo_model(device: str = "auto") -> str:
    """``nuclei_fluorescence`` where inference runs in bfloat16 (CUDA, CPUs with AMX / AVX512-BF16),
    else ``nuclei_fluorescence_fast``, which trains and segments about 3x faster in float32."""
    from .device import resolve_device, resolve_precision

    return DEFAULT_MODEL if resolve_precision("auto", resolve_device(device)) == "bfloat16" else FAST_MODEL


@dataclass
class DemoResult:
    """Paths written by the demo and the scores against the simulation's truth."""

    out: Path
    files: dict = field(default_factory=dict)
    scores: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    simulation: object = None
    segmentation: object = None
    tracking: object = None
    base_model: Path | None = None  # the model the demo started from


def run_demo(out: str | Path = "demo_out", n_frames: int = 30, size: int = 256, n_nuclei: int = 35, seed: int = 0,
             model: str | None = None, stage_shift_sd: float = 0.0, train_epochs: int = 2, train_frames: int = 6,
             train_patches: int = 48) -> Generator[Progress, None, DemoResult]:
    """Run the demo pipeline; a generator of :class:`Progress` returning a :class:`DemoResult`.

    Parameters
    ----------
    out : output folder: new, empty, or a previous demo's (its files are replaced atomically);
        a folder holding other files is refused (:func:`check_demo_folder`).
    n_frames, size, n_nuclei : time-lapse of ``n_frames`` frames of ``size`` x ``size`` pixels
        with about ``n_nuclei`` nuclei (divisions, deaths, entering/leaving included).
    seed : simulation seed (the training time-lapse uses ``seed + 1``, so the scored movie
        is never trained on).
    model : shipped model name or model file path: the model that is fine-tuned (None:
        :func:`default_demo_model`).
    stage_shift_sd : global stage shift between frames (pixels, sd); 0 = none.
    train_epochs : epochs of the brief fine-tune (0: segment with ``model`` as it is).
    train_frames : frames of the simulated training time-lapse (true labels as annotations).
    train_patches : patches per training epoch (patches of up to 128 x 128 pixels).
    """
    from .inference.segment import segment_image
    from .io.images import LABELS_SOFTWARE, write_tiff
    from .pretrained import resolve_model
    from .simulate.nuclei import simulate_nuclei_timelapse
    from .tracking.export import CTC_FOLDER, write_counts_csv, write_ctc, write_tracks_csv
    from .tracking.metrics import ctc_scores
    from .tracking.track import finalize, track

    from .errors import InputError

    out = Path(out)
    check_demo_folder(out)
    model_path = base_model_path = resolve_model(model or default_demo_model())
    if train_epochs > 0 and base_model_path.resolve() == (out / "model.pt").resolve():
        raise InputError(f"--model {base_model_path} is the file the brief training writes; copy it elsewhere "
                         "or choose another --out")
    from .io.models import read_model_config

    chosen = read_model_config(base_model_path)
    if chosen.get("task") or chosen.get("output_mode", "binary") not in ("binary", "three_class"):
        # a classifier or a class model (CCD) cannot segment nuclei: said before anything is written
        kind = f"{chosen['task']} classifier" if chosen.get("task") else f"{chosen.get('output_mode')} class model"
        raise InputError(f"--model {base_model_path.name} is a{'n' if kind[0] in 'aeiou' else ''} {kind}: the demo "
                         "segments and tracks nuclei with a nuclei segmentation model (binary or three-class, e.g. "
                         "nuclei_fluorescence)")
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).write_text("written by `microseg demo`: the files beside it are the demo's and it may "
                                   "replace them; without demo_report.json they are a demo stopped before its end\n")
    # a previous demo's files go first (the folder holds nothing else, see check_demo_folder): a run stopped
    # half-way then leaves its own files only, without a report, never another run's labels and tracks beside
    # this run's movie; its model kept where it is the model this run starts from
    import shutil

    for name in sorted(DEMO_FILES):
        earlier = out / name
        if earlier.is_dir() and not earlier.is_symlink():
            shutil.rmtree(earlier)
        elif (earlier.is_file() or earlier.is_symlink()) and earlier.resolve() != base_model_path.resolve():
            earlier.unlink()
    result = DemoResult(out=out, base_model=base_model_path)
    total_steps = 6
    clock = time.perf_counter()

    yield Progress(0, total_steps, "simulating a nuclei time-lapse ...")
    sim = simulate_nuclei_timelapse(n_frames=n_frames, shape=(size, size), n_nuclei=n_nuclei, seed=seed,
                                    stage_shift_sd=stage_shift_sd)
    result.simulation = sim
    write_tiff(out / "movie.tif", sim.fluorescence, overwrite=True)
    write_tiff(out / "truth_labels.tif", sim.labels, overwrite=True, software=LABELS_SOFTWARE)
    result.files["movie"] = out / "movie.tif"
    result.seconds["simulate"] = time.perf_counter() - clock

    if train_epochs > 0:
        yield Progress(1, total_steps, f"training briefly: fine-tuning {model_path.name} on {train_frames} simulated frames ...")
        clock = time.perf_counter()
        training = simulate_nuclei_timelapse(n_frames=train_frames, shape=(size, size), n_nuclei=n_nuclei, seed=seed + 1,
                                             stage_shift_sd=stage_shift_sd)
        trained = yield from _relay_training(_brief_fine_tune(model_path, training, out / "model.pt", train_epochs,
                                                              train_patches, seed, size), 1, total_steps, result)
        if trained.model_path is None:
            raise RuntimeError("the brief training saved no model")
        model_path = Path(trained.model_path)
        result.files["model"] = model_path
        if trained.last_path and Path(trained.last_path).is_file():
            Path(trained.last_path).unlink()  # the resumable state: the demo never resumes, 23 MB saved
        result.scores["training"] = {"epochs_run": trained.epochs_run, "frames": train_frames, "device": trained.device,
                                     "history": trained.history}
        result.seconds["train"] = time.perf_counter() - clock

    yield Progress(2, total_steps, f"segmenting {n_frames} frames with {model_path.name} ...")
    clock = time.perf_counter()
    seg = yield from _relay(segment_image(str(model_path), sim.fluorescence, device="auto"), 2, total_steps, "segmenting")
    result.segmentation = seg
    labels = np.asarray(seg.labels)
    write_tiff(out / "labels.tif", labels, overwrite=True, software=LABELS_SOFTWARE)
    from .io.tables import write_csv

    write_csv(out / "objects.csv", seg.objects, leading=["t", "label", "y", "x", "area"])
    result.files.update(labels=out / "labels.tif", objects=out / "objects.csv")
    result.seconds["segment"] = time.perf_counter() - clock

    yield Progress(3, total_steps, "tracking ...")
    clock = time.perf_counter()
    shift = "objects" if stage_shift_sd > 0 else None
    tracks = yield from _relay(track(labels, sim.fluorescence, config="cell", stage_shift=shift), 3, total_steps, "tracking")
    result.tracking = tracks
    write_tracks_csv(tracks, out / "tracks.csv")
    write_counts_csv(tracks, out / "counts.csv", n_frames=n_frames)
    ctc_dir = out / CTC_FOLDER
    write_ctc(tracks, ctc_dir, overwrite=True)
    write_tiff(out / "labels_by_track.tif", tracks.relabelled.astype(np.uint32), overwrite=True,
               software=LABELS_SOFTWARE)
    result.files.update(tracks=out / "tracks.csv", counts=out / "counts.csv", ctc=ctc_dir,
                        labels_by_track=out / "labels_by_track.tif")
    result.seconds["track"] = time.perf_counter() - clock

    yield Progress(4, total_steps, "scoring against the simulation's truth ...")
    clock = time.perf_counter()
    truth = finalize(sim.tracks[["track_id", "t", "y", "x", "parent_track_id", "label"]], n_frames=n_frames, labels=sim.labels)
    write_tracks_csv(truth, out / "truth_tracks.csv")
    result.scores["tracking_with_own_segmentation"] = _pick(ctc_scores(truth, tracks))
    # tracking the true masks isolates the linker's accuracy from the segmentation's
    tracks_on_truth = drain(track(sim.labels, sim.fluorescence, config="cell", stage_shift=shift))
    result.scores["tracking_with_true_segmentation"] = _pick(ctc_scores(truth, tracks_on_truth))
    result.scores["segmentation"] = _segmentation_scores(sim.labels, labels)
    if "training" in result.scores:
        # what the brief training changed: the same movie segmented by the model it started from
        before = drain(segment_image(str(base_model_path), sim.fluorescence, device="auto"))
        result.scores["segmentation_before_training"] = _segmentation_scores(sim.labels, np.asarray(before.labels))
    true_counts = sim.tracks.groupby("t").size().reindex(range(n_frames), fill_value=0)
    pred_counts = seg.counts.set_index("t")["count"].reindex(range(n_frames), fill_value=0)
    result.scores["count_mean_abs_error"] = float(np.abs(true_counts.to_numpy() - pred_counts.to_numpy()).mean())
    result.seconds["score"] = time.perf_counter() - clock

    yield Progress(5, total_steps, "drawing the summary picture ...")
    summary_png = out / "summary.png"
    draw_summary(summary_png, sim.fluorescence, labels, tracks, true_counts.to_numpy(), pred_counts.to_numpy(), result.scores)
    result.files["summary"] = summary_png
    report = {"files": {k: str(v) for k, v in result.files.items()}, "scores": result.scores,
              "seconds": {k: round(v, 2) for k, v in result.seconds.items()}, "model": str(model_path),
              "base_model": str(base_model_path), "simulation": sim.params}
    atomic_write_text(out / "demo_report.json", json.dumps(report, indent=2, default=_json_default))
    result.files["report"] = out / "demo_report.json"
    yield Progress(6, total_steps, "done")
    return result


#: what the demo writes into its folder
DEMO_FILES = {"movie.tif", "truth_labels.tif", "model.pt", "model.pt.last.pt", "labels.tif", "objects.csv",
              "tracks.csv", "counts.csv", "truth_tracks.csv", "ctc_RES", "labels_by_track.tif", "summary.png",
              "demo_report.json"}

#: written first into a demo's folder: the mark that a demo (not the user) owns the files in it
DEMO_MARKER = ".microseg_demo"


def check_demo_folder(out: Path) -> None:
    """Refuse an output folder the demo could harm: one that holds files, unless a demo wrote them
    (its mark, :data:`DEMO_MARKER`, written first, so a demo stopped half-way is still known; or the
    report of a demo from before the mark) and they are only a demo's files. A user's own
    ``model.pt`` or ``tracks.csv`` in a folder of their own is never replaced."""
    from .errors import InputError

    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    if not out.is_dir():
        return
    present = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    if not present:
        return
    others = [name for name in present if name not in DEMO_FILES]
    if others:
        raise InputError(f"{out} holds files that are not a previous demo's ({', '.join(others[:3])}"
                         f"{', ...' if len(others) > 3 else ''}); choose another --out (a new or empty folder, "
                         "or one a demo wrote)")
    if not ((out / DEMO_MARKER).is_file() or (out / "demo_report.json").is_file()):
        raise InputError(f"{out} holds {', '.join(present[:3])}{', ...' if len(present) > 3 else ''} that no demo "
                         "wrote there (names a demo uses, but not its mark); choose another --out (a new or empty "
                         "folder, or one a demo wrote)")


def _relay(gen: Generator, step: int, total_steps: int, label: str) -> Generator[Progress, None, object]:
    """Run a sub-step's progress generator, re-yielding its events as one step of the demo's progress."""
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if getattr(event, "total", 0):
            yield Progress(step, total_steps, f"{label}: {event.message or f'{event.done}/{event.total}'}")


def _brief_fine_tune(base: Path, training, out_path: Path, epochs: int, patches: int, seed: int, size: int):
    """Fine-tune ``base`` on a simulated time-lapse's frames and true labels (a TrainEvent generator)."""
    from .training.finetune import fine_tune_model

    config = {"epochs": int(epochs), "patches_per_epoch": int(patches), "batch_size": 8, "lr": 3e-4,
              "patch_size": min(128, size // 32 * 32), "seed": int(seed), "early_stopping_patience": None,
              "reduce_lr_patience": None, "val_fraction": 0.2,
              "data_description": f"microseg demo: {len(training.labels)} simulated frames (seed {seed + 1}), true labels"}
    return fine_tune_model(base, list(training.fluorescence), list(training.labels), out_path, config)


def _relay_training(gen: Generator, step: int, total_steps: int, result: DemoResult) -> Generator[Progress, None, object]:
    """Relay the trainer's events as one demo step; keep the running loss per step for the summary picture."""
    losses = result.scores.setdefault("training_curve", [])
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if event.kind == "step" and event.train_loss is not None:
            losses.append([round(event.done / max(event.n_steps, 1), 4), float(event.train_loss)])
        yield Progress(step, total_steps, f"training: {event.message}")


def _pick(scores: dict) -> dict:
    keys = ("TRA", "DET", "LNK", "division_precision", "division_recall", "division_f1", "true_divisions", "found_divisions")
    return {k: (float(scores[k]) if k in scores and scores[k] is not None else None) for k in keys}


def _segmentation_scores(truth: np.ndarray, pred: np.ndarray) -> dict:
    from .evaluation.metrics import evaluate_dataset

    _, pooled = evaluate_dataset((f"t{t}", truth[t], pred[t]) for t in range(truth.shape[0]))
    keys = ("ap@0.50", "f1@0.50", "precision@0.50", "recall@0.50", "ap@0.75", "map", "pixel_dice", "object_f1")
    return {k: float(pooled[k]) for k in keys if k in pooled}


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def division_frames(table):
    """Divisions per frame of a tracks table or result (a pandas Series, frame -> count, frames with
    divisions only): ``counts.csv``'s ``divisions`` column, one per mother (not one per daughter)."""
    from .tracking.export import counts_table

    divisions = counts_table(table).set_index("t")["divisions"]
    return divisions[divisions > 0]


def draw_summary(path: Path, movie: np.ndarray, labels: np.ndarray, tracks, true_counts: np.ndarray,
                 pred_counts: np.ndarray, scores: dict, frame: int | None = None, tail: int = 12) -> Path:
    """Write a PNG: one frame with label outlines and track tails, and counts over time (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from skimage.segmentation import find_boundaries

    t = movie.shape[0] - 1 if frame is None else frame
    img = movie[t].astype(np.float32)
    lo, hi = np.percentile(img, [1, 99.7])
    img = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.dstack([img] * 3)
    rgb[find_boundaries(labels[t], mode="inner")] = (1.0, 0.85, 0.1)
    curve = scores.get("training_curve") or []
    if curve:
        fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15.5, 5), gridspec_kw={"width_ratios": [1, 1.1, 0.9]})
        _draw_training(ax3, curve, scores.get("training", {}).get("history", []), scores)
    else:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 5), gridspec_kw={"width_ratios": [1, 1.1]})
    ax1.imshow(rgb, interpolation="nearest")
    table = tracks.table
    cmap = plt.get_cmap("tab20")
    for track_id, rows in table[(table.t <= t) & (table.t > t - tail)].groupby("track_id"):
        rows = rows.sort_values("t")
        if rows.t.max() == t:
            ax1.plot(rows.x, rows.y, "-", color=cmap(int(track_id) % 20), lw=1.5)
    ax1.set_title(f"frame {t}: outlines (yellow) and track tails ({tail} frames)")
    ax1.axis("off")
    ax2.plot(true_counts, "k-", lw=2, label="true nuclei")
    ax2.plot(pred_counts, "o-", color="tab:orange", ms=3, label="segmented")
    divisions = division_frames(tracks)  # the result: its frame count, no rebuilding of the table
    if len(divisions):
        ax2.bar(divisions.index, divisions.to_numpy(), color="tab:green", alpha=0.5, label="divisions (tracked)")
    ax2.set_xlabel("frame")
    ax2.set_ylabel("count")
    tra = scores.get("tracking_with_own_segmentation", {}).get("TRA")
    ap50 = scores.get("segmentation", {}).get("ap@0.50")
    subtitle = f"TRA {tra:.3f}" if tra is not None else ""
    if ap50 is not None:
        subtitle += f", AP@0.5 {ap50:.3f}"
    ax2.set_title(f"counts over time  ({subtitle})")
    ax2.legend(loc="best")  # the division bars sit at the bottom right in a growing population
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def _draw_training(ax, curve: list, history: list, scores: dict) -> None:
    """The brief training's loss: running training loss per step and validation loss per epoch."""
    steps = np.asarray(curve, dtype=float)
    ax.plot(steps[:, 0], steps[:, 1], "-", color="tab:blue", lw=1.5, label="training loss (running mean per epoch)")
    val = [(row["epoch"], row["val_loss"]) for row in history if row.get("val_loss") is not None]
    if val:
        ax.plot(*zip(*val), "s--", color="tab:red", ms=6, label="validation loss")
    before = scores.get("segmentation_before_training", {}).get("ap@0.50")
    after = scores.get("segmentation", {}).get("ap@0.50")
    title = "brief training (fine-tune)"
    if before is not None and after is not None:
        title += f": AP@0.5 {before:.3f} -> {after:.3f}"
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
