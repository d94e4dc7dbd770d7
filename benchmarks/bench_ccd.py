"""[C] CCD benchmarks: held-out simulated accuracy, real Fe-55 / dark frames, and a 4096x4096 frame.

    .venv/bin/python benchmarks/bench_ccd.py sim  [--model ccd_classes] [--frames 16] [--tta]
    .venv/bin/python benchmarks/bench_ccd.py real [--model ccd_classes] [--png docs/ccd_clusters.png]
    .venv/bin/python benchmarks/bench_ccd.py big  [--model ccd_classes] [--size 4096]
    .venv/bin/python benchmarks/bench_ccd.py tracks [--model ccd_classes] [--frames 8] [--size 512]
    .venv/bin/python benchmarks/bench_ccd.py repeats [--model ccd_classes] [--exposures 4 16] [--size 2048]

``sim``: per-class pixel precision / recall / F1 and pixel accuracy on simulated
frames the model never saw (seeds 90000+, half in the balanced layout), with
the cluster labels at the model's training ``cluster_threshold`` (its card);
all frames and each layout, and beside the model a per-pixel rule that is told
every defect exactly (the limit the read noise sets at the faint cluster edges).
``real``: the three frames in ``../shared/data/ccd_fe55`` (taps levelled),
cluster counts of the model and of the threshold auto-labeller, and a picture
of the cluster size and charge distributions. ``big``: wall time and peak
resident memory (a fresh process) to segment one size x size frame built
from a real frame, including the cluster table. ``repeats``: the repeat rule
over N simulated exposures of one sensor (size x size, shared defects, float32
TIFF files): wall time and peak resident memory (fresh processes) of ``microseg
segment --hot-repeats`` (two passes, one exposure in memory) and of the
in-memory rule (``segment`` on the lazily read (N, Y, X) stack, as the CLI did
before), and the scratch folder's size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ccd_fe55"
FRAMES = ("ESIS1_00002", "ESIS3_05400", "ESIS1_00099")


def _cluster_threshold(model: str) -> float:
    from napari_microseg.io.models import load_model

    text = load_model(model).config.get("training", {}).get("data", "")
    marker = "cluster pixels from "
    if marker in text:
        return float(text.split(marker)[1].split(" ")[0])
    return 30.0  # models trained before the threshold was recorded


def cmd_sim(args: argparse.Namespace) -> None:
    from napari_microseg.autolabel.ccd import class_agreement
    from napari_microseg.inference.segment import segment
    from napari_microseg.io.models import load_model
    from napari_microseg.simulate.ccd import simulate_ccd_frame

    thr = args.cluster_threshold or _cluster_threshold(args.model)
    loaded = load_model(args.model)
    frames = [simulate_ccd_frame(shape=(256, 256), seed=90_000 + s, balanced=bool(s % 2), cluster_threshold=thr)
              for s in range(args.frames)]
    true = np.stack([f.classes for f in frames])
    rules = {"shape_rules": True} if args.shape_rules else {}
    pred = np.stack([np.asarray(segment(loaded, f.image, measure=False, test_time_augmentation=args.tta,
                                        postprocess_options=rules).labels)
                     for f in frames])
    out = {"benchmark": "ccd_sim", "model": args.model, "frames": args.frames, "cluster_threshold_adc": thr, "tta": args.tta,
           "shape_rules": args.shape_rules}
    layouts = {"all": slice(None), "natural_layout": slice(0, None, 2), "balanced_layout": slice(1, None, 2)}
    # reference: a per-pixel rule told every defect exactly (pedestal, glow band, hot lines, tracks), calling a
    # pixel "cluster" when what is left (cluster charge + read noise) exceeds the labelling threshold; what it
    # gets wrong is set by the read noise at the faint edges of clusters, not by any network
    oracle = np.stack([np.where(f.image - f.params["pedestal"] - f.components["glow"] - f.components["hot"]
                                - f.components["tracks"] > thr, 3, np.where(f.components["hot"] > 0, 2,
                                                                           np.where(f.components["glow"] > 0, 1, 0)))
                       for f in frames]).astype(true.dtype)
    for name, sel in layouts.items():
        entry = {}
        for who, p in (("model", pred), ("per_pixel_oracle", oracle)):
            table = class_agreement(true[sel], p[sel])
            entry[who] = {"pixel_accuracy": round(float((true[sel] == p[sel]).mean()), 4),
                          **{rec.name: {"precision": round(rec.precision, 3), "recall": round(rec.recall, 3),
                                        "f1": round(rec.f1, 3)} for rec in table.itertuples()}}
        out[name] = entry
    print(json.dumps(out, indent=2))


def cmd_tracks(args: argparse.Namespace) -> None:
    from scipy import ndimage as ndi

    from napari_microseg.autolabel.ccd import class_agreement
    from napari_microseg.inference.segment import segment
    from napari_microseg.io.models import load_model
    from napari_microseg.simulate.ccd import simulate_ccd_frame

    thr = args.cluster_threshold or _cluster_threshold(args.model)
    loaded = load_model(args.model)
    struct = ndi.generate_binary_structure(2, 2)
    frames = [simulate_ccd_frame(shape=(args.size, args.size), seed=95_000 + s, muons=True, electrons=True,
                                 cluster_threshold=thr) for s in range(args.frames)]
    true = np.stack([f.classes for f in frames])
    track_px = np.stack([(f.components["tracks"] >= thr) & (f.classes == 3) for f in frames])
    out = {"benchmark": "ccd_tracks", "model": args.model, "frames": args.frames, "size": args.size,
           "cluster_threshold_adc": thr, "track_pixels": int(track_px.sum()),
           "true_cluster_pieces": int(sum(ndi.label(t == 3, structure=struct)[1] for t in true))}
    variants = {"plain": {}, "shape_rules_max50": {"shape_rules": True, "max_cluster_size": 50}}
    for name, options in variants.items():
        pred = np.stack([np.asarray(segment(loaded, f.image, measure=False, postprocess_options=dict(options)).labels)
                         for f in frames])
        table = class_agreement(true, pred)
        on_tracks = np.bincount(pred[track_px].ravel(), minlength=4)
        out[name] = {
            "pixel_accuracy": round(float((true == pred).mean()), 4),
            **{rec.name: {"precision": round(rec.precision, 3), "recall": round(rec.recall, 3), "f1": round(rec.f1, 3)}
               for rec in table.itertuples()},
            "track_pixels_as_bg_glow_hot_cluster": [round(float(v) / max(int(track_px.sum()), 1), 3) for v in on_tracks],
            "cluster_pieces": int(sum(ndi.label(p == 3, structure=struct)[1] for p in pred)),
        }
    print(json.dumps(out, indent=2))


def _segment_frame(loaded, image):
    from napari_microseg.autolabel.ccd import find_clusters, level_taps
    from napari_microseg.inference.segment import segment

    levelled = level_taps(image)
    classes = np.asarray(segment(loaded, levelled, measure=False).labels)
    clusters = find_clusters(classes, levelled)  # charge above each cluster's local background, as segment writes it
    return classes, clusters


def cmd_real(args: argparse.Namespace) -> None:
    from napari_microseg.autolabel.ccd import autolabel_ccd_details, find_clusters
    from napari_microseg.io.images import read_image
    from napari_microseg.io.models import load_model

    loaded = load_model(args.model)
    results, tables = {}, {}
    for name in FRAMES:
        img = read_image(DATA / f"{name}.fit.gz").data.astype(np.float32)
        t0 = time.perf_counter()
        classes, clusters = _segment_frame(loaded, img)
        seconds = time.perf_counter() - t0
        auto = autolabel_ccd_details(img)
        auto_clusters = find_clusters(auto.classes, img)
        frac = np.bincount(classes.ravel(), minlength=4) / classes.size
        tables[name] = clusters
        results[name] = {
            "kind": "dark" if name.endswith("99") else "Fe-55", "shape": list(img.shape), "seconds": round(seconds, 1),
            "clusters_model": int(len(clusters)), "clusters_autolabel": int(len(auto_clusters)),
            "median_size_px": float(clusters.size_px.median()) if len(clusters) else 0.0,
            "median_charge_adc": round(float(clusters.charge_adc.median()), 1) if len(clusters) else 0.0,
            "percent_bg_glow_hot_cluster": [round(100 * float(v), 3) for v in frac],
        }
    print(json.dumps({"benchmark": "ccd_real", "model": args.model, "frames": results}, indent=2))
    if args.png:
        _plot(tables, Path(args.png))
        print(f"wrote {args.png}")


def _plot(tables: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, table in tables.items():
        label = f"{name} ({'dark' if name.endswith('99') else 'Fe-55'}, n={len(table)})"
        axes[0].hist(table.size_px, bins=np.arange(0.5, 21.5), histtype="step", lw=1.5, label=label)
        axes[1].hist(table.charge_adc, bins=np.linspace(0, 3000, 61), histtype="step", lw=1.5, label=label)
    axes[0].set(xlabel="cluster size (pixels)", ylabel="clusters", yscale="log", title="size")
    axes[1].set(xlabel="cluster charge above its local background (ADC)", ylabel="clusters", title="charge")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)


def _big_child(model: str, size: int) -> dict:
    from napari_microseg.io.images import read_image
    from napari_microseg.io.models import load_model

    src = read_image(DATA / "ESIS3_05400.fit.gz").data.astype(np.float32)
    reps = (int(np.ceil(size / src.shape[0])), int(np.ceil(size / src.shape[1])))
    frame = np.tile(src, reps)[:size, :size]
    del src
    loaded = load_model(model)
    t0 = time.perf_counter()
    classes, clusters = _segment_frame(loaded, frame)
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"benchmark": "ccd_big", "size": size, "seconds": round(seconds, 1), "megapixels_per_s": round(size * size / 1e6 / seconds, 2),
            "peak_rss_mb": round(peak_mb), "input_mb": round(frame.nbytes / 2**20), "clusters": int(len(clusters)),
            "cpu_count": os.cpu_count()}


def cmd_big(args: argparse.Namespace) -> None:
    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_ccd; "
            f"print(json.dumps(bench_ccd._big_child({args.model!r}, {args.size})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    print(json.dumps(json.loads(proc.stdout.strip().splitlines()[-1]), indent=2))


def _repeats_child(way: str, folder: str, model: str) -> dict:
    """One run of the repeat rule over the TIFF exposures in ``folder``: ``cli`` (microseg segment
    --hot-repeats, two passes) or ``memory`` (segment on a lazy (N, Y, X) stack). Peak RSS, seconds."""
    import torch

    torch.set_num_threads(2)
    files = sorted(Path(folder).glob("*.tif"))
    t0 = time.perf_counter()
    if way == "cli":
        from napari_microseg.cli import main as cli_main

        out = Path(folder) / "out"
        code = cli_main(["segment", "--model", model, "--input", folder, "--out", str(out), "--hot-repeats",
                         "--quiet", "--overwrite"])
        run = json.loads((out / "segment_run.json").read_text())
        extra = {"exit": code, "scratch_mb": round(run.get("scratch_bytes", 0) / 2**20, 1),
                 "persistent_pixels": run.get("persistent_pixels")}
    else:
        import dask
        import dask.array as da
        import tifffile

        from napari_microseg.inference.segment import segment

        shape = tifffile.TiffFile(files[0]).series[0].shape
        stack = da.stack([da.from_delayed(dask.delayed(tifffile.imread)(f), shape=shape, dtype=np.float32) for f in files])
        result = segment(model, stack, keep_probabilities=False, postprocess_options={"hot_repeats": True})
        extra = {"objects": int(len(result.objects))}
    seconds = time.perf_counter() - t0
    return {"way": way, "exposures": len(files), "seconds": round(seconds, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), **extra}


def cmd_repeats(args: argparse.Namespace) -> None:
    import tempfile

    import tifffile

    from napari_microseg.simulate.ccd import simulate_ccd_frame

    rng = np.random.default_rng(7)
    size = args.size
    defects = (rng.integers(0, size, 40), rng.integers(0, size, 40))  # one sensor: the same hot pixels in every exposure
    rows = []
    for n in args.exposures:
        with tempfile.TemporaryDirectory(dir=args.scratch) as folder:
            for s in range(n):
                frame = simulate_ccd_frame(shape=(size, size), seed=1000 + s, n_hot=0, n_clusters=size * size // 20000).image
                frame[defects] += 2200
                tifffile.imwrite(Path(folder) / f"exposure_{s:04d}.tif", frame.astype(np.float32))
            for way in ("cli", "memory"):
                code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_ccd; "
                        f"print(json.dumps(bench_ccd._repeats_child({way!r}, {folder!r}, {args.model!r})))")
                proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
                rows.append({"size": size, **json.loads(proc.stdout.strip().splitlines()[-1])})
                print(json.dumps(rows[-1]), flush=True)
    if len(args.exposures) > 1:
        grow = {way: [r["peak_rss_mb"] for r in rows if r["way"] == way] for way in ("cli", "memory")}
        print(json.dumps({"rss_growth_mb_per_exposure": {
            way: round((v[-1] - v[0]) / (args.exposures[-1] - args.exposures[0]), 1) for way, v in grow.items()}}))


def main(argv: list[str] | None = None) -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name, fn in (("sim", cmd_sim), ("real", cmd_real), ("big", cmd_big), ("tracks", cmd_tracks),
                     ("repeats", cmd_repeats)):
        p = sub.add_parser(name)
        p.add_argument("--model", default="ccd_classes")
        p.set_defaults(func=fn)
        if name == "sim":
            p.add_argument("--frames", type=int, default=16)
            p.add_argument("--cluster-threshold", type=float, default=None, help="ADC; default: the model's")
            p.add_argument("--tta", action="store_true", help="test-time augmentation (4 flips)")
            p.add_argument("--shape-rules", action="store_true", help="[C] shape rule: hot pixels are straight lines")
        if name == "tracks":
            p.add_argument("--frames", type=int, default=8)
            p.add_argument("--size", type=int, default=512)
            p.add_argument("--cluster-threshold", type=float, default=None, help="ADC; default: the model's")
        if name == "real":
            p.add_argument("--png", default=None)
        if name == "big":
            p.add_argument("--size", type=int, default=4096)
        if name == "repeats":
            p.add_argument("--size", type=int, default=2048)
            p.add_argument("--exposures", type=int, nargs="+", default=[4, 16])
            p.add_argument("--scratch", default=None, help="folder for the temporary exposures (default: the system's)")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    args.func(args)


if __name__ == "__main__":
    main()
