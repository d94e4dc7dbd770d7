"""Tracking benchmark: accuracy on simulated nuclei time-lapses, speed on Brownian walkers.

Accuracy: simulated nuclei (divisions, deaths, entering/leaving, optionally
stage jumps) are tracked from their *ground-truth* labels with the ``cell``
config; CTC TRA / DET / LNK, division precision / recall (traccuracy) and the
fraction of true links kept are reported.

Speed: Brownian walkers made directly as centroid tables (no images), at the
density of the nuclei study (70 per 512 x 512 px, reflecting borders), per-axis
step ``--sigma`` px per frame. btrack (``track_points``, ``particle`` config,
APPROXIMATE updates + optimisation) and laptrack (frame-to-frame LAP plus gap
closing) run on the same points. Reported: objects/s (all objects of the
sequence divided by wall time), fraction of true links kept, fraction of true
tracks unbroken, and the frame-by-frame optimal assignment (Hungarian on
squared distances with the true positions; an upper bound for any
frame-to-frame linker) for context.

Memory (``--only memory``): ``microseg track`` on one label movie (walkers drawn as discs,
default 200 frames of 1024 x 1024 uint16, 400 MB) stored as a TIFF (read into memory) and as
a Zarr array (tracked frame by frame); each run's peak RSS and wall time, in its own process.

Usage::

    .venv/bin/python benchmarks/bench_track.py                 # everything (a few minutes)
    .venv/bin/python benchmarks/bench_track.py --only memory --memory-frames 200 --memory-side 1024
    .venv/bin/python benchmarks/bench_track.py --quick         # small sizes
    .venv/bin/python benchmarks/bench_track.py --only speed --sizes 500 5000 --out bench_track.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np
import pandas as pd


# ----------------------------------------------------------------------------- walkers
def brownian_walkers(n_walkers: int, n_frames: int = 100, sigma: float = 2.0, density: float = 70 / 512**2, seed: int = 0) -> pd.DataFrame:
    """Points ``t, y, x, true_id`` of Brownian walkers reflecting at the borders of a square field."""
    rng = np.random.default_rng(seed)
    side = float(np.sqrt(n_walkers / density))
    pos = rng.uniform(0, side, (n_walkers, 2))
    frames = []
    for t in range(n_frames):
        frames.append(pd.DataFrame({"t": t, "y": pos[:, 0], "x": pos[:, 1], "true_id": np.arange(n_walkers)}))
        pos = pos + rng.normal(0.0, sigma, pos.shape)
        pos = np.abs(pos)  # reflect at 0
        pos = side - np.abs(side - pos)  # reflect at side
    return pd.concat(frames, ignore_index=True)


def optimal_frame_links(points: pd.DataFrame) -> float:
    """Fraction of true links recovered by an optimal frame-to-frame assignment (upper bound)."""
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching
    from scipy.spatial import cKDTree

    ok = total = 0
    by_t = {t: g.sort_values("true_id") for t, g in points.groupby("t")}
    for t in sorted(by_t)[:-1]:
        a, b = by_t[t], by_t[t + 1]
        pa, pb = a[["y", "x"]].to_numpy(), b[["y", "x"]].to_numpy()
        if len(pa) <= 1000:
            from scipy.spatial.distance import cdist

            r, c = linear_sum_assignment(cdist(pa, pb, "sqeuclidean"))
        else:
            tree = cKDTree(pb)
            dist, idx = tree.query(pa, k=8)
            rows = np.repeat(np.arange(len(pa)), 8)
            m = csr_matrix(((dist.ravel() ** 2) + 1e-6, (rows, idx.ravel())), shape=(len(pa), len(pb)))
            r, c = min_weight_full_bipartite_matching(m)
        ok += int(np.sum(a["true_id"].to_numpy()[r] == b["true_id"].to_numpy()[c]))
        total += len(pa)
    return ok / total


def run_btrack(points: pd.DataFrame, max_search_radius: float, update_method: str = "approximate", optimize: bool = True):
    from napari_microseg.tracking.track import track_points

    t0 = time.perf_counter()
    res = track_points(points, config="particle", max_search_radius=max_search_radius, update_method=update_method, optimize=optimize)
    dt = time.perf_counter() - t0
    return res.table["true_id"].to_numpy(), res.table["t"].to_numpy(), res.table["track_id"].to_numpy(), dt


def run_laptrack(points: pd.DataFrame, max_search_radius: float):
    from laptrack import LapTrack

    lt = LapTrack(
        cutoff=max_search_radius**2,
        gap_closing_cutoff=max_search_radius**2,
        gap_closing_max_frame_count=2,
        splitting_cutoff=False,
        merging_cutoff=False,
    )
    t0 = time.perf_counter()
    track_df, _, _ = lt.predict_dataframe(points.copy(), coordinate_cols=["y", "x"], frame_col="t", only_coordinate_cols=False)
    dt = time.perf_counter() - t0
    return track_df["true_id"].to_numpy(), track_df["t"].to_numpy(), track_df["track_id"].to_numpy(), dt


def speed(sizes, n_frames, sigma, radius, seed, with_laptrack=True, laptrack_max=1000) -> list[dict]:
    from napari_microseg.tracking.metrics import point_link_recall, unbroken_fraction

    rows = []
    warm = brownian_walkers(20, 5, sigma=sigma, seed=seed)  # import btrack (about 3 s) before timing
    run_btrack(warm, radius)
    for n in sizes:
        pts = brownian_walkers(n, n_frames, sigma=sigma, seed=seed)
        n_obj = len(pts)
        bound = optimal_frame_links(pts)
        engines = [("btrack", lambda p: run_btrack(p, radius))]
        if with_laptrack and n <= laptrack_max:
            engines.append(("laptrack", lambda p: run_laptrack(p, radius)))
        for name, fn in engines:
            g, t, p, dt = fn(pts)
            row = {
                "engine": name,
                "walkers_per_frame": n,
                "frames": n_frames,
                "sigma_px": sigma,
                "seconds": round(dt, 2),
                "objects_per_s": int(n_obj / dt),
                "links_kept": round(point_link_recall(g, t, p), 5),
                "tracks_unbroken": round(unbroken_fraction(g, t, p), 4),
                "optimal_frame_links": round(bound, 5),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------- accuracy
def accuracy(cases, seed) -> list[dict]:
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse
    from napari_microseg.tracking.metrics import ctc_scores, link_recall
    from napari_microseg.tracking.track import finalize, objects_from_labels, run_tracking

    rows = []
    for case in cases:
        sim_kw = dict(case["sim"])
        sim = simulate_nuclei_timelapse(seed=seed, **sim_kw)
        obj = objects_from_labels(sim.labels)
        obj["track_id"] = obj["label"]
        parent = sim.tracks.groupby("track_id")["parent_track_id"].first()
        obj["parent_track_id"] = obj["track_id"].map(parent).fillna(0)
        gt = finalize(obj, n_frames=sim.labels.shape[0], labels=sim.labels)
        t0 = time.perf_counter()
        res = run_tracking(sim.labels, sim.fluorescence, **case["track"])
        dt = time.perf_counter() - t0
        s = ctc_scores(gt, res)
        row = {
            "case": case["name"],
            "frames": sim.labels.shape[0],
            "gt_tracks": gt.n_tracks,
            "gt_divisions": len(gt.graph) // 2,
            "objects": len(gt.table),
            "seconds": round(dt, 2),
            "TRA": round(s["TRA"], 4),
            "DET": round(s["DET"], 4),
            "LNK": round(s["LNK"], 4),
            "division_precision": round(s["division_precision"], 3),
            "division_recall": round(s["division_recall"], 3),
            "links_kept": round(link_recall(sim.labels, res.relabelled), 4),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def accuracy_cases(quick: bool) -> list[dict]:
    T = 30 if quick else 60
    base = dict(n_frames=T, shape=(256, 256), n_nuclei=40)
    return [
        {"name": "divisions+enter/leave", "sim": base, "track": dict(config="cell")},
        {"name": "dense, touching", "sim": {**base, "n_nuclei": 70, "motion_sd": 1.5}, "track": dict(config="cell")},
        {"name": "stage jumps sd 15 px, no correction", "sim": {**base, "stage_shift_sd": 15.0}, "track": dict(config="cell")},
        {"name": "stage jumps sd 15 px, images", "sim": {**base, "stage_shift_sd": 15.0}, "track": dict(config="cell", stage_shift="images")},
        {"name": "stage jumps sd 15 px, objects", "sim": {**base, "stage_shift_sd": 15.0}, "track": dict(config="cell", stage_shift="objects")},
    ]


def label_movie(n_frames: int, side: int, n_walkers: int, seed: int = 0) -> np.ndarray:
    """(T, side, side) uint16 labels: Brownian walkers drawn as discs of radius 6 px."""
    from skimage.draw import disk

    points = brownian_walkers(n_walkers, n_frames=n_frames, density=n_walkers / side**2, seed=seed)
    movie = np.zeros((n_frames, side, side), np.uint16)
    for row in points.itertuples(index=False):
        rr, cc = disk((row.y, row.x), 6, shape=(side, side))
        movie[int(row.t)][rr, cc] = int(row.true_id) % 60000 + 1
    return movie


def memory(n_frames: int, side: int, n_walkers: int, seed: int) -> list[dict]:
    """Peak RSS of ``microseg track`` on the same labels as a TIFF (in memory) and a Zarr (frame by frame)."""
    import subprocess
    import tempfile
    from pathlib import Path

    from napari_microseg.io.images import write_tiff, write_zarr

    movie = label_movie(n_frames, side, n_walkers, seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_tiff(tmp / "labels.tif", movie)
        write_zarr(tmp / "labels.zarr", movie, chunks=(1, side, side))
        del movie
        # the child's own peak: /proc's VmHWM starts afresh at exec (ru_maxrss would keep this parent's peak)
        probe = ("import re, sys, time; from napari_microseg.cli import main; t = time.perf_counter(); "
                 "rc = main(sys.argv[1:]); hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1); "
                 "print('PEAK', hwm, time.perf_counter() - t, rc)")
        for name in ("labels.tif", "labels.zarr"):
            cmd = [sys.executable, "-c", probe, "track", "--labels", str(tmp / name), "--out", str(tmp / f"out_{name}"),
                   "--config", "particle"]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            line = [x for x in out.stdout.splitlines() if x.startswith("PEAK")]
            if not line:
                raise RuntimeError(f"track {name} failed: {out.stderr[-2000:]}")
            _, peak_kb, seconds, rc = line[-1].split()
            row = {"input": name, "frames": n_frames, "side": side, "stack_mb": round(n_frames * side * side * 2 / 1e6),
                   "peak_rss_mb": round(int(peak_kb) / 1024), "seconds": round(float(seconds), 1), "rc": int(rc)}
            print(json.dumps(row), flush=True)
            rows.append(row)
        same = np.array_equal(np.asarray(__import__("tifffile").imread(tmp / "out_labels.tif" / "tracks_labels.tif")),
                              np.asarray(__import__("tifffile").imread(tmp / "out_labels.zarr" / "tracks_labels.tif")))
        print(f"relabelled stacks identical: {same}; Zarr / TIFF peak RSS: {rows[1]['peak_rss_mb'] / rows[0]['peak_rss_mb']:.2f}")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["speed", "accuracy", "memory"], help="run one part (memory runs only when named)")
    ap.add_argument("--memory-frames", type=int, default=200, help="memory: frames of the label movie")
    ap.add_argument("--memory-side", type=int, default=1024, help="memory: frame side, px")
    ap.add_argument("--memory-walkers", type=int, default=150, help="memory: objects per frame")
    ap.add_argument("--quick", action="store_true", help="small sizes")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="walkers per frame (default 500 5000)")
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--sigma", type=float, default=2.0, help="walker step sd per axis, px/frame (default 2)")
    ap.add_argument("--radius", type=float, default=15.0, help="max search radius px (default 15)")
    ap.add_argument("--no-laptrack", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="write the rows as JSON here")
    args = ap.parse_args(argv)
    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:  # pragma: no cover
        pass
    sizes = args.sizes or ([200, 1000] if args.quick else [500, 5000])
    report = {}
    if args.only in (None, "accuracy"):
        report["accuracy"] = accuracy(accuracy_cases(args.quick), args.seed)
    if args.only == "memory":
        report["memory"] = memory(args.memory_frames, args.memory_side, args.memory_walkers, args.seed)
    if args.only in (None, "speed"):
        report["speed"] = speed(sizes, args.frames, args.sigma, args.radius, args.seed, with_laptrack=not args.no_laptrack)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
