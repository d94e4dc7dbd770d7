"""Train the models shipped in ``src/napari_microseg/pretrained/`` with the project's own trainer.

Each model gets a model card (``<name>.md``) with its data, preset, epochs and
metrics on held-out data. Usage::

    .venv/bin/python scripts/train_pretrained.py nuclei_fluorescence [--epochs 40] [--out DIR]
    .venv/bin/python scripts/train_pretrained.py ccd_classes

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


def train_nuclei_fluorescence(args: argparse.Namespace) -> None:
    from napari_microseg.progress import run_with_text_progress
    from napari_microseg.simulate.nuclei import simulate_nuclei_image
    from napari_microseg.training.trainer import train

    train_files, test_files = dsb_split()
    if args.quick:
        train_files, test_files = train_files[:20], test_files[:10]
    images, labels = [], []
    for f in train_files:
        im, lab = read_pair(f)
        images.append(im)
        labels.append(lab)
    n_sim = args.simulated
    for s in range(n_sim):
        im, lab = simulate_nuclei_image(shape=(256, 256), n_nuclei=int(np.random.default_rng(s).integers(10, 80)), seed=10_000 + s)
        images.append(im)
        labels.append(lab)
    cfg = {
        "preset": args.preset, "output_mode": "three_class", "patch_size": args.patch, "patches_per_epoch": args.patches,
        "batch_size": 8, "epochs": args.epochs, "lr": 2e-3, "seed": 0, "num_threads": args.threads, "val_fraction": 0.1,
        "early_stopping_patience": 15, "reduce_lr_patience": 5, "reduce_lr_factor": 0.3, "monitor": "val_loss",
        "data_description": f"DSB2018 stage1_train (CC0) {len(train_files)} images (sorted index % 5 != 0) + {n_sim} simulated nuclei images 256x256",
    }
    out = Path(args.out) / "nuclei_fluorescence.pt"
    start = time.perf_counter()
    result = run_with_text_progress(train(cfg, (images, labels), out_path=out), label="nuclei_fluorescence")
    minutes = (time.perf_counter() - start) / 60
    pooled = evaluate_on_dsb(out, test_files)
    card = {
        "name": "nuclei_fluorescence",
        "task": "instance segmentation of nuclei in fluorescence images (three-class: background / interior / boundary, watershed split)",
        "preset": args.preset, "epochs_run": result.epochs_run, "best_epoch": result.best_epoch, "stop_reason": result.stop_reason,
        "training_minutes_cpu": round(minutes, 1), "config": cfg,
        "held_out": {"data": f"DSB2018 {len(test_files)} test images (sorted index % 5 == 0), never seen in training",
                     **{k: round(float(v), 4) for k, v in pooled.items() if isinstance(v, (int, float, np.floating, np.integer))}},
    }
    write_card(out, card)


def write_card(model_path: Path, card: dict) -> None:
    from napari_microseg.io.atomic import atomic_write_text

    held = card.get("held_out", {})
    lines = [f"# Model card: {card['name']}", "", card["task"], "",
             f"- preset: `{card['preset']}`; epochs run: {card['epochs_run']} (best {card['best_epoch']}, {card['stop_reason']}); "
             f"{card['training_minutes_cpu']} min on a 2-core CPU",
             f"- training data: {card['config'].get('data_description', '')}",
             f"- reproduce: `.venv/bin/python scripts/train_pretrained.py {card['name']}`", "",
             "## Held-out metrics", "", f"{held.get('data', '')}", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in held.items() if k != "data"]
    lines += ["", "## Full configuration", "", "```json", json.dumps(card["config"], indent=2), "```", ""]
    atomic_write_text(model_path.with_suffix(".md"), "\n".join(lines))
    atomic_write_text(model_path.with_suffix(".json"), json.dumps(card, indent=2, default=float))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=["nuclei_fluorescence"])
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--preset", default="small")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--patches", type=int, default=512, help="patches per epoch")
    parser.add_argument("--simulated", type=int, default=150, help="simulated images added to the training set")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny run to check the script")
    args = parser.parse_args()
    {"nuclei_fluorescence": train_nuclei_fluorescence}[args.model](args)


if __name__ == "__main__":
    main()
