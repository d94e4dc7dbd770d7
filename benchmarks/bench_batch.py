"""Benchmark of ``microseg batch segment``: items/s with 1 and 2 Dask workers vs one process, and the resume check.

Usage (from the project root)::

    .venv/bin/python benchmarks/bench_batch.py [--n 24] [--size 128] [--tile 128] [--workers 1 2] [--model M.pt]
        [--resume-n 2000]

Steps, on N simulated SIZE x SIZE uint8 nuclei images written as TIFFs:

single process
    a plain loop of ``segment`` calls (torch with 1 thread; read TIFF,
    segment, no writing), then ``run_batch(workers=0)`` (the same plus label
    TIFFs, table shards, manifest, merged CSVs).
Dask, W workers
    ``run_batch(workers=W)``: a fresh local cluster of W worker processes with
    1 thread each (1 torch thread per task). Reported: wall time including the
    cluster start and the workers' first imports / model load, and the steady
    rate between the first and the last finished item.
resume check
    the same command again on the finished output folder: every item is
    skipped after hashing its input (sha256, in the driver, no cluster started);
    reported as ms per item and MB/s hashed.
resume check at scale
    the parts of that check for ``--resume-n`` done items (files of SIZE^2
    bytes): finding and planning the inputs, reading the manifest, checking
    that outputs exist, hashing the inputs (4 threads); then merging that many
    ``objects`` shards (38 objects each) into one table, as ``merge_tables``
    does, against one ``read_csv`` per shard, and the ratio.

Without ``--model`` a "small"-preset three-class U-Net with random weights is
used (speed does not depend on the weights). Figures depend on the machine and
its load: run on an idle machine to compare.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def random_model(path: Path) -> Path:
    import torch

    from napari_microseg.io.models import save_model
    from napari_microseg.models.registry import build_model

    torch.manual_seed(0)
    cfg = {"preset": "small", "n_classes": 3}
    config = {"model": cfg, "output_mode": "three_class", "patch_size": [128, 128],
              "normalization": {"kind": "percentile", "p_low": 1.0, "p_high": 99.8}}
    save_model(path, build_model(cfg).eval(), config)
    return path


def make_images(folder: Path, n: int, size: int) -> list[Path]:
    import tifffile

    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        image, _ = simulate_nuclei_image(shape=(size, size), n_nuclei=max(2, size * size // 1500), seed=i)
        path = folder / f"img{i:04d}.tif"
        tifffile.imwrite(path, (image * 255).astype(np.uint8))
        paths.append(path)
    return paths


def timed_batch(**kwargs) -> tuple[object, float, float | None]:
    """Run ``run_batch``; return (summary, wall seconds, steady items/s between first and last finished item)."""
    from napari_microseg.batch import run_batch

    start = time.perf_counter()
    finish_times = []
    gen = run_batch(**kwargs)
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            summary = stop.value
            break
        if event.last is not None and event.last.get("status") == "done":
            finish_times.append(time.perf_counter())
    wall = time.perf_counter() - start
    steady = (len(finish_times) - 1) / (finish_times[-1] - finish_times[0]) if len(finish_times) > 2 else None
    return summary, wall, steady


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=24, help="number of images (default 24)")
    p.add_argument("--size", type=int, default=128, help="image side in px (default 128)")
    p.add_argument("--tile", type=int, default=128, help="tile size in px (default 128)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Dask worker counts to time (default 1 2)")
    p.add_argument("--model", default=None, help="model file (default: random-weight small U-Net)")
    p.add_argument("--resume-n", type=int, default=2000,
                   help="also time the resume check alone for this many done items (0: skip; default 2000)")
    args = p.parse_args(argv)

    import tifffile
    import torch

    from napari_microseg.inference.segment import segment
    from napari_microseg.io.models import load_model

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp:
        tmp = Path(tmp)
        model = Path(args.model) if args.model else random_model(tmp / "model.pt")
        paths = make_images(tmp / "images", args.n, args.size)
        mb = sum(p.stat().st_size for p in paths) / 1e6
        print(f"{args.n} images {args.size}x{args.size} uint8 ({mb:.2f} MB), tile {args.tile}, "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")

        loaded = load_model(model, device="cpu")
        segment(loaded, tifffile.imread(paths[0]), tile=args.tile)  # warm-up
        t0 = time.perf_counter()
        for path in paths:
            segment(loaded, tifffile.imread(path), tile=args.tile, keep_probabilities=False)
        loop = time.perf_counter() - t0
        print(f"single process, plain segment loop      : {args.n / loop:6.2f} items/s ({loop:.1f} s)")

        summary, wall, _ = timed_batch(task="segment", inputs=tmp / "images", out=tmp / "out_0", model=model,
                                       workers=0, tile=args.tile)
        print(f"single process, run_batch(workers=0)    : {summary.processed / wall:6.2f} items/s ({wall:.1f} s)")

        for w in args.workers:
            summary, wall, steady = timed_batch(task="segment", inputs=tmp / "images", out=tmp / f"out_{w}",
                                                model=model, workers=w, threads_per_worker=1, tile=args.tile)
            steady_text = f"{steady:6.2f} items/s steady" if steady else "n/a"
            print(f"Dask {w} worker(s) x 1 thread           : {summary.processed / wall:6.2f} items/s incl. start "
                  f"({wall:.1f} s), {steady_text}")

        t0 = time.perf_counter()
        summary, wall, _ = timed_batch(task="segment", inputs=tmp / "images", out=tmp / "out_0", model=model,
                                       workers=0, tile=args.tile)
        assert summary.skipped == args.n and summary.processed == 0
        print(f"resume check (all {args.n} done, skipped)  : {1000 * wall / args.n:6.2f} ms/item "
              f"({wall:.2f} s in all: planning, hashing, merging the tables; no cluster started)")
        if args.resume_n:
            resume_scale(tmp / "scale", args.resume_n, args.size)
    return 0


def resume_scale(folder: Path, n: int, size: int) -> None:
    """Time the parts of the resume check for ``n`` done items: manifest read, output checks, input hashing."""
    from napari_microseg.batch.manifest import Manifest, is_done
    from napari_microseg.batch.runner import find_batch_inputs, plan_items, verify_checksums
    from napari_microseg.batch.tasks import item_checksum

    images = folder / "images"
    images.mkdir(parents=True)
    data = np.random.default_rng(0).integers(0, 255, (size, size), dtype=np.uint8).tobytes()
    for i in range(n):  # raw bytes are enough: the check hashes files, it does not decode them
        (images / f"img{i:06d}.tif").write_bytes(data + i.to_bytes(4, "little"))
    out = folder / "out"
    (out / "labels").mkdir(parents=True)
    t0 = time.perf_counter()
    items, _ = plan_items(find_batch_inputs(images, exclude=out), "segment")
    t_plan = time.perf_counter() - t0
    with Manifest(out / "manifest.jsonl", fsync=False) as m:
        for item in items:
            rel = f"labels/{item.stem}.tif"
            (out / rel).touch()
            m.append({"key": item.key, "status": "done", "checksum": item_checksum(item)[0], "outputs": {"labels": rel},
                      "settings": "s"})
    t0 = time.perf_counter()
    records = Manifest(out / "manifest.jsonl").load()
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    expected = {i.key: records[i.key]["checksum"] for i in items if is_done(records.get(i.key), out, "s")}
    t_exist = time.perf_counter() - t0
    t0 = time.perf_counter()
    same = sum(ok for _, ok in verify_checksums(items, expected, threads=4))
    t_hash = time.perf_counter() - t0
    assert same == n
    mb = n * (size * size + 4) / 1e6
    print(f"resume check at scale, {n} done items of {mb / n * 1000:.0f} kB: find+plan {t_plan:.2f} s, "
          f"manifest read {t_load:.2f} s, output checks {t_exist:.2f} s, hashing {t_hash:.2f} s ({mb / t_hash:.0f} MB/s); "
          f"{1000 * (t_plan + t_load + t_exist + t_hash) / n:.2f} ms/item")
    merge_scale(folder / "shards", n)


def merge_scale(folder: Path, n: int, per_shard: int = 38) -> None:
    """Time merging ``n`` objects shards into one table (``runner._read_shards``) against one read each."""
    import pandas as pd

    from napari_microseg.batch.runner import _read_shards

    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        path = folder / f"img{i:06d}.csv"
        pd.DataFrame({"t": 0, "label": np.arange(1, per_shard + 1), "y": rng.random(per_shard) * 256,
                      "x": rng.random(per_shard) * 256, "area": rng.integers(20, 200, per_shard),
                      "image": f"img{i:06d}.tif"}).to_csv(path, index=False)
        paths.append(path)
    t0 = time.perf_counter()
    joined = _read_shards(paths)
    t_joined = time.perf_counter() - t0
    t0 = time.perf_counter()
    each = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    t_each = time.perf_counter() - t0
    pd.testing.assert_frame_equal(joined, each)
    print(f"merging {n} objects shards ({len(joined)} rows): joined as text {t_joined:.2f} s, one read_csv each "
          f"{t_each:.2f} s: {t_each / t_joined:.1f}x")


if __name__ == "__main__":
    sys.exit(main())
