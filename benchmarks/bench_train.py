"""Training benchmarks on this machine (CPU, torch threads 2 by default).

Prints
1. training throughput (patches/s, forward + backward + optimiser step) at 256x256
   for the ``small`` default preset and the [N] preset;
2. augmentation throughput (patches/s) with the kornia-based batch augmentation vs none;
3. wall time for the default model (preset ``small``, default TrainConfig apart from
   ``--patch`` / ``--lr``) to reach validation Dice >= 0.90 on simulated nuclei.

Run:  .venv/bin/python benchmarks/bench_train.py [--threads 2] [--skip-n] [--max-seconds 300]
Figures depend on machine load; the development machine is shared, so report them as measured.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch


def train_throughput(preset: str, batch: int, patch: int, steps: int, device: str) -> float:
    from napari_microseg.models import build_model
    from napari_microseg.training.losses import make_loss

    model = build_model({"preset": preset}).to(device).train()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    loss_fn = make_loss("bce_dice")
    x = torch.randn(batch, 1, patch, patch, device=device)
    y = (torch.rand(batch, patch, patch, device=device) > 0.7).long()
    for i in range(steps + 1):
        if i == 1:
            t0 = time.perf_counter()
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def augment_throughput(batch: int, patch: int, reps: int, device: str) -> tuple[float, float]:
    from napari_microseg.training.augment import AugmentConfig, augment_batch

    x = torch.rand(batch, 1, patch, patch, device=device)
    y = (x[:, 0] > 0.5).long()
    g = torch.Generator().manual_seed(0)
    cfg = AugmentConfig()
    augment_batch(x.clone(), y.clone(), cfg, generator=g)
    t0 = time.perf_counter()
    for _ in range(reps):
        augment_batch(x.clone(), y.clone(), cfg, generator=g)
    aug = reps * batch / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _ in range(reps):
        x.clone(), y.clone()
    none = reps * batch / (time.perf_counter() - t0)
    return aug, none


def time_to_dice(target: float, max_seconds: float, patch: int, lr: float, n_images: int, threads: int, seed: int):
    from napari_microseg.simulate.nuclei import simulate_nuclei_image
    from napari_microseg.training import TrainConfig, train

    pairs = [simulate_nuclei_image((256, 256), 30, seed=1000 + i) for i in range(n_images)]
    images, labels = [p[0] for p in pairs], [p[1] for p in pairs]
    cfg = TrainConfig(preset="small", patch_size=patch, lr=lr, epochs=1000, num_threads=threads, seed=seed,
                      early_stopping_patience=None)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        gen = train(cfg, (images, labels), out_path=f"{tmp}/m.pt")
        for ev in gen:
            elapsed = time.perf_counter() - t0
            if ev.kind == "epoch":
                print(f"    epoch {ev.epoch:3d}  {elapsed:6.1f}s  train_loss {ev.train_loss:.4f}  val_loss {ev.val_loss:.4f}  "
                      f"val_dice {ev.val_dice:.3f}", flush=True)
                if ev.val_dice >= target:
                    gen.close()
                    return elapsed, ev.epoch, ev.val_dice
            if elapsed > max_seconds:
                gen.close()
                return None, ev.epoch, None
    return None, None, None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--patch", type=int, default=256, help="patch side for the time-to-Dice run")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--images", type=int, default=20, help="simulated 256x256 images (20 %% held out)")
    ap.add_argument("--max-seconds", type=float, default=300)
    ap.add_argument("--skip-n", action="store_true", help="skip the slow [N]-preset throughput")
    ap.add_argument("--skip-dice", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}")
    print("1. training throughput at 256x256 (forward+backward+Adam):")
    print(f"   small (batch 8): {train_throughput('small', 8, 256, 3, args.device):6.1f} patches/s")
    if not args.skip_n:
        print(f"   n     (batch 4): {train_throughput('n', 4, 256, 2, args.device):6.2f} patches/s")
    aug, none = augment_throughput(8, 256, 10, args.device)
    print(f"2. augmentation at 256x256, batch 8: kornia {aug:6.1f} patches/s, none (copy) {none:8.1f} patches/s")
    if not args.skip_dice:
        print(f"3. time for preset 'small' to reach val Dice >= 0.90 ({args.images} simulated images, patch {args.patch}, lr {args.lr}):")
        secs, epoch, d = time_to_dice(0.90, args.max_seconds, args.patch, args.lr, args.images, args.threads, args.seed)
        if secs is None:
            print(f"   not reached within {args.max_seconds:.0f}s (stopped at epoch {epoch})")
        else:
            print(f"   reached val Dice {d:.3f} after {secs:.1f}s (epoch {epoch})")


if __name__ == "__main__":
    main()
