"""Export a trained model for use outside the plugin: TorchScript (and ONNX when the exporter is available).

The exported file carries the model's JSON config (normalisation, classes, output
mode, ...) so the consumer can prepare inputs exactly as in training:
TorchScript stores it as the extra file ``config.json``; ONNX as metadata ``config``.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from ..errors import InputError
from .atomic import atomic_path
from .models import load_model


def _example_input(config: dict):
    import torch

    model_cfg = config.get("model", {})
    if "input_size" in model_cfg:  # classifiers: fixed input size
        size = model_cfg["input_size"]
        return torch.zeros(1, int(model_cfg.get("in_channels", 1)), *[int(s) for s in size])
    if model_cfg.get("architecture") == "profile_cnn":
        return torch.zeros(1, int(model_cfg.get("n_views", 1)), int(model_cfg.get("data_points", 32)))
    patch = config.get("patch_size") or [256, 256]
    patch = patch if isinstance(patch, (list, tuple)) else [patch, patch]
    return torch.zeros(1, int(model_cfg.get("in_channels", 1)), int(patch[0]), int(patch[1]))


def _padded_unet(core, multiple: int):
    """A module that pads ``(B, C, H, W)`` on the bottom/right to multiples of ``multiple`` px
    (reflect; replicate for tiny inputs), runs ``core`` and crops back to ``(B, K, H, W)``.

    ``core`` is a U-Net traced at a size that needs no padding, so the traced graph is
    valid for every multiple of ``multiple``; the wrapper is scripted, so its padding
    follows each input's size.
    """
    import torch
    import torch.nn.functional as F

    class PaddedUNet(torch.nn.Module):
        def __init__(self, core, multiple: int):
            super().__init__()
            self.core = core
            self.multiple = multiple

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h, w = x.shape[2], x.shape[3]
            ph = (self.multiple - h % self.multiple) % self.multiple
            pw = (self.multiple - w % self.multiple) % self.multiple
            if ph > 0 or pw > 0:
                if ph < h and pw < w:
                    x = F.pad(x, [0, pw, 0, ph], mode="reflect")
                else:
                    x = F.pad(x, [0, pw, 0, ph], mode="replicate")
            return self.core(x)[:, :, :h, :w]

    return PaddedUNet(core, multiple)


def exported_config(config: dict) -> dict:
    """The model's config as an export carries it: its normalisation with every step the package applies
    made explicit (the cut of percentile-normalised values at ``clip_high``), and ``preprocessing``, the
    steps in order in words, naming the package's functions where a step is more than arithmetic (a
    consumer who skipped the CCD tap levelling lost a third of the cluster pixels of a real frame)."""
    import copy

    from ..training.normalize import PERCENTILE_CLIP

    out = copy.deepcopy(config)
    spec = out.get("normalization") or {}
    steps: list[str] = []
    kind = spec.get("kind")
    if spec.get("level_taps"):
        steps.append("level the readout taps: subtract each tap's pedestal and add back their median "
                     "(napari_microseg.autolabel.ccd.level_taps; frames in raw ADC)")
    if kind == "percentile":
        spec["clip_high"] = PERCENTILE_CLIP
        steps.append(f"per image (each frame of a stack): map its {spec.get('p_low')} and {spec.get('p_high')} "
                     f"percentiles to 0 and 1, then cut values above clip_high ({PERCENTILE_CLIP:g})")
    elif kind == "pedestal":
        level = ("the peak of its pixel histogram (napari_microseg.training.normalize.pedestal_mode)"
                 if spec.get("estimator") == "mode" else "its median")
        steps.append(f"per frame: subtract its pedestal, {level}, and divide by scale ({spec.get('scale')})")
        from ..training.normalize import input_limits

        limits = input_limits(config)
        if limits is not None:  # saturated and blank pixels: as segment gives them
            steps.append(f"cut values to {limits[0]:g} .. {limits[1]:.4g} (1.5 x input_range high)")
    elif kind == "minmax" and (out.get("crop") or {}).get("kind") == "profile":
        steps.append("per particle: map the minimum and maximum over all its views together to 0 and 1")
    elif kind == "minmax":
        steps.append("per image: map its minimum and maximum to 0 and 1")
    elif kind == "fixed":
        steps.append(f"subtract offset ({spec.get('offset')}) and divide by scale ({spec.get('scale')})")
    crop = out.get("crop") or {}
    size = " x ".join(str(v) for v in crop.get("size") or [])
    if crop.get("kind") == "integration":  # the window first, normalised on its own
        steps.insert(0, f"cut a {size} px window centred on the integration area's bounding box "
                        "(napari_microseg.classify.data.crop_around), then normalise the window")
    elif crop.get("kind") == "object":  # the whole image normalised, then each object cut
        margin = "" if crop.get("mode") == "masked" else f", margin {crop.get('margin')} px"  # (masked: none)
        steps.append(f"cut each object ({crop.get('mode')} crop{margin}) and resize it to "
                     f"{size} px (napari_microseg.classify.crops.object_crops)")
    elif crop.get("kind") == "profile":
        steps.append(f"each particle: its {crop.get('views')} view(s) of projected intensity as (views, points)")
    if out.get("distance_head") and out.get("output_mode") == "three_class":
        # the network's 4th channel is the distance head: a softmax over all 4 moved the class probabilities by
        # up to 0.2 (61 pixels of a crop flipped)
        out["n_outputs"] = 4
        steps.append("feed float32 (B, C, H, W); the output is the network's logits, 4 channels: softmax over the "
                     "first 3 (background, interior, boundary), sigmoid of the 4th (each nucleus' interior distance "
                     "to its edge, normalised to its largest; the watershed's seeds)")
    elif out.get("task") in ("images", "objects", "profiles"):
        shape = "(B, views, points)" if crop.get("kind") == "profile" else "(B, C, H, W)"
        steps.append(f"feed float32 {shape}; the output is the network's logits: one channel: sigmoid, the "
                     "probability of class_names[1]; several: softmax over the classes")
    else:  # (a binary file of two channels, from elsewhere, takes the softmax: channel 1 is the foreground)
        steps.append("feed float32 (B, C, H, W); the output is the network's logits: one channel: sigmoid (the "
                     "foreground probability); several: softmax over them (classes in class_names' order)")
    if "unet" in str((out.get("model") or {}).get("architecture", "unet")).lower() and crop.get("kind") is None:
        steps.append("the module pads H and W (reflect, bottom / right) to a multiple of 16 and crops its output back, as "
                     "napari_microseg.inference.segment pads its tiles; segment tiles images above 512 px (overlap "
                     "32 px, blended): a whole large image fed at once differs from it near tile edges")
    out["preprocessing"] = steps
    return out


def _traced(loaded):
    """``loaded``'s network traced on its example input; a U-Net inside :func:`_padded_unet` (scripted),
    so the graph takes any ``H, W``."""
    import torch

    from ..models.unet import UNet

    example = _example_input(loaded.config)
    model = loaded.model.eval()
    is_unet = isinstance(model, UNet)
    with torch.no_grad(), warnings.catch_warnings():
        # a U-Net's padding branch, a classifier's shape checks: left out of the trace on purpose (the
        # example needs neither; the U-Net pads in the scripted wrapper below)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, example, check_trace=False)
    if is_unet:  # pad in a scripted wrapper instead, so the file takes any H, W (as segment pads its tiles)
        from ..models.unet import PAD_MULTIPLE

        traced = torch.jit.script(_padded_unet(traced, max(2 ** model.depth, PAD_MULTIPLE)))
    return traced, example


def export_torchscript(model_path: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Trace a model file into a TorchScript file (``torch.jit.load`` reads it; no napari-microseg needed).

    The traced graph takes an already-normalised float32 batch ``(B, C, H, W)`` and returns
    the network's logits; ``config.json`` inside the file says how to normalise and decode.
    U-Nets take any ``H, W`` (padded inside to multiples of ``2**depth`` px and cropped back).
    """
    import torch

    target = Path(out)
    if target.exists() and not overwrite:
        raise InputError(f"{target}: exists already (use --overwrite)")
    loaded = load_model(model_path, device="cpu")
    traced, _ = _traced(loaded)
    extra = {"config.json": json.dumps(exported_config(loaded.config))}
    # saved to memory, then written by Python: torch's file writer fails in a C++ destructor on a full disk,
    # which aborted the process (exit 134, a native backtrace) and left its temporary file
    import io

    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files=extra)
    with atomic_path(target, suffix=".pt") as tmp:
        Path(tmp).write_bytes(buffer.getvalue())
    return target


