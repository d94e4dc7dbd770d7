"""Batch augmentation on the compute device: the same geometric transform on image and target.

Works on torch tensors ``images (B, C, H, W) float32`` and ``targets (B, H, W) int64``
(``-1`` = ignored). Geometry: random flips, 90-degree rotations, and a small random
affine (rotation, shear, zoom) applied with ``kornia.geometry.transform.warp_affine``
(reflect fill; bilinear for images, nearest for targets, so class indices and the
ignore value stay intact). Intensity: scale, offset, gamma and Gaussian noise on the
image only. Everything runs batched on the device the tensors live on (GPU or CPU).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

__all__ = ["AugmentConfig", "augment_batch"]


@dataclass
class AugmentConfig:
    """Augmentation settings (JSON-able via ``asdict``).

    Attributes
    ----------
    flips : random horizontal and vertical flips.
    rot90 : random multiples of 90 degrees.
    affine_p : probability of a small affine warp per patch.
    rotation_deg : max rotation of the affine warp, degrees.
    shear_deg : max shear, degrees.
    zoom : max relative zoom (0.1 -> scale in [0.9, 1.1]).
    intensity : apply intensity scale / offset / gamma / noise (turn off for data whose
        classes are defined by absolute intensity, e.g. raw-ADC CCD frames).
    scale_range, offset_range, gamma_range : intensity ranges (on normalised images).
    noise_p, noise_sigma : probability and max standard deviation of Gaussian noise.
    """

    flips: bool = True
    rot90: bool = True
    affine_p: float = 0.5
    rotation_deg: float = 15.0
    shear_deg: float = 5.0
    zoom: float = 0.1
    intensity: bool = True
    scale_range: tuple[float, float] = (0.8, 1.2)
    offset_range: tuple[float, float] = (-0.1, 0.1)
    gamma_range: tuple[float, float] = (0.8, 1.25)
    noise_p: float = 0.3
    noise_sigma: float = 0.05

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "AugmentConfig":
        d = dict(d or {})
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for k in ("scale_range", "offset_range", "gamma_range"):
            if k in known:
                known[k] = tuple(known[k])
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("scale_range", "offset_range", "gamma_range"):
            d[k] = list(d[k])
        return d


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator | None, device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device="cpu").to(device) * (hi - lo) + lo


def _affine_matrices(n: int, h: int, w: int, cfg: AugmentConfig, gen, device) -> torch.Tensor:
    """(n, 2, 3) matrices: rotation + shear + zoom about the patch centre."""
    ang = torch.deg2rad(_uniform(n, -cfg.rotation_deg, cfg.rotation_deg, gen, device))
    shear = torch.deg2rad(_uniform(n, -cfg.shear_deg, cfg.shear_deg, gen, device))
    zoom = _uniform(n, 1 - cfg.zoom, 1 + cfg.zoom, gen, device)
    cos, sin = torch.cos(ang), torch.sin(ang)
    tan = torch.tan(shear)
    # A = zoom * R @ S with S = [[1, tan], [0, 1]]
    a00 = zoom * cos
    a01 = zoom * (cos * tan - sin)
    a10 = zoom * sin
    a11 = zoom * (sin * tan + cos)
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    tx = cx - (a00 * cx + a01 * cy)
    ty = cy - (a10 * cx + a11 * cy)
    return torch.stack([torch.stack([a00, a01, tx], -1), torch.stack([a10, a11, ty], -1)], 1)


def _warp(x: torch.Tensor, m: torch.Tensor, mode: str) -> torch.Tensor:
    try:
        from kornia.geometry.transform import warp_affine

        return warp_affine(x, m, dsize=tuple(x.shape[-2:]), mode=mode, padding_mode="reflection", align_corners=True)
    except ImportError:  # pragma: no cover - kornia is a dependency; pure-torch fallback
        import torch.nn.functional as F

        n, _, h, w = x.shape
        # pixel -> normalised coordinates (align_corners=True), invert dst->src mapping
        full = torch.cat([m, torch.tensor([0, 0, 1.0], device=m.device).expand(n, 1, 3)], 1)
        inv = torch.linalg.inv(full)[:, :2]
        norm = torch.tensor([[2 / (w - 1), 0, -1], [0, 2 / (h - 1), -1], [0, 0, 1]], device=m.device, dtype=m.dtype)
        theta = norm[:2] @ torch.cat([inv, torch.tensor([0, 0, 1.0], device=m.device).expand(n, 1, 3)], 1) @ torch.linalg.inv(norm)
        grid = F.affine_grid(theta, list(x.shape), align_corners=True)
        return F.grid_sample(x, grid, mode=mode, padding_mode="reflection", align_corners=True)


@torch.no_grad()
def augment_batch(
    images: torch.Tensor,
    targets: torch.Tensor,
    config: AugmentConfig | dict | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch; return new ``(images, targets)`` tensors on the same device.

    Parameters
    ----------
    images : float32 ``(B, C, H, W)``, normalised.
    targets : int64 ``(B, H, W)`` class indices (``-1`` = ignore).
    config : :class:`AugmentConfig` or dict (None: defaults).
    generator : CPU ``torch.Generator`` for repeatable draws (random numbers are drawn on
        the CPU and moved, so results do not depend on the device).
    """
    cfg = config if isinstance(config, AugmentConfig) else AugmentConfig.from_dict(config)
    x = images
    y = targets
    b, c, h, w = x.shape
    dev = x.device
    if cfg.flips:
        fh = torch.rand(b, generator=generator) < 0.5
        fv = torch.rand(b, generator=generator) < 0.5
        if fh.any():
            idx = fh.nonzero().squeeze(1).to(dev)
            x[idx] = x[idx].flip(-1)
            y[idx] = y[idx].flip(-1)
        if fv.any():
            idx = fv.nonzero().squeeze(1).to(dev)
            x[idx] = x[idx].flip(-2)
            y[idx] = y[idx].flip(-2)
    if cfg.rot90 and h == w:
        k = torch.randint(0, 4, (b,), generator=generator)
        for r in (1, 2, 3):
            sel = (k == r).nonzero().squeeze(1)
            if len(sel):
                idx = sel.to(dev)
                x[idx] = torch.rot90(x[idx], r, dims=(-2, -1))
                y[idx] = torch.rot90(y[idx], r, dims=(-2, -1))
    if cfg.affine_p > 0:
        sel = (torch.rand(b, generator=generator) < cfg.affine_p).nonzero().squeeze(1)
        if len(sel):
            idx = sel.to(dev)
            m = _affine_matrices(len(sel), h, w, cfg, generator, dev).to(x.dtype)
            x[idx] = _warp(x[idx], m, "bilinear")
            # shift targets by +1 so that IGNORE (-1) survives reflection and nearest sampling
            yt = (y[idx].to(x.dtype) + 1).unsqueeze(1)
            y[idx] = (_warp(yt, m, "nearest").squeeze(1).round().long() - 1)
    if cfg.intensity:
        shape = (b, 1, 1, 1)
        scale = _uniform(b, *cfg.scale_range, generator, dev).view(shape)
        offset = _uniform(b, *cfg.offset_range, generator, dev).view(shape)
        gamma = _uniform(b, *cfg.gamma_range, generator, dev).view(shape)
        x = torch.sign(x) * x.abs().pow(gamma)
        x = x * scale + offset
        if cfg.noise_p > 0:
            use = (torch.rand(b, generator=generator) < cfg.noise_p).to(dev).view(shape).to(x.dtype)
            sigma = _uniform(b, 0.0, cfg.noise_sigma, generator, dev).view(shape) * use
            noise = torch.randn(x.shape, generator=generator).to(dev)
            x = x + noise * sigma
    return x.contiguous(), y.contiguous()
