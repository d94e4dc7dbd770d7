"""Fine-tuning on a partly corrected frame: the whole frame, or only around the user's changes?

A user corrects part of a frame (here: the top-left quarter, set to the truth) and
leaves the rest as the model made it. The dock fine-tunes on the whole frame, so the
uncorrected rest teaches the model its own output again. The alternative trains only
near the changes: pixels farther than MARGIN px from every changed object are marked
-1 ("not annotated", ignored by the loss). Both are scored by F1@0.5 against the
truth, on the corrected frame and on held-out images.

Run (from the project root; about 25 min on 2 cores):
    .venv/bin/python benchmarks/experiments/finetune_region/compare_regions.py [--seeds 99 100 101 102 103]

Cases: ``simulated`` (a weak model trained for seconds on simulated nuclei, 256x256
simulated frames) and ``dsb`` (the shipped ``nuclei_fluorescence_fast`` model on
DSB2018 test images with more than 40 nuclei, held-out: other such test images).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from napari_microseg.evaluation.metrics import instance_scores
from napari_microseg.inference.segment import segment
from napari_microseg.progress import drain, run_with_text_progress
from napari_microseg.simulate.nuclei import simulate_nuclei_image
from napari_microseg.training.finetune import fine_tune_model
from napari_microseg.training.trainer import train

DSB = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "dsb2018"
MARGINS = (None, 8, 24)  # None: the whole frame (what the dock does)


def f1(truth: np.ndarray, labels) -> float:
    return float(instance_scores(truth, np.asarray(labels), thresholds=[0.5]).f1.iloc[0])


def correct_quarter(before: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The model's labels with the top-left quarter (and the nuclei reaching into it) set to the truth."""
    corrected = before.astype(np.int32).copy()
    region = np.zeros(truth.shape, bool)
    region[: truth.shape[0] // 2, : truth.shape[1] // 2] = True
    region |= np.isin(truth, np.unique(truth[region])[1:])
    corrected[region] = 0
    offset = int(corrected.max()) + 1
    corrected[region & (truth > 0)] = truth[region & (truth > 0)] + offset
    return corrected


def near_changes(corrected: np.ndarray, before: np.ndarray, margin: int) -> np.ndarray:
    """``corrected`` with -1 farther than ``margin`` px from every object touched by a change."""
    changed = corrected != before
    touched = (np.isin(corrected, np.unique(corrected[changed])) & (corrected > 0)) | \
              (np.isin(before, np.unique(before[changed])) & (before > 0)) | changed
    return np.where(ndi.binary_dilation(touched, iterations=margin), corrected, -1)


def weak_model(folder: Path) -> Path:
    pairs = [simulate_nuclei_image(shape=(128, 128), n_nuclei=15, seed=s) for s in range(4)]
    cfg = {"preset": "small", "output_mode": "three_class", "patch_size": 64, "patches_per_epoch": 16, "batch_size": 4,
           "epochs": 2, "lr": 3e-3, "seed": 0, "num_threads": 2, "val_fraction": 0.25}
    out = folder / "weak.pt"
    run_with_text_progress(train(cfg, ([p[0] for p in pairs], [p[1] for p in pairs]), out_path=out), label="weak", quiet=True)
    return out


def dsb_images(min_nuclei: int = 40) -> list[tuple[np.ndarray, np.ndarray]]:
    import tifffile

    files = sorted((DSB / "images").glob("*.tif"))
    out = []
    for f in files[::5]:  # the test split of bench_segment.py dsb
        truth = tifffile.imread(DSB / "labels" / f.name)
        if len(np.unique(truth)) - 1 >= min_nuclei and max(truth.shape) <= 520:
            image = tifffile.imread(f).astype(np.float32)
            out.append((image[..., :3].mean(-1) if image.ndim == 3 else image, truth))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[99, 100, 101, 102, 103])
    parser.add_argument("--case", choices=["simulated", "dsb"], nargs="+", default=["simulated", "dsb"])
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    settings = {"epochs": 6, "patches_per_epoch": 32, "batch_size": 4, "lr": 1e-3, "patch_size": 128,
                "val_fraction": 0.0, "early_stopping_patience": None, "num_threads": 2, "seed": 0}
    for case in args.case:
        if case == "simulated":
            base = weak_model(folder)
            frames = [simulate_nuclei_image(shape=(256, 256), n_nuclei=45, seed=s) for s in args.seeds]
            held = [simulate_nuclei_image(shape=(256, 256), n_nuclei=45, seed=s) for s in (7, 8)]
        else:
            from napari_microseg.pretrained import pretrained_path

            base = pretrained_path("nuclei_fluorescence_fast")
            images = dsb_images()
            frames, held = images[: len(args.seeds)], images[len(args.seeds): len(args.seeds) + 4]
        held_before = np.mean([f1(t, segment(str(base), im).labels) for im, t in held])
        totals: dict = {}
        for image, truth in frames:
            before = np.asarray(segment(str(base), image).labels)
            corrected = correct_quarter(before, truth)
            row = [f"{case}: frame F1 {f1(truth, before):.3f} ->"]
            for margin in MARGINS:
                labels = corrected if margin is None else near_changes(corrected, before, margin)
                result = drain(fine_tune_model(base, [image], [labels], folder / "ft.pt", settings))
                frame_f1 = f1(truth, segment(result.model_path, image).labels)
                held_f1 = np.mean([f1(t, segment(result.model_path, im).labels) for im, t in held])
                totals.setdefault(margin, []).append((frame_f1, held_f1))
                row.append(f"{'whole' if margin is None else f'{margin} px'} {frame_f1:.3f} (held {held_f1:.3f})")
            print("  ".join(row), flush=True)
        for margin, scores in totals.items():
            frame_mean, held_mean = np.mean(scores, axis=0)
            print(f"{case} {'whole frame' if margin is None else f'within {margin} px of changes'}: "
                  f"mean F1 corrected frame {frame_mean:.3f}, held-out {held_mean:.3f} (base {held_before:.3f})")


if __name__ == "__main__":
    main()