def load_torchscript(path: str | os.PathLike):
    """Load an exported TorchScript model and its config: ``(module, config_dict)``."""
    import torch

    extra = {"config.json": ""}
    module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return module, json.loads(extra["config.json"] or "{}")


def export_onnx(model_path: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Export to ONNX with dynamic batch / height / width (classifiers: batch; their crop or profile
    length is fixed); needs the ``onnx`` package (InputError otherwise).

    The graph is :func:`export_torchscript`'s (U-Nets pad inside to multiples of ``2**depth`` px, so
    any ``H, W`` works), written by torch's TorchScript-based exporter (the default dynamo exporter
    would need ``onnxscript`` too). Input ``input``: normalised float32 ``(B, C, H, W)``; output
    ``logits``; the model's config is stored as metadata ``config`` (JSON).
    """
    import torch

    try:
        import onnx
    except ImportError:
        raise InputError("ONNX export needs the 'onnx' package: pip install onnx (TorchScript export works without it)") from None
    target = Path(out)
    if target.exists() and not overwrite:
        raise InputError(f"{target}: exists already (use --overwrite)")
    loaded = load_model(model_path, device="cpu")
    traced, example = _traced(loaded)
    from ..models.unet import UNet

    # a U-Net takes any H, W; a classifier (a dense head: fixed crop or profile length) any batch only
    spatial = {2: "height", 3: "width"} if isinstance(loaded.model, UNet) else {}
    dynamic_axes = {"input": {0: "batch", **spatial}, "logits": {0: "batch", **spatial}}
    with atomic_path(target, suffix=".onnx") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based exporter is deprecated, not gone
        torch.onnx.export(traced, example, str(tmp), input_names=["input"], output_names=["logits"], dynamo=False,
                          dynamic_axes=dynamic_axes)
        proto = onnx.load(str(tmp))
        entry = proto.metadata_props.add()
        entry.key, entry.value = "config", json.dumps(exported_config(loaded.config))
        onnx.save(proto, str(tmp))
    return target
