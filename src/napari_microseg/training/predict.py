"""Whole-image and patch-batch prediction with a loaded model.

Tiled inference for large images is built on :func:`predict_patch_batch` plus
:func:`napari_microseg.training.normalize.normalize` (with the spec stored in the
model, ``loaded.normalization``).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .normalize import normalize

__all__ = ["predict_patch_batch", "predict_image", "logits_to_probabilities"]


def logits_to_probabilities(logits, output_mode: str):
    """Sigmoid for one output channel (binary), softmax over channels otherwise (torch tensors)."""
    import torch

    if logits.shape[1] == 1 or output_mode == "binary":
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=1)


def predict_patch_batch(loaded, batch: np.ndarray) -> np.ndarray:
    """Run the network on a batch of already-normalised patches.

    Parameters
    ----------
    loaded : :class:`napari_microseg.io.models.LoadedModel`.
    batch : float32 ``(B, C, H, W)`` (``C`` = the model's ``in_channels``, usually 1),
        normalised with ``loaded.normalization``. Any ``H, W`` work (the U-Net pads inside).

    Returns
    -------
    float32 ``(B, K, H, W)`` probabilities: ``K = 1`` (foreground probability) for
    binary models, ``K`` classes summing to 1 otherwise (three_class: background,
    interior, boundary).
    """
    import torch

    x = np.asarray(batch)
    if x.ndim != 4:
        raise InputError(f"batch must be (B, C, H, W), got shape {x.shape}")
    in_ch = int(loaded.config["model"].get("in_channels", 1))
    if x.shape[1] != in_ch:
        raise InputError(f"model expects {in_ch} channel(s), batch has {x.shape[1]}")
    model = loaded.model
    device = loaded.device
    model.eval()
    with torch.inference_mode():
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
        if device.startswith("cuda"):
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            with torch.autocast(device_type="cuda", dtype=dtype):
                logits = model(t)
        else:
            logits = model(t)
        probs = logits_to_probabilities(logits.float(), loaded.output_mode)
    return probs.cpu().numpy().astype(np.float32)


def predict_image(loaded, image: np.ndarray, normalise: bool = True) -> np.ndarray:
    """Predict class probabilities for one whole image (no tiling).

    Parameters
    ----------
    loaded : :class:`napari_microseg.io.models.LoadedModel`.
    image : ``(Y, X)`` (or ``(C, Y, X)`` for multi-channel models), any real dtype.
    normalise : apply the normalisation stored in the model first (set False when the
        image is already normalised).

    Returns
    -------
    float32 ``(K, Y, X)`` probabilities (see :func:`predict_patch_batch`).
    """
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[None]
    if img.ndim != 3:
        raise InputError(f"image must be (Y, X) or (C, Y, X), got shape {np.asarray(image).shape}")
    x = normalize(img, loaded.normalization) if normalise else img.astype(np.float32)
    return predict_patch_batch(loaded, x[None])[0]
