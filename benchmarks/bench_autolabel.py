"""Validations of the auto-labellers on real data (napari_microseg.autolabel).

Run: ``.venv/bin/python benchmarks/bench_autolabel.py [dsb|isl|ccd|ccdsim|memory|all] [--step 5] [--minutes 4] [--size 4096]``

1. ``dsb``: object-level F1 at IoU 0.5 of :func:`autolabel_fluorescence` against the
   true DSB2018 masks, pooled over the images with sorted index % step == 0
   (step 5: 83 of 412 images). Settings for DSB2018: ``clear_border=False`` (the true
   masks include border nuclei) and ``diameter_range=(4, 80)`` (DSB nuclei reach ~80 px);
   everything else is the default.
2. ``isl``: auto-label the DAPI stain of the ISL field, pair it with the phase-contrast
   plane z6, train the default U-Net (preset "small", three_class) on the left 3/4 of the
   phase image only, for a few minutes on the CPU, and score the right 1/4 against the
   DAPI auto-labels (F1 at IoU 0.5). Writes a PNG with outlines.
3. ``ccd``: clusters found on the two Fe-55 frames vs the dark frame (taps auto-detected).
4. ``ccdsim``: per-class pixel agreement with the simulator's exact class map.
5. ``memory`` (not in ``all``): peak memory of :func:`autolabel_frame_iter` on one simulated
   uint16 frame of ``--size`` px square, per step (bytes per pixel of the frame, traced numpy
   allocations), and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if not DATA.exists():
    DATA = Path("/work/shared/data")

DSB_SETTINGS = {"clear_border": False, "diameter_range": (4, 80)}
ISL_SETTINGS = {"clear_border": False, "diameter_range": (10, 60)}


def dsb_validation(step: int = 5) -> dict:
    import tifffile

    from napari_microseg.autolabel.fluorescence import autolabel_fluorescence
    from napari_microseg.evaluation.metrics import evaluate_dataset

    names = sorted(os.listdir(DATA / "dsb2018" / "images"))[::step]
    t0 = time.perf_counter()

    def pairs():
        for n in names:
            img = tifffile.imread(DATA / "dsb2018" / "images" / n)
            gt = tifffile.imread(DATA / "dsb2018" / "labels" / n)
            yield n, gt, autolabel_fluorescence(img, **DSB_SETTINGS)

    per, pooled = evaluate_dataset(pairs(), thresholds=(0.5, 0.75))
    return {"images": len(names), "subset": f"sorted index % {step} == 0", "settings": str(DSB_SETTINGS),
            "f1@0.5": round(pooled["f1@0.50"], 4), "precision@0.5": round(pooled["precision@0.50"], 4),
            "recall@0.5": round(pooled["recall@0.50"], 4), "f1@0.75": round(pooled["f1@0.75"], 4),
            "mean_image_f1@0.5": round(float(per["f1@0.50"].mean()), 4),
            "object_dice_any_overlap": round(pooled["object_dice"], 4), "n_gt": pooled["n_gt"], "n_pred": pooled["n_pred"],
            "seconds": round(time.perf_counter() - t0, 1)}


def _outline(labels: np.ndarray) -> np.ndarray:
    from skimage.segmentation import find_boundaries

    return find_boundaries(labels, mode="inner")


def isl_phase_validation(minutes: float = 4.0, png: str | None = "/tmp/isl_phase.png", plane: str = "phase_z6",
                         threads: int = 2, seed: int = 0, model_path: str = "/tmp/isl_phase_model.pt") -> dict:
    import skimage.io
    import torch

    from napari_microseg.autolabel.pairing import make_training_pairs
    from napari_microseg.evaluation.metrics import evaluate_segmentation
    from napari_microseg.inference.segment import segment
    from napari_microseg.training.trainer import train

    torch.set_num_threads(threads)
    folder = DATA / "isl_phase_dapi"
    dapi = skimage.io.imread(folder / "dapi.png")
    phase = skimage.io.imread(folder / f"{plane}.png")
    t0 = time.perf_counter()
    pairs = make_training_pairs(dapi, phase, tile=1024, autolabel_kwargs=ISL_SETTINGS)
    labels = pairs.full_labels
    t_label = time.perf_counter() - t0
    split = phase.shape[1] * 3 // 4
    train_img, train_lab = phase[:, :split], labels[:, :split]
    test_img, test_lab = phase[:, split:], labels[:, split:]
    config = {"preset": "small", "output_mode": "three_class", "patch_size": 256, "batch_size": 4,
              "patches_per_epoch": 32, "epochs": 1000, "lr": 1e-3, "device": "cpu", "num_threads": threads,
              "seed": seed, "val_fraction": 0.15, "val_max_tiles": 4, "early_stopping_patience": None,
              "data_description": "ISL phase_z6, left 3/4, DAPI auto-labels"}
    gen = train(config, ([train_img], [train_lab]), out_path=model_path)
    t1 = time.perf_counter()
    epochs = 0
    result = None
    try:
        while True:
            ev = next(gen)
            if getattr(ev, "kind", "") == "epoch":
                epochs = ev.epoch
                print(f"epoch {ev.epoch} val_loss {ev.val_loss:.4f} val_dice {ev.val_dice:.3f} {time.perf_counter() - t1:.0f}s", file=sys.stderr)
                if time.perf_counter() - t1 > minutes * 60:
                    gen.close()
                    break
    except StopIteration as stop:
        result = stop.value
    t_train = time.perf_counter() - t1
    # drop specks smaller than the smallest auto-labelled nucleus (diameter 10 px -> 78 px area)
    min_size = int(np.pi * (ISL_SETTINGS["diameter_range"][0] / 2) ** 2)
    seg = segment(model_path, test_img, device="cpu", min_size=min_size)
    pred = np.asarray(seg.labels)
    scores = evaluate_segmentation(test_lab, pred, thresholds=(0.5,))
    out = {"plane": plane, "autolabel_seconds": round(t_label, 1), "dapi_nuclei": int(labels.max()),
           "registration_shift_px": pairs.shift, "train_minutes": round(t_train / 60, 2), "epochs": epochs,
           "test_region": f"x >= {split} (right 1/4, {test_img.shape[0]}x{test_img.shape[1]})",
           "n_dapi_test": scores["n_gt"], "n_pred_test": scores["n_pred"],
           "f1@0.5": round(scores["f1@0.50"], 4), "precision@0.5": round(scores["precision@0.50"], 4),
           "recall@0.5": round(scores["recall@0.50"], 4), "pixel_dice": round(scores["pixel_dice"], 4),
           "object_dice_any_overlap": round(scores["object_dice"], 4)}
    if png:
        from skimage.exposure import rescale_intensity

        g = rescale_intensity(test_img.astype(np.float32), in_range=tuple(np.percentile(test_img, (1, 99.5))), out_range=(0, 1))
        rgb = np.dstack([g, g, g])
        rgb[_outline(test_lab)] = (0.1, 0.4, 1.0)  # DAPI auto-labels: blue
        rgb[_outline(pred)] = (1.0, 0.9, 0.0)  # prediction from phase: yellow
        skimage.io.imsave(png, (np.clip(rgb, 0, 1) * 255).astype(np.uint8), check_contrast=False)
        out["png"] = png
    return out


def ccd_validation() -> dict:
    from napari_microseg.autolabel.ccd import autolabel_ccd_details, find_clusters
    from napari_microseg.io.images import read_image

    out = {}
    for name in ("ESIS1_00002", "ESIS3_05400", "ESIS1_00099"):
        img = read_image(DATA / "ccd_fe55" / f"{name}.fit.gz").data
        t0 = time.perf_counter()
        res = autolabel_ccd_details(img)
        cl = find_clusters(res.classes, img, res.baseline.baseline, max_size=200)
        frac = res.class_fractions
        # Fe-55 K-alpha: the most common cluster charge above the low-energy part
        hist, edges = np.histogram(cl.charge_adc, bins=60, range=(0, 3000))
        out[name] = {"kind": "dark" if name.endswith("99") else "Fe-55", "taps": len(res.baseline.taps),
                     "noise_adc": round(float(np.median([t["noise"] for t in res.baseline.taps])), 2),
                     "clusters": int(len(cl)), "clusters_per_Mpx": round(len(cl) / img.size * 1e6, 1),
                     "median_size_px": float(cl.size_px.median()) if len(cl) else 0.0,
                     "charge_mode_adc": float(edges[np.argmax(hist)] + 25) if len(cl) else None,
                     "percent_bg_glow_hot_cluster": [round(100 * v, 3) for v in frac],
                     "seconds": round(time.perf_counter() - t0, 2)}
    return out


def ccd_sim_validation(n_frames: int = 8) -> dict:
    from napari_microseg.autolabel.ccd import autolabel_ccd, class_agreement
    from napari_microseg.simulate.ccd import simulate_ccd_frame

    out = {}
    for balanced in (False, True):
        frames = [simulate_ccd_frame(seed=s, balanced=balanced) for s in range(n_frames)]
        truth = np.stack([f.classes for f in frames])
        pred = np.stack([autolabel_ccd(f.image) for f in frames])
        tab = class_agreement(truth, pred)
        out["balanced" if balanced else "default"] = {r["name"]: {"precision": round(r["precision"], 3), "recall": round(r["recall"], 3), "f1": round(r["f1"], 3)}
                                                      for _, r in tab.iterrows()}
        # object level: a simulated cluster is found if any predicted cluster pixel lies within 1 px of its centre
        found = total = 0
        for f, p in zip(frames, pred):
            for y, x, *_ in f.clusters:
                iy, ix = int(y), int(x)
                total += 1
                found += bool((p[max(iy - 1, 0):iy + 2, max(ix - 1, 0):ix + 2] == 3).any())
        out["balanced" if balanced else "default"]["cluster_centres_found"] = round(found / max(total, 1), 3)
    return out


def memory_per_step(size: int = 4096) -> dict:
    import resource
    import tracemalloc

    from napari_microseg.autolabel.fluorescence import autolabel_frame_iter
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    img, _ = simulate_nuclei_image((size, size), n_nuclei=int(40 * (size / 256) ** 2), seed=0)
    frame = (img / img.max() * 60000).astype(np.uint16)
    del img
    pixels = frame.size
    steps: dict[str, float] = {}
    tracemalloc.start()
    run, step, t0 = autolabel_frame_iter(frame), "start", time.perf_counter()
    while True:
        try:
            event = next(run)
        except StopIteration as done:
            labels = done.value
            event = None
        steps[step] = round(tracemalloc.get_traced_memory()[1] / pixels, 1)
        tracemalloc.reset_peak()
        if event is None:
            break
        step = event.message
    tracemalloc.stop()
    return {"frame": f"{size}x{size} uint16", "objects": int(labels.max()),
            "peak_bytes_per_pixel_by_step": steps, "peak_bytes_per_pixel": max(steps.values()),
            "seconds": round(time.perf_counter() - t0, 1),
            "maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main(argv=None) -> None:
    import json

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", nargs="?", default="all", choices=["dsb", "isl", "ccd", "ccdsim", "memory", "all"])
    ap.add_argument("--step", type=int, default=5)
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--size", type=int, default=4096, help="memory: side of the simulated frame (px)")
    args = ap.parse_args(argv)
    if args.which == "memory":
        print("autolabel_memory", json.dumps(memory_per_step(args.size), indent=1))
    if args.which in ("dsb", "all"):
        print("dsb2018", json.dumps(dsb_validation(args.step), indent=1))
    if args.which in ("ccd", "all"):
        print("ccd_fe55", json.dumps(ccd_validation(), indent=1))
    if args.which in ("ccdsim", "all"):
        print("ccd_sim", json.dumps(ccd_sim_validation(), indent=1))
    if args.which in ("isl", "all"):
        print("isl_phase_dapi", json.dumps(isl_phase_validation(args.minutes), indent=1, default=str))


if __name__ == "__main__":
    main()
