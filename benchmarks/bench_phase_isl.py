"""The shipped ``nuclei_phase`` model on real phase contrast: the ISL field's right quarter (never trained
on; focal plane z6) scored against nuclei auto-labelled from its registered DAPI stain, F1 at IoU 0.5 ([N]
matching), as ``scripts/train_pretrained.py nuclei_phase`` scores it when training.

Run: .venv/bin/python benchmarks/bench_phase_isl.py [--model nuclei_phase]
Prints F1, precision, recall and the numbers of true and predicted nuclei as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="nuclei_phase")
    args = parser.parse_args()
    from train_pretrained import isl_phase_pairs

    from napari_microseg.evaluation.metrics import instance_scores
    from napari_microseg.inference.segment import segment
    from napari_microseg.pretrained import resolve_model

    phase, dapi_labels = isl_phase_pairs()
    split = 3 * phase.shape[1] // 4  # the model trained on the left 3/4
    predicted = np.asarray(segment(str(resolve_model(args.model)), phase).labels)[:, split:]
    scores = instance_scores(dapi_labels[:, split:], predicted, thresholds=[0.5]).iloc[0]
    print(json.dumps({"model": args.model, "isl_f1@0.50": round(float(scores.f1), 4),
                      "precision@0.50": round(float(scores.precision), 4), "recall@0.50": round(float(scores.recall), 4),
                      "true_nuclei": int(scores.n_gt), "predicted": int(scores.n_pred)}, indent=2))


if __name__ == "__main__":
    main()
