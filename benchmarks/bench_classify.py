"""Classification benchmarks on simulated data ([R], [T], [P]), sized for a small CPU.

Run:  .venv/bin/python benchmarks/bench_classify.py [--part R T P] [--out bench_classify.json]

[R]  the small net (352 k parameters), simulated-only training, early stopping on a
     simulated validation set, then accuracy / AUC / per-subclass accuracy on held-out
     simulated images (other seeds).
[T]  LipNet-4 (masked 28 x 28 crops, oversampling + 20 % majority undersampling, kornia
     augmentation, label smoothing) vs the SVM baseline (hand-made features, class weights)
     on particles of simulated TEM images (lamellarity); row-normalised recall per class.
[P]  hole task: the same particles seen in 1 view vs 2 views 90 deg apart (the first view
     of the 2-view set is the 1-view set) vs the first view fed twice; validation accuracy.

The reference figures in METHODS come from far larger sets (e.g. 60,000 / 20,000
profiles); the sizes used here are printed with the results and stored in the JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np


def _train(cfg, data, val, out):
    from napari_microseg.classify.trainer import train_classifier
    from napari_microseg.progress import run_with_text_progress

    t = time.perf_counter()
    res = run_with_text_progress(train_classifier(cfg, data, val, out_path=out), stream=io.StringIO())
    return res, time.perf_counter() - t


def bench_r(args, tmp: Path) -> dict:
    from napari_microseg.classify.data import simulated_response_data
    from napari_microseg.classify.evaluate import classification_report, per_subclass_accuracy, choose_threshold
    from napari_microseg.classify.predict import predict_proba

    t = time.perf_counter()
    train = simulated_response_data(args.r_train, seed=0)
    val = simulated_response_data(args.r_val, seed=1)
    test = simulated_response_data(args.r_test, seed=2)
    t_sim = time.perf_counter() - t
    cfg = {"model": {"architecture": "small_cnn"}, "epochs": args.r_epochs, "batch_size": 64, "lr": 1e-3, "device": "cpu",
           "seed": 0, "num_threads": args.threads, "early_stopping_patience": 10, "augment": "hflip"}
    res, secs = _train(cfg, train, val, tmp / "r.pt")
    prob = predict_proba(res.model_path, test.x)
    rep = classification_report(test.y, prob.argmax(1), test.class_names, prob=prob)
    sub = per_subclass_accuracy(test.y, prob.argmax(1), test.subclass)
    flag = choose_threshold(test.y, prob[:, 1], "flag", 0.05)
    discard = choose_threshold(test.y, prob[:, 1], "discard", 0.05)
    return {"sizes": {"train": args.r_train, "val": args.r_val, "test": args.r_test}, "epochs_run": res.epochs_run,
            "best_epoch": res.best_epoch, "train_seconds": round(secs, 1), "simulate_seconds": round(t_sim, 1),
            "test_accuracy": rep["summary"]["accuracy"], "test_auc": rep["summary"]["auc"],
            "per_subclass_accuracy": dict(zip(sub["subclass"], sub["accuracy"].round(3))),
            "flag_threshold_5pct_bad_passed": {k: flag[k] for k in ("threshold", "bad_passed_rate", "good_discarded_rate")},
            "discard_threshold_5pct_good_discarded": {k: discard[k] for k in ("threshold", "bad_passed_rate", "good_discarded_rate")}}


def bench_t(args, tmp: Path) -> dict:
    from napari_microseg.classify.baseline import features_from_crops, train_svm_baseline
    from napari_microseg.classify.data import simulated_liposome_data
    from napari_microseg.classify.evaluate import classification_report

    t = time.perf_counter()
    train = simulated_liposome_data(args.t_train_images, task="lamellarity", mode="masked", seed=0)
    test = simulated_liposome_data(args.t_test_images, task="lamellarity", mode="masked", seed=1)
    # the SVM sees larger masked crops (its features need resolution): same particles, same seeds
    train64 = simulated_liposome_data(args.t_train_images, task="lamellarity", mode="masked", size=(64, 64), seed=0)
    test64 = simulated_liposome_data(args.t_test_images, task="lamellarity", mode="masked", size=(64, 64), seed=1)
    t_sim = time.perf_counter() - t
    names = train.class_names
    out = {"sizes": {"train_particles": len(train), "test_particles": len(test),
                     "train_class_counts": dict(zip(names, train.counts().tolist())),
                     "test_class_counts": dict(zip(names, test.counts().tolist()))}, "simulate_seconds": round(t_sim, 1)}
    cfg = {"task": "objects", "model": {"architecture": "lipnet", "n_conv": 4}, "epochs": args.t_epochs, "batch_size": 32,
           "lr": 1e-3, "device": "cpu", "seed": 0, "num_threads": args.threads, "early_stopping_patience": 8,
           "oversample": True, "undersample_fraction": 0.2, "augment": "affine", "label_smoothing": 0.1, "val_fraction": 0.2}
    res, secs = _train(cfg, train, None, tmp / "t.pt")
    from napari_microseg.classify.predict import predict_proba

    prob = predict_proba(res.model_path, test.x)
    rep = classification_report(test.y, prob.argmax(1), names)
    out["lipnet4"] = {"epochs_run": res.epochs_run, "train_seconds": round(secs, 1), "accuracy": rep["summary"]["accuracy"],
                      "recall_row_normalised": dict(zip(names, np.diag(rep["confusion_normalized"]).round(3).tolist())),
                      "confusion": rep["confusion"].tolist()}
    t = time.perf_counter()
    clf = train_svm_baseline(features_from_crops(train64.x), train64.y)
    pred = clf.predict(features_from_crops(test64.x))
    rep = classification_report(test64.y, pred, names)
    out["svm"] = {"seconds": round(time.perf_counter() - t, 1), "accuracy": rep["summary"]["accuracy"],
                  "recall_row_normalised": dict(zip(names, np.diag(rep["confusion_normalized"]).round(3).tolist())),
                  "confusion": rep["confusion"].tolist()}
    return out


def bench_p(args, tmp: Path) -> dict:
    from napari_microseg.classify.data import ClassificationData, simulated_profile_data

    out = {"sizes": {"train": args.p_train, "val": args.p_val}, "hole_radius": args.p_hole}
    t = time.perf_counter()
    sets = {}
    if set(args.p_sets) & {"1_view", "2_views_90deg", "same_view_twice"}:
        tr2 = simulated_profile_data(args.p_train, task="hole", n_views=2, seed=0, hole_radius=args.p_hole)
        va2 = simulated_profile_data(args.p_val, task="hole", n_views=2, seed=1, hole_radius=args.p_hole)
        sets = {
            "1_view": (ClassificationData(tr2.x[:, :1], tr2.y, tr2.class_names), ClassificationData(va2.x[:, :1], va2.y, va2.class_names)),
            "2_views_90deg": (tr2, va2),
            # METHODS' check: the same view fed twice should score like a single view
            "same_view_twice": (ClassificationData(tr2.x[:, [0, 0]], tr2.y, tr2.class_names), ClassificationData(va2.x[:, [0, 0]], va2.y, va2.class_names)),
        }
    if "chirality_centred" in args.p_sets:  # the study's set-up: 2 views, centred particles, more points, no pooling
        chiral = dict(task="chirality", n_views=2, offset_sd=0.0, data_points=args.p_points)
        sets["chirality_centred"] = (simulated_profile_data(args.p_train, seed=0, **chiral),
                                     simulated_profile_data(args.p_val, seed=1, **chiral))
    out["simulate_seconds"] = round(time.perf_counter() - t, 1)
    for name, (tr, va) in sets.items():
        if name not in args.p_sets:
            continue
        model = {"architecture": "profile_cnn", **({"pooling": False} if name == "chirality_centred" else {})}
        cfg = {"task": "profiles", "model": model, "epochs": args.p_epochs, "batch_size": 64,
               "lr": args.p_lr, "optimizer": args.p_optimizer, "augment": "none", "device": "cpu", "seed": 0,
               "num_threads": args.threads, "early_stopping_patience": args.p_patience}
        res, secs = _train(cfg, tr, va, tmp / f"p_{name}.pt")
        best = min(res.history, key=lambda h: h["val_loss"])
        out[name] = {"val_accuracy_at_best_val_loss": round(best["val_accuracy"], 4),
                                "max_val_accuracy": round(max(h["val_accuracy"] for h in res.history), 4),
                                "epochs_run": res.epochs_run, "train_seconds": round(secs, 1),
                                "val_accuracy_per_epoch": [round(h["val_accuracy"], 3) for h in res.history]}
    out["optimizer"] = f"{args.p_optimizer} lr {args.p_lr}"
    return out


def main() -> None:
    import tempfile

    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", nargs="+", default=["R", "T", "P"], choices=["R", "T", "P"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--r-train", type=int, default=400)
    ap.add_argument("--r-val", type=int, default=150)
    ap.add_argument("--r-test", type=int, default=300)
    ap.add_argument("--r-epochs", type=int, default=25)
    ap.add_argument("--t-train-images", type=int, default=30)
    ap.add_argument("--t-test-images", type=int, default=10)
    ap.add_argument("--t-epochs", type=int, default=30)
    ap.add_argument("--p-train", type=int, default=8000)
    ap.add_argument("--p-val", type=int, default=2000)
    ap.add_argument("--p-epochs", type=int, default=60)
    ap.add_argument("--p-hole", type=float, default=0.1)
    ap.add_argument("--p-sets", nargs="+", default=["1_view", "2_views_90deg", "same_view_twice"],
                    choices=["1_view", "2_views_90deg", "same_view_twice", "chirality_centred"])
    ap.add_argument("--p-points", type=int, default=64, help="profile samples for chirality_centred")
    ap.add_argument("--p-patience", type=int, default=20)
    ap.add_argument("--p-optimizer", default="adadelta")
    ap.add_argument("--p-lr", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=Path("bench_classify.json"))
    args = ap.parse_args()
    torch.set_num_threads(min(2, args.threads))
    results = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory() as d:
        for part, fn in (("R", bench_r), ("T", bench_t), ("P", bench_p)):
            if part in args.part:
                t = time.perf_counter()
                results[part] = fn(args, Path(d))
                results[part]["total_seconds"] = round(time.perf_counter() - t, 1)
                print(part, json.dumps(results[part], indent=1, default=float), flush=True)
    args.out.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
