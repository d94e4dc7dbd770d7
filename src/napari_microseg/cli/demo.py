"""``microseg demo``: the main job on an embedded default.

Simulates a nuclei time-lapse (divisions, deaths, entering/leaving), trains
briefly (fine-tunes the shipped pretrained model for --train-epochs epochs on a
second simulated time-lapse with its true labels; on the GPU when there is
one), segments the first time-lapse with the trained model, tracks it with
btrack, and writes ``model.pt``,
``tracks.csv``, ``counts.csv``, ``objects.csv``, a Cell Tracking Challenge
folder, label stacks, ``summary.png`` and ``demo_report.json``; prints where
everything is and the tracking accuracy against the simulation's truth.
``--gui`` then opens napari with the results in layers and the widgets docked.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from ._help import HelpFormatter


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="simulate, train briefly, segment, track and export on an embedded default", description=__doc__,
                       formatter_class=HelpFormatter)
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out); a previous demo's files in "
                   "it are replaced, a folder holding other files is refused")
    p.add_argument("--frames", type=int, default=30, help="time-lapse frames (default 30)")
    p.add_argument("--size", type=int, default=256, help="frame size in pixels (default 256)")
    p.add_argument("--nuclei", type=int, default=35,
                   help="nuclei in the first frame, counted by their centres (default 35); those cut by the field's "
                        "border are labelled too, and divisions add more (about 43 objects per frame at the defaults)")
    p.add_argument("--stage-shift", type=float, default=0.0, help="stage shift sd between frames, pixels (default 0)")
    p.add_argument("--seed", type=int, default=0, help="simulation seed (default 0)")
    p.add_argument("--model", default=None,
                   help="shipped model name or model file to start from (default: nuclei_fluorescence where the network "
                        "runs in bfloat16, i.e. GPUs and CPUs with AMX / AVX512-BF16; else nuclei_fluorescence_fast)")
    p.add_argument("--train-epochs", type=int, default=2,
                   help="epochs of the brief training (default 2; 0: segment with --model as it is)")
    p.add_argument("--train-frames", type=int, default=6, help="frames of the simulated training time-lapse (default 6)")
    p.add_argument("--quick", action="store_true",
                   help="a reduced run for CI: 8 frames of 128 px, at most 1 training epoch on 3 frames "
                        "(overrides --frames, --size, --nuclei and --train-frames)")
    p.add_argument("--gui", action="store_true", help="open the result in napari afterwards")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo
    from ..errors import InputError
    from ..progress import run_with_text_progress

    frames, size, nuclei = (8, 128, 12) if args.quick else (args.frames, args.size, args.nuclei)
    train_epochs, train_frames, train_patches = (min(args.train_epochs, 1), 3, 16) if args.quick else (
        args.train_epochs, args.train_frames, 48)
    if frames < 2 or size < 64 or nuclei < 1:
        raise InputError("need --frames >= 2, --size >= 64 and --nuclei >= 1")
    if train_epochs < 0 or train_frames < 2:
        raise InputError("need --train-epochs >= 0 and --train-frames >= 2")
    if not args.stage_shift >= 0:  # as simulate refuses it
        raise InputError(f"--stage-shift must be >= 0 px, got {args.stage_shift}")
    result = run_with_text_progress(
        run_demo(args.out, n_frames=frames, size=size, n_nuclei=nuclei, seed=args.seed, model=args.model,
                 stage_shift_sd=args.stage_shift, train_epochs=train_epochs, train_frames=train_frames,
                 train_patches=train_patches), label="demo")
    print(f"\nmicroseg demo: {frames} frames of {size}x{size} px, seed {args.seed}, "
          f"starting model {result.base_model.stem if result.base_model else args.model}")
    for key, path in result.files.items():
        print(f"  {key:16s} {Path(path).resolve()}")
    own = result.scores["tracking_with_own_segmentation"]
    true = result.scores["tracking_with_true_segmentation"]
    seg = result.scores["segmentation"]
    if "training" in result.scores:
        trained = result.scores["training"]
        before = result.scores.get("segmentation_before_training", {}).get("ap@0.50", float("nan"))
        print(f"training: {trained['epochs_run']} epoch(s) on {trained['frames']} simulated frames on {trained['device']}, "
              f"{result.seconds['train']:.1f} s; AP@0.5 of the starting model on this movie {before:.3f}")
    print(f"segmentation vs truth: AP@0.5 {seg.get('ap@0.50', float('nan')):.3f}, F1@0.5 {seg.get('f1@0.50', float('nan')):.3f}; "
          f"count error {result.scores['count_mean_abs_error']:.2f} nuclei/frame")
    print(f"tracking vs truth: TRA {own['TRA']:.3f} end to end (our segmentation), TRA {true['TRA']:.3f} on the true masks")
    print("time (s): " + ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items()))
    if args.gui:
        from ..widgets.demo_viewer import show_demo

        show_demo(result)
    return 0
