"""Generation speed of the simulators (images or profiles per second) on this machine.

Run: ``.venv/bin/python benchmarks/bench_simulate.py [--repeat N]``.
Single-threaded numpy/scipy; the figures are means over ``--repeat`` calls, by wall
clock and by process CPU time (the CPU figure is what an idle core would give).
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np


def _rate(fn, repeat: int) -> tuple[float, float]:
    """Calls per second by wall clock and by process CPU time (the latter is robust to a busy machine)."""
    fn(0)  # warm-up (imports, caches)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(repeat):
        fn(i + 1)
    return repeat / (time.perf_counter() - t0), repeat / (time.process_time() - c0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    from napari_microseg.simulate import (
        simulate_ccd_frame,
        simulate_liposome_image,
        simulate_nuclei_image,
        simulate_nuclei_timelapse,
        simulate_profiles,
        simulate_response_image,
    )
    from napari_microseg.simulate.response import balanced_kind

    r = args.repeat
    cases = [
        ("nuclei time-lapse 20x256x256, 30 nuclei", "frames/s", lambda s: simulate_nuclei_timelapse(seed=s), 20, max(r // 5, 2)),
        ("nuclei training image 256x256, 40 nuclei", "images/s", lambda s: simulate_nuclei_image(seed=s), 1, r * 5),
        ("ccd frame 256x256", "images/s", lambda s: simulate_ccd_frame(seed=s), 1, r * 5),
        ("ccd frame 256x256 balanced", "images/s", lambda s: simulate_ccd_frame(seed=s, balanced=True), 1, r),
        ("response image 96x64 (balanced kinds)", "images/s", lambda s: simulate_response_image(balanced_kind(s), seed=s), 1, r * 20),
        ("liposome image 512x512, 30 particles", "images/s", lambda s: simulate_liposome_image(seed=s), 1, r),
        ("nanoparticle profiles, 1 view x 32", "profiles/s", lambda s: simulate_profiles(1000, seed=s), 1000, max(r // 5, 2)),
        ("nanoparticle profiles, 2 views x 32", "profiles/s", lambda s: simulate_profiles(1000, n_views=2, task="chirality", seed=s), 1000, max(r // 5, 2)),
    ]
    print(f"# napari-microseg simulators on {platform.processor() or platform.machine()}, numpy {np.__version__}")
    print(f"{'case':45s} {'wall':>10s} {'cpu':>10s}")
    for name, unit, fn, per_call, repeat in cases:
        wall, cpu = _rate(fn, repeat)
        print(f"{name:45s} {wall * per_call:10.1f} {cpu * per_call:10.1f} {unit}")


if __name__ == "__main__":
    main()
