"""Widen a trained U-Net without changing what it computes (Net2WiderNet, Chen et al. 2016).

A wider network trained from scratch on a 2-core CPU needs far more epochs
than a fine-tune. :func:`widen_unet` builds a U-Net with ``factor`` times the
filters per level whose output equals the narrow network's (up to the small
symmetry-breaking noise), so training continues from the narrow model's
accuracy with the extra capacity.

How: each layer's ``C`` hidden channels become ``round(C * factor)`` in the
wide one, new channel ``j`` copying old channel ``j % C`` (``factor`` copies
each for an integer factor; with 1.5 the first half of the channels get two
copies, the rest one); a layer that reads duplicated channels divides each
copied input weight by the number of copies of its channel, so its sums are
unchanged. Batch-norm parameters and running
statistics are copied with their channel. The image input and the class
output keep their sizes.
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["widen_unet"]


def _channel_map(n_old: int, factor: float, segments: int = 1) -> torch.Tensor:
    """Old channel index of each new channel for an input made of ``segments`` concatenated parts.

    Each part of ``n_old // segments`` channels becomes ``round(that * factor)``; new channel
    ``j`` of a part copies its old channel ``j % old``, so with a non-integer factor the
    first channels get one copy more than the rest."""
    per_old = n_old // segments
    per_new = int(round(per_old * factor))
    idx = torch.arange(per_new * segments)
    part, within = idx // per_new, idx % per_new
    return part * per_old + within % per_old


def widen_unet(state: dict[str, torch.Tensor], model_config: dict, factor: float = 2, noise: float = 0.01,
               seed: int = 0) -> tuple[dict[str, torch.Tensor], dict]:
    """Widen the state dict of a :class:`~napari_microseg.models.unet.UNet` by ``factor``.

    Parameters
    ----------
    state : the narrow network's ``state_dict()``.
    model_config : its resolved model config (``architecture`` ``"unet"``, with ``base_filters``).
    factor : widening factor >= 1 (2: 16 -> 32 first-level filters; 1.5: 32 -> 48); every
        level's filters times ``factor`` must be a whole number.
    noise : relative Gaussian noise added to duplicated output filters (breaks the symmetry
        between copies so they can learn different features; 0 keeps the function exact).
    seed : seed of that noise.

    Returns
    -------
    (wide_state, wide_model_config) : load the state into ``build_model(wide_model_config)``.
    """
    if model_config.get("architecture", "unet") != "unet":
        raise ValueError("widen_unet widens U-Nets only")
    factor = float(factor)
    base = int(model_config["base_filters"])
    if not math.isfinite(factor) or factor < 1 or abs(base * factor - round(base * factor)) > 1e-9:
        raise ValueError(f"factor must be >= 1 and give whole filter counts ({base} x factor), got {factor:g}")
    gen = torch.Generator().manual_seed(int(seed))
    # the first convolution reads the image: its input channels stay as they are
    image_input = next((name for name, t in state.items() if t.ndim == 4), None)
    n_classes = int(model_config.get("n_classes", 1))
    new_state: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        t = tensor.clone()
        if t.ndim == 0:  # num_batches_tracked
            new_state[name] = t
            continue
        is_head = name.startswith("head.")
        transpose = name.endswith("up.weight") or name.endswith("up.bias")
        if t.ndim == 4:
            out_dim, in_dim = (1, 0) if transpose else (0, 1)
            n_out, n_in = t.shape[out_dim], t.shape[in_dim]
            if not is_head:
                t = t.index_select(out_dim, _channel_map(n_out, factor))
                if noise > 0:
                    t = t + noise * t.std() * torch.randn(t.shape, generator=gen)
            if name != image_input:
                # decoder blocks read cat([skip, up]): two parts, each widened on its own
                segments = 2 if (".block.0." in name and name.startswith("decoder.")) else 1
                source = _channel_map(n_in, factor, segments)
                copies = torch.bincount(source, minlength=n_in)[source].to(t.dtype)  # copies of each new input's old channel
                shape = [1] * t.ndim
                shape[in_dim] = -1
                t = t.index_select(in_dim, source) / copies.reshape(shape)
        elif t.ndim == 1 and not is_head:  # biases and batch-norm vectors of hidden channels
            t = t.index_select(0, _channel_map(t.shape[0], factor))
        elif is_head and t.ndim == 1 and t.shape[0] != n_classes:
            raise ValueError(f"unexpected head tensor {name} {tuple(t.shape)}")
        new_state[name] = t
    wide_config = dict(model_config)
    wide_config["base_filters"] = int(round(base * factor))
    return new_state, wide_config


def widen_model_file(source: Any, target: Any, factor: float = 2, noise: float = 0.01, seed: int = 0) -> Any:
    """Write a widened copy of model file ``source`` to ``target`` (same config, wider network).

    The training history is kept and the widening is recorded in
    ``config["training"]["widened_from"]``; the copy can be fine-tuned with
    ``train(..., init_model=target)``.
    """
    from ..io.models import read_model_file, save_model
    from .registry import build_model

    payload = read_model_file(source)
    config = payload["config"]
    state, wide_cfg = widen_unet(payload["state_dict"], config["model"], factor=factor, noise=noise, seed=seed)
    net = build_model(wide_cfg)
    net.load_state_dict(state)
    new_config = {**config, "model": wide_cfg}
    new_config["training"] = {**config.get("training", {}),
                              "widened_from": {"base_filters": config["model"]["base_filters"], "factor": factor}}
    return save_model(target, net, new_config)
