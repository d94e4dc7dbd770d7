"""Benchmarks for tiled segmentation: speed, peak memory on a huge zarr input, DSB2018 accuracy.

Usage (from the project root)::

    .venv/bin/python benchmarks/bench_segment.py throughput [--size 2048] [--threads 2] [--tile 256]
    .venv/bin/python benchmarks/bench_segment.py memory [--size 8192] [--predictor fake|small]
    .venv/bin/python benchmarks/bench_segment.py dsb --model MODEL.pt [--data ../shared/data/dsb2018] [--limit N]
        [--zoom 2 --diameter none|auto|true|PX]
    .venv/bin/python benchmarks/bench_segment.py ab [--image simulated|dsb|synthetic] [--reps 3] [--threads 2]

throughput
    Megapixels per second for one SIZE x SIZE image (synthetic nuclei), the
    "small" preset U-Net with random weights (binary output), torch threads
    ``--threads``; end to end: normalisation, tiled prediction with blending,
    threshold + connected components, and the objects table. Prints the split
    between the network and the rest.
memory
    Peak memory of ``segment_image`` on a SIZE x SIZE uint8 zarr input with
    zarr labels output, run in a fresh subprocess: tracemalloc peak (numpy
    allocations in Python) and ``ru_maxrss`` (the whole process, incl. torch).
    ``--predictor fake`` replaces the network by a cheap smooth function so
    the run takes a minute on a CPU (memory is dominated by post-processing);
    ``--predictor small`` runs the random-weight small U-Net (slow on CPU).
ab
    Whole-image segmentation of a SIZE x SIZE image with the shipped
    ``nuclei_fluorescence`` model (three_class watershed + object table),
    the plain network (``optimize=False``) against the inference copy
    (batch norm folded, channels_last on CPU), repetitions interleaved
    A/B/A/B so that a busy machine affects both alike. Prints per variant the
    median seconds of the network, post-processing, object table and the
    whole ``segment`` call, and the ratios optimised / plain. ``--image``:
    ``simulated`` (the 8 x 8 simulated fields of bench_segment_real.py),
    ``dsb`` (a DSB2018 image tiled to SIZE x SIZE) or ``synthetic`` (discs).
dsb
    Accuracy on a held-out DSB2018 subset: images whose index in the sorted
    list of file names satisfies ``index % 5 == 0`` (83 of 412 images) are the
    test set (train on the others). Segments each with ``--model`` and prints
    pooled AP (= TP/(TP+FP+FN)) at IoU 0.50..0.90, F1@0.5, the per-image mean
    AP (Kaggle convention), the [N] any-overlap object scores, objects per
    image (predicted / ground truth), and the 95 % bootstrap interval of
    AP@0.5 over image sets drawn like these 83 (how far the figure could
    move on another test set). ``--stamps-not-annotated`` scores again with
    the ground truth's stamp discs left out as "not annotated": 216 of the
    data set's 17,105 masks are one identical 21-pixel disc (5x5 without its
    corners), most of them over no visible nucleus (37 in the test split);
    a predicted object lying mostly on one is then neither hit nor miss. ``--zoom Z`` resizes every test image
    (bilinear) and its masks (nearest) by Z first, as if taken at another
    magnification; ``--diameter`` is passed to ``segment`` (``auto``: estimated;
    ``true``: each image's typical true nucleus width, the best a user could
    type; a number: px for all images).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DSB = ROOT.parent / "shared" / "data" / "dsb2018"


def synthetic_nuclei(size: int, seed: int = 0, spacing: int = 32) -> np.ndarray:
    """uint8 image with roughly one bright disc per ``spacing`` x ``spacing`` cell, built tile by tile."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size), 20, np.uint8)
    r = 7
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disc = (yy**2 + xx**2) <= r * r
    for y in range(r, size - r, spacing):
        for x in range(r, size - r, spacing):
            cy = min(size - r - 1, y + int(rng.integers(0, spacing // 2)))
            cx = min(size - r - 1, x + int(rng.integers(0, spacing // 2)))
            img[cy - r:cy + r + 1, cx - r:cx + r + 1][disc] = 180
    return img


def small_model(n_classes: int = 1, output_mode: str = "binary"):
    import torch

    from napari_microseg.io.models import LoadedModel
    from napari_microseg.models.registry import build_model

    torch.manual_seed(0)
    cfg = {"preset": "small", "n_classes": n_classes}
    net = build_model(cfg).eval()
    config = {"model": cfg, "output_mode": output_mode, "patch_size": [256, 256],
              "normalization": {"kind": "percentile", "p_low": 1.0, "p_high": 99.8}}
    return LoadedModel(model=net, config=config, device="cpu")


def fake_predictor(batch: np.ndarray) -> np.ndarray:
    """Cheap stand-in for a binary network: the normalised input squashed to (0, 1)."""
    return (1.0 / (1.0 + np.exp(-8.0 * (batch - 0.5)))).astype(np.float32)


def cmd_throughput(args: argparse.Namespace) -> None:
    import torch

    from napari_microseg.inference.segment import make_predict_fn, segment

    torch.set_num_threads(args.threads)
    img = synthetic_nuclei(args.size)
    loaded = small_model()
    net_fn = make_predict_fn(loaded)
    net_time = [0.0]

    def timed(batch):
        t0 = time.perf_counter()
        out = net_fn(batch)
        net_time[0] += time.perf_counter() - t0
        return out

    segment(loaded, img[:256, :256], tile=args.tile, predict_fn=timed)  # warm-up
    net_time[0] = 0.0
    t0 = time.perf_counter()
    res = segment(loaded, img, tile=args.tile, overlap=args.overlap, batch_size=args.batch_size, predict_fn=timed)
    total = time.perf_counter() - t0
    mpx = img.size / 1e6
    print(json.dumps({
        "benchmark": "throughput", "image": f"{args.size}x{args.size} uint8 synthetic nuclei",
        "model": "small preset U-Net (depth 3, 16 filters), random weights, binary", "threads": args.threads,
        "tile": args.tile, "overlap": args.overlap, "batch_size": args.batch_size,
        "seconds_total": round(total, 2), "seconds_network": round(net_time[0], 2),
        "seconds_other": round(total - net_time[0], 2), "megapixels_per_s": round(mpx / total, 3),
        "network_megapixels_per_s": round(mpx / net_time[0], 3), "objects": int(len(res.objects)),
        "cpu_count": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 2),
    }, indent=2))


def _memory_child(size: int, predictor: str, tile: int, workdir: str, model: str | None = None) -> dict:
    """Runs in a fresh process: build the zarr input, then measure segment_image's peak memory."""
    import tracemalloc

    import torch
    import zarr

    from napari_microseg.inference.segment import segment

    torch.set_num_threads(2)
    src = zarr.open_array(os.path.join(workdir, "in.zarr"), mode="w", shape=(size, size), chunks=(1024, 1024),
                          dtype="uint8")
    band = 1024
    reps = -(-size // band)
    for y in range(0, size, band):  # written band by band: never the whole image in memory
        rows = min(band, size - y)
        src[y:y + rows] = np.tile(synthetic_nuclei(band, seed=y), (1, reps))[:rows, :size]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = zarr.open_array(os.path.join(workdir, "labels.zarr"), mode="w", shape=(size, size), chunks=(1024, 1024),
                          dtype="uint32")
    src = zarr.open_array(os.path.join(workdir, "in.zarr"), mode="r")
    if model:
        from napari_microseg.io.models import load_model

        loaded = load_model(model)
    else:
        loaded = small_model()
    tracemalloc.start()
    t0 = time.perf_counter()
    res = segment(loaded, src, tile=tile, out=out, predict_fn=fake_predictor if predictor == "fake" else None,
                  keep_probabilities=False)
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"benchmark": "memory", "image": f"{size}x{size} uint8 zarr (chunks 1024), labels to zarr uint32",
            "predictor": predictor, "model": model or "random small binary", "output_mode": loaded.output_mode,
            "tile": tile, "tiles_yx": res.settings["tiles_yx"], "seconds": round(seconds, 1),
            "tracemalloc_peak_mb": round(peak / 2**20, 1),
            "maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "maxrss_before_segment_mb": round(rss_before, 1), "objects": int(len(res.objects)),
            "megapixels_per_s": round(size * size / 1e6 / seconds, 3)}


def cmd_memory(args: argparse.Namespace) -> None:
    if args.child:
        print(json.dumps(_memory_child(args.size, args.predictor, args.tile, args.child, args.model)))
        return
    with tempfile.TemporaryDirectory(prefix="bench_seg_") as tmp:
        proc = subprocess.run([sys.executable, __file__, "memory", "--size", str(args.size), "--predictor",
                               args.predictor, "--child", tmp]
                              + (["--tile", str(args.tile)] if args.tile else [])
                              + (["--model", args.model] if args.model else []),
                              capture_output=True, text=True)
        if proc.returncode:
            sys.stderr.write(proc.stderr)
            raise SystemExit(proc.returncode)
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(result, indent=2))


#: the DSB2018 masks' stamp: an identical 21-pixel disc, most often over no visible nucleus
STAMP_DISC = np.array([[0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0]], bool)


def stamps_not_annotated(gt: np.ndarray) -> tuple[np.ndarray, int]:
    """(labels, n): ``gt`` (Y, X) with every mask that is exactly :data:`STAMP_DISC` set to -1."""
    from scipy import ndimage as ndi

    out, n = gt.astype(np.int64), 0
    for label, box in enumerate(ndi.find_objects(gt), start=1):
        if box is not None and gt[box].shape == STAMP_DISC.shape and np.array_equal(gt[box] == label, STAMP_DISC):
            out[box][STAMP_DISC] = -1
            n += 1
    return out, n


def dsb_test_files(data: Path) -> list[str]:
    """Sorted DSB2018 image names with index % 5 == 0 (the held-out test subset)."""
    names = sorted(p.name for p in (data / "images").glob("*.tif"))
    return [n for i, n in enumerate(names) if i % 5 == 0]


def cmd_dsb(args: argparse.Namespace) -> None:
    import tifffile
    import torch

    from napari_microseg.evaluation.metrics import evaluate_dataset
    from napari_microseg.inference.segment import segment
    from napari_microseg.io.models import load_model

    if args.stamps_not_annotated and args.zoom != 1:
        sys.exit("--stamps-not-annotated finds the 5x5 stamp discs at the masks' own scale: leave --zoom at 1")
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    names = dsb_test_files(data)[: args.limit or None]
    loaded = load_model(args.model, device=args.device)
    t0 = time.perf_counter()
    n_pred, factors, n_stamps = [], [], []

    def pairs():
        from skimage.transform import resize

        from napari_microseg.inference.scale import foreground_diameter, parse_diameter

        for name in names:
            img = tifffile.imread(data / "images" / name)
            if img.ndim == 3:  # RGB(A) -> grey
                img = img[..., :3].mean(-1)
            gt = tifffile.imread(data / "labels" / name)
            if args.zoom != 1:
                shape = tuple(max(1, int(round(n * args.zoom))) for n in gt.shape)
                img = resize(img.astype(np.float32), shape, order=1, preserve_range=True, anti_aliasing=args.zoom < 1)
                gt = resize(gt, shape, order=0, preserve_range=True, anti_aliasing=False).astype(gt.dtype)
            diameter = foreground_diameter(gt > 0) if args.diameter == "true" else parse_diameter(args.diameter)
            res = segment(loaded, img, tile=args.tile, min_size=args.min_size, measure=False,
                          test_time_augmentation=args.tta, diameter=diameter)
            n_pred.append(int(res.labels.max()))
            factors.append(res.settings["scale_factor"])
            if args.stamps_not_annotated:
                from napari_microseg.cli.evaluate import leave_out_not_annotated

                marked, n = stamps_not_annotated(gt)
                n_stamps.append(n)
                gt, pred, _ = leave_out_not_annotated(marked, np.asarray(res.labels))
                yield name, gt, pred
            else:
                yield name, gt, np.asarray(res.labels)

    per_image, pooled = evaluate_dataset(pairs())
    seconds = time.perf_counter() - t0
    summary = {
        "benchmark": "dsb2018", "model": str(args.model), "output_mode": loaded.output_mode, "tta": args.tta,
        "zoom": args.zoom, "diameter": args.diameter,
        "test_subset": "sorted image index % 5 == 0", "images": len(names), "seconds": round(seconds, 1),
        **{k: round(pooled[k], 4) for k in pooled if k.startswith("ap@")},
        "ap@0.50_95%_interval_over_image_sets": None if len(names) < 2 else [round(pooled["ap_low@0.50"], 4),
                                                                               round(pooled["ap_high@0.50"], 4)],
        "f1@0.50": round(pooled["f1@0.50"], 4), "mean_ap_pooled": round(pooled["map"], 4),
        "mean_ap_per_image": round(pooled["mean_image_map"], 4), "pq@0.50": round(pooled["pq"], 4),
        "object_any_overlap_precision": round(pooled["object_precision"], 4),
        "object_any_overlap_recall": round(pooled["object_recall"], 4),
        "pixel_dice": round(pooled["pixel_dice"], 4),
        "objects_per_image_pred": round(float(np.mean(n_pred)), 2),
        "objects_per_image_gt": round(pooled["n_gt"] / len(names), 2),
        "images_resized": int(sum(f != 1.0 for f in factors)),
        "stamp_discs_not_annotated": sum(n_stamps) if args.stamps_not_annotated else None,
    }
    print(json.dumps(summary, indent=2))
    if args.out:
        per_image.to_csv(args.out, index=False)


def _ab_image(kind: str, size: int, data: Path) -> np.ndarray:
    if kind == "synthetic":
        return synthetic_nuclei(size)
    if kind == "simulated":  # as benchmarks/bench_segment_real.py
        from napari_microseg.simulate.nuclei import simulate_nuclei_image

        n = -(-size // 256)
        rows = [np.hstack([simulate_nuclei_image(shape=(256, 256), n_nuclei=40, seed=100 + r * n + c,
                                                 vary_appearance=False)[0] for c in range(n)]) for r in range(n)]
        return np.vstack(rows)[:size, :size].astype(np.float32)
    import tifffile

    img = tifffile.imread(data / "images" / "0287e7ee5b007c91.tif")
    if img.ndim == 3:
        img = img[..., :3].mean(-1)
    reps = (-(-size // img.shape[0]), -(-size // img.shape[1]))
    return np.tile(img, reps)[:size, :size]


def cmd_ab(args: argparse.Namespace) -> None:
    import importlib

    import torch

    from napari_microseg.inference import postprocess
    from napari_microseg.io.models import load_model

    seg_mod = importlib.import_module("napari_microseg.inference.segment")  # the module, not the function

    torch.set_num_threads(args.threads)
    img = _ab_image(args.image, args.size, Path(args.data))
    loaded = load_model(args.model, device="cpu")
    timers = {"network": 0.0, "postprocess": 0.0, "table": 0.0}

    def timed(name, fn):
        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                timers[name] += time.perf_counter() - t0
        return wrapper

    orig_post, orig_measure = postprocess.probabilities_to_labels, seg_mod._measure_frame
    postprocess.probabilities_to_labels = timed("postprocess", orig_post)
    seg_mod._measure_frame = timed("table", orig_measure)
    variants = {"plain": timed("network", seg_mod.make_predict_fn(loaded, optimize=False)),
                "optimized": timed("network", seg_mod.make_predict_fn(loaded, optimize=True))}
    results: dict = {k: {"network": [], "postprocess": [], "table": [], "total": []} for k in variants}
    objects = {}
    try:
        for fn in variants.values():  # warm-up: imports, first kernels, the inference copy
            seg_mod.segment(loaded, img[:256, :256], tile=args.tile, predict_fn=fn)
        for _ in range(args.reps):
            for name, fn in variants.items():
                for k in timers:
                    timers[k] = 0.0
                t0 = time.perf_counter()
                res = seg_mod.segment(loaded, img, tile=args.tile, overlap=args.overlap, batch_size=args.batch_size,
                                      predict_fn=fn)
                results[name]["total"].append(time.perf_counter() - t0)
                for k, v in timers.items():
                    results[name][k].append(v)
                objects[name] = int(len(res.objects))
    finally:
        postprocess.probabilities_to_labels, seg_mod._measure_frame = orig_post, orig_measure
    mpx = img.size / 1e6
    med = {n: {k: float(np.median(v)) for k, v in r.items()} for n, r in results.items()}
    out = {"benchmark": "ab", "image": f"{args.size}x{args.size} {args.image}", "model": str(args.model),
           "threads": args.threads, "tile": args.tile, "overlap": args.overlap, "batch_size": args.batch_size,
           "reps": args.reps, "objects": objects}
    for n, m in med.items():
        out[n] = {**{f"seconds_{k}": round(v, 3) for k, v in m.items()},
                  "seconds_other": round(m["total"] - m["network"] - m["postprocess"] - m["table"], 3),
                  "megapixels_per_s": round(mpx / m["total"], 3),
                  "network_megapixels_per_s": round(mpx / m["network"], 3)}
    out["ratio_optimized_over_plain"] = {k: round(med["optimized"][k] / med["plain"][k], 3)
                                         for k in ("network", "total")}
    # paired per-repetition ratios (each A/B pair ran back to back)
    out["paired_total_ratios"] = [round(b / a, 3) for a, b in zip(results["plain"]["total"],
                                                                  results["optimized"]["total"])]
    out["cpu_count"], out["load_avg_1min"] = os.cpu_count(), round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("throughput")
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tile", type=int, default=None, help="largest tile side, px (default: segment's, 512)")
    p.add_argument("--overlap", type=float, default=32)
    p.add_argument("--batch-size", type=int, default=4)
    p.set_defaults(func=cmd_throughput)
    p = sub.add_parser("memory")
    p.add_argument("--size", type=int, default=8192)
    p.add_argument("--predictor", choices=["fake", "small"], default="fake")
    p.add_argument("--model", default=None, help="a model file or shipped name instead (e.g. nuclei_fluorescence: three-class)")
    p.add_argument("--tile", type=int, default=None, help="largest tile side, px (default: segment's, 512)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_memory)
    p = sub.add_parser("dsb")
    p.add_argument("--model", required=True)
    p.add_argument("--data", default=str(DEFAULT_DSB))
    p.add_argument("--tile", type=int, default=None, help="largest tile side, px (default: segment's, 512)")
    p.add_argument("--min-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--limit", type=int, default=0, help="only the first N test images (0 = all 83)")
    p.add_argument("--tta", action="store_true", help="test-time augmentation (4 flips)")
    p.add_argument("--zoom", type=float, default=1.0, help="resize images and masks by this factor first (another magnification)")
    p.add_argument("--diameter", default=None, help="nucleus diameter for segment: px, 'auto', or 'true' (each image's true median)")
    p.add_argument("--stamps-not-annotated", action="store_true",
                   help="leave the ground truth's identical 21-px stamp discs out as not annotated")
    p.add_argument("--out", default=None, help="per-image scores CSV")
    p.set_defaults(func=cmd_dsb)
    p = sub.add_parser("ab")
    p.add_argument("--image", choices=["simulated", "dsb", "synthetic"], default="simulated")
    p.add_argument("--model", default="nuclei_fluorescence")
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tile", type=int, default=None, help="largest tile side, px (default: segment's, 512)")
    p.add_argument("--overlap", type=float, default=32)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--data", default=str(DEFAULT_DSB))
    p.set_defaults(func=cmd_ab)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
